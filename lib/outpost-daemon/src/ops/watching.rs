//! The experiment watch's side of the daemon's operations: the policy of an experiment start
//! (request, then catalog entry, then package file, then defaults), starting, ending and
//! persisting watches, resuming them at start-up, and the history of past watches. The watch
//! loop itself is in [`crate::watch`]; every stop or promote it decides goes through the same
//! serialised operation path as an API call ([`Daemon::run_op`]). What is particular to the
//! watch of a config experiment is in [`super::config_watch`].

use super::*;

/// The environment variable that lowers the floor of the `max_duration` clamp (1 min) for
/// tests and labs that must see an experiment expire in seconds. Read once at start-up; only
/// whoever starts the daemon can set it.
pub const MIN_DURATION_ENV: &str = "OUTPOST_EXPERIMENT_MIN_DURATION";
/// The bounds of an experiment's `max_duration`.
pub(super) const MIN_MAX_DURATION: Duration = Duration::from_secs(60);
pub(super) const MAX_MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Health policy defaults.
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_FAILURES: u32 = 3;
/// Where a package may ship its own health command, inside its version directory.
pub(super) const PACKAGE_HEALTH: &str = "outpost/health";

/// The part of a watch fixed when the experiment start is accepted.
#[derive(Debug, Clone)]
pub(super) struct WatchPolicy {
    command: Option<Vec<String>>,
    interval: Duration,
    timeout: Duration,
    failures: u32,
    grace: Duration,
    max_duration: Duration,
    auto_promote_after: Option<Duration>,
}

impl Daemon {
    /// The watch policy of an experiment start: each field from the request, else the
    /// catalog entry, else the default; `max_duration` clamped.
    pub(super) fn watch_policy(
        &self,
        name: &PackageName,
        version: &Version,
        params: &ExperimentStartParams,
    ) -> WatchPolicy {
        let catalog_health = self
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lookup_host(name.as_str(), version.as_str())
            .and_then(|e| e.health.clone())
            .unwrap_or_default();
        self.policy_over(params, &catalog_health)
    }

    /// The watch policy of `params` over the health policy `below` (a catalog entry's) over
    /// the defaults; `max_duration` clamped.
    pub(super) fn policy_over(
        &self,
        params: &ExperimentStartParams,
        below: &HealthPolicy,
    ) -> WatchPolicy {
        let health = params.health.clone().unwrap_or_default().or(below);
        let HealthPolicy {
            command,
            interval,
            timeout,
            failures,
            grace,
        } = health;
        let interval = interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        let max_duration = params
            .max_duration
            .map_or(self.config.packages.experiment_max_duration.0, |d| d.0)
            .clamp(self.min_max_duration, MAX_MAX_DURATION);
        WatchPolicy {
            command,
            interval,
            timeout: timeout.map_or(interval, |d| d.0),
            failures: failures.unwrap_or(DEFAULT_FAILURES),
            grace: grace.map_or(Duration::ZERO, |d| d.0),
            max_duration,
            auto_promote_after: params.auto_promote_after.map(|d| d.0),
        }
    }

    /// The directory of a version of a package.
    pub(crate) fn version_dir(&self, name: &PackageName, version: &Version) -> PathBuf {
        self.repo.version_dir(name, version)
    }

    /// Where and with what the next health run of watch `spec` runs.
    pub(crate) fn health_subject(
        &self,
        name: &PackageName,
        spec: &WatchSpec,
    ) -> Result<watch::HealthSubject, DaemonError> {
        if spec.target == Target::Config {
            return self.config_health_subject(name, spec);
        }
        let version = |v: &str| {
            Version::new(v.to_string()).map_err(|_| DaemonError::WatchVersion {
                package: name.to_string(),
            })
        };
        let (experiment, stable) = (version(&spec.version)?, version(&spec.stable)?);
        Ok(watch::HealthSubject {
            dir: self.version_dir(name, &experiment),
            experiment,
            stable,
            env: Vec::new(),
        })
    }

    /// The watches of the running experiments.
    pub(crate) fn watches(&self) -> &Watches {
        &self.watches
    }

    /// A watch ran its health command: counted by package, target and result.
    pub(crate) fn health_ran(&self, key: &WatchKey, passed: bool) {
        let target = match key.target {
            Target::Package => "package",
            Target::Config => "config",
        };
        self.metrics.health_run(&key.package, target, passed);
    }

    /// A watch recorded a run: `/status` must look again, and a changed specification is
    /// persisted (a failure restarts the auto-promote clock, across restarts too).
    pub(crate) fn watch_changed(&self, key: &WatchKey, persist: Option<&WatchSpec>) {
        if let Some(spec) = persist
            && self.watches.is_current(key, &spec.id)
            && let Err(e) = self.store.put_watch(&key.store_key(), spec)
        {
            tracing::warn!(package.name = %key.package, error = %e, "could not persist the experiment watch");
        }
        self.state_changed();
    }

    /// Starts (and persists) the watch of a new experiment; a previous watch of the package
    /// ends as `replaced`. Called under the operation lock, after the switch.
    pub(super) fn begin_watch(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
        stable: &Version,
        policy: WatchPolicy,
    ) {
        let dir = self.version_dir(name, version);
        let (version, stable) = (version.as_str(), stable.as_str());
        self.begin(name, Target::Package, version, stable, Some(&dir), policy);
    }

    /// Starts (and persists) a watch of `target`; `package_dir` is the version directory
    /// whose `outpost/health` is the command when the policy has none (`None`: no fallback).
    pub(super) fn begin(
        self: &Arc<Self>,
        name: &PackageName,
        target: Target,
        version: &str,
        stable: &str,
        package_dir: Option<&Path>,
        policy: WatchPolicy,
    ) {
        let started = watch::now_ms();
        let command = policy.command.or_else(|| {
            let file = package_dir?.join(PACKAGE_HEALTH);
            file.is_file().then(|| vec![PACKAGE_HEALTH.to_string()])
        });
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let spec = WatchSpec {
            id: format!("{started:x}-{}", self.watch_seq()),
            target,
            version: version.to_string(),
            stable: stable.to_string(),
            command,
            interval_ms: ms(policy.interval),
            timeout_ms: ms(policy.timeout),
            failures: policy.failures,
            grace_ms: ms(policy.grace),
            started_at_ms: started,
            deadline_ms: started.saturating_add(ms(policy.max_duration)),
            auto_promote_after_ms: policy.auto_promote_after.map(ms),
            last_failure_ms: None,
        };
        tracing::info!(
            package.name = %name, experiment = %WatchKey::new(name.as_str(), target).subject(version),
            deadline_ms = spec.deadline_ms, health_command = spec.command.is_some(),
            "experiment watch started"
        );
        self.install_watch(name, spec);
    }

    /// A number unique within this process, for watch ids.
    pub(super) fn watch_seq(&self) -> u64 {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        SEQ.fetch_add(1, Ordering::Relaxed)
    }

    /// Persists a watch, makes it current (ending the one it replaces) and starts its task.
    pub(super) fn install_watch(self: &Arc<Self>, name: &PackageName, spec: WatchSpec) {
        let key = WatchKey::new(name.as_str(), spec.target);
        if let Err(e) = self.store.put_watch(&key.store_key(), &spec) {
            tracing::warn!(package.name = %name, error = %e, "could not persist the experiment watch; it runs until the daemon stops");
        }
        if let Some((old, checks)) = self.watches.insert(&key, spec.clone()) {
            let message = format!("replaced by the watch of {}", spec.version);
            self.record_end(&key, &old, checks, "replaced", message);
        }
        let id = spec.id.clone();
        let task = tokio::spawn(watch::run(self.clone(), name.clone(), spec));
        self.watches.set_task(&key, &id, task.abort_handle());
        self.state_changed();
    }

    /// Ends the current watch of `key`, if any, recording how.
    pub(super) fn end_watch(&self, key: &WatchKey, outcome: &str, message: String) {
        if let Some((spec, checks)) = self.watches.remove(key) {
            self.record_end(key, &spec, checks, outcome, message);
            self.state_changed();
        }
    }

    /// Ends the watch `key` of `spec` as `auto_promoted`, saying after how long.
    pub(super) fn end_watch_promoted(&self, key: &WatchKey, spec: &WatchSpec) {
        let after = spec.auto_promote_after_ms.unwrap_or(0);
        self.end_watch(
            key,
            "auto_promoted",
            format!(
                "promoted after {} without a failed health check",
                WireDuration(Duration::from_millis(after))
            ),
        );
    }

    pub(super) fn record_end(
        &self,
        key: &WatchKey,
        spec: &WatchSpec,
        checks: Vec<outpost_types::wire::HealthCheck>,
        outcome: &str,
        message: String,
    ) {
        let name = key.package.as_str();
        tracing::info!(package.name = name, experiment = %key.subject(&spec.version), outcome, "experiment watch ended");
        match key.target {
            Target::Package => self.metrics.watch_ended(name, outcome),
            Target::Config => self.metrics.config_watch_ended(name, outcome),
        }
        let summary = watch::summary(spec, checks, outcome, message);
        if let Err(e) = self.store.end_watch(&key.store_key(), &spec.id, &summary) {
            tracing::warn!(package.name = name, error = %e, "could not record the end of the experiment watch");
        }
    }

    /// The experiment of `target` on disk now.
    pub(super) fn experiment_on_disk(
        &self,
        name: &PackageName,
        target: Target,
    ) -> Result<Option<Version>, DaemonError> {
        Ok(match target {
            Target::Package => self.repo.state(name)?.and_then(|s| s.experiment),
            Target::Config => self.repo.config_state(name)?.experiment,
        })
    }

    /// After an operation: ends each watch of `name` (package and config) whose experiment is
    /// no longer the one on disk, naming the operation that ended it.
    pub(super) fn reconcile_watch(&self, name: &PackageName, operation: &str) {
        for target in [Target::Package, Target::Config] {
            let key = WatchKey::new(name.as_str(), target);
            let Some(spec) = self.watches.get(&key) else {
                continue;
            };
            let experiment = match self.experiment_on_disk(name, target) {
                Ok(experiment) => experiment,
                Err(e) => {
                    tracing::warn!(package.name = %name, error = %e, "could not read the package state");
                    continue;
                }
            };
            if experiment
                .as_ref()
                .is_some_and(|e| e.as_str() == spec.version)
            {
                continue;
            }
            let (outcome, message) = match operation {
                "promote_experiment" | "promote_config_experiment" => {
                    ("promoted", "promoted by a request".to_string())
                }
                "stop_experiment" | "stop_config_experiment" => {
                    ("stopped", "stopped by a request".to_string())
                }
                "remove" => ("removed", "the package was removed".to_string()),
                "start_experiment" | "start_config_experiment" => (
                    "replaced",
                    "another experiment start replaced it".to_string(),
                ),
                other => ("abandoned", format!("its experiment ended during {other}")),
            };
            self.end_watch(&key, outcome, message);
        }
    }

    /// Resumes the persisted watches at start-up, and gives a default one to any experiment
    /// that has none. A watch whose experiment is gone is recorded as `abandoned`; one whose
    /// deadline passed acts at once (after the start-up cleanup, which holds the lock).
    /// Must be called from within the runtime, once.
    ///
    /// # Errors
    /// The state file or the repository could not be read.
    pub fn start_watches(self: &Arc<Self>) -> Result<(), DaemonError> {
        let persisted = self.store.watches()?;
        let states = self.repo.states()?;
        for (stored, mut spec) in persisted {
            let key = WatchKey::from_store_key(&stored);
            // The key says the target: a record written before targets existed has none.
            spec.target = key.target;
            // A config outlives its package's removal: its watch is resumed all the same.
            let name = PackageName::new(key.package.clone())
                .ok()
                .filter(|n| key.target == Target::Config || states.contains_key(n));
            let experiment = match &name {
                Some(n) => self.experiment_on_disk(n, key.target).ok().flatten(),
                None => None,
            };
            match (name, experiment) {
                (Some(name), Some(e)) if e.as_str() == spec.version => {
                    tracing::info!(package.name = %name, experiment = %key.subject(e.as_str()), deadline_ms = spec.deadline_ms, "experiment watch resumed");
                    self.install_watch(&name, spec);
                }
                _ => {
                    let message = "its experiment was gone when the daemon started".to_string();
                    self.record_end(&key, &spec, Vec::new(), "abandoned", message);
                }
            }
        }
        for (name, state) in &states {
            let key = WatchKey::package(name.as_str());
            let (Some(experiment), None) = (&state.experiment, self.watches.get(&key)) else {
                continue;
            };
            tracing::warn!(package.name = %name, package.version = %experiment, "experiment without a watch; watching it with the default deadline");
            let policy = self.watch_policy(name, experiment, &ExperimentStartParams::default());
            self.begin_watch(name, experiment, &state.stable, policy);
        }
        self.start_config_watches(&states);
        Ok(())
    }

    /// `GET /{package}/experiment/history`: the last watches of `name`, oldest first.
    pub fn experiment_history(&self, name: &PackageName) -> Result<ExperimentHistory, DaemonError> {
        Ok(ExperimentHistory {
            package: name.to_string(),
            watches: self.store.history(name.as_str())?,
        })
    }

    /// Carries out a watch's action through the serialised path, if the watch is still
    /// current when its turn comes. A stop records `ERROR` with the watch's code and message
    /// (returned as [`DaemonError::RolledBack`]); a promote records `DONE` with
    /// `auto_promote_experiment`.
    pub(crate) async fn watch_action(
        self: &Arc<Self>,
        name: PackageName,
        spec: WatchSpec,
        action: Action,
    ) -> Result<(), DaemonError> {
        if spec.target == Target::Config {
            return self.config_watch_action(name, spec, action).await;
        }
        let (operation, version, precheck) = watch_op(&spec, &action);
        let this = self.clone();
        self.run_op(
            name.clone(),
            operation,
            version.clone(),
            Requester::default(),
            precheck,
            move |cell| async move {
                let version = version.ok_or_else(|| DaemonError::WatchVersion {
                    package: name.to_string(),
                })?;
                match action {
                    Action::Stop { code, message } => {
                        this.hook(HookEvent::PreExperimentStop, &name, &version, &[])
                            .await?;
                        cell.set(Phase::Switch, 0, None);
                        let repo = this.repo.clone();
                        let n = name.clone();
                        this.blocking(move || repo.stop_experiment(&n).map_err(DaemonError::from))
                            .await?;
                        let key = WatchKey::package(name.as_str());
                        this.end_watch(&key, code.as_str(), message.clone());
                        Err(DaemonError::RolledBack { code, message })
                    }
                    Action::Promote => {
                        cell.set(Phase::Switch, 0, None);
                        let repo = this.repo.clone();
                        let n = name.clone();
                        this.blocking(move || {
                            repo.promote_experiment(&n).map_err(DaemonError::from)
                        })
                        .await?;
                        this.end_watch_promoted(&WatchKey::package(name.as_str()), &spec);
                        this.hook(HookEvent::PostPromote, &name, &version, &[])
                            .await
                            .map_err(|e| after_switch(e, format!("{version} is now stable")))
                    }
                }
            },
        )
        .await
    }
}

/// What an automatic action of the watch `spec` runs as: its operation's name (by target
/// and action), the version it concerns (`None` if the persisted one is invalid, which the
/// operation then refuses) and the precheck that refuses it once the watch was superseded.
pub(super) fn watch_op(
    spec: &WatchSpec,
    action: &Action,
) -> (&'static str, Option<Version>, Precheck) {
    let operation = match (spec.target, action) {
        (Target::Package, Action::Stop { .. }) => "auto_stop_experiment",
        (Target::Package, Action::Promote) => "auto_promote_experiment",
        (Target::Config, Action::Stop { .. }) => "auto_stop_config_experiment",
        (Target::Config, Action::Promote) => "auto_promote_config_experiment",
    };
    let precheck = Precheck::Watch {
        target: spec.target,
        id: spec.id.clone(),
        version: spec.version.clone(),
    };
    (operation, Version::new(spec.version.clone()).ok(), precheck)
}
