//! The production [`Job`]: a Python check instance of the embedded runtime.
//!
//! # Runner threads keep a Python thread state
//! The embedding API creates a Python thread state when a thread without one attaches, and
//! destroys it when the thread detaches: for a runner thread that is, per run, an allocation
//! of the thread state, an `mmap`/`munmap` of the 16 KiB frame stack (with the TLB shootdown
//! that `munmap` sends to the other cores) and a page fault. Like rtloader's goroutines pinned
//! to their OS thread, a runner thread here creates its thread state on its first run and keeps
//! it (detached, the GIL released) until the thread ends; later attaches on that thread find
//! it and only take the GIL.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost_checks::{CheckInstance, LoadedCheck, RunReport};
use serde::Serialize;

use crate::scheduler::{Job, JobReport, RunSummary};

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

/// The thread state this thread keeps, and the `PyGILState_Ensure` result to release it with.
struct PinnedThreadState(
    Cell<Option<(pyo3::ffi::PyGILState_STATE, *mut pyo3::ffi::PyThreadState)>>,
);

impl Drop for PinnedThreadState {
    fn drop(&mut self) {
        if let Some((state, tstate)) = self.0.take() {
            // SAFETY: `tstate` is this thread's own, saved by `PyEval_SaveThread` in
            // `pin_thread_state` and never restored since; the interpreter is never finalized,
            // so restoring it (taking the GIL) then releasing the `PyGILState_Ensure` that
            // created it (which deletes it and drops the GIL) is the documented pairing.
            unsafe {
                pyo3::ffi::PyEval_RestoreThread(tstate);
                pyo3::ffi::PyGILState_Release(state);
            }
        }
    }
}

thread_local! {
    static PINNED: PinnedThreadState = const { PinnedThreadState(Cell::new(None)) };
}

/// Gives this thread a Python thread state that outlives the attaches of single runs (see
/// the module docs). Only for threads that are not attached to the interpreter, once it runs.
fn pin_thread_state() {
    PINNED.with(|p| {
        if p.0.get().is_none() {
            // SAFETY: the interpreter is initialised (a `PythonCheck` exists only once the
            // runtime started) and this thread is not attached (runner threads only attach
            // inside `CheckInstance` calls, which have returned). `PyGILState_Ensure` creates
            // the thread state and takes the GIL; `PyEval_SaveThread` releases the GIL and
            // keeps the thread state for later attaches of this thread.
            let pinned = unsafe {
                let state = pyo3::ffi::PyGILState_Ensure();
                (state, pyo3::ffi::PyEval_SaveThread())
            };
            p.0.set(Some(pinned));
        }
    });
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
        pin_thread_state();
        self.instance.run()
    }

    fn cancel(&self) {
        pin_thread_state();
        if let Err(e) = self.instance.cancel() {
            tracing::warn!(check.id = %self.instance.id(), error = %e, "cancel() failed");
        }
    }
}

impl JobReport for RunReport {
    fn summary(&self) -> RunSummary {
        let s = &self.submissions;
        RunSummary {
            error: self.error.clone(),
            warnings: self.warnings.clone(),
            metric_count: s.metrics.len(),
            service_check_count: s.service_checks.len(),
            event_count: s.events.len(),
            histogram_bucket_count: s.histogram_buckets.len(),
        }
    }
}
