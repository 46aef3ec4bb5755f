//! The agent: the Python runtime, the configurations it loaded, the scheduler, the sinks and
//! the validation of custom checks.
//!
//! * `options`: what it starts with; `python`: the runtime or why it is unavailable;
//! * `reload`: loading and reloading `conf.d`; `load_error`: what failed to load;
//! * `validation`: custom checks validated once each; `observer`: runs into the sinks;
//! * `run_now`: `check run` through the agent; `views`: what the API shows;
//! * `disabled`: instances a run over the check memory limit disabled, and enabling them.

mod disabled;
mod load_error;
mod observer;
mod options;
mod python;
mod reload;
mod run_now;
mod validation;
mod views;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use outpost_checks::Validation;

pub use self::disabled::{DisabledView, EnableSummary};
pub use self::load_error::LoadError;
pub use self::options::{AgentOptions, OutputOptions};
pub use self::python::PythonStatus;
pub use self::reload::ReloadSummary;
pub use self::views::{ChecksView, InstanceView};

use self::disabled::DisabledInstance;
use self::load_error::check_error;
use self::observer::Sinks;
use self::python::{Python, start_python};
use crate::check::PythonCheck;
use crate::error::AgentError;
use crate::scheduler::{Scheduler, ShutdownReport};
use crate::sinks::{JsonLines, SeriesStore};

#[derive(Debug, Default)]
struct Loaded {
    jobs: BTreeMap<String, Arc<PythonCheck>>,
    /// Instances a run disabled: no longer scheduled, their Python object let go.
    disabled: BTreeMap<String, DisabledInstance>,
    errors: Vec<LoadError>,
    /// Custom checks already sent for validation (once per name).
    validated: HashSet<String>,
}

struct Inner {
    options: AgentOptions,
    python: Mutex<Python>,
    scheduler: Scheduler<PythonCheck>,
    store: Arc<SeriesStore>,
    output: Option<Arc<JsonLines>>,
    /// Shared with the sinks, which move a disabled instance from `jobs` to `disabled`.
    loaded: Arc<Mutex<Loaded>>,
    reload_lock: tokio::sync::Mutex<()>,
    validations: Arc<Mutex<BTreeMap<String, Validation>>>,
    validator: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    started: Instant,
    reloads: AtomicU64,
}

/// The check agent. Cheap to clone; all clones are one agent.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts the agent: the output file, the Python runtime (failing that, the agent runs
    /// without checks and says why), the scheduler, and a first load of the configurations
    /// (a configuration directory that cannot be read is reported in the load errors and
    /// leaves the agent without checks until a reload succeeds). Must run inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`AgentError::Output`] when `--output` cannot be opened; [`AgentError::InvalidConfig`];
    /// [`AgentError::Thread`]; [`AgentError::Task`].
    pub async fn start(options: AgentOptions) -> Result<Agent, AgentError> {
        let output = match &options.output {
            Some(o) => Some(Arc::new(JsonLines::open(&o.path, o.max_bytes)?)),
            None => None,
        };
        let python = {
            let options = options.clone();
            tokio::task::spawn_blocking(move || start_python(&options, None))
                .await
                .map_err(|source| AgentError::Task {
                    what: "starting Python",
                    source,
                })?
        };
        let store = Arc::new(SeriesStore::new());
        let loaded = Arc::new(Mutex::new(Loaded::default()));
        let scheduler = Scheduler::start(
            options.scheduler.clone(),
            Arc::new(Sinks {
                store: Arc::clone(&store),
                output: output.clone(),
                format: Arc::clone(&options.format),
                failures: observer::FailureLog::default(),
                loaded: Arc::clone(&loaded),
            }),
        )?;
        let agent = Agent {
            inner: Arc::new(Inner {
                options,
                python: Mutex::new(python),
                scheduler,
                store,
                output,
                loaded,
                reload_lock: tokio::sync::Mutex::new(()),
                validations: Arc::new(Mutex::new(BTreeMap::new())),
                validator: Mutex::new(None),
                started: Instant::now(),
                reloads: AtomicU64::new(0),
            }),
        };
        match agent.load().await {
            Ok(summary) => tracing::info!(
                instances = summary.added.len(),
                load_errors = summary.errors.len(),
                conf_dir = %agent.inner.options.conf_dir.display(),
                "check configurations loaded"
            ),
            // An unreadable configuration directory does not keep the agent (and its API)
            // down: it runs no check, says why, and a reload tries again.
            Err(AgentError::ConfDir { path, source }) => {
                tracing::error!(
                    conf_dir = %path.display(),
                    error = %source,
                    "cannot read the check configurations; no check runs until a reload succeeds"
                );
                agent.loaded().errors = vec![LoadError {
                    check: None,
                    config: Some(path),
                    index: None,
                    check_id: None,
                    error: check_error(&source),
                }];
            }
            Err(e) => return Err(e),
        }
        Ok(agent)
    }

    /// The options the agent started with.
    pub fn options(&self) -> &AgentOptions {
        &self.inner.options
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler<PythonCheck> {
        &self.inner.scheduler
    }

    /// The sink holding the latest values for the Prometheus endpoint.
    pub fn series(&self) -> &SeriesStore {
        &self.inner.store
    }

    /// The `--output` file, when there is one.
    pub fn output(&self) -> Option<&JsonLines> {
        self.inner.output.as_deref()
    }

    /// Time since the agent started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops scheduling, cancels every check and waits up to the grace period for runs in
    /// progress; stops the validation thread.
    ///
    /// # Errors
    /// [`AgentError::SchedulerStopped`] when already stopped.
    pub async fn shutdown(&self) -> Result<ShutdownReport, AgentError> {
        self.inner
            .validator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.inner
            .scheduler
            .shutdown(self.inner.options.shutdown_grace)
            .await
    }
}
