//! Run-now: every instance of one check, as `outpost check run --json` shows it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use outpost_checks::CheckError;

use super::Agent;
use super::load_error::LoadError;
use super::python::Python;
use crate::check::PythonCheck;
use crate::error::AgentError;

/// How much longer than its timeout a run-now request waits for its run.
const RUN_NOW_EXTRA_WAIT: Duration = Duration::from_secs(30);

impl Agent {
    /// Runs every instance of check `name` now (each as soon as it and a runner are free)
    /// and returns the `outpost check run --json` document: `{"check", "version",
    /// "instances": [...]}`, instances that failed to load included; or, when the check
    /// itself failed to load, `{"check", "error", "instances": []}`. The runs are committed
    /// to the sinks like scheduled ones. A disabled instance is not run: its entry is an
    /// error that says it is disabled, why, and how to enable it.
    ///
    /// # Errors
    /// [`AgentError::UnknownCheck`] when no configuration names it;
    /// [`AgentError::PythonUnavailable`]; [`AgentError::ShuttingDown`].
    pub async fn run_check(&self, name: &str) -> Result<serde_json::Value, AgentError> {
        let (jobs, errors, disabled) = {
            let loaded = self.loaded();
            // A disabled instance is not run: its entry says why, and how to enable it.
            let disabled: Vec<((PathBuf, usize), serde_json::Value)> = loaded
                .disabled
                .iter()
                .filter(|(_, d)| d.source.name == name)
                .map(|(id, d)| {
                    let view = super::disabled::DisabledView::of(id, &d.disabled);
                    (
                        (d.config.clone(), d.index),
                        self.inner.options.format.failed_entry(
                            id,
                            &CheckError {
                                message: view.message,
                                traceback: String::new(),
                            },
                        ),
                    )
                })
                .collect();
            let jobs: Vec<Arc<PythonCheck>> = loaded
                .jobs
                .values()
                .filter(|j| j.source().name == name)
                .cloned()
                .collect();
            let errors: Vec<LoadError> = loaded
                .errors
                .iter()
                .filter(|e| e.check.as_deref() == Some(name))
                .cloned()
                .collect();
            (jobs, errors, disabled)
        };
        if jobs.is_empty() && !disabled.is_empty() {
            let version = loaded_version(self, name);
            return Ok(self.document(name, &version, disabled, &errors));
        }
        if jobs.is_empty() {
            if let Python::Unavailable(e) = self.python() {
                return Err(AgentError::PythonUnavailable { source: e });
            }
            let Some(error) = errors.iter().find(|e| e.index.is_none()) else {
                if errors.is_empty() {
                    return Err(AgentError::UnknownCheck {
                        name: name.to_owned(),
                    });
                }
                return Ok(self.document(name, "unversioned", Vec::new(), &errors));
            };
            return Ok(serde_json::json!({
                "check": name,
                "error": error.error,
                "instances": [],
            }));
        }
        let version = jobs
            .first()
            .map(|j| j.source().version.clone())
            .unwrap_or_default();
        let mut handles = Vec::with_capacity(jobs.len());
        for job in jobs {
            let scheduler = self.inner.scheduler.clone();
            handles.push(tokio::spawn(async move {
                let id = crate::Job::id(&*job).to_owned();
                let wait = crate::Job::timeout(&*job)
                    .unwrap_or_else(|| crate::Job::interval(&*job))
                    + RUN_NOW_EXTRA_WAIT;
                let result = match tokio::time::timeout(wait, scheduler.run_now(&id)).await {
                    Ok(r) => r,
                    Err(_) => Err(AgentError::RunTimedOut {
                        id: id.clone(),
                        waited: wait,
                    }),
                };
                (job, id, result)
            }));
        }
        let mut ran = disabled;
        ran.reserve(handles.len());
        for handle in handles {
            let (job, id, result) = handle.await.map_err(|source| AgentError::Task {
                what: "running a check now",
                source,
            })?;
            let entry = match result {
                Ok(run) => self.inner.options.format.run_entry(&run.report),
                Err(e @ (AgentError::ShuttingDown | AgentError::SchedulerStopped)) => {
                    return Err(e);
                }
                Err(e) => self.inner.options.format.failed_entry(
                    &id,
                    &CheckError {
                        message: e.to_string(),
                        traceback: String::new(),
                    },
                ),
            };
            ran.push((
                (job.config_path().to_owned(), job.instance().index()),
                entry,
            ));
        }
        Ok(self.document(name, &version, ran, &errors))
    }

    fn document(
        &self,
        name: &str,
        version: &str,
        mut entries: Vec<((PathBuf, usize), serde_json::Value)>,
        errors: &[LoadError],
    ) -> serde_json::Value {
        for e in errors {
            if let (Some(config), Some(index), Some(id)) = (&e.config, e.index, &e.check_id) {
                entries.push((
                    (config.clone(), index),
                    self.inner.options.format.failed_entry(id, &e.error),
                ));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        serde_json::json!({
            "check": name,
            "version": version,
            "instances": entries.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        })
    }
}

/// The version of check `name` as its disabled instances recorded it.
fn loaded_version(agent: &Agent, name: &str) -> String {
    agent
        .loaded()
        .disabled
        .values()
        .find(|d| d.source.name == name)
        .map_or_else(|| "unversioned".to_owned(), |d| d.source.version.clone())
}
