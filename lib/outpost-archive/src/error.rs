//! The crate's one error type, and the API error code each failure is reported with.

use std::fmt;
use std::io;
use std::path::PathBuf;

use outpost_types::ErrorCode;

use crate::digest::Digest;

/// Why unpacking or verifying an archive failed.
///
/// Every variant names what it concerns (the archive entry, the blob, the path); I/O causes are
/// kept as `#[source]`. [`ArchiveError::code`] maps each variant to the API's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
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
}

impl ArchiveError {
    /// The API error code for this failure.
    ///
    /// - [`ErrorCode::Integrity`]: digest or size mismatch, unsafe or corrupt archive, a limit
    ///   exceeded.
    /// - [`ErrorCode::DownloadFailed`]: the source could not be read.
    /// - [`ErrorCode::BadRequest`]: a malformed digest.
    /// - [`ErrorCode::NotEnoughDiskSpace`]: a write failed with `ENOSPC` or `EDQUOT`.
    /// - [`ErrorCode::Filesystem`]: any other local I/O failure.
    /// - [`ErrorCode::Unavailable`]: cancelled (the daemon is stopping the operation).
    /// - [`ErrorCode::Internal`]: the hashing thread died.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsafeEntry { .. }
            | Self::LimitExceeded { .. }
            | Self::CorruptArchive { .. }
            | Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. } => ErrorCode::Integrity,
            Self::Read { .. } => ErrorCode::DownloadFailed,
            Self::Write { source, .. } | Self::Io(source) => io_code(source),
            Self::DestinationNotEmpty { .. } => ErrorCode::Filesystem,
            Self::Cancelled => ErrorCode::Unavailable,
            Self::HashThread { .. } => ErrorCode::Internal,
            Self::InvalidDigest { .. } => ErrorCode::BadRequest,
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

struct AtEntry<'a>(Option<&'a str>);

impl fmt::Display for AtEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, " at entry {e:?}"),
            None => Ok(()),
        }
    }
}

/// How many bytes a source turned out to hold, in a [`ArchiveError::SizeMismatch`].
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
        let write = |errno: rustix::io::Errno| ArchiveError::Write {
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
        let e = ArchiveError::CorruptArchive {
            entry: Some("a/b".into()),
            source: io::Error::other("bad block"),
        };
        assert_eq!(e.to_string(), "corrupt archive at entry \"a/b\": bad block");
        assert!(std::error::Error::source(&e).is_some());
        let e = ArchiveError::SizeMismatch {
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
