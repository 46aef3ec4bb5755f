//! The crate's one error type, and the API error code each failure is reported with.

use std::fmt;
use std::io;
use std::path::PathBuf;

use outpost_types::ErrorCode;

use crate::digest::Digest;

/// Why fetching, unpacking or packing failed.
///
/// Every variant names what it concerns (the archive entry, the blob, the path); I/O causes are
/// kept as `#[source]`. [`FetchError::code`] maps each variant to the API's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// An archive entry broke one of the safe-unpacking rules.
    #[error("unsafe archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as the archive spells it (lossily decoded).
        entry: String,
        /// The rule it broke.
        reason: UnsafeReason,
    },
    /// An archive entry went over one of the configured [`Limits`](crate::Limits).
    #[error("archive entry {entry:?} goes over the {limit} limit of {max}")]
    LimitExceeded {
        /// The entry that went over.
        entry: String,
        /// Which limit.
        limit: LimitKind,
        /// The configured maximum.
        max: u64,
    },
    /// The archive or its compressed stream is malformed.
    #[error("corrupt archive{}: {source}", AtEntry(entry.as_deref()))]
    CorruptArchive {
        /// The entry being read, when known.
        entry: Option<String>,
        /// What the decoder or tar reader reported.
        #[source]
        source: io::Error,
    },
    /// The content's sha256 is not the expected one.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The tarball or blob.
        what: String,
        /// The digest that was asked for.
        expected: Digest,
        /// The digest of what was read.
        actual: Digest,
    },
    /// The content's size is not the expected one.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The tarball or blob.
        what: String,
        /// The size that was asked for.
        expected: u64,
        /// What was read.
        actual: SizeSeen,
    },
    /// Reading the source failed.
    #[error("reading {what}: {source}")]
    Read {
        /// The tarball or blob.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing into the destination failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The path being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed (the error names its path).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The destination of an unpack is not an empty directory.
    #[error("destination {} is not an empty directory", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The operation was cancelled through its [`Cancel`](crate::Cancel) handle.
    #[error("cancelled")]
    Cancelled,
    /// The internal hashing thread stopped before the end of the stream.
    #[error("{what}: the hashing thread stopped unexpectedly")]
    HashThread {
        /// The tarball or blob.
        what: String,
    },
    /// A digest string is malformed or not sha256.
    #[error("invalid digest {value:?}: expected sha256:<64 hex digits>")]
    InvalidDigest {
        /// The string given.
        value: String,
    },
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

impl FetchError {
    /// The API error code for this failure.
    ///
    /// - [`ErrorCode::Integrity`]: digest or size mismatch, unsafe or corrupt archive, a limit
    ///   exceeded.
    /// - [`ErrorCode::DownloadFailed`]: the source could not be read, a blob is missing, no image
    ///   for the host platform, the image holds another package, a registry or HTTP server
    ///   failed or refused ([`FetchError::Remote`]), a password file cannot be read.
    /// - [`ErrorCode::BadRequest`]: a malformed digest, layout, image document or pack input;
    ///   unusable registry settings.
    /// - [`ErrorCode::NotEnoughDiskSpace`]: a write failed with `ENOSPC` or `EDQUOT`.
    /// - [`ErrorCode::Filesystem`]: any other local I/O failure.
    /// - [`ErrorCode::Unavailable`]: cancelled (the daemon is stopping the operation).
    /// - [`ErrorCode::Internal`]: the hashing thread or the unpacking task died.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsafeEntry { .. }
            | Self::LimitExceeded { .. }
            | Self::CorruptArchive { .. }
            | Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. } => ErrorCode::Integrity,
            Self::Read { .. }
            | Self::Remote { .. }
            | Self::Credentials { .. }
            | Self::MissingBlob { .. }
            | Self::NoMatchingImage { .. }
            | Self::PackageMismatch { .. } => ErrorCode::DownloadFailed,
            Self::Write { source, .. } | Self::Io(source) => io_code(source),
            Self::DestinationNotEmpty { .. } => ErrorCode::Filesystem,
            Self::Cancelled => ErrorCode::Unavailable,
            Self::HashThread { .. } | Self::TaskFailed { .. } => ErrorCode::Internal,
            Self::InvalidDigest { .. }
            | Self::NotALayout { .. }
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

/// What went wrong talking to a registry or an HTTP server, in a [`FetchError::Remote`].
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
        }
    }
}

struct AtEntry<'a>(Option<&'a str>);

impl fmt::Display for AtEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, " at entry {e:?}"),
            None => Ok(()),
        }
    }
}

/// How many bytes a source turned out to hold, in a [`FetchError::SizeMismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSeen {
    /// The stream ended after exactly this many bytes.
    Exactly(u64),
    /// The stream went on past this many bytes; reading stopped there.
    MoreThan(u64),
}

impl fmt::Display for SizeSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exactly(n) => write!(f, "{n}"),
            Self::MoreThan(n) => write!(f, "more than {n}"),
        }
    }
}

/// Which of the [`Limits`](crate::Limits) an archive went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_entries`.
    Entries,
    /// `max_file_bytes`.
    FileBytes,
    /// `max_total_bytes`.
    TotalBytes,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Entries => "entry count",
            Self::FileBytes => "per-file size",
            Self::TotalBytes => "total unpacked size",
        })
    }
}

/// The safe-unpacking rule an archive entry broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsafeReason {
    /// The path is empty (or only `.` components) for an entry that is not a directory.
    EmptyPath,
    /// The path starts with `/`.
    AbsolutePath,
    /// The path has a `..` component.
    ParentComponent,
    /// The path is not UTF-8.
    NotUtf8,
    /// The path holds a NUL byte or another control character.
    ControlCharacter,
    /// The path holds a backslash, which other systems read as a separator.
    Backslash,
    /// A component is over 255 bytes or the path over 4095.
    TooLong,
    /// A name field of the tar header has bytes after its terminating NUL.
    NulInHeaderField,
    /// The path was already created by an earlier entry or an earlier layer.
    Duplicate,
    /// A parent component of the path is not a directory (a file or a symlink).
    BelowNonDirectory {
        /// The component that is not a directory.
        parent: String,
    },
    /// A symlink points to an absolute path.
    SymlinkAbsolute {
        /// The link's target.
        target: String,
    },
    /// A symlink's target leaves the package directory.
    SymlinkEscapes {
        /// The link's target.
        target: String,
    },
    /// A symlink's target uses `..` after a name, which only the filesystem (not the archive)
    /// could resolve.
    SymlinkInnerParent {
        /// The link's target.
        target: String,
    },
    /// A symlink's target is empty, not UTF-8, or holds control characters.
    SymlinkBadTarget,
    /// A hard link.
    HardLink {
        /// The link's target.
        target: String,
    },
    /// An entry type that is never written (devices, fifos, sparse files, ...).
    UnsupportedType {
        /// What the entry is.
        kind: String,
    },
    /// A PAX `size` record disagrees with the header's size.
    PaxSizeMismatch,
}

impl fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyPath => f.write_str("empty path"),
            Self::AbsolutePath => f.write_str("absolute path"),
            Self::ParentComponent => f.write_str("path has a `..` component"),
            Self::NotUtf8 => f.write_str("path is not UTF-8"),
            Self::ControlCharacter => f.write_str("path holds a NUL or control character"),
            Self::Backslash => f.write_str("path holds a backslash"),
            Self::TooLong => f.write_str("path or one of its components is too long"),
            Self::NulInHeaderField => {
                f.write_str("a name field of the header has data after its NUL terminator")
            }
            Self::Duplicate => f.write_str(
                "duplicate entry: the path was already created by an earlier entry or layer",
            ),
            Self::BelowNonDirectory { parent } => {
                write!(f, "entry below {parent:?}, which is not a directory")
            }
            Self::SymlinkAbsolute { target } => {
                write!(f, "symlink to the absolute path {target:?}")
            }
            Self::SymlinkEscapes { target } => {
                write!(f, "symlink target {target:?} leaves the package directory")
            }
            Self::SymlinkInnerParent { target } => write!(
                f,
                "symlink target {target:?} uses `..` after a name (only leading `..` are allowed)"
            ),
            Self::SymlinkBadTarget => {
                f.write_str("symlink target is empty, not UTF-8, or holds control characters")
            }
            Self::HardLink { target } => write!(f, "hard link to {target:?}"),
            Self::UnsupportedType { kind } => write!(f, "{kind} entries are not allowed"),
            Self::PaxSizeMismatch => f.write_str("PAX size record disagrees with the header"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disks_are_reported_as_such() {
        let write = |errno: rustix::io::Errno| FetchError::Write {
            path: "/x".into(),
            source: io::Error::from_raw_os_error(errno.raw_os_error()),
        };
        assert_eq!(
            write(rustix::io::Errno::NOSPC).code(),
            ErrorCode::NotEnoughDiskSpace
        );
        assert_eq!(
            write(rustix::io::Errno::DQUOT).code(),
            ErrorCode::NotEnoughDiskSpace
        );
        assert_eq!(write(rustix::io::Errno::FBIG).code(), ErrorCode::Filesystem);
        assert_eq!(
            write(rustix::io::Errno::ACCESS).code(),
            ErrorCode::Filesystem
        );
    }

    #[test]
    fn messages_name_what_they_concern() {
        let e = FetchError::CorruptArchive {
            entry: Some("a/b".into()),
            source: io::Error::other("bad block"),
        };
        assert_eq!(e.to_string(), "corrupt archive at entry \"a/b\": bad block");
        assert!(std::error::Error::source(&e).is_some());
        let e = FetchError::SizeMismatch {
            what: "tarball x".into(),
            expected: 3,
            actual: SizeSeen::MoreThan(3),
        };
        assert_eq!(
            e.to_string(),
            "tarball x: size mismatch: expected 3 bytes, got more than 3"
        );
    }
}
