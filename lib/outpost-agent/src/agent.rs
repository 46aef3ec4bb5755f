//! The agent: the Python runtime, the configurations it loaded, the scheduler, the sinks and
//! the validation of custom checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use outpost_checks::{
    CHECK_READY_METRIC, CheckConfigFile, CheckError, CheckId, PythonInfo, RunReport, Runtime,
    RuntimeConfig, Validation, ValidationTarget, conf_d, memtrack,
};
use outpost_types::config::{AgentConfig, HumanDuration};
use serde::Serialize;

use crate::check::{CheckSource, PythonCheck};
use crate::error::AgentError;
use crate::scheduler::{
    JobStats, Observer, RunInfo, Scheduler, SchedulerConfig, SchedulerStats, ShutdownReport,
    unix_seconds,
};
use crate::sinks::{JsonLines, RunFormat, SeriesStore, submission_lines};

/// Default for `agent.python3_linter_timeout` (seconds), as in the Datadog agent.
const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Default for `agent.shutdown_timeout`.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How much longer than its timeout a run-now request waits for its run.
const RUN_NOW_EXTRA_WAIT: Duration = Duration::from_secs(30);

/// `--output`: where and up to which size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputOptions {
    /// The file.
    pub path: PathBuf,
    /// Size at which it is rotated.
    pub max_bytes: u64,
}

/// Everything the agent needs to start.
#[derive(Clone)]
pub struct AgentOptions {
    /// The state directory: the socket is `<root>/run/agent.sock`, the persistent cache is
    /// under `<root>/run`.
    pub root: PathBuf,
    /// Check configurations (`conf.d`).
    pub conf_dir: PathBuf,
    /// Custom checks (`checks.d`).
    pub checks_dir: PathBuf,
    /// The virtual environment with datadog-checks-base.
    pub python_venv: PathBuf,
    /// The configuration file's `agent:` section.
    pub agent: AgentConfig,
    /// `--output`.
    pub output: Option<OutputOptions>,
    /// How runs are shown as JSON (run-now and `--output`).
    pub format: Arc<dyn RunFormat>,
    /// Scheduler settings: `agent.runners`, `agent.check_timeout`, spreading.
    pub scheduler: SchedulerConfig,
    /// How long shutdown waits for runs in progress (`agent.shutdown_timeout`, default 5 s).
    pub shutdown_grace: Duration,
    /// Timeout of the validation of one custom check (`agent.python3_linter_timeout`,
    /// default 120 s).
    pub validation_timeout: Duration,
    /// A runtime already started in this process, to use instead of starting one (the
    /// interpreter starts once per process: tests and benchmarks run several agents on one).
    pub runtime: Option<Runtime>,
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("root", &self.root)
            .field("conf_dir", &self.conf_dir)
            .field("checks_dir", &self.checks_dir)
            .field("python_venv", &self.python_venv)
            .field("output", &self.output)
            .field("scheduler", &self.scheduler)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("validation_timeout", &self.validation_timeout)
            .finish_non_exhaustive()
    }
}

/// Reads a duration key of the `agent:` section: a number of seconds or a string such as
/// `90s` or `500ms`.
fn duration_key(
    agent: &AgentConfig,
    key: &'static str,
    full_key: &'static str,
) -> Result<Option<Duration>, AgentError> {
    let invalid = |message: String| AgentError::InvalidConfig {
        key: full_key,
        message,
    };
    match agent.get(key) {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(invalid(format!("{n} is not a positive number of seconds"))),
        },
        Some(serde_json::Value::String(s)) => match HumanDuration::parse(&s) {
            Ok(d) if !d.0.is_zero() => Ok(Some(d.0)),
            Ok(_) => Err(invalid("must be more than 0".into())),
            Err(e) => Err(invalid(e)),
        },
        Some(other) => Err(invalid(format!(
            "expected seconds or a duration such as \"30s\", not {other}"
        ))),
    }
}

impl AgentOptions {
    /// Options from the resolved paths and the configuration's `agent:` section: runners
    /// (`agent.runners`), run timeout (`agent.check_timeout`, default: each instance's
    /// interval), shutdown grace (`agent.shutdown_timeout`, default 5 s) and validation
    /// timeout (`agent.python3_linter_timeout`, default 120 s).
    ///
    /// # Errors
    /// [`AgentError::InvalidConfig`] for zero runners or an unreadable duration.
    pub fn new(
        root: impl Into<PathBuf>,
        conf_dir: impl Into<PathBuf>,
        checks_dir: impl Into<PathBuf>,
        python_venv: impl Into<PathBuf>,
        agent: AgentConfig,
        format: Arc<dyn RunFormat>,
    ) -> Result<Self, AgentError> {
        if agent.runners == 0 {
            return Err(AgentError::InvalidConfig {
                key: "agent.runners",
                message: "must be at least 1".into(),
            });
        }
        let timeout = duration_key(&agent, "check_timeout", "agent.check_timeout")?;
        let shutdown_grace = duration_key(&agent, "shutdown_timeout", "agent.shutdown_timeout")?
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
        let validation_timeout = duration_key(
            &agent,
            "python3_linter_timeout",
            "agent.python3_linter_timeout",
        )?
        .unwrap_or(DEFAULT_VALIDATION_TIMEOUT);
        Ok(Self {
            root: root.into(),
            conf_dir: conf_dir.into(),
            checks_dir: checks_dir.into(),
            python_venv: python_venv.into(),
            scheduler: SchedulerConfig {
                runners: agent.runners,
                timeout,
                spread: true,
                dedicated_thread: true,
            },
            agent,
            output: None,
            format,
            shutdown_grace,
            validation_timeout,
            runtime: None,
        })
    }

    /// Sets `--output`.
    pub fn with_output(mut self, path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        self.output = Some(OutputOptions {
            path: path.into(),
            max_bytes,
        });
        self
    }

    /// The agent's socket: `<root>/run/agent.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("run").join("agent.sock")
    }
}

/// A configuration, check or instance that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The check, when known.
    pub check: Option<String>,
    /// The configuration file, when known.
    pub config: Option<PathBuf>,
    /// The instance's index in its file, for an instance that failed on its own.
    pub index: Option<usize>,
    /// The ID the instance would have had.
    pub check_id: Option<String>,
    /// What went wrong.
    pub error: CheckError,
}

impl LoadError {
    fn of_check(check: &str, config: &Path, error: &outpost_checks::Error) -> Self {
        Self {
            check: Some(check.to_owned()),
            config: Some(config.to_owned()),
            index: None,
            check_id: None,
            error: check_error(error),
        }
    }
}

fn check_error(error: &outpost_checks::Error) -> CheckError {
    CheckError {
        message: error.to_string(),
        traceback: error.traceback().unwrap_or_default().to_owned(),
    }
}

/// What a configuration error is about: the check and file, from the error's fields.
fn discovery_error(conf_dir: &Path, error: &outpost_checks::Error) -> LoadError {
    use outpost_checks::Error as E;
    let (check, config) = match error {
        E::ConfigYaml { path, .. } | E::ConfigShape { path, .. } | E::ConfigRead { path, .. } => {
            (check_name_of(conf_dir, path), Some(path.clone()))
        }
        E::InvalidCheckName { name } => (Some(name.clone()), None),
        _ => (None, None),
    };
    LoadError {
        check,
        config,
        index: None,
        check_id: None,
        error: check_error(error),
    }
}

/// The check a configuration path of `conf_dir` belongs to: `<name>.d/x.yaml` or
/// `<name>.yaml`.
fn check_name_of(conf_dir: &Path, path: &Path) -> Option<String> {
    let parent = path.parent()?;
    if parent != conf_dir {
        let dir = parent.file_name()?.to_str()?;
        return dir.strip_suffix(".d").map(str::to_owned);
    }
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .map(str::to_owned)
}

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

/// The Python side of the agent.
#[derive(Debug, Clone)]
enum Python {
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
    /// Memory attributed to the instance (when tracking is on).
    pub memory: Option<memtrack::MemoryStats>,
}

/// The body of `GET /checks`.
#[derive(Debug, Clone, Serialize)]
pub struct ChecksView {
    /// The Python runtime.
    pub python: PythonStatus,
    /// Runner threads.
    pub runners: usize,
    /// Every scheduled instance, by check then configuration file then index.
    pub instances: Vec<InstanceView>,
    /// What could not be loaded at the last reload.
    pub load_errors: Vec<LoadError>,
    /// Readiness of the custom checks validated so far.
    pub validations: Vec<Validation>,
}

#[derive(Debug, Default)]
struct Loaded {
    jobs: BTreeMap<String, Arc<PythonCheck>>,
    errors: Vec<LoadError>,
    /// Custom checks already sent for validation (once per name).
    validated: HashSet<String>,
}

/// The sinks, as the scheduler's observer.
struct Sinks {
    store: Arc<SeriesStore>,
    output: Option<Arc<JsonLines>>,
    format: Arc<dyn RunFormat>,
}

impl Observer<PythonCheck> for Sinks {
    fn completed(&self, _job: &Arc<PythonCheck>, report: &RunReport, _run: &RunInfo) {
        let id = report.check_id.as_str();
        if let Some(error) = &report.error {
            tracing::warn!(check.id = id, error = %error.message, "check run failed");
        }
        for w in &report.warnings {
            tracing::info!(check.id = id, warning = %w, "check warning");
        }
        self.store.commit(id, &report.submissions);
        if let Some(output) = &self.output {
            let lines = submission_lines(&*self.format, report);
            if let Err(e) = output.write(&lines) {
                // One line per failure would flood the log on a full disk: 1, 2, 4, 8, ...
                let n = output.errors();
                if n.is_power_of_two() {
                    tracing::error!(error = %e, failures = n, "cannot write --output");
                }
            }
        }
    }

    fn retired(&self, job: &Arc<PythonCheck>) {
        let removed = self
            .store
            .remove_owner(<PythonCheck as crate::Job>::id(job));
        tracing::debug!(
            check.id = <PythonCheck as crate::Job>::id(job),
            series = removed,
            "series of an unscheduled instance removed"
        );
    }
}

struct Inner {
    options: AgentOptions,
    python: Mutex<Python>,
    scheduler: Scheduler<PythonCheck>,
    store: Arc<SeriesStore>,
    output: Option<Arc<JsonLines>>,
    loaded: Mutex<Loaded>,
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

/// Starts the embedded runtime (once per process), unless one was given.
fn start_python(options: &AgentOptions) -> Python {
    if let Some(rt) = &options.runtime {
        return Python::Ready(rt.clone());
    }
    let config = RuntimeConfig::new(&options.python_venv, options.root.join("run"))
        .with_checks_dir(&options.checks_dir)
        .with_agent_config(options.agent.clone());
    match Runtime::start(config) {
        Ok(rt) => Python::Ready(rt),
        Err(e) => {
            tracing::error!(
                error = %e,
                python.venv = %options.python_venv.display(),
                "Python is unavailable: no check can run; the API keeps serving"
            );
            Python::Unavailable(Arc::new(e))
        }
    }
}

/// True for start-up failures found before the interpreter started, which a later start
/// may not hit (the venv was created or fixed meanwhile).
fn retryable(e: &outpost_checks::Error) -> bool {
    use outpost_checks::Error as E;
    matches!(
        e,
        E::VenvMissing { .. }
            | E::VenvUnreadable { .. }
            | E::NotAVenv { .. }
            | E::VenvVersionMismatch { .. }
    )
}

/// What the blocking part of a reload found.
struct Plan {
    keep: HashSet<String>,
    new: Vec<Arc<PythonCheck>>,
    errors: Vec<LoadError>,
    custom: Vec<String>,
}

fn plan_reload(
    python: &Python,
    conf_dir: &Path,
    current: &HashSet<String>,
    timeout: Option<Duration>,
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
            .map(|e| discovery_error(conf_dir, e))
            .collect(),
        custom: Vec::new(),
    };
    let mut seen: HashSet<String> = HashSet::new();
    for config in &discovery.configs {
        let ids = instance_ids(config);
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
fn instance_ids(config: &CheckConfigFile) -> Vec<String> {
    config
        .instances
        .iter()
        .map(|i| CheckId::build(&config.name, config.digest, i, &config.init_config).to_string())
        .collect()
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
            tokio::task::spawn_blocking(move || start_python(&options))
                .await
                .map_err(|source| AgentError::Task {
                    what: "starting Python",
                    source,
                })?
        };
        let store = Arc::new(SeriesStore::new());
        let scheduler = Scheduler::start(
            options.scheduler.clone(),
            Arc::new(Sinks {
                store: Arc::clone(&store),
                output: output.clone(),
                format: Arc::clone(&options.format),
            }),
        )?;
        let agent = Agent {
            inner: Arc::new(Inner {
                options,
                python: Mutex::new(python),
                scheduler,
                store,
                output,
                loaded: Mutex::new(Loaded::default()),
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

    fn python(&self) -> Python {
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

    /// Time since the agent started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Reloads every configuration of the configuration directory: instances that are new
    /// start, instances that are gone stop (`cancel()`, then their series are removed),
    /// changed instances (a new ID) restart; unchanged instances keep running untouched.
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

    async fn retry_python(&self) {
        let retry = matches!(&self.python(), Python::Unavailable(e) if retryable(e));
        if !retry {
            return;
        }
        let options = self.inner.options.clone();
        if let Ok(python) = tokio::task::spawn_blocking(move || start_python(&options)).await {
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

    async fn load(&self) -> Result<ReloadSummary, AgentError> {
        let _serial = self.inner.reload_lock.lock().await;
        self.retry_python().await;
        let python = self.python();
        let current: HashSet<String> = self.loaded().jobs.keys().cloned().collect();
        let plan = {
            let python = python.clone();
            let conf_dir = self.inner.options.conf_dir.clone();
            let current = current.clone();
            let timeout = self.inner.options.scheduler.timeout;
            tokio::task::spawn_blocking(move || plan_reload(&python, &conf_dir, &current, timeout))
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
        let mut removed: Vec<String> = current.difference(&plan.keep).cloned().collect();
        removed.sort();
        for id in &removed {
            self.inner.scheduler.remove(id).await?;
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
        let to_validate = {
            let mut loaded = self.loaded();
            for id in &removed {
                loaded.jobs.remove(id);
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
        summary.removed = removed;
        summary.added = added.into_iter().map(|(id, _)| id).collect();
        summary.added.sort();
        Ok(summary)
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends custom checks to the validation thread (started on first use): each is
    /// validated once, off the scheduling path, and its `datadog.agent.check_ready` gauge
    /// set.
    fn validate_in_background(&self, runtime: &Runtime, names: Vec<String>) {
        let mut validator = self
            .inner
            .validator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if validator.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let runtime = runtime.clone();
            let store = Arc::clone(&self.inner.store);
            let results = Arc::clone(&self.inner.validations);
            let timeout = self.inner.options.validation_timeout;
            let spawned = std::thread::Builder::new()
                .name("check-validator".into())
                .spawn(move || {
                    for name in rx {
                        let v = runtime.validate(&ValidationTarget::Name(name.clone()), timeout);
                        let tags = v.tags(runtime.reported_version());
                        store.set_gauge("", CHECK_READY_METRIC, &tags, v.metric_value());
                        tracing::info!(
                            check.name = %name,
                            status = v.status.as_str(),
                            messages = ?v.messages,
                            "custom check validated"
                        );
                        results
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(name, v);
                    }
                });
            match spawned {
                Ok(_) => *validator = Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the validation thread; custom checks are not validated");
                    return;
                }
            }
        }
        if let Some(tx) = validator.as_ref() {
            for name in names {
                if tx.send(name).is_err() {
                    tracing::error!(
                        "the validation thread is gone; custom checks are not validated"
                    );
                    break;
                }
            }
        }
    }

    /// What could not be loaded at the last reload.
    pub fn load_errors(&self) -> Vec<LoadError> {
        self.loaded().errors.clone()
    }

    /// Validation results so far, by check name.
    pub fn validations(&self) -> Vec<Validation> {
        self.inner
            .validations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The body of `GET /checks`.
    pub fn checks_view(&self) -> ChecksView {
        let memory = memtrack::snapshot();
        let memory: HashMap<&str, memtrack::MemoryStats> = memory
            .checks
            .iter()
            .filter(|c| c.live)
            .map(|c| (c.check_id.as_str(), c.stats))
            .collect();
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
                        error: last.as_ref().and_then(|l| l.summary.error.clone()),
                        warnings: last
                            .as_ref()
                            .map(|l| l.summary.warnings.clone())
                            .unwrap_or_default(),
                        metric_count: last.as_ref().map(|l| l.summary.metric_count),
                        stats: s,
                        memory: memory.get(id.as_str()).copied(),
                    }
                })
                .collect();
            (instances, loaded.errors.clone())
        };
        instances
            .sort_by(|a, b| (&a.check, &a.config, a.index).cmp(&(&b.check, &b.config, b.index)));
        ChecksView {
            python: self.python_status(),
            runners: self.inner.options.scheduler.runners,
            instances,
            load_errors,
            validations: self.validations(),
        }
    }

    /// Runs every instance of check `name` now (each as soon as it and a runner are free)
    /// and returns the `outpost check run --json` document: `{"check", "version",
    /// "instances": [...]}`, instances that failed to load included; or, when the check
    /// itself failed to load, `{"check", "error", "instances": []}`. The runs are committed
    /// to the sinks like scheduled ones.
    ///
    /// # Errors
    /// [`AgentError::UnknownCheck`] when no configuration names it;
    /// [`AgentError::PythonUnavailable`]; [`AgentError::ShuttingDown`].
    pub async fn run_check(&self, name: &str) -> Result<serde_json::Value, AgentError> {
        let (jobs, errors) = {
            let loaded = self.loaded();
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
            (jobs, errors)
        };
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
        let mut ran = Vec::with_capacity(handles.len());
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

    /// Overall scheduler statistics.
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.inner.scheduler.stats()
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
        let (instances, load_errors) = {
            let loaded = self.loaded();
            (loaded.jobs.len(), loaded.errors.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_agent_section() {
        let mut agent = AgentConfig::default();
        agent
            .extra
            .insert("check_timeout".into(), serde_json::json!(2.5));
        agent
            .extra
            .insert("shutdown_timeout".into(), serde_json::json!("500ms"));
        assert_eq!(
            duration_key(&agent, "check_timeout", "agent.check_timeout").unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            duration_key(&agent, "shutdown_timeout", "agent.shutdown_timeout").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(duration_key(&agent, "nope", "agent.nope").unwrap(), None);
        for bad in [
            serde_json::json!(0),
            serde_json::json!("soon"),
            serde_json::json!([1]),
        ] {
            agent.extra.insert("check_timeout".into(), bad.clone());
            let e = duration_key(&agent, "check_timeout", "agent.check_timeout").unwrap_err();
            assert!(e.to_string().contains("agent.check_timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn configuration_errors_name_their_check() {
        let conf = Path::new("/c/conf.d");
        assert_eq!(
            check_name_of(conf, Path::new("/c/conf.d/web.d/conf.yaml")).as_deref(),
            Some("web")
        );
        assert_eq!(
            check_name_of(conf, Path::new("/c/conf.d/disk.yml")).as_deref(),
            Some("disk")
        );
        assert_eq!(check_name_of(conf, Path::new("/c/conf.d/notes.txt")), None);
        assert_eq!(check_name_of(conf, Path::new("/elsewhere/x.yaml")), None);
    }
}
