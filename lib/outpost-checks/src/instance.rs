//! One loaded check instance and its runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use pyo3::prelude::*;
use pyo3::types::PyList;
use serde::{Deserialize, Serialize};

use crate::collector::{self, Collector, CurrentCheck};
use crate::conf_d::InstanceSettings;
use crate::error::Error;
use crate::id::CheckId;
use crate::memtrack::{self, MemoryStats, OwnerGuard, Slot};
use crate::pyutil::{capture, display};
use crate::submission::{ExternalTags, Submissions};

/// An error a run reported: the check's exception (from the base class's JSON report) or
/// the failure to call `run()` at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckError {
    /// The message (`str(exception)` for check exceptions).
    pub message: String,
    /// The Python traceback (may be empty).
    pub traceback: String,
}

/// A run stopped by the check memory limit (`agent.check_memory_limit`): an allocation was
/// refused because it would have taken the instance past the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLimitExceeded {
    /// The limit, in bytes.
    pub limit_bytes: u64,
    /// What the instance held when the allocation was refused, in bytes (about: the memory
    /// tracker samples small blocks).
    pub inuse_bytes: u64,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The instance.
    pub check_id: CheckId,
    /// When the run started.
    #[serde(skip)]
    pub started_at: SystemTime,
    /// How long `run()` (and `get_warnings()`) took, GIL wait included.
    pub duration: Duration,
    /// `None` when the run succeeded.
    pub error: Option<CheckError>,
    /// `get_warnings()` after the run.
    pub warnings: Vec<String>,
    /// What the instance submitted, committed after the run (see [`CheckInstance::run`]).
    pub submissions: Submissions,
    /// `set_check_metadata` values set since the last commit (last value per name).
    pub metadata: BTreeMap<String, String>,
    /// `set_external_tags` calls made during the run, in order.
    pub external_tags: Vec<ExternalTags>,
    /// Set when the run was stopped by the check memory limit (its `error` says so too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<MemoryLimitExceeded>,
}

impl RunReport {
    /// True when the run reported no error.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// One instance of a loaded check. `Send + Sync`: any runner thread may run it, never two at
/// once (runs of the same instance are serialised).
#[derive(Debug)]
pub struct CheckInstance {
    id: CheckId,
    name: String,
    version: String,
    config_path: PathBuf,
    index: usize,
    settings: InstanceSettings,
    check: Py<PyAny>,
    collector: Arc<Collector>,
    slot: Option<Slot>,
    run_lock: Mutex<()>,
    /// Set by [`CheckInstance::release_on_drop`]: dropping the instance releases its Python
    /// object at once and collects the cycles it leaves (see [`Drop`]).
    release_on_drop: AtomicBool,
}

enum Invocation {
    Returned(String),
    Failed(CheckError),
}

impl CheckInstance {
    #[allow(clippy::too_many_arguments)] // internal constructor, called from one place
    pub(crate) fn new(
        id: CheckId,
        name: String,
        version: String,
        config_path: PathBuf,
        index: usize,
        settings: InstanceSettings,
        check: Py<PyAny>,
        collector: Arc<Collector>,
        slot: Option<Slot>,
    ) -> Self {
        Self {
            id,
            name,
            version,
            config_path,
            index,
            settings,
            check,
            collector,
            slot,
            run_lock: Mutex::new(()),
            release_on_drop: AtomicBool::new(false),
        }
    }

    /// The check ID.
    pub fn id(&self) -> &CheckId {
        &self.id
    }

    /// The check name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The check's version (`__version__` or `unversioned`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The configuration file it comes from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its index in that file's `instances`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How often to run it (`min_collection_interval`, default 15 s).
    pub fn interval(&self) -> Duration {
        self.settings.min_collection_interval
    }

    /// The reserved-key settings (service, tags, empty_default_hostname, no_index, ...).
    pub fn settings(&self) -> &InstanceSettings {
        &self.settings
    }

    /// Memory attributed to this instance, when tracking is on.
    pub fn memory(&self) -> Option<MemoryStats> {
        let snap = memtrack::snapshot();
        snap.check(self.id.as_str()).map(|c| c.stats)
    }

    /// Runs the check once and commits what it submitted.
    ///
    /// The GIL is held only while Python runs: `check.run()` then `check.get_warnings()`;
    /// parsing and the commit happen without it, so other runner threads can run other
    /// checks meanwhile. Runs of this instance are serialised.
    ///
    /// `run()` returns `''` on success or the base class's JSON list of
    /// `{message, traceback}`; a result that is not a `str` (or an exception escaping
    /// `run()`) is reported as `error invoking 'run' method: ...`.
    ///
    /// # Commit
    /// As in the Datadog agent, what the check submitted is committed after the run
    /// **whether or not the run reported an error** (a check that raised half-way still
    /// delivers what it sent before). When `run()` could not be invoked at all, nothing is
    /// committed: the submissions stay pending and go with the next run's report, as the
    /// agent's sender keeps them until its next commit. Submissions made from a check's
    /// own threads between two runs go with the next report.
    pub fn run(&self) -> RunReport {
        let _serial = self.run_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let started_at = SystemTime::now();
        let start = Instant::now();
        let (invocation, mut warnings) = Python::attach(|py| {
            let _current = CurrentCheck::enter(&self.collector);
            let _owner = OwnerGuard::enter(self.slot.as_ref());
            let check = self.check.bind(py);
            let invocation = match check.call_method0("run") {
                Ok(result) => match result.extract::<String>() {
                    Ok(s) => Invocation::Returned(s),
                    Err(_) => Invocation::Failed(CheckError {
                        message: format!(
                            "error invoking 'run' method: run() returned {} instead of a str",
                            crate::pyutil::type_name(&result)
                        ),
                        traceback: String::new(),
                    }),
                },
                Err(e) => {
                    let exc = capture(py, &e);
                    Invocation::Failed(CheckError {
                        message: format!("error invoking 'run' method: {exc}"),
                        traceback: exc.traceback,
                    })
                }
            };
            let warnings = match check.call_method0("get_warnings") {
                Ok(list) => match list.cast::<PyList>() {
                    Ok(l) => l.iter().map(|w| display(&w)).collect(),
                    Err(_) => vec![display(&list)],
                },
                Err(e) => vec![format!("error collecting warnings: {}", capture(py, &e))],
            };
            crate::guards::after_check_code(py);
            (invocation, warnings)
        });
        let over_limit = self
            .slot
            .as_ref()
            .is_some_and(memtrack::Slot::take_over_limit);
        let memory_limit = over_limit.then(|| self.limit_exceeded()).flatten();
        let error = match invocation {
            Invocation::Returned(s) if s.is_empty() => None,
            Invocation::Returned(s) => Some(parse_error_report(&s)),
            Invocation::Failed(e) => {
                let duration = start.elapsed();
                return RunReport {
                    check_id: self.id.clone(),
                    started_at,
                    duration,
                    error: Some(self.limit_error(over_limit, Some(e))),
                    warnings,
                    submissions: Submissions::default(),
                    metadata: BTreeMap::new(),
                    external_tags: Vec::new(),
                    memory_limit,
                };
            }
        };
        let error = if over_limit {
            Some(self.limit_error(true, error))
        } else {
            error
        };
        let pending = self.collector.take();
        warnings.retain(|w| !w.is_empty());
        RunReport {
            check_id: self.id.clone(),
            started_at,
            duration: start.elapsed(),
            error,
            warnings,
            submissions: pending.submissions,
            metadata: pending.metadata,
            external_tags: pending.external_tags,
            memory_limit,
        }
    }

    /// The limit and what the instance held, after a run during which an allocation was
    /// refused for the check memory limit.
    fn limit_exceeded(&self) -> Option<MemoryLimitExceeded> {
        let limit_bytes = memtrack::check_limit()?;
        Some(MemoryLimitExceeded {
            limit_bytes,
            inuse_bytes: self.slot.as_ref().map_or(0, memtrack::Slot::inuse_bytes),
        })
    }

    /// The error of a run during which an allocation was refused for the check memory limit
    /// (`over`): the run's own error (a `MemoryError`, or what the check made of it) after a
    /// message that names the limit. The agent logs it (once: it disables the instance).
    fn limit_error(&self, over: bool, error: Option<CheckError>) -> CheckError {
        let Some(limit) = memtrack::check_limit().filter(|_| over) else {
            return error.unwrap_or_default();
        };
        let inuse = self.slot.as_ref().map_or(0, memtrack::Slot::inuse_bytes);
        tracing::debug!(check.id = %self.id, limit_bytes = limit, inuse_bytes = inuse,
            "a check went over agent.check_memory_limit; its allocation was refused and its run stopped");
        let (cause, traceback) = match error {
            Some(e) => (format!(": {}", e.message), e.traceback),
            None => (String::new(), String::new()),
        };
        CheckError {
            message: format!(
                "memory limit exceeded: the check kept about {inuse} bytes and an allocation \
                 would have taken it past agent.check_memory_limit ({limit} bytes); the \
                 allocation failed with MemoryError{cause}"
            ),
            traceback,
        }
    }

    /// Asks that dropping the instance give its Python object back at once, with the GIL,
    /// and run a garbage collection (the agent does for an instance it disabled for going
    /// over the memory limit). The drop then waits for the GIL: drop it on a thread that may.
    pub fn release_on_drop(&self) {
        self.release_on_drop.store(true, Ordering::Relaxed);
    }

    /// Calls `check.cancel()` (the agent does on unschedule and shutdown). The base class
    /// makes it safe to call while a run is in progress.
    pub fn cancel(&self) -> Result<(), Error> {
        Python::attach(|py| {
            self.check
                .bind(py)
                .call_method0("cancel")
                .map(drop)
                .map_err(|e| Error::Python {
                    context: format!("cancelling {}", self.id),
                    source: capture(py, &e),
                })
        })
    }
}

impl Drop for CheckInstance {
    /// Unregisters the collector. An instance marked [`CheckInstance::release_on_drop`] also
    /// gives its Python object back at once, with the GIL, and runs a garbage collection:
    /// what the check kept on `self` is reference cycles away from being freed (the base
    /// class keeps bound methods of the instance), and would otherwise wait for the
    /// interpreter's next collection. What it put in module globals stays (see
    /// `docs/checks.md`).
    fn drop(&mut self) {
        collector::unregister(&self.collector);
        if self.release_on_drop.load(Ordering::Relaxed) {
            Python::attach(|py| {
                drop(std::mem::replace(&mut self.check, py.None()));
                match py.import("gc").and_then(|gc| gc.call_method0("collect")) {
                    Ok(n) => tracing::debug!(check.id = %self.id, collected = %display(&n),
                        "the Python object of an instance over its memory limit was let go"),
                    Err(e) => tracing::warn!(check.id = %self.id, error = %capture(py, &e),
                        "garbage collection after a check over its memory limit failed"),
                }
            });
        }
    }
}

/// Parses the base class's error report, a JSON list of `{message, traceback}`. Several
/// entries are joined; text that is not such a list is the message itself.
fn parse_error_report(report: &str) -> CheckError {
    match serde_json::from_str::<Vec<CheckError>>(report) {
        Ok(entries) if !entries.is_empty() => {
            if entries.len() == 1 {
                return entries.into_iter().next().unwrap_or_else(|| CheckError {
                    message: report.to_owned(),
                    traceback: String::new(),
                });
            }
            CheckError {
                message: entries
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                traceback: entries
                    .iter()
                    .map(|e| e.traceback.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        }
        _ => CheckError {
            message: report.to_owned(),
            traceback: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports() {
        let one = parse_error_report(r#"[{"message": "boom", "traceback": "Traceback ..."}]"#);
        assert_eq!(one.message, "boom");
        assert_eq!(one.traceback, "Traceback ...");
        let two = parse_error_report(
            r#"[{"message": "a", "traceback": "ta"}, {"message": "b", "traceback": "tb"}]"#,
        );
        assert_eq!(two.message, "a\nb");
        let raw = parse_error_report("something else");
        assert_eq!(raw.message, "something else");
        assert!(raw.traceback.is_empty());
    }
}
