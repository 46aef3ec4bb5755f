//! The stable machine words of the API's error body, `{"error": {"message", "code"}}`, and
//! the HTTP status each one is answered with. This is the one place that maps failures to
//! statuses; every crate reports its errors as an [`ErrorCode`] plus a message for people.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid body or path parameter (400).
    BadRequest,
    /// A body whose Content-Type is missing or not `application/json` (415).
    UnsupportedMediaType,
    /// Unknown route (404).
    NotFound,
    /// Known path, wrong method (405).
    MethodNotAllowed,
    /// The caller may not use this route (403).
    Forbidden,
    /// The body is over the size limit (413).
    PayloadTooLarge,
    /// Package and version not in the catalog (422).
    PackageNotFound,
    /// The package is not installed (404).
    NotInstalled,
    /// Downloading the package failed (502).
    DownloadFailed,
    /// A digest or size did not match (502).
    Integrity,
    /// Not enough free space for the package (507).
    NotEnoughDiskSpace,
    /// A filesystem operation failed (500).
    Filesystem,
    /// The operation is not valid in the package's current state (409).
    InvalidState,
    /// The package is in use and cannot be changed now (409).
    Busy,
    /// The module serving this route is stopped (503).
    Unavailable,
    /// Anything else (500).
    Internal,
    /// A lifecycle hook of the package failed (500); the message says what is now true.
    HookFailed,
    /// An experiment was stopped by the daemon because its health command failed (a task
    /// error, never an HTTP answer; 409 if it ever is one).
    HealthCheckFailed,
    /// An experiment was stopped by the daemon because it reached its deadline without a
    /// promote (a task error, never an HTTP answer; 409 if it ever is one).
    ExperimentExpired,
    /// An extension asked for (or kept from the version before) is not in the package's
    /// image (422).
    ExtensionNotFound,
    /// The package is managed by the fleet's desired-state document: a local change needs
    /// `"force": true` (409).
    ManagedByFleet,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 21] = [
        Self::BadRequest,
        Self::UnsupportedMediaType,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Forbidden,
        Self::PayloadTooLarge,
        Self::PackageNotFound,
        Self::NotInstalled,
        Self::DownloadFailed,
        Self::Integrity,
        Self::NotEnoughDiskSpace,
        Self::Filesystem,
        Self::InvalidState,
        Self::Busy,
        Self::Unavailable,
        Self::Internal,
        Self::HookFailed,
        Self::HealthCheckFailed,
        Self::ExperimentExpired,
        Self::ExtensionNotFound,
        Self::ManagedByFleet,
    ];

    /// The HTTP status code this error is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::UnsupportedMediaType => 415,
            Self::NotFound | Self::NotInstalled => 404,
            Self::MethodNotAllowed => 405,
            Self::Forbidden => 403,
            Self::PayloadTooLarge => 413,
            Self::PackageNotFound | Self::ExtensionNotFound => 422,
            Self::DownloadFailed | Self::Integrity => 502,
            Self::NotEnoughDiskSpace => 507,
            Self::Filesystem | Self::Internal | Self::HookFailed => 500,
            Self::InvalidState
            | Self::Busy
            | Self::HealthCheckFailed
            | Self::ExperimentExpired
            | Self::ManagedByFleet => 409,
            Self::Unavailable => 503,
        }
    }

    /// The code as it appears on the wire, e.g. `"invalid_state"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PackageNotFound => "package_not_found",
            Self::NotInstalled => "not_installed",
            Self::DownloadFailed => "download_failed",
            Self::Integrity => "integrity",
            Self::NotEnoughDiskSpace => "not_enough_disk_space",
            Self::Filesystem => "filesystem",
            Self::InvalidState => "invalid_state",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::HookFailed => "hook_failed",
            Self::HealthCheckFailed => "health_check_failed",
            Self::ExperimentExpired => "experiment_expired",
            Self::ExtensionNotFound => "extension_not_found",
            Self::ManagedByFleet => "managed_by_fleet",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the API reports it: a code for machines and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong, for people.
    pub message: String,
    /// What went wrong, for machines.
    pub code: ErrorCode,
}

impl ApiError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }
}

/// An error and its causes, joined with ": ", each cause once: a cause whose text the message
/// already ends with (errors that print their source themselves) is not repeated. This is the
/// message for people wherever an error chain reaches the API or the terminal.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The body of every error response: `{"error": {"message": "...", "code": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn chains_name_each_cause_once() {
        let e = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(error_chain(&e), "outer: middle: disk on fire");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::InvalidState.http_status(), 409);
        assert_eq!(ErrorCode::PackageNotFound.http_status(), 422);
        assert_eq!(ErrorCode::NotEnoughDiskSpace.http_status(), 507);
        assert_eq!(ErrorCode::ManagedByFleet.http_status(), 409);
        let body = ErrorBody {
            error: ApiError::new(ErrorCode::Busy, "in use"),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"message":"in use","code":"busy"}}"#
        );
    }
}
