//! The JSON extractor and responder every handler uses.
//!
//! [`Json<T>`] as a response serialises `T`, appends the newline the conventions require and
//! sets `Content-Type: application/json`. As an extractor it decodes the request body (already
//! size-checked and media-type-checked by the API's middleware): a malformed or ill-typed body
//! is a `400 bad_request` carrying serde's message, unknown fields are ignored (unless `T` says
//! `deny_unknown_fields`), and an empty body (no body, `Content-Length: 0`) is a 400 for
//! `Json<T>` but `None` for `Option<Json<T>>`, so a handler can tell "no body" apart.

use axum::body::Body;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ErrorResponse;
use crate::middleware::BODY_LIMIT;

/// `Content-Type` value of every JSON response.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Marks a response whose body is already final JSON with a trailing newline, so the
/// convention layer does not need to look at it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinishedJson;

/// Builds a response from a body that already is JSON ending in a newline.
pub(crate) fn finished_json(status: StatusCode, bytes: Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, crate::error::json_content_type());
    response.extensions_mut().insert(FinishedJson);
    response
}

/// True when a `Content-Type` value is `application/json`, with or without parameters such as
/// `; charset=utf-8` (compared case-insensitively, as media types are).
pub fn is_json_content_type(value: &[u8]) -> bool {
    let essence = value.split(|b| *b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// A JSON request body or response body. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut bytes = Vec::with_capacity(128);
        match serde_json::to_writer(&mut bytes, &self.0) {
            Ok(()) => {
                bytes.push(b'\n');
                finished_json(StatusCode::OK, Bytes::from(bytes))
            }
            Err(e) => ErrorResponse::internal(format!("could not encode the response: {e}"))
                .into_response(),
        }
    }
}

/// Reads the whole (already limited) body; `Ok(None)` when it is empty.
async fn body_bytes(req: Request) -> Result<Option<Bytes>, ErrorResponse> {
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| is_json_content_type(v.as_bytes()));
    let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| {
            ErrorResponse::new(
                outpost_types::ErrorCode::PayloadTooLarge,
                format!("could not read the request body: {e}"),
            )
        })?;
    if bytes.is_empty() {
        return Ok(None);
    }
    // The middleware already enforced this; checked again so the extractor is safe on its own.
    if json_type != Some(true) {
        return Err(ErrorResponse::new(
            outpost_types::ErrorCode::UnsupportedMediaType,
            "request body must have Content-Type: application/json",
        ));
    }
    Ok(Some(bytes))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorResponse> {
    serde_json::from_slice(bytes)
        .map_err(|e| ErrorResponse::bad_request(format!("invalid request body: {e}")))
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match body_bytes(req).await? {
            Some(bytes) => decode(&bytes).map(Json),
            None => Err(ErrorResponse::bad_request(
                "a JSON request body is required",
            )),
        }
    }
}

impl<T, S> OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        match body_bytes(req).await? {
            Some(bytes) => decode(&bytes).map(|v| Some(Json(v))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            " application/json ",
        ] {
            assert!(is_json_content_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/jsonx",
            "application/x-json",
            "application/problem+json",
            "text/json",
        ] {
            assert!(!is_json_content_type(bad.as_bytes()), "{bad}");
        }
    }
}
