//! The production [`Job`]: a Python check instance of the embedded runtime.
//!
//! Runner threads keep a Python thread state from their first run until they end
//! ([`outpost_checks::thread_state`]): a run then only takes the GIL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost_checks::{CheckError, CheckInstance, LoadedCheck, RunReport};
use serde::Serialize;

use crate::scheduler::{DisableReason, Job, JobError, JobReport, RunSummary};

/// Where a check's code came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckSource {
    /// The check name.
    pub name: String,
    /// `__version__` of its module, or `unversioned`.
    pub version: String,
    /// The module it was imported as.
    pub module: String,
    /// True for an installed integration (`datadog_checks.<name>`), false for a custom check
    /// from the checks directory (validated once by the agent).
    pub integration: bool,
    /// The module's file.
    pub file: Option<PathBuf>,
}

impl CheckSource {
    /// The source of a loaded check.
    pub fn of(loaded: &LoadedCheck) -> Self {
        Self {
            name: loaded.name.clone(),
            version: loaded.version.clone(),
            module: loaded.module.clone(),
            integration: loaded.loaded_as_wheel,
            file: loaded.file.clone(),
        }
    }
}

/// A check instance scheduled by the agent.
#[derive(Debug)]
pub struct PythonCheck {
    instance: CheckInstance,
    source: Arc<CheckSource>,
    timeout: Option<Duration>,
}

impl PythonCheck {
    /// Wraps a loaded instance. `timeout`: the run timeout (`None`: its interval).
    pub fn new(
        instance: CheckInstance,
        source: Arc<CheckSource>,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            instance,
            source,
            timeout,
        }
    }

    /// The instance.
    pub fn instance(&self) -> &CheckInstance {
        &self.instance
    }

    /// Where its code came from.
    pub fn source(&self) -> &CheckSource {
        &self.source
    }

    /// The configuration file it comes from.
    pub fn config_path(&self) -> &Path {
        self.instance.config_path()
    }
}

impl Job for PythonCheck {
    type Report = RunReport;

    fn id(&self) -> &str {
        self.instance.id().as_str()
    }

    fn interval(&self) -> Duration {
        self.instance.interval()
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn run(&self) -> RunReport {
        outpost_checks::thread_state::pin();
        self.instance.run()
    }

    fn cancel(&self) {
        outpost_checks::thread_state::pin();
        if let Err(e) = self.instance.cancel() {
            tracing::warn!(check.id = %self.instance.id(), error = %e, "cancel() failed");
        }
    }
}

impl JobReport for RunReport {
    fn summary(&self) -> RunSummary {
        let s = &self.submissions;
        RunSummary {
            error: self.error.as_ref().map(run_error),
            warnings: self.warnings.clone(),
            metric_count: s.metrics.len(),
            service_check_count: s.service_checks.len(),
            event_count: s.events.len(),
            histogram_bucket_count: s.histogram_buckets.len(),
        }
    }

    /// A run stopped by the check memory limit disables its instance.
    fn disable(&self) -> Option<DisableReason> {
        self.memory_limit.map(|m| DisableReason::MemoryLimit {
            limit_bytes: m.limit_bytes,
            inuse_bytes: m.inuse_bytes,
        })
    }
}

/// A check's error as the scheduler keeps it.
pub(crate) fn run_error(e: &CheckError) -> JobError {
    JobError {
        message: e.message.clone(),
        traceback: e.traceback.clone(),
    }
}

/// A run's error as the check views show it.
pub(crate) fn check_error_of_run(e: &JobError) -> CheckError {
    CheckError {
        message: e.message.clone(),
        traceback: e.traceback.clone(),
    }
}
