//! Instances a run disabled, and enabling them again.
//!
//! A run stopped by the check memory limit (`agent.check_memory_limit`) disables its
//! instance (see [`crate::scheduler`]): the scheduler stops scheduling it and lets go of it,
//! the sinks move it from the scheduled instances to [`DisabledInstance`]s (its Python object
//! is dropped with it, which releases what the check kept on `self`), and the log says so
//! once, at error level.
//!
//! It comes back with a reload that changes its configuration (a changed instance has a new
//! ID, and the new one is scheduled; an unchanged one stays disabled across reloads), or with
//! [`Agent::enable`] (`POST /checks/{name}/enable`, `outpost agent enable`), which loads that
//! instance afresh from its configuration file and schedules it. A reload that reads a new
//! `agent.check_memory_limit` from the configuration file enables every instance the limit
//! disabled; so does a restart.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use outpost_checks::CheckError;
use serde::Serialize;

use super::Agent;
use super::load_error::LoadError;
use super::reload::plan_reload;
use crate::check::{CheckSource, PythonCheck};
use crate::error::AgentError;
use crate::scheduler::{DisableReason, Disabled, unix_seconds};

/// A disabled instance: what the views show of it, without its Python object.
#[derive(Debug, Clone)]
pub(super) struct DisabledInstance {
    pub(super) source: Arc<CheckSource>,
    pub(super) config: PathBuf,
    pub(super) index: usize,
    pub(super) interval: Duration,
    pub(super) disabled: Disabled,
}

impl DisabledInstance {
    pub(super) fn of(job: &PythonCheck, disabled: Disabled) -> Self {
        Self {
            source: Arc::new(job.source().clone()),
            config: job.config_path().to_owned(),
            index: job.instance().index(),
            interval: crate::Job::interval(job),
            disabled,
        }
    }
}

/// Why and since when an instance is disabled, as `GET /checks` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DisabledView {
    /// `memory_limit`, with `limit_bytes` and `inuse_bytes`.
    #[serde(flatten)]
    pub reason: DisableReason,
    /// When the run that disabled it started (Unix seconds).
    pub at: f64,
    /// The same, in words, with how to enable it.
    pub message: String,
}

impl DisabledView {
    pub(super) fn of(id: &str, d: &Disabled) -> Self {
        Self {
            reason: d.reason,
            at: unix_seconds(d.at),
            message: format!(
                "disabled: its run {}; a reload that changes its configuration, or \
                 `outpost agent enable {id}`, enables it",
                d.reason
            ),
        }
    }
}

/// Logs a disabled instance (once: it is no longer scheduled). `series`: the series of it
/// removed from the exposition.
pub(super) fn log_disabled(id: &str, d: &Disabled, series: usize) {
    match d.reason {
        DisableReason::MemoryLimit {
            limit_bytes,
            inuse_bytes,
        } => tracing::error!(
            check.id = %id,
            limit_bytes,
            inuse_bytes,
            series_removed = series,
            "a check went over agent.check_memory_limit: its allocation was refused, its run \
             stopped, and the instance is disabled; a reload that changes its configuration, \
             or `outpost agent enable`, enables it"
        ),
    }
}

/// What [`Agent::enable`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnableSummary {
    /// Instances scheduled again.
    pub enabled: Vec<String>,
    /// Instances asked for that were not disabled.
    pub not_disabled: Vec<String>,
    /// What could not be loaded again (those instances stay disabled).
    pub errors: Vec<LoadError>,
}

impl EnableSummary {
    /// `None` when every disabled instance asked for was enabled; otherwise one message
    /// that names each that was not, and why.
    pub fn failure_message(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let reasons: Vec<String> = self
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.check_id
                        .as_deref()
                        .or(e.check.as_deref())
                        .unwrap_or("(configuration)"),
                    e.error.message
                )
            })
            .collect();
        Some(format!(
            "{} enabled, {} not: {}",
            self.enabled.len(),
            self.errors.len(),
            reasons.join("; ")
        ))
    }
}

impl Agent {
    /// Reads `agent.check_memory_limit` from the configuration file again (when the agent
    /// knows it): a new limit takes effect, and the instances the old one disabled are
    /// forgotten as disabled, so that the reload under way loads and schedules them afresh.
    /// A file that cannot be read or parsed, or a limit of 0, keeps the limit in force and is
    /// a load error of the reload. Returns the IDs so forgotten.
    pub(super) fn reread_limit(&self, errors: &mut Vec<LoadError>) -> Vec<String> {
        let Some((path, required)) = &self.inner.options.config_file else {
            return Vec::new();
        };
        let limit = match fs_err::read_to_string(path) {
            Ok(text) => outpost_types::config::Config::from_yaml(&text)
                .map(|c| c.agent.check_memory_limit.map(|b| b.0))
                .map_err(|e| e.to_string()),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let limit = match limit {
            Ok(Some(0)) => Err("agent.check_memory_limit: must be more than 0".to_owned()),
            other => other,
        };
        let limit = match limit {
            Ok(l) => l,
            Err(message) => {
                tracing::error!(config = %path.display(), error = %message,
                    "cannot read agent.check_memory_limit again; the limit in force stays");
                errors.push(LoadError {
                    check: None,
                    config: Some(path.clone()),
                    index: None,
                    check_id: None,
                    error: CheckError {
                        message: format!(
                            "agent.check_memory_limit not read again (the limit in force stays): \
                             {message}"
                        ),
                        traceback: String::new(),
                    },
                });
                return Vec::new();
            }
        };
        let current = outpost_checks::memtrack::check_limit();
        if limit == current {
            return Vec::new();
        }
        outpost_checks::memtrack::set_check_limit(limit);
        let mut loaded = self.loaded();
        let forgotten: Vec<String> = loaded
            .disabled
            .iter()
            .filter(|(_, d)| matches!(d.disabled.reason, DisableReason::MemoryLimit { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &forgotten {
            loaded.disabled.remove(id);
        }
        tracing::info!(
            old_limit_bytes = current,
            new_limit_bytes = limit,
            enabled = forgotten.len(),
            "agent.check_memory_limit changed; the instances it disabled are scheduled again"
        );
        forgotten
    }

    /// The disabled instances: check name, ID and reason (`memory_limit`), in ID order.
    pub fn disabled_instances(&self) -> Vec<(String, String, &'static str)> {
        self.loaded()
            .disabled
            .iter()
            .map(|(id, d)| {
                let reason = match d.disabled.reason {
                    DisableReason::MemoryLimit { .. } => "memory_limit",
                };
                (d.source.name.clone(), id.clone(), reason)
            })
            .collect()
    }

    /// Enables the disabled instances `target` names: the instance with that ID, or every
    /// instance of the check with that name. Each is loaded afresh from its configuration
    /// file (its ID must still be there: a file changed since the last reload is applied by
    /// a reload instead) and scheduled; nothing else is reloaded. Serialised with reloads.
    ///
    /// # Errors
    /// [`AgentError::UnknownCheck`] when no instance or check has that name;
    /// [`AgentError::ConfDir`]; [`AgentError::ShuttingDown`].
    pub async fn enable(&self, target: &str) -> Result<EnableSummary, AgentError> {
        let _serial = self.inner.reload_lock.lock().await;
        let names = |id: &str, check: &str| id == target || check == target;
        let (wanted, not_disabled, current) = {
            let loaded = self.loaded();
            let wanted: HashSet<String> = loaded
                .disabled
                .iter()
                .filter(|(id, d)| names(id, &d.source.name))
                .map(|(id, _)| id.clone())
                .collect();
            let mut not_disabled: Vec<String> = loaded
                .jobs
                .iter()
                .filter(|(id, j)| names(id, &j.source().name))
                .map(|(id, _)| id.clone())
                .collect();
            not_disabled.sort();
            let current: HashSet<String> = loaded
                .jobs
                .keys()
                .chain(loaded.disabled.keys())
                .filter(|id| !wanted.contains(*id))
                .cloned()
                .collect();
            (wanted, not_disabled, current)
        };
        if wanted.is_empty() && not_disabled.is_empty() {
            return Err(AgentError::UnknownCheck {
                name: target.to_owned(),
            });
        }
        let mut summary = EnableSummary {
            not_disabled,
            ..EnableSummary::default()
        };
        if wanted.is_empty() {
            return Ok(summary);
        }
        let plan = {
            let python = self.python();
            let conf_dir = self.inner.options.conf_dir.clone();
            let timeout = self.inner.options.scheduler.timeout;
            let only = wanted.clone();
            tokio::task::spawn_blocking(move || {
                plan_reload(&python, &conf_dir, &current, timeout, Some(&only))
            })
            .await
            .map_err(|source| AgentError::Task {
                what: "loading check configurations",
                source,
            })??
        };
        summary.errors = plan.errors;
        for job in plan.new {
            let id = crate::Job::id(&*job).to_owned();
            self.inner.scheduler.add(Arc::clone(&job)).await?;
            let mut loaded = self.loaded();
            loaded.disabled.remove(&id);
            loaded.jobs.insert(id.clone(), job);
            tracing::info!(check.id = %id, "check instance enabled");
            summary.enabled.push(id);
        }
        summary.enabled.sort();
        let loaded = self.loaded();
        let mut missing: Vec<&String> = wanted
            .iter()
            .filter(|id| loaded.disabled.contains_key(*id))
            .filter(|id| {
                !summary
                    .errors
                    .iter()
                    .any(|e| e.check_id.as_ref() == Some(id))
            })
            .collect();
        missing.sort();
        for id in missing {
            let d = &loaded.disabled[id];
            summary.errors.push(LoadError {
                check: Some(d.source.name.clone()),
                config: Some(d.config.clone()),
                index: Some(d.index),
                check_id: Some(id.clone()),
                error: CheckError {
                    message: "its configuration changed since the last reload (or is gone); \
                              `outpost agent reload` applies it"
                        .into(),
                    traceback: String::new(),
                },
            });
        }
        Ok(summary)
    }
}
