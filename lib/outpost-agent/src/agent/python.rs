//! The Python side of the agent: the runtime, or why it is unavailable.

use std::sync::{Arc, PoisonError};

use outpost_checks::{PythonInfo, Runtime, RuntimeConfig};
use serde::Serialize;

use super::{Agent, AgentOptions};

/// The Python side of the agent.
#[derive(Debug, Clone)]
pub(super) enum Python {
    Ready(Runtime),
    Unavailable(Arc<outpost_checks::Error>),
}

/// The Python runtime's status, as `/checks` and `/debug/vars` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PythonStatus {
    /// Checks can run.
    pub available: bool,
    /// Why not, when not.
    pub error: Option<String>,
    /// The interpreter's details, when it runs.
    #[serde(flatten)]
    pub info: Option<PythonInfo>,
}

/// Starts the embedded runtime (once per process), unless one was given.
///
/// A failure is logged as an error once: when it has the same text as `previous` (the
/// failure of the last attempt, on a retry) it is only logged at debug level.
pub(super) fn start_python(options: &AgentOptions, previous: Option<&str>) -> Python {
    if let Some(rt) = &options.runtime {
        return Python::Ready(rt.clone());
    }
    let config = RuntimeConfig::new(&options.python_venv, options.root.join("run"))
        .with_checks_dir(&options.checks_dir)
        .with_agent_config(options.agent.clone());
    match Runtime::start(config) {
        Ok(rt) => Python::Ready(rt),
        Err(e) => {
            if previous == Some(e.to_string().as_str()) {
                tracing::debug!(error = %e, "Python still cannot start");
            } else {
                tracing::error!(
                    error = %e,
                    python.venv = %options.python_venv.display(),
                    "Python is unavailable: no check can run; the API keeps serving"
                );
            }
            Python::Unavailable(Arc::new(e))
        }
    }
}

/// True for start-up failures found before the interpreter started, which a later start
/// may not hit (the venv was created or fixed meanwhile).
pub(super) fn retryable(e: &outpost_checks::Error) -> bool {
    use outpost_checks::Error as E;
    matches!(
        e,
        E::VenvMissing { .. }
            | E::VenvUnreadable { .. }
            | E::NotAVenv { .. }
            | E::VenvVersionMismatch { .. }
    )
}

impl Agent {
    pub(super) fn python(&self) -> Python {
        self.inner
            .python
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The runtime, if Python runs.
    pub fn runtime(&self) -> Option<Runtime> {
        match self.python() {
            Python::Ready(rt) => Some(rt),
            Python::Unavailable(_) => None,
        }
    }

    /// The Python runtime's status.
    pub fn python_status(&self) -> PythonStatus {
        match self.python() {
            Python::Ready(rt) => PythonStatus {
                available: true,
                error: None,
                info: Some(rt.python().clone()),
            },
            Python::Unavailable(e) => PythonStatus {
                available: false,
                error: Some(e.to_string()),
                info: None,
            },
        }
    }

    pub(super) async fn retry_python(&self) {
        let previous = match &self.python() {
            Python::Unavailable(e) if retryable(e) => e.to_string(),
            _ => return,
        };
        let options = self.inner.options.clone();
        if let Ok(python) =
            tokio::task::spawn_blocking(move || start_python(&options, Some(&previous))).await
        {
            let ok = matches!(python, Python::Ready(_));
            *self
                .inner
                .python
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = python;
            if ok {
                tracing::info!("Python started on reload");
            }
        }
    }
}
