//! A small HTTP/1.1 client for the API over its Unix socket, for the CLI.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use outpost_types::error::{ApiError, ErrorBody};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What [`ClientError`] is about, for callers that only need the broad kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// Nothing answers on the socket (no socket file, connection refused, permission denied).
    NotReachable,
    /// The API answered with an error body.
    Api,
    /// The exchange itself failed (malformed response, non-JSON body, dropped connection).
    Protocol,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to.
    #[error("cannot reach the outpost API at {socket} (is it running, and may you use it?)")]
    NotReachable {
        /// The socket path.
        socket: PathBuf,
        /// The connect error (`NotFound`, `ConnectionRefused`, `PermissionDenied`, ...).
        #[source]
        source: std::io::Error,
    },
    /// The API answered with an error (`{"error":{"message","code"}}`).
    #[error("{} ({}, HTTP {status})", error.message, error.code)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error as the API reported it.
        error: ApiError,
    },
    /// The HTTP exchange failed after connecting.
    #[error("HTTP exchange with {socket} failed for {path}")]
    Http {
        /// The socket path.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be formed (an invalid path).
    #[error("invalid request for {path}")]
    Request {
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The request body could not be encoded.
    #[error("could not encode the request body for {path}")]
    Encode {
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The response body is not the JSON expected (status and the start of the body kept).
    #[error("unexpected response to {path} (HTTP {status}): {body_start:?}")]
    Decode {
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The first 200 bytes of the body, for the error message.
        body_start: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The broad kind of failure.
    pub fn kind(&self) -> ClientErrorKind {
        match self {
            Self::NotReachable { .. } => ClientErrorKind::NotReachable,
            Self::Api { .. } => ClientErrorKind::Api,
            Self::Http { .. }
            | Self::Request { .. }
            | Self::Encode { .. }
            | Self::Decode { .. } => ClientErrorKind::Protocol,
        }
    }

    /// The API error, when the API answered with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A client for the API on one Unix socket. Each call opens its own connection (the CLI
/// makes one or two calls per run), sends `Content-Type: application/json` only with a body,
/// and decodes the JSON answer.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    /// A client for the socket at `socket_path` (nothing is connected yet).
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket_path.into(),
        }
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// `GET path`, decoding a 2xx body as `T`.
    ///
    /// # Errors
    /// [`ClientError`]: not reachable, the API's error, or a protocol failure.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with `body` as JSON (or no body at all), decoding a 2xx body as `T`.
    ///
    /// # Errors
    /// [`ClientError`]: not reachable, the API's error, or a protocol failure.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(|b| {
                serde_json::to_vec(b).map_err(|source| ClientError::Encode {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        self.call(Method::POST, path, body).await
    }

    /// Sends one request and decodes the answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        decode_response(path, status, &bytes)
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| ClientError::Request {
                path: path.to_owned(),
                source,
            })?;
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::NotReachable {
                socket: self.socket.clone(),
                source,
            })?;
        let http_error = |source| ClientError::Http {
            socket: self.socket.clone(),
            path: path.to_owned(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "API connection ended with an error");
            }
        });
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        drop(sender);
        // The connection ends once the sender is dropped; it has nothing left to report.
        driver.abort();
        Ok((status, bytes))
    }
}

fn decode_response<T: DeserializeOwned>(
    path: &str,
    status: StatusCode,
    bytes: &[u8],
) -> Result<T, ClientError> {
    let decode_error = |source| ClientError::Decode {
        path: path.to_owned(),
        status: status.as_u16(),
        body_start: String::from_utf8_lossy(bytes.get(..200).unwrap_or(bytes)).into_owned(),
        source,
    };
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(decode_error);
    }
    let body: ErrorBody = serde_json::from_slice(bytes).map_err(decode_error)?;
    Err(ClientError::Api {
        status: status.as_u16(),
        error: body.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_types::ErrorCode;

    #[test]
    fn responses_decode_by_status() {
        let ok: serde_json::Value = decode_response("/x", StatusCode::OK, b"{\"a\":1}\n").unwrap();
        assert_eq!(ok["a"], 1);
        let err = decode_response::<serde_json::Value>(
            "/x",
            StatusCode::CONFLICT,
            br#"{"error":{"message":"no experiment","code":"invalid_state"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ClientErrorKind::Api);
        assert_eq!(err.api_error().unwrap().code, ErrorCode::InvalidState);
        let err = decode_response::<serde_json::Value>(
            "/x",
            StatusCode::NOT_FOUND,
            b"404 page not found\n",
        )
        .unwrap_err();
        assert_eq!(err.kind(), ClientErrorKind::Protocol);
        assert!(err.to_string().contains("404 page not found"), "{err}");
        let err = decode_response::<Vec<u8>>("/x", StatusCode::OK, b"{}").unwrap_err();
        assert_eq!(err.kind(), ClientErrorKind::Protocol);
    }
}
