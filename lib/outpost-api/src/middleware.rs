//! The conventions every module gets: path checks, body limits and media types, module
//! stop/start, authorisation, spans, request counting, JSON normalisation of responses.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Limited};
use outpost_types::ErrorCode;
use tower::{Service, ServiceExt as _};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::caller::{AccessPolicy, Caller, CallerCache, Peer};
use crate::error::{ErrorResponse, ResponseErrorCode, error_response};
use crate::json::{FinishedJson, is_json_content_type};
use crate::module::{Access, Api, ModuleHandle, REQUESTS_METRIC};
use crate::telemetry::{Counter, Telemetry};

/// The largest request body accepted (1 MiB); larger ones are answered 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// State shared by every route of one [`Api`].
pub(crate) struct Shared {
    pub(crate) telemetry: Telemetry,
    pub(crate) callers: CallerCache,
    pub(crate) access: AccessPolicy,
    pub(crate) modules: BTreeMap<String, ModuleHandle>,
    pub(crate) unmatched: StatusCounters,
}

/// One method of one path.
pub(crate) struct MethodRoute {
    pub(crate) method: Method,
    pub(crate) module: ModuleHandle,
    pub(crate) access: Access,
}

/// Everything the per-path middleware needs, built once.
pub(crate) struct PathInfo {
    pub(crate) template: String,
    pub(crate) routes: Vec<MethodRoute>,
    /// The module answering for methods no route has (405) when they are stopped (503).
    pub(crate) primary: ModuleHandle,
    pub(crate) allow: HeaderValue,
    pub(crate) counters: StatusCounters,
}

impl PathInfo {
    fn find(&self, method: &Method) -> Option<(usize, &MethodRoute)> {
        let exact = self.routes.iter().position(|r| r.method == *method);
        let index = exact.or_else(|| {
            (*method == Method::HEAD)
                .then(|| self.routes.iter().position(|r| r.method == Method::GET))
                .flatten()
        })?;
        self.routes.get(index).map(|r| (index, r))
    }
}

/// (route slot, method label, status)
type CounterKey = (usize, &'static str, u16);

/// Request counters for one route template, cached per (route, method, status).
pub(crate) struct StatusCounters {
    telemetry: Telemetry,
    route: String,
    /// Few entries per route (a handful of statuses): a scan beats hashing.
    cache: RwLock<Vec<(CounterKey, Counter)>>,
}

/// The method as a metric label; unknown methods share one label so they cannot grow the
/// number of series without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

impl StatusCounters {
    pub(crate) fn new(telemetry: Telemetry, route: String) -> Self {
        Self {
            telemetry,
            route,
            cache: RwLock::new(Vec::new()),
        }
    }

    fn count(&self, slot: usize, module: &str, method: &Method, status: StatusCode) {
        let method = method_label(method);
        let key = (slot, method, status.as_u16());
        if let Some((_, counter)) = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(k, _)| *k == key)
        {
            counter.inc();
            return;
        }
        let status = status.as_str();
        let labels = [
            ("module", module),
            ("route", self.route.as_str()),
            ("method", method),
            ("status", status),
        ];
        match self.telemetry.counter(REQUESTS_METRIC, &labels) {
            Ok(counter) => {
                counter.inc();
                let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                if !cache.iter().any(|(k, _)| *k == key) {
                    cache.push((key, counter));
                }
            }
            Err(error) => tracing::warn!(%error, "could not count a request"),
        }
    }
}

/// The conventions of one path, as a layer on the path's `MethodRouter`: axum matches the
/// path (it is the only router), then [`PathService`] applies them before the handler.
#[derive(Clone)]
pub(crate) struct PathLayer {
    shared: Arc<Shared>,
    info: Arc<PathInfo>,
}

impl PathLayer {
    pub(crate) fn new(shared: Arc<Shared>, info: Arc<PathInfo>) -> Self {
        Self { shared, info }
    }
}

impl<S> tower::Layer<S> for PathLayer {
    type Service = PathService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PathService {
            shared: Arc::clone(&self.shared),
            info: Arc::clone(&self.info),
            inner,
        }
    }
}

/// See [`PathLayer`].
#[derive(Clone)]
pub(crate) struct PathService<S> {
    shared: Arc<Shared>,
    info: Arc<PathInfo>,
    inner: S,
}

/// Marks a response that went through a route's conventions (and was counted there).
#[derive(Clone, Copy)]
struct Routed;

impl<S> Service<Request> for PathService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let info = Arc::clone(&self.info);
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut response = routed(&shared, &info, inner, req).await;
            response.extensions_mut().insert(Routed);
            Ok(response)
        })
    }
}

/// The checks for a request whose path matched a route: module state, 405, caller,
/// authorisation, body conventions; then the handler, counted.
async fn routed<S>(shared: &Shared, info: &PathInfo, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let method = req.method().clone();
    let found = info.find(&method);
    let module = found.map_or(&info.primary, |(_, r)| &r.module);
    let span = tracing::Span::current();
    span.record("api.module", module.name());
    span.record("http.route", info.template.as_str());
    let response = route_inner(shared, info, module, found.map(|(_, r)| r), inner, req).await;
    let slot = found.map_or(usize::MAX, |(i, _)| i);
    info.counters
        .count(slot, module.name(), &method, response.status());
    response
}

async fn route_inner<S>(
    shared: &Shared,
    info: &PathInfo,
    module: &ModuleHandle,
    route: Option<&MethodRoute>,
    inner: S,
    mut req: Request,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    if !module.is_running() {
        return error_response(ErrorCode::Unavailable, "module stopped");
    }
    let Some(route) = route else {
        return ErrorResponse::method_not_allowed(
            req.method(),
            req.uri().path(),
            info.allow.clone(),
        )
        .into_response();
    };
    // The server resolves each connection's caller once; a request driven in-process may carry
    // a Caller put there by the embedding code, or a ConnectInfo to resolve.
    let caller = match req.extensions().get::<Caller>() {
        Some(caller) => Some(caller.clone()),
        None => req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .and_then(|ConnectInfo(peer)| shared.access.caller(peer, &shared.callers)),
    };
    if route.access == Access::Privileged {
        if !shared.access.allows_mutation(caller.as_ref()) {
            tracing::warn!(
                caller.uid = caller.as_ref().map(|c| c.uid),
                caller.pid = caller.as_ref().and_then(|c| c.pid),
                "mutating request refused"
            );
            let who = caller.as_ref().map_or_else(
                || "a caller without credentials".to_owned(),
                |c| format!("uid {}", c.uid),
            );
            return error_response(
                ErrorCode::Forbidden,
                format!("{who} may not call {} {}", req.method(), info.template),
            );
        }
        tracing::info!(
            caller.uid = caller.as_ref().map(|c| c.uid),
            caller.pid = caller.as_ref().and_then(|c| c.pid),
            caller.container_id = caller.as_ref().and_then(|c| c.container_id.as_deref()),
            "mutating request"
        );
    }
    if let Some(caller) = caller
        && req.extensions().get::<Caller>().is_none()
    {
        req.extensions_mut().insert(caller);
    }
    let req = match buffer_body(req).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    match AssertUnwindSafe(inner.oneshot(req)).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::error!("request handler panicked");
            error_response(
                ErrorCode::Internal,
                "internal error: the request handler panicked",
            )
        }
    }
}

/// Enforces the body conventions and buffers the body (at most [`BODY_LIMIT`]).
///
/// No body (nothing to read, `Content-Length: 0`): passed on, no `Content-Type` needed.
/// `Content-Length` over the limit: 413 without reading. A `Content-Type` other than
/// `application/json` (parameters allowed): 415 without reading. A body of unknown length
/// (chunked) is counted as it arrives and answered 413 once it passes the limit; the unread
/// rest makes the server close the connection after the response.
async fn buffer_body(req: Request) -> Result<Request, Response> {
    let hint = req.body().size_hint();
    if req.body().is_end_stream() || hint.exact() == Some(0) {
        return Ok(req);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| is_json_content_type(v.as_bytes()));
    let unsupported = || {
        error_response(
            ErrorCode::UnsupportedMediaType,
            "a request body must have Content-Type: application/json",
        )
    };
    let too_large = || {
        error_response(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {BODY_LIMIT} bytes"),
        )
    };
    if content_type == Some(false) || (content_type.is_none() && hint.exact().is_some()) {
        return Err(unsupported());
    }
    if hint.lower() > BODY_LIMIT as u64 {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(error_response(
                ErrorCode::BadRequest,
                format!("could not read the request body: {e}"),
            ));
        }
    };
    if bytes.is_empty() {
        return Ok(Request::from_parts(parts, Body::empty()));
    }
    if content_type.is_none() {
        return Err(unsupported());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The fallback: no route has this path.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

/// A `.` or `..` segment, literal or percent-encoded, is refused: such a path is never
/// normalised into another route. Returns the first such segment of `path` as written (still
/// encoded), or `None` when every segment, once its `%XX` escapes are decoded, is neither.
/// Never fails: any string is a path to check.
pub fn dot_segment(path: &str) -> Option<String> {
    path.split('/').find_map(|segment| {
        if !segment.contains(['.', '%']) {
            return None;
        }
        // The decoder axum's `Path` uses: what is checked here is what a handler would see.
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        matches!(decoded.as_slice(), b"." | b"..").then(|| segment.to_owned())
    })
}

/// Maps a status some layer produced without a JSON body to the closest error code.
fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::InvalidState,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        503 => ErrorCode::Unavailable,
        s if s < 500 => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}

/// Makes a response follow the conventions when it did not come from [`crate::Json`] or
/// [`ErrorResponse`]: JSON bodies get their trailing newline, error statuses with a non-JSON
/// body (e.g. axum's `Path` rejections) become the JSON error with the text as message, an
/// empty success without a `Content-Type` becomes `{}`. Non-JSON successes (the Prometheus
/// exposition) are left alone.
async fn normalise(response: Response, is_head: bool) -> Response {
    if response.extensions().get::<FinishedJson>().is_some() || is_head {
        return response;
    }
    let status = response.status();
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_json = content_type.is_some_and(|v| is_json_content_type(v.as_bytes()));
    let is_error = status.is_client_error() || status.is_server_error();
    if is_json {
        let (mut parts, body) = response.into_parts();
        let mut bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => Vec::from(bytes),
            Err(e) => {
                tracing::error!(error = %e, "could not read a response body");
                return error_response(ErrorCode::Internal, "could not produce the response body");
            }
        };
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(bytes));
    }
    if is_error {
        let (parts, body) = response.into_parts();
        let text = match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
            Err(_) => String::new(),
        };
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        let mut converted = error_response(code_for_status(status), message);
        *converted.status_mut() = status;
        for (name, value) in &parts.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                converted.headers_mut().append(name.clone(), value.clone());
            }
        }
        return converted;
    }
    if content_type.is_none() && response.body().size_hint().exact() == Some(0) {
        let (parts, _) = response.into_parts();
        let mut filled = crate::json::finished_json(parts.status, Bytes::from_static(b"{}\n"));
        for (name, value) in &parts.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                filled.headers_mut().append(name.clone(), value.clone());
            }
        }
        return filled;
    }
    response
}

/// Target of the access line: `OUTPOST_LOG=outpost_api::access=off` silences it.
pub(crate) const ACCESS_TARGET: &str = "outpost_api::access";

/// The longest request path the access line shows; longer ones are cut and end in `...`.
const ACCESS_PATH_MAX: usize = 256;

/// The caller's uid and pid as the kernel reported them for the connection (or as the
/// embedding code put them in a [`Caller`]), known before any check runs, so refused requests
/// have them too.
fn peer_ids(req: &Request) -> (Option<u32>, Option<u32>) {
    if let Some(caller) = req.extensions().get::<Caller>() {
        return (Some(caller.uid), caller.pid);
    }
    match req.extensions().get::<ConnectInfo<Peer>>() {
        Some(ConnectInfo(Peer {
            credentials: Some(creds),
            ..
        })) => (Some(creds.uid), creds.pid),
        _ => (None, None),
    }
}

/// A duration with its unit: `840us`, `1.2ms`, `2.35s`.
fn human_duration(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_millis(1) {
        format!("{}us", d.as_micros())
    } else if d < std::time::Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// The access line of one request:
/// `<METHOD> <path> <status> <code|-> uid=<uid|-> pid=<pid|-> <duration>`.
fn access_line(
    method: &Method,
    path: &str,
    status: StatusCode,
    code: Option<ErrorCode>,
    (uid, pid): (Option<u32>, Option<u32>),
    elapsed: std::time::Duration,
) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(64 + path.len().min(ACCESS_PATH_MAX));
    let _ = write!(line, "{method} ");
    if path.len() > ACCESS_PATH_MAX {
        // A URI path is ASCII (the parser refuses anything else), but cut on a character
        // boundary all the same.
        let mut cut = ACCESS_PATH_MAX;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        line.push_str(path.get(..cut).unwrap_or_default());
        line.push_str("...");
    } else {
        line.push_str(path);
    }
    let _ = write!(
        line,
        " {} {} uid=",
        status.as_u16(),
        code.map_or("-", ErrorCode::as_str)
    );
    match uid {
        Some(uid) => {
            let _ = write!(line, "{uid}");
        }
        None => line.push('-'),
    }
    line.push_str(" pid=");
    match pid {
        Some(pid) => {
            let _ = write!(line, "{pid}");
        }
        None => line.push('-'),
    }
    let _ = write!(line, " {}", human_duration(elapsed));
    line
}

async fn handle(router: Router, shared: Arc<Shared>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let ids = peer_ids(&req);
    let log_access = tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO);
    let path = if log_access {
        req.uri().path().to_owned()
    } else {
        String::new()
    };
    let span = tracing::info_span!(
        "api.request",
        http.method = %method,
        http.route = Empty,
        api.module = Empty,
        http.status = Empty,
        error.code = Empty,
        caller.uid = ids.0,
        caller.pid = ids.1,
    );
    let is_head = method == Method::HEAD;
    let method_label = method.clone();
    let response = async move {
        let (response, counted) = match dot_segment(req.uri().path()) {
            Some(segment) => (
                error_response(
                    ErrorCode::BadRequest,
                    format!("path segment {segment:?} is not allowed"),
                ),
                false,
            ),
            None => {
                let response = match router.oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                let counted = response.extensions().get::<Routed>().is_some();
                (response, counted)
            }
        };
        let response = normalise(response, is_head).await;
        if !counted {
            shared
                .unmatched
                .count(usize::MAX, "-", &method_label, response.status());
        }
        let span = tracing::Span::current();
        span.record("http.status", response.status().as_u16());
        if let Some(ResponseErrorCode(code)) = response.extensions().get::<ResponseErrorCode>() {
            span.record("error.code", code.as_str());
        }
        response
    }
    .instrument(span)
    .await;
    if log_access {
        let code = response
            .extensions()
            .get::<ResponseErrorCode>()
            .map(|ResponseErrorCode(code)| *code);
        let line = access_line(
            &method,
            &path,
            response.status(),
            code,
            ids,
            started.elapsed(),
        );
        tracing::info!(target: ACCESS_TARGET, "{line}");
    }
    response
}

impl Api {
    /// Handles one request (the service's work, without the tower plumbing).
    pub(crate) fn call_boxed(
        &self,
        req: Request,
    ) -> BoxFuture<'static, Result<Response, Infallible>> {
        let router = self.router.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(handle(router, shared, req).map(Ok))
    }
}

impl<B> Service<http::Request<B>> for Api
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.call_boxed(req.map(Body::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for path in [
            "/..",
            "/a/../status",
            "/./status",
            "/a/.",
            "/%2e%2e/install",
            "/%2E%2E/install",
            "/.%2e/x",
            "/%2e./x",
            "/%2e/x",
        ] {
            assert!(dot_segment(path).is_some(), "{path}");
        }
        for path in [
            "/",
            "/status",
            "/a.b/install",
            "/.../x",
            "/..a/x",
            "/%2e%2e%2e",
            "/%2x/x",
            "/v1.2.3",
        ] {
            assert_eq!(dot_segment(path), None, "{path}");
        }
    }

    #[test]
    fn statuses_map_to_codes() {
        assert_eq!(code_for_status(StatusCode::NOT_FOUND), ErrorCode::NotFound);
        assert_eq!(
            code_for_status(StatusCode::UNPROCESSABLE_ENTITY),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_for_status(StatusCode::BAD_GATEWAY),
            ErrorCode::Internal
        );
        assert_eq!(
            code_for_status(StatusCode::SERVICE_UNAVAILABLE),
            ErrorCode::Unavailable
        );
    }
}
