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

#[cfg(test)]
mod tests {
    use super::*;

    /// `ExitCode` has no equality; its debug form shows the code.
    fn code(status: ExitStatus) -> String {
        format!("{:?}", ExitCode::from(status))
    }

    #[test]
    fn each_status_has_the_code_of_spec_cli_md() {
        assert_eq!(
            code(ExitStatus::Success),
            format!("{:?}", ExitCode::SUCCESS)
        );
        for (status, n) in [
            (ExitStatus::Failure, 1u8),
            (ExitStatus::Usage, 2),
            (ExitStatus::Unreachable, 3),
        ] {
            assert_eq!(
                code(status),
                format!("{:?}", ExitCode::from(n)),
                "{status:?}"
            );
        }
        assert_eq!(ExitStatus::from_success(true), ExitStatus::Success);
        assert_eq!(ExitStatus::from_success(false), ExitStatus::Failure);
    }
}
