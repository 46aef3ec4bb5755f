//! The crate's error type ([`Error`]) and the HTTP error response handlers return
//! ([`ErrorResponse`]).

use std::path::PathBuf;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use outpost_types::error::{ApiError, ErrorBody, ErrorCode};

use crate::json::JSON_CONTENT_TYPE;

/// Everything that can go wrong while assembling an API, binding its listeners or recording
/// telemetry. Client-side failures have their own type, [`crate::client::ClientError`], because
/// the CLI needs to tell "not reachable" apart from "the API said no".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A module name is not a single lower-case path segment.
    #[error(
        "invalid module name {name:?}: expected 1..64 of [a-z0-9_-] (or a root module, mounted at /)"
    )]
    InvalidModuleName {
        /// The rejected name.
        name: String,
    },
    /// A route path is malformed (must start with `/`, no empty, `.` or `..` segments).
    #[error("invalid route {method} {path:?} in module {module:?}: {reason}")]
    InvalidRoute {
        /// The module the route was registered in.
        module: String,
        /// The HTTP method.
        method: String,
        /// The rejected path.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Two different route templates would match the same requests (e.g. `/{a}/x` and `/{b}/x`).
    #[error("route {path:?} of module {module:?} conflicts with another route: {source}")]
    RouteConflict {
        /// The full path of the route that could not be added.
        path: String,
        /// The module the route belongs to.
        module: String,
        /// The router's explanation.
        #[source]
        source: matchit::InsertError,
    },
    /// A live server already answers on the socket path.
    #[error("another outpost daemon is listening on {path}; refusing to replace its socket")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket sits at the socket path; it is never removed.
    #[error("{path} exists and is not a socket ({kind}); refusing to remove it")]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What the file is (regular file, directory, symlink, ...).
        kind: &'static str,
    },
    /// A filesystem operation on the socket path or its directory failed.
    #[error("could not {op} {path}")]
    Io {
        /// What was being done (e.g. `create the socket directory`).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Binding the Unix socket failed.
    #[error("could not bind the API socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Binding the TCP listener failed.
    #[error("could not listen on TCP {addr}")]
    BindTcp {
        /// The requested address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// [`crate::server::Server::serve`] was called with no listener bound.
    #[error("no listener bound: call bind_unix or bind_tcp before serve")]
    NoListener,
    /// A metric was used with a different type than it was first registered with.
    #[error("metric {name:?} is a {existing}, not a {requested}")]
    MetricKindConflict {
        /// The (sanitised) metric name.
        name: String,
        /// The type it was registered with.
        existing: &'static str,
        /// The type the caller asked for.
        requested: &'static str,
    },
    /// A counter was asked to go down or to add a non-finite amount.
    #[error(
        "counter {name:?} cannot be increased by {value}: counters only go up by finite amounts"
    )]
    InvalidCounterIncrement {
        /// The (sanitised) metric name.
        name: String,
        /// The rejected increment.
        value: f64,
    },
    /// Histogram bucket bounds are empty, unsorted or not finite.
    #[error("histogram {name:?} has invalid buckets: {reason}")]
    InvalidBuckets {
        /// The (sanitised) metric name.
        name: String,
        /// Why they were rejected.
        reason: &'static str,
    },
    /// Reading a caller's `/proc/<pid>/cgroup` failed (e.g. the process is gone).
    #[error("could not read the cgroup of process {pid}")]
    CallerLookup {
        /// The caller's pid.
        pid: u32,
        /// The cause (names the file).
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The API error code this failure is reported with, should it reach an HTTP response.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MetricKindConflict { .. }
            | Self::InvalidCounterIncrement { .. }
            | Self::InvalidBuckets { .. } => ErrorCode::BadRequest,
            Self::InvalidModuleName { .. }
            | Self::InvalidRoute { .. }
            | Self::RouteConflict { .. }
            | Self::SocketInUse { .. }
            | Self::NotASocket { .. }
            | Self::Bind { .. }
            | Self::BindTcp { .. }
            | Self::NoListener
            | Self::CallerLookup { .. } => ErrorCode::Internal,
            Self::Io { .. } => ErrorCode::Filesystem,
        }
    }
}

/// An error answered over HTTP: status from [`ErrorCode::http_status`], body
/// `{"error":{"message":"...","code":"..."}}` plus a newline, `Content-Type: application/json`.
///
/// Handlers return it as the error half of their `Result`; other crates convert their own
/// error enums into it with `impl From<TheirError> for ErrorResponse` (map each variant to an
/// [`ErrorCode`] and keep the message for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    error: ApiError,
    allow: Option<HeaderValue>,
}

impl ErrorResponse {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ApiError::new(code, message),
            allow: None,
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `500 internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// `405 method_not_allowed` with an `Allow` header listing `allow`.
    pub(crate) fn method_not_allowed(
        method: &http::Method,
        path: &str,
        allow: HeaderValue,
    ) -> Self {
        let mut e = Self::new(
            ErrorCode::MethodNotAllowed,
            format!(
                "method {method} is not allowed on {path} (allowed: {})",
                allow.to_str().unwrap_or("?")
            ),
        );
        e.allow = Some(allow);
        e
    }

    /// The error as it goes on the wire.
    pub fn api_error(&self) -> &ApiError {
        &self.error
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        Self { error, allow: None }
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error.message, self.error.code)
    }
}

impl std::error::Error for ErrorResponse {}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.error.code;
        let body = ErrorBody { error: self.error };
        let mut bytes = match serde_json::to_vec(&body) {
            Ok(bytes) => bytes,
            // Serialising two strings cannot fail; keep a fixed body in case it ever does.
            Err(_) => {
                br#"{"error":{"message":"could not encode the error","code":"internal"}}"#.to_vec()
            }
        };
        bytes.push(b'\n');
        let mut response = crate::json::finished_json(status, Bytes::from(bytes));
        response.extensions_mut().insert(ResponseErrorCode(code));
        if let Some(allow) = self.allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

/// The code of an error response, carried as a response extension from where the error is
/// built ([`ErrorResponse::into_response`]) to the middleware's access line, so the body is
/// never parsed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseErrorCode(pub(crate) ErrorCode);

/// Makes the JSON error response for `code` without going through a handler.
pub(crate) fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    ErrorResponse::new(code, message).into_response()
}

/// `Content-Type` of every JSON response.
pub(crate) fn json_content_type() -> HeaderValue {
    HeaderValue::from_static(JSON_CONTENT_TYPE)
}
