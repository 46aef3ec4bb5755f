//! The crate's one error type, and the API error code each failure is reported with.

use outpost_archive::ArchiveError;
use outpost_oci::OciError;
use outpost_types::ErrorCode;

/// Why fetching a package failed.
///
/// Failures of the unpacker are always [`FetchError::Archive`] (also when they happened
/// while an image was unpacked: the conversion from [`OciError`] lifts them out), those of
/// images, registries and HTTP servers [`FetchError::Oci`]. [`FetchError::code`] maps each to
/// the API's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Unpacking or verifying failed: digest or size mismatch, unsafe or corrupt archive, a
    /// limit exceeded, local I/O, cancelled.
    #[error(transparent)]
    Archive(ArchiveError),
    /// An image, a registry or an HTTP server failed or refused.
    #[error(transparent)]
    Oci(OciError),
    /// A tarball's catalog entry has no `sha256`, so it cannot be verified.
    #[error("{url}: a tarball needs a sha256 in its catalog entry")]
    MissingSha256 {
        /// The tarball's URL.
        url: String,
    },
    /// A task of the operation (the unpacking thread of a download) panicked or was
    /// cancelled.
    #[error("{what}: the task stopped unexpectedly: {source}")]
    TaskFailed {
        /// What the task was doing.
        what: String,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<ArchiveError> for FetchError {
    fn from(e: ArchiveError) -> Self {
        Self::Archive(e)
    }
}

impl From<OciError> for FetchError {
    fn from(e: OciError) -> Self {
        match e {
            OciError::Archive(a) => Self::Archive(a),
            other => Self::Oci(other),
        }
    }
}

impl FetchError {
    /// The API error code for this failure: that of the [`ArchiveError`] or [`OciError`];
    /// [`ErrorCode::BadRequest`] for a tarball without a sha256; [`ErrorCode::Internal`] when
    /// a task died.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Archive(e) => e.code(),
            Self::Oci(e) => e.code(),
            Self::MissingSha256 { .. } => ErrorCode::BadRequest,
            Self::TaskFailed { .. } => ErrorCode::Internal,
        }
    }

    /// True when the failure says the content is not what was expected or not safe to install
    /// (the [`ErrorCode::Integrity`] family).
    pub fn is_integrity(&self) -> bool {
        self.code() == ErrorCode::Integrity
    }

    /// The unpacker's failure, when it is one.
    pub fn archive(&self) -> Option<&ArchiveError> {
        match self {
            Self::Archive(e) => Some(e),
            _ => None,
        }
    }

    /// The image's, registry's or HTTP server's failure, when it is one.
    pub fn oci(&self) -> Option<&OciError> {
        match self {
            Self::Oci(e) => Some(e),
            _ => None,
        }
    }
}
