//! The views the API serves: `GET /checks`, the `/debug/vars` entry, the statistics.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use outpost_checks::{CheckError, Validation, memtrack};
use serde::Serialize;

use super::Agent;
use super::disabled::DisabledView;
use super::load_error::LoadError;
use super::python::PythonStatus;
use crate::check::check_error_of_run;
use crate::scheduler::{JobStats, SchedulerStats, unix_seconds};

/// One scheduled instance, as `GET /checks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    /// The check name.
    pub check: String,
    /// The check ID.
    pub id: String,
    /// The check's version.
    pub version: String,
    /// `integration` or `custom`.
    pub source: &'static str,
    /// The configuration file.
    pub config: PathBuf,
    /// Index of the instance in that file.
    pub index: usize,
    /// Seconds between runs.
    pub interval_s: f64,
    /// Start of the last run (Unix seconds).
    pub last_run: Option<f64>,
    /// Duration of the last run.
    pub duration_ms: Option<f64>,
    /// Error of the last run.
    pub error: Option<CheckError>,
    /// Warnings of the last run.
    pub warnings: Vec<String>,
    /// Metric samples of the last run.
    pub metric_count: Option<usize>,
    /// The scheduler's statistics.
    pub stats: Option<JobStats>,
    /// Memory attributed to the instance (when tracking is on). For a disabled instance,
    /// what is left of it once its Python object was let go.
    pub memory: Option<memtrack::MemoryStats>,
    /// Set when a run disabled the instance: it is no longer scheduled.
    pub disabled: Option<DisabledView>,
}

/// The body of `GET /checks`.
#[derive(Debug, Clone, Serialize)]
pub struct ChecksView {
    /// The Python runtime.
    pub python: PythonStatus,
    /// Runner threads.
    pub runners: usize,
    /// Threads of runs abandoned past their timeout and still going (on top of `runners`).
    pub abandoned_runners: usize,
    /// Instances disabled (also in `instances`, with `disabled` set).
    pub disabled: usize,
    /// Every scheduled instance, by check then configuration file then index.
    pub instances: Vec<InstanceView>,
    /// What could not be loaded at the last reload.
    pub load_errors: Vec<LoadError>,
    /// Readiness of the custom checks validated so far.
    pub validations: Vec<Validation>,
}

impl Agent {
    /// What could not be loaded at the last reload.
    pub fn load_errors(&self) -> Vec<LoadError> {
        self.loaded().errors.clone()
    }

    /// The body of `GET /checks`.
    pub fn checks_view(&self) -> ChecksView {
        let memory = memtrack::snapshot();
        // A live instance's counters, else what is left of a dropped one (a disabled one).
        let mut by_id: HashMap<&str, (bool, memtrack::MemoryStats)> = HashMap::new();
        for c in &memory.checks {
            let e = by_id
                .entry(c.check_id.as_str())
                .or_insert((c.live, c.stats));
            if c.live && !e.0 {
                *e = (true, c.stats);
            }
        }
        let memory: HashMap<&str, memtrack::MemoryStats> =
            by_id.into_iter().map(|(id, (_, s))| (id, s)).collect();
        let stats: HashMap<String, JobStats> = self
            .inner
            .scheduler
            .jobs()
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let (mut instances, load_errors) = {
            let loaded = self.loaded();
            let instances: Vec<InstanceView> = loaded
                .jobs
                .iter()
                .map(|(id, job)| {
                    let s = stats.get(id).cloned();
                    let last = s.as_ref().and_then(|s| s.last_run.clone());
                    let source = job.source();
                    InstanceView {
                        check: source.name.clone(),
                        id: id.clone(),
                        version: source.version.clone(),
                        source: if source.integration {
                            "integration"
                        } else {
                            "custom"
                        },
                        config: job.config_path().to_owned(),
                        index: job.instance().index(),
                        interval_s: crate::Job::interval(&**job).as_secs_f64(),
                        last_run: last.as_ref().map(|l| unix_seconds(l.started_at)),
                        duration_ms: last.as_ref().map(|l| l.duration.as_secs_f64() * 1000.0),
                        error: last
                            .as_ref()
                            .and_then(|l| l.summary.error.as_ref().map(check_error_of_run)),
                        warnings: last
                            .as_ref()
                            .map(|l| l.summary.warnings.clone())
                            .unwrap_or_default(),
                        metric_count: last.as_ref().map(|l| l.summary.metric_count),
                        disabled: s
                            .as_ref()
                            .and_then(|s| s.disabled.as_ref())
                            .map(|d| DisabledView::of(id, d)),
                        stats: s,
                        memory: memory.get(id.as_str()).copied(),
                    }
                })
                .chain(loaded.disabled.iter().map(|(id, d)| {
                    let s = stats.get(id).cloned();
                    let last = s.as_ref().and_then(|s| s.last_run.clone());
                    InstanceView {
                        check: d.source.name.clone(),
                        id: id.clone(),
                        version: d.source.version.clone(),
                        source: if d.source.integration {
                            "integration"
                        } else {
                            "custom"
                        },
                        config: d.config.clone(),
                        index: d.index,
                        interval_s: d.interval.as_secs_f64(),
                        last_run: last.as_ref().map(|l| unix_seconds(l.started_at)),
                        duration_ms: last.as_ref().map(|l| l.duration.as_secs_f64() * 1000.0),
                        error: last
                            .as_ref()
                            .and_then(|l| l.summary.error.as_ref().map(check_error_of_run)),
                        warnings: last
                            .as_ref()
                            .map(|l| l.summary.warnings.clone())
                            .unwrap_or_default(),
                        metric_count: last.as_ref().map(|l| l.summary.metric_count),
                        stats: s,
                        memory: memory.get(id.as_str()).copied(),
                        disabled: Some(DisabledView::of(id, &d.disabled)),
                    }
                }))
                .collect();
            (instances, loaded.errors.clone())
        };
        instances
            .sort_by(|a, b| (&a.check, &a.config, a.index).cmp(&(&b.check, &b.config, b.index)));
        ChecksView {
            python: self.python_status(),
            runners: self.inner.options.scheduler.runners,
            abandoned_runners: self.inner.scheduler.stats().abandoned,
            disabled: instances.iter().filter(|i| i.disabled.is_some()).count(),
            instances,
            load_errors,
            validations: self.validations(),
        }
    }

    /// Overall scheduler statistics.
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.inner.scheduler.stats()
    }

    /// The `/debug/vars` entry `agent`: version, uptime, paths, Python, reloads, sinks.
    pub fn debug_vars(&self) -> serde_json::Value {
        let o = &self.inner.options;
        let dropped: BTreeMap<&str, u64> = self
            .inner
            .store
            .dropped()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        let (instances, disabled, load_errors) = {
            let loaded = self.loaded();
            (
                loaded.jobs.len(),
                loaded.disabled.len(),
                loaded.errors.len(),
            )
        };
        serde_json::json!({
            "version": outpost_types::VERSION,
            "uptime_s": self.uptime().as_secs_f64(),
            "started_at": unix_seconds(SystemTime::now() - self.uptime()),
            "root": o.root,
            "conf_dir": o.conf_dir,
            "checks_dir": o.checks_dir,
            "python": self.python_status(),
            "instances": instances,
            "disabled_instances": disabled,
            "load_errors": load_errors,
            "reloads": self.reloads(),
            "series": self.inner.store.series_count(),
            "dropped_submissions": dropped,
            "output": self.inner.output.as_ref().map(|out| serde_json::json!({
                "path": out.path(),
                "errors": out.errors(),
                "rotations": out.rotations(),
            })),
        })
    }
}
