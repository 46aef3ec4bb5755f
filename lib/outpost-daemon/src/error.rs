//! The daemon's error type, and its mapping to the API's `{"error": {"message", "code"}}`.

use std::path::{Path, PathBuf};

use outpost_types::ErrorCode;
use outpost_types::error::ApiError;
use outpost_types::{PackageName, Version};

use crate::hooks::HookError;

/// Why an operation is not valid in a package's current state (409 `invalid_state`).
#[derive(Debug, thiserror::Error)]
pub enum StateConflict {
    /// An experiment start on a package with no stable version.
    #[error("package {package} is not installed: install a stable version first")]
    NotInstalled {
        /// The package.
        package: PackageName,
    },
    /// A config experiment start on a package with no stable version.
    #[error("package {package} is not installed: install it before starting a config experiment")]
    NotInstalledForConfig {
        /// The package.
        package: PackageName,
    },
    /// An experiment start of the stable version.
    #[error("{version} is already the stable version of {package}")]
    AlreadyStable {
        /// The package.
        package: PackageName,
        /// The version asked for.
        version: Version,
    },
    /// An install of the stable version with other extensions.
    #[error(
        "{version} is already the stable version of {package}: extensions are changed by \
         installing another version"
    )]
    ExtensionsOfStable {
        /// The package.
        package: PackageName,
        /// The version asked for.
        version: Version,
    },
    /// A promote with no experiment.
    #[error("no experiment to promote")]
    NoExperiment,
    /// A config experiment start of the stable config.
    #[error("config {id} is already the stable config of {package}")]
    ConfigAlreadyStable {
        /// The package.
        package: PackageName,
        /// The config's deployment id.
        id: String,
    },
}

/// Everything a daemon operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A catalog holds an invalid entry (set by `POST /catalog`, or read back).
    #[error(transparent)]
    InvalidCatalog(#[from] outpost_types::wire::CatalogError),
    /// An extension name breaks the naming rule.
    #[error(transparent)]
    InvalidExtensionName(#[from] outpost_fetch::extension::ExtensionNameError),
    /// An environment variable the daemon reads holds a value it cannot use.
    #[error("{name}: {source}")]
    InvalidEnvironment {
        /// The variable.
        name: &'static str,
        /// Why its value is refused.
        #[source]
        source: outpost_types::wire::DurationError,
    },
    /// No catalog entry for this package and version on this host.
    #[error(
        "could not get package {package}, {} for {arch}, {os}: not in the catalog",
        .version.as_deref().unwrap_or("any version")
    )]
    PackageNotFound {
        /// Package asked for.
        package: String,
        /// Version asked for; `None` when the request let the catalog choose.
        version: Option<String>,
        /// Host architecture.
        arch: &'static str,
        /// Host OS.
        os: &'static str,
    },
    /// The operation is not valid in the package's current state.
    #[error(transparent)]
    InvalidState(#[from] StateConflict),
    /// Not enough free space for the package.
    #[error("not enough disk space at {}: {available} bytes available, {required} bytes required", root.display())]
    NotEnoughDiskSpace {
        /// Filesystem checked.
        root: PathBuf,
        /// Free bytes.
        available: u64,
        /// Bytes needed.
        required: u64,
    },
    /// The state file could not be read or written.
    #[error("state file {}: {source}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// The state file holds something it should not.
    #[error("state file {} is corrupt: {source}", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The repository refused or failed.
    #[error(transparent)]
    Repo(#[from] outpost_repo::RepoError),
    /// A config operation was refused or failed (never carries a secret).
    #[error(transparent)]
    Config(#[from] outpost_config::ConfigError),
    /// Fetching or unpacking the package failed.
    #[error(transparent)]
    Fetch(#[from] outpost_fetch::FetchError),
    /// A lifecycle hook failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// A filesystem operation of the daemon itself failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The key of encrypted secrets could not be loaded, or a secret could not be opened.
    #[error(transparent)]
    Secrets(#[from] outpost_secrets::SecretsError),
    /// The fleet poller's state could not be encoded for `fleet-state.json`.
    #[error("internal error: could not encode the fleet state: {0}")]
    EncodeFleetState(#[source] serde_json::Error),
    /// A task the daemon spawned (an operation, a blocking step, the start-up) panicked or was
    /// cancelled.
    #[error("internal error: {what} failed: {source}")]
    TaskFailed {
        /// Which task: `operation task`, `blocking task`, `start-up task`.
        what: &'static str,
        /// The panic or cancellation.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The `/status` body could not be encoded.
    #[error("internal error: could not encode the status: {0}")]
    EncodeStatus(#[source] serde_json::Error),
    /// A persisted experiment watch names a version that is not a valid one.
    #[error("internal error: watch of {package} has an invalid version")]
    WatchVersion {
        /// The package of the watch.
        package: String,
    },
    /// An install without a version, and the catalog has several for this host.
    #[error(
        "a version is required: the catalog has {} versions of {package} ({})",
        versions.len(),
        versions.join(", ")
    )]
    VersionRequired {
        /// The package.
        package: String,
        /// The catalog's versions of it for this host.
        versions: Vec<String>,
    },
    /// The version of a request is not a valid version.
    #[error(transparent)]
    InvalidVersion(#[from] outpost_types::NameError),
    /// The experiment watch stopped the experiment: the operation succeeded, and its task
    /// records this code (`health_check_failed`, `experiment_expired`) and message.
    #[error("{message}")]
    RolledBack {
        /// The task's error code.
        code: ErrorCode,
        /// Why, with the health command's last output.
        message: String,
    },
    /// A hook failed after the switch it follows had been made: the switch stands (or was
    /// undone, for `post-experiment-start`), and the message says which.
    #[error("{now_true}{} its {}", if *undone { ":" } else { ", but" }, hook.short())]
    HookAfterSwitch {
        /// What is true on disk now, e.g. `7.51.0 is now stable`.
        now_true: String,
        /// Whether the switch was undone because of the hook.
        undone: bool,
        /// The hook's failure (not a `source`: its text is already in the message).
        hook: Box<HookError>,
    },
    /// The package is not in the state the request's `expected_state` gives: nothing was
    /// done, and the task records state `INVALID_STATE`.
    #[error(
        "{package}: the host's state is not the expected one, nothing was done: expected \
         {expected}, the host has {host}"
    )]
    UnexpectedState {
        /// The package.
        package: String,
        /// What the request expected.
        expected: Box<outpost_types::wire::ExpectedState>,
        /// What the host has.
        host: Box<crate::ops::expected::HostState>,
    },
    /// An experiment watch was about to act, but its experiment ended or changed first:
    /// nothing was done and no task recorded.
    #[error("the experiment watch of {package} was superseded")]
    Superseded {
        /// The package.
        package: String,
    },
    /// A local change of a package the fleet's document manages, without `"force": true`.
    #[error(
        "package {package} is managed by the fleet document (generation {generation}); \
         change it by publishing a new document, or pass \"force\": true to override locally"
    )]
    ManagedByFleet {
        /// The package.
        package: String,
        /// The generation of the document that manages it.
        generation: u64,
    },
    /// A local catalog that adds, removes or changes an entry of a package the fleet's
    /// document manages, without `"force": true`.
    #[error(
        "the catalog {change} the entries of {package}, which the fleet document manages \
         (generation {generation}); keep that package's entries as `GET /catalog` shows them, \
         publish a new document, or pass \"force\": true to override locally"
    )]
    CatalogManagedByFleet {
        /// The first managed package whose entries differ.
        package: String,
        /// `adds`, `removes` or `changes`.
        change: &'static str,
        /// The generation of the document that manages it.
        generation: u64,
    },
}

impl DaemonError {
    pub(crate) fn state(path: &Path, source: redb::Error) -> Self {
        Self::State {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }

    pub(crate) fn corrupt(path: &Path, source: serde_json::Error) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The API error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidCatalog(_)
            | Self::InvalidExtensionName(_)
            | Self::InvalidEnvironment { .. } => ErrorCode::BadRequest,
            Self::PackageNotFound { .. } => ErrorCode::PackageNotFound,
            Self::InvalidState(_) => ErrorCode::InvalidState,
            Self::NotEnoughDiskSpace { .. } => ErrorCode::NotEnoughDiskSpace,
            Self::State { .. } | Self::Corrupt { .. } | Self::Io(_) => ErrorCode::Filesystem,
            Self::Repo(e) => e.code(),
            Self::Secrets(e) => e.code(),
            Self::Config(e) => e.code(),
            // A source the catalog names that turns out not to be a readable package (no
            // layout there, a malformed image) is not a bad request of the caller: the
            // request was valid, the package could not be fetched.
            Self::Fetch(e) => match e.code() {
                ErrorCode::BadRequest => ErrorCode::DownloadFailed,
                code => code,
            },
            Self::Hook(_) | Self::HookAfterSwitch { .. } => ErrorCode::HookFailed,
            Self::EncodeFleetState(_)
            | Self::TaskFailed { .. }
            | Self::EncodeStatus(_)
            | Self::WatchVersion { .. } => ErrorCode::Internal,
            Self::VersionRequired { .. } | Self::InvalidVersion(_) => ErrorCode::BadRequest,
            Self::RolledBack { code, .. } => *code,
            Self::Superseded { .. } | Self::UnexpectedState { .. } => ErrorCode::InvalidState,
            Self::ManagedByFleet { .. } | Self::CatalogManagedByFleet { .. } => {
                ErrorCode::ManagedByFleet
            }
        }
    }

    /// True for an answer that refuses the request before anything changed: the state does
    /// not allow it (409), the package is not in the catalog (422), or the request is invalid
    /// (400). Such a refusal does not replace the package's last task. An `expected_state`
    /// mismatch is not one: its task is recorded, with state `INVALID_STATE`.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::UnexpectedState { .. })
            && matches!(
                self.code(),
                ErrorCode::InvalidState
                    | ErrorCode::Busy
                    | ErrorCode::PackageNotFound
                    | ErrorCode::BadRequest
            )
            && !self.is_watch_outcome()
    }

    /// True for the two ends of a watch's action that are not failures to act: the watch
    /// stopped the experiment, or found it had nothing to act on.
    pub fn is_watch_outcome(&self) -> bool {
        matches!(self, Self::RolledBack { .. } | Self::Superseded { .. })
    }
}

impl DaemonError {
    /// The message for people: this error and its causes, joined with ": " (a cause whose
    /// text the message already ends with is not repeated). `Display` alone stops at the
    /// first line of some errors (the repository's name the step and path, their `source`
    /// says what the system answered, e.g. "No space left on device").
    pub fn message(&self) -> String {
        outpost_types::error_chain(self)
    }
}

impl From<&DaemonError> for ApiError {
    fn from(e: &DaemonError) -> Self {
        ApiError::new(e.code(), e.message())
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        ApiError::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_causes() {
        let io = std::io::Error::from_raw_os_error(28); // ENOSPC
        let repo = outpost_repo::RepoError::Filesystem {
            op: "write",
            path: "/r/x".into(),
            source: io,
        };
        let e = DaemonError::from(repo);
        let api = ApiError::from(&e);
        assert!(api.message.contains("/r/x"), "{}", api.message);
        assert!(
            api.message.contains("No space left on device"),
            "{}",
            api.message
        );
        assert_eq!(
            api.message.matches("No space left").count(),
            1,
            "{}",
            api.message
        );
    }
}
