//! The report of a daemon or check agent that does not answer on its socket, the same for
//! every client command.

use std::path::Path;

use outpost_api::ClientError;

use crate::ExitStatus;

/// The services the command line talks to over a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The fleet daemon (`outpost daemon`, socket `<root>/run/outpost.sock` or `--socket`).
    Daemon,
    /// The check agent (`outpost agent`, socket `<root>/run/agent.sock`).
    Agent,
}

impl Service {
    /// How the report names the service.
    fn name(self) -> &'static str {
        match self {
            Service::Daemon => "the outpost daemon",
            Service::Agent => "the check agent",
        }
    }

    /// What to do about it.
    fn hint(self) -> &'static str {
        match self {
            Service::Daemon => {
                "start it with `outpost daemon` (and check --root / --socket / OUTPOST_SOCKET)"
            }
            Service::Agent => "start it with `outpost agent` (with the same --root)",
        }
    }
}

/// The two lines printed when `service` does not answer at `socket`: `error[ doing]: <service>
/// is not reachable at <socket>: <cause>`, then a hint to start it.
pub fn unreachable_message(
    doing: Option<&str>,
    service: Service,
    socket: &Path,
    error: &ClientError,
) -> String {
    let doing = doing.map(|d| format!(" {d}")).unwrap_or_default();
    let cause = std::error::Error::source(error)
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    format!(
        "error{doing}: {} is not reachable at {}{cause}\nhint: {}",
        service.name(),
        socket.display(),
        service.hint()
    )
}

/// Prints [`unreachable_message`] on stderr and returns [`ExitStatus::Unreachable`].
pub fn unreachable(
    doing: Option<&str>,
    service: Service,
    socket: &Path,
    error: &ClientError,
) -> ExitStatus {
    eprintln!("{}", unreachable_message(doing, service, socket, error));
    ExitStatus::Unreachable
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_api::{ApiClient, ClientErrorKind};

    /// A real connect to a socket nobody listens on.
    fn refused(socket: &Path) -> ClientError {
        let Ok(runtime) = crate::runtime::current_thread() else {
            panic!("no runtime")
        };
        let client = ApiClient::new(socket);
        match runtime.block_on(client.get::<serde_json::Value>("/status")) {
            Err(e) if e.kind() == ClientErrorKind::NotReachable => e,
            other => panic!("expected not reachable, got {other:?}"),
        }
    }

    #[test]
    fn each_service_is_named_with_its_socket_cause_and_hint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("missing.sock");
        let error = refused(&socket);
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        let cause = cause.expect("a connect error has a cause");
        assert_eq!(
            unreachable_message(Some("getting status"), Service::Daemon, &socket, &error),
            format!(
                "error getting status: the outpost daemon is not reachable at {}: {cause}\n\
                 hint: start it with `outpost daemon` (and check --root / --socket / \
                 OUTPOST_SOCKET)",
                socket.display()
            )
        );
        assert_eq!(
            unreachable_message(None, Service::Agent, &socket, &error),
            format!(
                "error: the check agent is not reachable at {}: {cause}\n\
                 hint: start it with `outpost agent` (with the same --root)",
                socket.display()
            )
        );
    }
}
