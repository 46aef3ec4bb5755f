//! The crate's one error type, and its mapping to the API's error codes.

use std::path::PathBuf;
use std::sync::Arc;

use outpost_types::ErrorCode;

/// Everything the check agent can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No job with this ID is scheduled.
    #[error("no check instance {id} is scheduled")]
    UnknownJob {
        /// The ID asked for.
        id: String,
    },
    /// A job with this ID is already scheduled.
    #[error("check instance {id} is already scheduled")]
    DuplicateJob {
        /// The ID.
        id: String,
    },
    /// The job was removed (a reload) before the requested run.
    #[error("check instance {id} was unscheduled before it could run")]
    JobRemoved {
        /// The ID.
        id: String,
    },
    /// The instance was disabled (by a run over the check memory limit) before the
    /// requested run.
    #[error(
        "check instance {id} is disabled: {reason}; \
         `outpost agent enable {id}` or a reload that changes its configuration enables it"
    )]
    JobDisabled {
        /// The ID.
        id: String,
        /// Why it was disabled.
        reason: crate::scheduler::DisableReason,
    },
    /// A run panicked (a bug in the runtime, reported instead of taking the agent down).
    #[error("the run of {id} panicked: {message}")]
    RunPanicked {
        /// The ID.
        id: String,
        /// The panic message.
        message: String,
    },
    /// A requested run did not finish in time (the check is hung, or busy with a long run).
    #[error("check instance {id} did not finish a run within {}s", waited.as_secs_f64())]
    RunTimedOut {
        /// The ID.
        id: String,
        /// How long the request waited.
        waited: std::time::Duration,
    },
    /// No configuration names this check.
    #[error("no check named '{name}' is configured")]
    UnknownCheck {
        /// The check name asked for.
        name: String,
    },
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// The scheduling loop is gone (after shutdown).
    #[error("the scheduler has stopped")]
    SchedulerStopped,
    /// The scheduler was started outside a tokio runtime.
    #[error("the scheduler must be started inside a tokio runtime")]
    NoRuntime,
    /// Another agent already serves on the socket.
    #[error(
        "another check agent is already serving on {}; refusing to start a second one",
        socket.display()
    )]
    AlreadyRunning {
        /// The socket.
        socket: PathBuf,
    },
    /// Python could not be started, so checks cannot be loaded or run.
    #[error("Python is unavailable: {source}")]
    PythonUnavailable {
        /// Why the runtime did not start.
        #[source]
        source: Arc<outpost_checks::Error>,
    },
    /// The configuration directory could not be read.
    #[error("reading the check configurations in {}: {source}", path.display())]
    ConfDir {
        /// The directory.
        path: PathBuf,
        /// The cause (boxed: it is large).
        #[source]
        source: Box<outpost_checks::Error>,
    },
    /// The `--output` file could not be opened, rotated or written.
    #[error("{op} {}: {source}", path.display())]
    Output {
        /// What was being done.
        op: OutputStep,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is unusable.
    #[error("invalid {key}: {problem}")]
    InvalidConfig {
        /// The key, e.g. `agent.runners`.
        key: &'static str,
        /// What is wrong with it.
        problem: InvalidValue,
    },
    /// A thread of the agent could not be started.
    #[error("cannot start {what}: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A background task of the agent failed (panicked or was cancelled).
    #[error("{what} failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The API could not be built or served.
    #[error(transparent)]
    Api(#[from] outpost_api::Error),
}

/// What is wrong with a configuration value (the parser already checked its type and form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidValue {
    /// A count that must be at least 1 is 0.
    #[error("must be at least 1")]
    Zero,
    /// A duration or size that must be more than 0 is 0.
    #[error("must be more than 0")]
    NotPositive,
}

/// What was being done to the `--output` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStep {
    /// Opening (or creating) it.
    Opening,
    /// Renaming it to `<file>.1` and starting a new one.
    Rotating,
    /// Appending a run's lines.
    Writing,
}

impl std::fmt::Display for OutputStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Opening => "opening",
            Self::Rotating => "rotating",
            Self::Writing => "writing",
        })
    }
}

impl AgentError {
    /// The API error code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownJob { .. } | Self::UnknownCheck { .. } => ErrorCode::NotFound,
            Self::DuplicateJob { .. }
            | Self::JobRemoved { .. }
            | Self::JobDisabled { .. }
            | Self::AlreadyRunning { .. } => ErrorCode::InvalidState,
            Self::RunTimedOut { .. } => ErrorCode::Busy,
            Self::ShuttingDown | Self::SchedulerStopped | Self::PythonUnavailable { .. } => {
                ErrorCode::Unavailable
            }
            Self::InvalidConfig { .. } => ErrorCode::BadRequest,
            Self::ConfDir { .. } | Self::Output { .. } => ErrorCode::Filesystem,
            Self::Api(e) => e.code(),
            Self::RunPanicked { .. }
            | Self::NoRuntime
            | Self::Task { .. }
            | Self::Thread { .. } => ErrorCode::Internal,
        }
    }
}

impl From<AgentError> for outpost_api::ErrorResponse {
    fn from(e: AgentError) -> Self {
        outpost_api::ErrorResponse::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            AgentError::UnknownCheck { name: "x".into() }.code(),
            ErrorCode::NotFound
        );
        assert_eq!(AgentError::ShuttingDown.code(), ErrorCode::Unavailable);
        let r: outpost_api::ErrorResponse = AgentError::UnknownJob { id: "a:1".into() }.into();
        assert_eq!(r.status().as_u16(), 404);
        assert!(r.api_error().message.contains("a:1"));
    }
}
