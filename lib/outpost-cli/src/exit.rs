//! The exit status of every outpost command (`spec/cli.md`), mapped to the process's exit code
//! in one place.

use std::process::ExitCode;

/// How a command ended. Commands return this; only `main` turns it into an [`ExitCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what was asked (exit code 0).
    Success,
    /// The operation failed; the reason is on stderr (exit code 1).
    Failure,
    /// The command line was wrong in a way the parser could not tell (exit code 2, as clap
    /// uses for its own usage errors).
    Usage,
    /// The daemon or the check agent does not answer on its socket (exit code 3).
    Unreachable,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Usage => ExitCode::from(2),
            ExitStatus::Unreachable => ExitCode::from(3),
        }
    }
}

impl ExitStatus {
    /// [`Success`](Self::Success) when `ok`, else [`Failure`](Self::Failure).
    pub fn from_success(ok: bool) -> Self {
        if ok { Self::Success } else { Self::Failure }
    }
}
