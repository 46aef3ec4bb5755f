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

    /// What to do about it; `given` is the `--root` / `--socket` flags the user gave (with a
    /// leading space), repeated so the hint's command can be copied as it is.
    fn hint(self, given: &str) -> String {
        match self {
            Service::Daemon => format!(
                "start it with `outpost daemon{given}` (or pass the --root / --socket of a \
                 running daemon)"
            ),
            Service::Agent => format!("start it with `outpost agent{given}`"),
        }
    }
}

/// Whether the connect failed because the caller may not use the socket.
pub fn is_permission_denied(error: &ClientError) -> bool {
    std::error::Error::source(error)
        .and_then(|c| c.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
}

/// The `--json` error code of an unreachable service: `permission_denied` or `not_reachable`.
pub fn unreachable_code(error: &ClientError) -> &'static str {
    if is_permission_denied(error) {
        "permission_denied"
    } else {
        "not_reachable"
    }
}

/// The message printed when `service` does not answer at `socket`, without the `error...:`
/// prefix: `<service> is not reachable at <socket>: <cause>` then a hint line. A permission
/// error says so instead, and how to be let in (`api.allow_uids` / `api.allow_gids`, or
/// `sudo`). `given` holds the `--root` / `--socket` flags the user gave, repeated in the hint.
pub fn unreachable_text(
    service: Service,
    socket: &Path,
    error: &ClientError,
    given: &str,
) -> String {
    if is_permission_denied(error) {
        let uid = rustix::process::getuid().as_raw();
        return format!(
            "permission denied while connecting to {} at {}\nhint: ask an administrator to add \
             your uid ({uid}) to api.allow_uids, or a group of yours to api.allow_gids, in the \
             configuration, or run the command as root (`sudo outpost <command>{given}`)",
            service.name(),
            socket.display(),
        );
    }
    let cause = std::error::Error::source(error)
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    format!(
        "{} is not reachable at {}{cause}\nhint: {}",
        service.name(),
        socket.display(),
        service.hint(given)
    )
}

/// [`unreachable_text`] prefixed by `error[ doing]: `.
pub fn unreachable_message(
    doing: Option<&str>,
    service: Service,
    socket: &Path,
    error: &ClientError,
    given: &str,
) -> String {
    let doing = doing.map(|d| format!(" {d}")).unwrap_or_default();
    format!(
        "error{doing}: {}",
        unreachable_text(service, socket, error, given)
    )
}

/// Prints [`unreachable_message`] on stderr (and, with `json`, the error document on stdout)
/// and returns [`ExitStatus::Unreachable`].
pub fn unreachable(
    doing: Option<&str>,
    service: Service,
    socket: &Path,
    error: &ClientError,
    given: &str,
    json: bool,
) -> ExitStatus {
    eprintln!(
        "{}",
        unreachable_message(doing, service, socket, error, given)
    );
    if json {
        crate::output::print_error_json(
            unreachable_code(error),
            &unreachable_text(service, socket, error, given),
        );
    }
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
            unreachable_message(
                Some("getting status"),
                Service::Daemon,
                &socket,
                &error,
                " --root /r"
            ),
            format!(
                "error getting status: the outpost daemon is not reachable at {}: {cause}\n\
                 hint: start it with `outpost daemon --root /r` (or pass the --root / --socket \
                 of a running daemon)",
                socket.display()
            )
        );
        assert_eq!(
            unreachable_message(None, Service::Agent, &socket, &error, ""),
            format!(
                "error: the check agent is not reachable at {}: {cause}\n\
                 hint: start it with `outpost agent`",
                socket.display()
            )
        );
    }
}
