//! Reloading the configuration directory: the blocking plan (which instances stay, which
//! start, what failed to load), then its application to the scheduler.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use outpost_checks::{CheckConfigFile, CheckError, CheckId, conf_d};
use serde::Serialize;

use super::Agent;
use super::load_error::{LoadError, check_error, discovery_error};
use super::python::Python;
use crate::check::{CheckSource, PythonCheck};
use crate::error::AgentError;

/// What [`Agent::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// Instances scheduled now that were not before.
    pub added: Vec<String>,
    /// Instances unscheduled (removed from the configuration, or changed: a changed instance
    /// has a new ID and appears in both lists).
    pub removed: Vec<String>,
    /// Instances left running as they were.
    pub unchanged: usize,
    /// What could not be loaded.
    pub errors: Vec<LoadError>,
}

impl ReloadSummary {
    /// `None` when everything loaded; otherwise one message for people that says what the
    /// reload applied and, per failure, what failed and why, e.g. `reloaded with 1 load error
    /// (1 added, 0 removed, 2 unchanged): beta (/etc/conf.d/beta.yaml): invalid YAML`.
    pub fn failure_message(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let n = self.errors.len();
        let mut message = format!(
            "reloaded with {n} load error{} ({} added, {} removed, {} unchanged)",
            if n == 1 { "" } else { "s" },
            self.added.len(),
            self.removed.len(),
            self.unchanged
        );
        for (i, e) in self.errors.iter().enumerate() {
            message.push_str(if i == 0 { ": " } else { "; " });
            message.push_str(
                e.check_id
                    .as_deref()
                    .or(e.check.as_deref())
                    .unwrap_or("(configuration)"),
            );
            if let Some(config) = &e.config {
                message.push_str(&format!(" ({})", config.display()));
            }
            message.push_str(": ");
            message.push_str(&e.error.message);
        }
        Some(message)
    }
}

/// What the blocking part of a reload found.
pub(super) struct Plan {
    pub(super) keep: HashSet<String>,
    pub(super) new: Vec<Arc<PythonCheck>>,
    pub(super) errors: Vec<LoadError>,
    pub(super) custom: Vec<String>,
}

/// What a reload of `conf_dir` would do, given the instances it has (`current`, disabled
/// ones included: an unchanged instance stays as it is). `only`: load just these instances,
/// nothing else (enabling disabled ones), and leave discovery errors out.
pub(super) fn plan_reload(
    python: &Python,
    conf_dir: &Path,
    current: &HashSet<String>,
    timeout: Option<Duration>,
    only: Option<&HashSet<String>>,
) -> Result<Plan, AgentError> {
    let discovery = conf_d::discover(conf_dir).map_err(|source| AgentError::ConfDir {
        path: conf_dir.to_owned(),
        source: Box::new(source),
    })?;
    let mut plan = Plan {
        keep: HashSet::new(),
        new: Vec::new(),
        errors: discovery
            .errors
            .iter()
            .filter(|_| only.is_none())
            .map(|e| discovery_error(conf_dir, e))
            .collect(),
        custom: Vec::new(),
    };
    let mut seen: HashSet<String> = HashSet::new();
    for config in &discovery.configs {
        let ids = instance_ids(config);
        if only.is_some_and(|only| !ids.iter().any(|id| only.contains(id))) {
            continue;
        }
        if !ids.is_empty() && ids.iter().all(|id| current.contains(id)) {
            seen.extend(ids.iter().cloned());
            plan.keep.extend(ids);
            continue;
        }
        let runtime = match python {
            Python::Ready(rt) => rt,
            Python::Unavailable(e) => {
                plan.errors.push(LoadError {
                    check: Some(config.name.clone()),
                    config: Some(config.path.clone()),
                    index: None,
                    check_id: None,
                    error: CheckError {
                        message: format!("not loaded: Python is unavailable: {e}"),
                        traceback: String::new(),
                    },
                });
                continue;
            }
        };
        let loaded = match runtime.load_check(&config.name, config) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(check.name = %config.name, error = %e, "check failed to load");
                plan.errors
                    .push(LoadError::of_check(&config.name, &config.path, &e));
                continue;
            }
        };
        let source = Arc::new(CheckSource::of(&loaded));
        if !source.integration && !plan.custom.contains(&source.name) {
            plan.custom.push(source.name.clone());
        }
        for instance in loaded.instances {
            match instance {
                Ok(instance) => {
                    let id = instance.id().to_string();
                    if only.is_some_and(|only| !only.contains(&id)) {
                        continue;
                    }
                    if current.contains(&id) {
                        // Already running (another instance of its file failed before):
                        // keep the running one, drop this fresh copy.
                        plan.keep.insert(id.clone());
                        seen.insert(id);
                        continue;
                    }
                    if !seen.insert(id.clone()) {
                        plan.errors.push(LoadError {
                            check: Some(config.name.clone()),
                            config: Some(config.path.clone()),
                            index: Some(instance.index()),
                            check_id: Some(id.clone()),
                            error: CheckError {
                                message: format!(
                                    "instance {id} duplicates an instance of another configuration file; skipped"
                                ),
                                traceback: String::new(),
                            },
                        });
                        continue;
                    }
                    plan.new.push(Arc::new(PythonCheck::new(
                        instance,
                        Arc::clone(&source),
                        timeout,
                    )));
                }
                Err(failed) if only.is_some_and(|o| !o.contains(failed.check_id.as_str())) => {}
                Err(failed) => {
                    tracing::warn!(
                        check.id = %failed.check_id,
                        error = %failed.error,
                        "check instance failed to load"
                    );
                    plan.errors.push(LoadError {
                        check: Some(config.name.clone()),
                        config: Some(config.path.clone()),
                        index: Some(failed.index),
                        check_id: Some(failed.check_id.to_string()),
                        error: check_error(&failed.error),
                    });
                }
            }
        }
    }
    Ok(plan)
}

/// The IDs the instances of `config` have (or would have).
pub(super) fn instance_ids(config: &CheckConfigFile) -> Vec<String> {
    config
        .instances
        .iter()
        .map(|i| CheckId::build(&config.name, config.digest, i, &config.init_config).to_string())
        .collect()
}

impl Agent {
    /// Reloads every configuration of the configuration directory: instances that are new
    /// start, instances that are gone stop (`cancel()`, then their series are removed),
    /// changed instances (a new ID) restart; unchanged instances keep running untouched, and
    /// unchanged disabled ones stay disabled (a changed one starts afresh, enabled).
    /// `agent.check_memory_limit` is read again from the configuration file (when the agent
    /// was given it): a new limit enables the instances the old one disabled.
    /// Reloads are serialised. A Python runtime that failed to start because of its venv is
    /// started again first.
    ///
    /// A check's module is imported once per process: a changed `.py` file is not re-read
    /// by a reload.
    ///
    /// # Errors
    /// [`AgentError::ConfDir`] when the directory cannot be read (nothing changes then);
    /// [`AgentError::ShuttingDown`].
    pub async fn reload(&self) -> Result<ReloadSummary, AgentError> {
        let summary = self.load().await?;
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            added = summary.added.len(),
            removed = summary.removed.len(),
            unchanged = summary.unchanged,
            load_errors = summary.errors.len(),
            "check configurations reloaded"
        );
        Ok(summary)
    }

    /// Reloads counted so far (the first load excluded).
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    pub(super) async fn load(&self) -> Result<ReloadSummary, AgentError> {
        let _serial = self.inner.reload_lock.lock().await;
        self.retry_python().await;
        let python = self.python();
        // A new agent.check_memory_limit enables what the old one disabled (they are then
        // neither loaded nor disabled, so the plan loads them afresh).
        let mut limit_errors = Vec::new();
        let forgotten = self.reread_limit(&mut limit_errors);
        // Disabled instances count as loaded: an unchanged one stays disabled.
        let current: HashSet<String> = {
            let loaded = self.loaded();
            loaded
                .jobs
                .keys()
                .chain(loaded.disabled.keys())
                .cloned()
                .collect()
        };
        let plan = {
            let python = python.clone();
            let conf_dir = self.inner.options.conf_dir.clone();
            let current = current.clone();
            let timeout = self.inner.options.scheduler.timeout;
            tokio::task::spawn_blocking(move || {
                plan_reload(&python, &conf_dir, &current, timeout, None)
            })
            .await
            .map_err(|source| AgentError::Task {
                what: "loading check configurations",
                source,
            })??
        };
        let mut summary = ReloadSummary {
            errors: plan.errors,
            ..ReloadSummary::default()
        };
        summary.errors.extend(limit_errors);
        let mut removed: Vec<String> = current.difference(&plan.keep).cloned().collect();
        removed.sort();
        for id in &removed {
            self.inner.scheduler.remove(id).await?;
            if self.loaded().disabled.contains_key(id) {
                // Not retired by the scheduler (it had let go of it): its run counters go here.
                self.inner.store.remove_owner(id);
            }
        }
        let mut added = Vec::with_capacity(plan.new.len());
        for job in plan.new {
            let id = crate::Job::id(&*job).to_owned();
            match self.inner.scheduler.add(Arc::clone(&job)).await {
                Ok(()) => added.push((id, job)),
                Err(AgentError::DuplicateJob { id }) => summary.errors.push(LoadError {
                    check: Some(job.source().name.clone()),
                    config: Some(job.config_path().to_owned()),
                    index: Some(job.instance().index()),
                    check_id: Some(id.clone()),
                    error: CheckError {
                        message: format!("instance {id} is already scheduled; skipped"),
                        traceback: String::new(),
                    },
                }),
                Err(e) => return Err(e),
            }
        }
        // A forgotten disabled instance that did not load again (its file changed or went):
        // its statistics and run counters go.
        for id in &forgotten {
            if !added.iter().any(|(a, _)| a == id) {
                self.inner.scheduler.remove(id).await?;
                self.inner.store.remove_owner(id);
                summary.removed.push(id.clone());
            }
        }
        let to_validate = {
            let mut loaded = self.loaded();
            for id in &removed {
                loaded.jobs.remove(id);
                loaded.disabled.remove(id);
            }
            for (id, job) in &added {
                loaded.jobs.insert(id.clone(), Arc::clone(job));
            }
            loaded.errors = summary.errors.clone();
            let names: Vec<String> = plan
                .custom
                .into_iter()
                .filter(|n| loaded.validated.insert(n.clone()))
                .collect();
            names
        };
        if !to_validate.is_empty()
            && let Python::Ready(rt) = &python
        {
            self.validate_in_background(rt, to_validate);
        }
        summary.unchanged = plan.keep.len();
        summary.removed.extend(removed);
        summary.removed.sort();
        summary.added = added.into_iter().map(|(id, _)| id).collect();
        summary.added.sort();
        Ok(summary)
    }
}
