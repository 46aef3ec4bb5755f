//! The crate's one error type, and the API error code each failure is reported with.

use std::fmt;
use std::io;
use std::path::PathBuf;

use outpost_archive::{ArchiveError, Digest};
use outpost_types::ErrorCode;

/// Why reading, pulling, pushing or packing an OCI image failed.
///
/// Every variant names what it concerns (the blob, the document, the path, the reference); I/O
/// causes are kept as `#[source]`. Failures of the unpacker are carried whole in
/// [`OciError::Archive`]. [`OciError::code`] maps each variant to the API's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// Unpacking or verifying a blob failed (digest, size, unsafe entry, limits, cancel).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A filesystem operation failed (the error names its path).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A directory is not an OCI image layout.
    #[error("{} is not an OCI image layout: {reason}", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A JSON document (index, manifest, `oci-layout`) does not parse.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// The document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An image document parses but breaks a rule (size, media type, annotation value).
    #[error("{what}: {reason}")]
    BadImage {
        /// The document.
        what: String,
        /// The rule it breaks.
        reason: String,
    },
    /// No manifest in the index is for the host platform.
    #[error("no matching image found in the index of {origin} for {os}/{arch}")]
    NoMatchingImage {
        /// The layout or reference searched.
        origin: String,
        /// The host OS.
        os: String,
        /// The host architecture.
        arch: String,
    },
    /// The manifest lacks a package annotation.
    #[error(
        "manifest {manifest} is missing the package {field} annotation \
         (com.datadoghq.package.{field} or dev.outpost.package.{field})"
    )]
    MissingAnnotation {
        /// The manifest's digest.
        manifest: Digest,
        /// `name` or `version`.
        field: &'static str,
    },
    /// An extension asked for is not a layer of the image.
    #[error("extension {name:?} is not in {image} (it has: {available})")]
    ExtensionNotFound {
        /// The extension asked for.
        name: String,
        /// The image, for people (`oci://...`, a layout path).
        image: String,
        /// The extensions the image has, comma-separated, or `none`.
        available: String,
    },
    /// The image holds another package or version than the one asked for.
    #[error(
        "the image is {found_name} {found_version}, but {want_name} {want_version} was asked for"
    )]
    PackageMismatch {
        /// The name asked for.
        want_name: String,
        /// The version asked for.
        want_version: String,
        /// The name in the manifest.
        found_name: String,
        /// The version in the manifest.
        found_version: String,
    },
    /// The image configuration does not describe the manifest's layers (no `rootfs`, another
    /// number of `diff_ids`).
    #[error("config {config}: {reason}")]
    ConfigMismatch {
        /// The config blob's digest.
        config: Digest,
        /// What does not match.
        reason: String,
    },
    /// A blob named by a descriptor is not in the layout.
    #[error("blob {digest} is missing from {}: {source}", path.display())]
    MissingBlob {
        /// The blob's digest.
        digest: Digest,
        /// Where it was looked for.
        path: PathBuf,
        /// The error opening it.
        #[source]
        source: io::Error,
    },
    /// The directory given to `pack` holds something that cannot be packed.
    #[error("cannot pack {}: {reason}", path.display())]
    PackInput {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output of `pack` exists and is not an empty directory.
    #[error("output {} already exists and is not an empty directory", path.display())]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// A registry or an HTTP server could not be reached, or refused a request. The message
    /// names what was being fetched or pushed and ends with the chain of causes; it never
    /// holds a credential.
    #[error("{what}: {problem}{}", Causes(source.as_deref()))]
    Remote {
        /// What was being fetched or pushed: `oci://host/repo:tag`, `blob sha256:... of ...`,
        /// `https://host/pkg.tar.gz`.
        what: String,
        /// What went wrong, for a person.
        problem: RemoteProblem,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The password file of a registry cannot be read.
    #[error("cannot read the password file {} for registry {host}: {source}", path.display())]
    Credentials {
        /// The registry host the credentials are for.
        host: String,
        /// The password file.
        path: PathBuf,
        /// The error reading it.
        #[source]
        source: io::Error,
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
    /// The registry settings or a reference cannot be used as given.
    #[error("{reason}")]
    BadSettings {
        /// What is wrong, naming the setting or the reference.
        reason: String,
    },
}

impl OciError {
    /// The API error code for this failure.
    ///
    /// - That of the [`ArchiveError`] for [`OciError::Archive`] (a digest or size mismatch of
    ///   a blob, the config included, or of a layer's uncompressed content is
    ///   [`ErrorCode::Integrity`]).
    /// - [`ErrorCode::Integrity`]: a config that does not describe the manifest's layers.
    /// - [`ErrorCode::DownloadFailed`]: a blob is missing, no image for the host platform, the
    ///   image holds another package, a registry or HTTP server failed or refused
    ///   ([`OciError::Remote`]), a password file cannot be read.
    /// - [`ErrorCode::BadRequest`]: a malformed layout, image document or pack input; unusable
    ///   registry settings.
    /// - [`ErrorCode::NotEnoughDiskSpace`] or [`ErrorCode::Filesystem`]: local I/O.
    /// - [`ErrorCode::Internal`]: a task of the operation died.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Archive(e) => e.code(),
            Self::Io(e) => io_code(e),
            Self::Remote { .. }
            | Self::Credentials { .. }
            | Self::MissingBlob { .. }
            | Self::NoMatchingImage { .. }
            | Self::PackageMismatch { .. } => ErrorCode::DownloadFailed,
            Self::ConfigMismatch { .. } => ErrorCode::Integrity,
            Self::ExtensionNotFound { .. } => ErrorCode::ExtensionNotFound,
            Self::TaskFailed { .. } => ErrorCode::Internal,
            Self::NotALayout { .. }
            | Self::Json { .. }
            | Self::BadImage { .. }
            | Self::MissingAnnotation { .. }
            | Self::PackInput { .. }
            | Self::OutputExists { .. }
            | Self::BadSettings { .. } => ErrorCode::BadRequest,
        }
    }

    /// True when the failure says the content is not what was expected or not safe to install
    /// (the [`ErrorCode::Integrity`] family).
    pub fn is_integrity(&self) -> bool {
        self.code() == ErrorCode::Integrity
    }
}

fn io_code(e: &io::Error) -> ErrorCode {
    match e.raw_os_error() {
        Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() => ErrorCode::NotEnoughDiskSpace,
        Some(c) if c == rustix::io::Errno::DQUOT.raw_os_error() => ErrorCode::NotEnoughDiskSpace,
        _ => ErrorCode::Filesystem,
    }
}

/// Renders the chain of causes of an error as `: cause: cause...`, skipping a cause whose text
/// the previous one already holds.
struct Causes<'a>(Option<&'a (dyn std::error::Error + Send + Sync + 'static)>);

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self.0 {
            Some(e) => Some(e),
            None => None,
        };
        while let Some(e) = next {
            let text = e.to_string();
            if !text.is_empty() && !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            next = e.source();
        }
        Ok(())
    }
}

/// What went wrong talking to a registry or an HTTP server, in a [`OciError::Remote`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteProblem {
    /// The server asked for credentials (HTTP 401): none are configured for the host, or the
    /// ones configured were refused.
    Unauthorized {
        /// The host that refused.
        host: String,
        /// The user whose credentials were sent, if any.
        username: Option<String>,
    },
    /// The server refused access with the credentials sent (HTTP 403, `DENIED`).
    Forbidden {
        /// The host that refused.
        host: String,
    },
    /// The tag, digest, repository or blob does not exist (HTTP 404).
    NotFound {
        /// What the server said.
        detail: String,
    },
    /// Another HTTP status or registry error.
    Status {
        /// The HTTP status, when known.
        status: Option<u16>,
        /// What the server said.
        detail: String,
    },
    /// The network failed (connection refused or reset, timeout, a server error) on every
    /// attempt.
    Network {
        /// How many attempts were made.
        attempts: u32,
    },
    /// The TLS connection to a host that is not listed as insecure failed.
    Tls {
        /// The host.
        host: String,
    },
    /// The server broke the protocol (a wrong range, a missing header).
    Protocol {
        /// What it did.
        detail: String,
    },
    /// The body ran past the size the manifest or the catalog gives (an endless or oversized
    /// body): the download stopped there.
    TooLong {
        /// The size expected, in bytes.
        size: u64,
    },
    /// The body delivered less than `min_bytes` in `timeout` of waiting
    /// (`registry.stall_timeout`), on every attempt.
    Stalled {
        /// The stall timeout.
        timeout: std::time::Duration,
        /// The least a body must deliver per timeout.
        min_bytes: u64,
    },
}

impl fmt::Display for RemoteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized {
                host,
                username: Some(user),
            } => write!(
                f,
                "registry {host} refused the credentials of user {user:?} (HTTP 401): check \
                 registry.username and registry.password_file, or registry.auths.\"{host}\", in \
                 the configuration"
            ),
            Self::Unauthorized {
                host,
                username: None,
            } => write!(
                f,
                "registry {host} requires credentials (HTTP 401) and none are configured for it: \
                 set registry.username and registry.password_file, or registry.auths.\"{host}\", in \
                 the configuration"
            ),
            Self::Forbidden { host } => write!(
                f,
                "registry {host} denied access with the configured credentials (HTTP 403)"
            ),
            Self::NotFound { detail } => write!(f, "not found (HTTP 404): {detail}"),
            Self::Status {
                status: Some(s),
                detail,
            } => write!(f, "the server answered HTTP {s}: {detail}"),
            Self::Status {
                status: None,
                detail,
            } => write!(f, "the registry refused the request: {detail}"),
            Self::Network { attempts: 1 } => f.write_str("network failure"),
            Self::Network { attempts } => write!(f, "network failure on all {attempts} attempts"),
            Self::Tls { host } => write!(
                f,
                "the TLS connection to {host} failed; if this registry serves plain HTTP, list \
                 \"{host}\" in registry.insecure_hosts of the configuration"
            ),
            Self::Protocol { detail } => f.write_str(detail),
            Self::TooLong { size } => write!(
                f,
                "size exceeded: the server sent more than the {size} bytes expected"
            ),
            Self::Stalled { timeout, min_bytes } => write!(
                f,
                "the transfer stalled: less than {min_bytes} bytes in {} ms \
                 (registry.stall_timeout)",
                timeout.as_millis()
            ),
        }
    }
}
