//! The repository's one error type.

use std::io;
use std::path::PathBuf;

use outpost_types::{ErrorCode, PackageName, Version};

/// Why an operation failed. Every variant names the package or path it concerns; filesystem
/// failures keep their [`io::Error`] as the [`source`](std::error::Error::source).
///
/// `Display` is one line for people; [`RepoError::detail`] appends the causes;
/// [`RepoError::code`] is the API's machine word.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The package has no (resolvable) `stable` link.
    #[error("package {package} is not installed")]
    NotInstalled {
        /// The package asked for.
        package: PackageName,
    },
    /// The operation does not apply to the package's current state.
    #[error("{}", .reason.message(.package))]
    InvalidState {
        /// The package asked for.
        package: PackageName,
        /// What is wrong with its state.
        reason: InvalidStateReason,
    },
    /// A version of the package is locked by a live process.
    #[error(
        "package {package} is in use: version {version} is locked by process {}",
        join_pids(.pids)
    )]
    Busy {
        /// The package asked for.
        package: PackageName,
        /// The locked version.
        version: Version,
        /// The live processes holding it.
        pids: Vec<u32>,
    },
    /// Another process holds the repository's writer lock.
    #[error(
        "the repository at {} is in use by another process (it holds {})",
        .root.display(),
        .lock.display()
    )]
    WriterLocked {
        /// The repository root.
        root: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// What `flock` answered.
        #[source]
        source: io::Error,
    },
    /// A filesystem step failed (or a failure point was injected there).
    #[error("could not {op} {}", .path.display())]
    Filesystem {
        /// What was being done, as a verb phrase.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path the repository owns is not a directory (for example a symlink planted where a
    /// package directory belongs). The repository refuses to follow it.
    #[error("{} is not a directory; refusing to use it", .path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// The root, `packages/`, `tmp/` or `run/` is owned by another user or writable by group
    /// or others, so someone other than the repository's owner could plant links in it. The
    /// repository refuses to open or change anything until the operator fixes it.
    #[error("{} {reason}; refusing to use it", .path.display())]
    UnsafeDirectory {
        /// The offending directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: UnsafeReason,
    },
    /// `tmp/` and `packages/` are on different filesystems, so a staged tree cannot be renamed
    /// into place atomically.
    #[error(
        "{} and {} are on different filesystems; staging must be renamed into place atomically",
        .tmp.display(),
        .packages.display()
    )]
    CrossFilesystem {
        /// The staging directory.
        tmp: PathBuf,
        /// The packages directory.
        packages: PathBuf,
    },
    /// A staging directory from another repository was handed to an operation.
    #[error(
        "staging directory {} does not belong to the repository at {}",
        .path.display(),
        .root.display()
    )]
    ForeignStaging {
        /// The staging directory.
        path: PathBuf,
        /// This repository's root.
        root: PathBuf,
    },
}

/// Why a repository directory is unsafe to use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsafeReason {
    /// Owned by another uid than the process's effective uid.
    Owner {
        /// The directory's owner.
        owner: u32,
        /// The uid the repository runs as.
        expected: u32,
    },
    /// Writable by its group or by others.
    Writable {
        /// The directory's permission bits.
        mode: u32,
    },
}

impl std::fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Owner { owner, expected } => {
                write!(f, "is owned by uid {owner}, not by uid {expected}")
            }
            Self::Writable { mode } => {
                write!(f, "is writable by group or others (mode {mode:o})")
            }
        }
    }
}

/// What makes an operation invalid in the package's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidStateReason {
    /// Promote with no experiment running.
    NoExperimentToPromote,
    /// An experiment needs a stable version to run beside.
    NotInstalled,
    /// The experiment's version is the stable one.
    AlreadyStable(Version),
    /// Config promote with no config experiment running.
    NoConfigExperimentToPromote,
    /// The config experiment's deployment is the stable config.
    ConfigAlreadyStable(Version),
}

impl InvalidStateReason {
    /// The message for people. For [`InvalidStateReason::NoExperimentToPromote`] it is exactly
    /// `no experiment to promote`, as the Datadog daemon words it.
    pub fn message(&self, package: &PackageName) -> String {
        match self {
            Self::NoExperimentToPromote => "no experiment to promote".to_owned(),
            Self::NotInstalled => format!(
                "cannot start an experiment: package {package} is not installed (install a stable version first)"
            ),
            Self::AlreadyStable(version) => format!(
                "cannot start an experiment: version {version} of package {package} is already stable"
            ),
            Self::NoConfigExperimentToPromote => "no config experiment to promote".to_owned(),
            Self::ConfigAlreadyStable(id) => format!(
                "cannot start a config experiment: deployment {id} is already the stable config of package {package}"
            ),
        }
    }
}

impl RepoError {
    /// The API's error code for this failure.
    ///
    /// A filesystem failure whose cause is a full disk or an exhausted quota maps to
    /// [`ErrorCode::NotEnoughDiskSpace`]; other filesystem failures to [`ErrorCode::Filesystem`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotInstalled { .. } => ErrorCode::NotInstalled,
            Self::InvalidState { .. } => ErrorCode::InvalidState,
            Self::Busy { .. } | Self::WriterLocked { .. } => ErrorCode::Busy,
            Self::Filesystem { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                    ErrorCode::NotEnoughDiskSpace
                }
                _ => ErrorCode::Filesystem,
            },
            Self::NotADirectory { .. }
            | Self::UnsafeDirectory { .. }
            | Self::CrossFilesystem { .. } => ErrorCode::Filesystem,
            Self::ForeignStaging { .. } => ErrorCode::Internal,
        }
    }

    /// The message followed by every cause in the source chain, joined with `": "`, for a
    /// report that must stand on its own (an API error body, a log line without a chain).
    pub fn detail(&self) -> String {
        outpost_types::error_chain(self)
    }

    pub(crate) fn fs(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Filesystem {
            op,
            path: path.into(),
            source,
        }
    }
}

fn join_pids(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg() -> PackageName {
        PackageName::new("datadog-agent").unwrap()
    }

    #[test]
    fn promote_message_is_exact() {
        let err = RepoError::InvalidState {
            package: pkg(),
            reason: InvalidStateReason::NoExperimentToPromote,
        };
        assert_eq!(err.to_string(), "no experiment to promote");
        assert_eq!(err.code(), ErrorCode::InvalidState);
    }

    #[test]
    fn codes() {
        let busy = RepoError::Busy {
            package: pkg(),
            version: Version::new("7.50.0").unwrap(),
            pids: vec![12, 34],
        };
        assert_eq!(busy.code(), ErrorCode::Busy);
        assert_eq!(
            busy.to_string(),
            "package datadog-agent is in use: version 7.50.0 is locked by process 12, 34"
        );
        let full = RepoError::fs(
            "sync the staged tree",
            "/x",
            io::Error::from(io::ErrorKind::StorageFull),
        );
        assert_eq!(full.code(), ErrorCode::NotEnoughDiskSpace);
        let eio = RepoError::fs("sync the staged tree", "/x", io::Error::other("EIO"));
        assert_eq!(eio.code(), ErrorCode::Filesystem);
        assert_eq!(
            RepoError::NotInstalled { package: pkg() }.code(),
            ErrorCode::NotInstalled
        );
    }

    #[test]
    fn detail_appends_causes() {
        let err = RepoError::fs(
            "rename",
            "/r/packages/p/1",
            io::Error::other("No space left on device"),
        );
        assert_eq!(
            err.detail(),
            "could not rename /r/packages/p/1: No space left on device"
        );
    }
}
