//! The experiment watch (`docs/experiment-safety.md`): every running experiment has one. It
//! runs the experiment's health command on a schedule, and stops the experiment when the
//! command keeps failing, flaps, or the deadline passes; or promotes it after a clean run of
//! `auto_promote_after`.
//!
//! A watch has a [`Target`]: the package experiment or the config experiment of a package
//! (`docs/config-experiments.md`). The two watches of one package are independent: they are
//! kept, persisted and ended under distinct [`WatchKey`]s, and each acts only on its own kind
//! of experiment.
//!
//! # Guarantees
//! - A watch acts only through the daemon's serialised operations, and only while it is still
//!   the current watch of its key and the experiment on disk is still its version: a
//!   promote, stop, remove or new start that wins the race leaves the watch with nothing to
//!   do, and the watch leaves no task behind.
//! - The specification (policy, start time, deadline, last failure) is persisted in the state
//!   file before the start operation ends; a restarted daemon resumes it with the same
//!   deadlines, and stops at once an experiment whose deadline passed while it was down.
//! - An experiment found on disk at start-up with no persisted watch (a crash between the
//!   switch and the record) gets a watch with the default deadline: no experiment is
//!   unbounded.
//! - Counters of consecutive failures and flapping are kept in memory: a restart starts them
//!   afresh (the deadline and the auto-promote clock do not move).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_types::wire::{ExperimentWatch, HealthCheck, WatchSummary, format_rfc3339};
use outpost_types::{ErrorCode, PackageName, Version};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::hooks::{HealthCommand, HealthOutcome, HealthRun};
use crate::ops::Daemon;

/// Runs kept for the flapping rule and for the history.
const RECENT_RUNS: usize = 10;
/// More changes between pass and fail than this among the last [`RECENT_RUNS`] is flapping.
const MAX_FLIPS: usize = 3;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a watch watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Target {
    /// The package experiment (`experiment` link of the package's versions).
    #[default]
    Package,
    /// The config experiment (`experiment` link of the package's config tree).
    Config,
}

/// Which watch: one per package and target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WatchKey {
    pub(crate) package: String,
    pub(crate) target: Target,
}

/// What the store key of a config watch ends with. A package name has no `/`, so the keys
/// of the two targets never meet.
const CONFIG_SUFFIX: &str = "/config";

impl WatchKey {
    pub(crate) fn new(package: &str, target: Target) -> Self {
        Self {
            package: package.to_string(),
            target,
        }
    }

    /// The package watch of `package`.
    pub(crate) fn package(package: &str) -> Self {
        Self::new(package, Target::Package)
    }

    /// The config watch of `package`.
    pub(crate) fn config(package: &str) -> Self {
        Self::new(package, Target::Config)
    }

    /// The key in the state file: the package name for a package watch (as before config
    /// watches existed), `<package>/config` for a config watch.
    pub(crate) fn store_key(&self) -> String {
        match self.target {
            Target::Package => self.package.clone(),
            Target::Config => format!("{}{CONFIG_SUFFIX}", self.package),
        }
    }

    /// The key of a state-file entry.
    pub(crate) fn from_store_key(key: &str) -> Self {
        match key.strip_suffix(CONFIG_SUFFIX) {
            Some(package) => Self::config(package),
            None => Self::package(key),
        }
    }

    /// `pkg 2` or `config experiment c2 of pkg`, for messages.
    pub(crate) fn subject(&self, version: &str) -> String {
        match self.target {
            Target::Package => format!("{} {version}", self.package),
            Target::Config => format!("config experiment {version} of {}", self.package),
        }
    }
}

/// What the daemon persists of a watch: enough to resume it with the same deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WatchSpec {
    /// Unique per watch; an action checks it is still the current one.
    pub(crate) id: String,
    /// What is watched; absent in the records of package watches.
    #[serde(default)]
    pub(crate) target: Target,
    /// The experiment version watched (a config deployment id for a config watch).
    pub(crate) version: String,
    /// The stable version beside it at the start (`""`: an empty stable config).
    pub(crate) stable: String,
    /// The health command; `None` when neither the start, the catalog nor the package gave one.
    pub(crate) command: Option<Vec<String>>,
    pub(crate) interval_ms: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) failures: u32,
    pub(crate) grace_ms: u64,
    pub(crate) started_at_ms: u64,
    pub(crate) deadline_ms: u64,
    pub(crate) auto_promote_after_ms: Option<u64>,
    /// The end of the last failed run: the auto-promote clock starts again from there.
    #[serde(default)]
    pub(crate) last_failure_ms: Option<u64>,
}

impl WatchSpec {
    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// Where and with what one health run of a watch runs (see [`crate::hooks::HealthRun`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthSubject {
    /// `OUTPOST_VERSION` and `OUTPOST_EXPERIMENT_VERSION` (unless `env` says otherwise).
    pub(crate) experiment: Version,
    /// `OUTPOST_STABLE_VERSION`.
    pub(crate) stable: Version,
    /// The working directory and base of a relative program path.
    pub(crate) dir: std::path::PathBuf,
    /// Variables set after the standard ones.
    pub(crate) env: Vec<(String, String)>,
}

/// What a watch decided after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep watching.
    Continue,
    /// Stop the experiment: the message says why.
    Fail(String),
    /// The watch is no longer current: end quietly.
    Gone,
}

/// An action of a watch on its experiment.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Stop it; the task records this code and message.
    Stop { code: ErrorCode, message: String },
    /// Promote it.
    Promote,
}

#[derive(Debug, Default)]
struct Live {
    consecutive_failures: u32,
    /// Pass / fail of the last runs, oldest first.
    recent: VecDeque<bool>,
    /// The last runs, oldest first.
    checks: VecDeque<HealthCheck>,
    /// A run passed since the last failure (or the start).
    passed_since_failure: bool,
}

impl Live {
    fn flips(&self) -> usize {
        self.recent
            .iter()
            .zip(self.recent.iter().skip(1))
            .filter(|(a, b)| a != b)
            .count()
    }
}

#[derive(Debug)]
struct Active {
    spec: WatchSpec,
    live: Live,
    task: Option<tokio::task::AbortHandle>,
}

/// The watches of the running experiments, by package and target.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    map: Mutex<BTreeMap<WatchKey, Active>>,
}

impl Watches {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<WatchKey, Active>> {
        // Every update is a single field change or insert: a poisoned map is still whole.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs the watch of a key; returns the one it replaces (its task aborted).
    pub(crate) fn insert(
        &self,
        key: &WatchKey,
        spec: WatchSpec,
    ) -> Option<(WatchSpec, Vec<HealthCheck>)> {
        let old = self.lock().insert(
            key.clone(),
            Active {
                spec,
                live: Live::default(),
                task: None,
            },
        );
        old.map(|a| {
            if let Some(t) = a.task {
                t.abort();
            }
            (a.spec, a.live.checks.into())
        })
    }

    /// Attaches the running task of a watch, if it is still current.
    pub(crate) fn set_task(&self, key: &WatchKey, id: &str, task: tokio::task::AbortHandle) {
        match self.lock().get_mut(key).filter(|a| a.spec.id == id) {
            Some(a) => a.task = Some(task),
            None => task.abort(),
        }
    }

    /// Removes the watch of a key (aborting its task unless it is the caller); returns
    /// its specification and last runs.
    pub(crate) fn remove(&self, key: &WatchKey) -> Option<(WatchSpec, Vec<HealthCheck>)> {
        let a = self.lock().remove(key)?;
        if let Some(t) = a.task {
            t.abort();
        }
        Some((a.spec, a.live.checks.into()))
    }

    /// The current watch of a key.
    pub(crate) fn get(&self, key: &WatchKey) -> Option<WatchSpec> {
        self.lock().get(key).map(|a| a.spec.clone())
    }

    /// Whether the watch `id` is still the current one of `key`.
    pub(crate) fn is_current(&self, key: &WatchKey, id: &str) -> bool {
        self.lock().get(key).is_some_and(|a| a.spec.id == id)
    }

    /// Records a run of watch `id`; returns what to do next, and the specification to
    /// persist when the run failed (its auto-promote clock restarts).
    pub(crate) fn record(
        &self,
        key: &WatchKey,
        id: &str,
        outcome: &HealthOutcome,
        at_ms: u64,
    ) -> (Verdict, Option<WatchSpec>) {
        let mut map = self.lock();
        let Some(a) = map.get_mut(key).filter(|a| a.spec.id == id) else {
            return (Verdict::Gone, None);
        };
        let live = &mut a.live;
        live.recent.push_back(outcome.ok);
        if live.recent.len() > RECENT_RUNS {
            live.recent.pop_front();
        }
        live.checks.push_back(HealthCheck {
            at: format_rfc3339(at_ms),
            ok: outcome.ok,
            exit_code: outcome.exit_code,
            output_tail: outcome.output_tail.clone(),
        });
        if live.checks.len() > RECENT_RUNS {
            live.checks.pop_front();
        }
        let mut persist = None;
        if outcome.ok {
            live.consecutive_failures = 0;
            live.passed_since_failure = true;
        } else {
            live.consecutive_failures += 1;
            live.passed_since_failure = false;
            a.spec.last_failure_ms = Some(at_ms);
            persist = Some(a.spec.clone());
        }
        let spec = &a.spec;
        let last = describe(outcome);
        let subject = key.subject(&spec.version);
        let verdict = if live.consecutive_failures >= spec.failures {
            Verdict::Fail(format!(
                "health check of {subject} failed {} time(s) in a row (last: {last}); output:\n{}",
                live.consecutive_failures, outcome.output_tail
            ))
        } else if live.flips() > MAX_FLIPS {
            Verdict::Fail(format!(
                "health check of {subject} is flapping: {} changes between pass and fail in its last {} runs (last: {last}); output:\n{}",
                live.flips(),
                live.recent.len(),
                outcome.output_tail
            ))
        } else {
            Verdict::Continue
        };
        (verdict, persist)
    }

    /// When watch `id` may promote (ms since the epoch): `None` when it has no
    /// `auto_promote_after`, is flapping, or no run passed since its last failure (a watch
    /// without a health command cannot fail, and needs no passing run).
    pub(crate) fn promote_at(&self, key: &WatchKey, id: &str) -> Option<u64> {
        let map = self.lock();
        let a = map.get(key).filter(|a| a.spec.id == id)?;
        promote_at(&a.spec, &a.live)
    }

    /// What `/status` shows, by key.
    pub(crate) fn snapshot(&self) -> BTreeMap<WatchKey, ExperimentWatch> {
        self.lock()
            .iter()
            .map(|(key, a)| {
                let auto = a.spec.auto_promote_after_ms.map(|after| {
                    format_rfc3339(
                        a.spec
                            .last_failure_ms
                            .unwrap_or(a.spec.started_at_ms)
                            .saturating_add(after),
                    )
                });
                (
                    key.clone(),
                    ExperimentWatch {
                        version: a.spec.version.clone(),
                        started_at: format_rfc3339(a.spec.started_at_ms),
                        deadline: format_rfc3339(a.spec.deadline_ms),
                        auto_promote_at: auto,
                        consecutive_failures: a.live.consecutive_failures,
                        last_check: a.live.checks.back().cloned(),
                    },
                )
            })
            .collect()
    }

    /// The last output of watch `id`, for a message.
    pub(crate) fn last_output(&self, key: &WatchKey, id: &str) -> Option<String> {
        let map = self.lock();
        let a = map.get(key).filter(|a| a.spec.id == id)?;
        a.live.checks.back().map(|c| c.output_tail.clone())
    }
}

fn promote_at(spec: &WatchSpec, live: &Live) -> Option<u64> {
    let after = spec.auto_promote_after_ms?;
    if spec.command.is_some() && (!live.passed_since_failure || live.flips() > MAX_FLIPS) {
        return None;
    }
    Some(
        spec.last_failure_ms
            .unwrap_or(spec.started_at_ms)
            .saturating_add(after),
    )
}

fn describe(outcome: &HealthOutcome) -> String {
    match outcome.exit_code {
        Some(0) => "passed".to_string(),
        Some(code) => format!("exit code {code}"),
        None if outcome.output_tail.contains("[timed out") => "timed out".to_string(),
        None => "no exit code".to_string(),
    }
}

/// The record of a watch that ended.
pub(crate) fn summary(
    spec: &WatchSpec,
    checks: Vec<HealthCheck>,
    outcome: &str,
    message: String,
) -> WatchSummary {
    WatchSummary {
        version: spec.version.clone(),
        stable_version: spec.stable.clone(),
        started_at: format_rfc3339(spec.started_at_ms),
        ended_at: format_rfc3339(now_ms()),
        outcome: outcome.to_string(),
        message,
        checks,
    }
}

/// The origin of the grid every watch's runs fall on (see [`on_grid`]).
static GRID_EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The first point at or after `t` of the daemon's grid of `interval`: the multiples of
/// `interval` after one origin shared by every watch. Runs of watches with the same interval
/// (or intervals that are multiples of each other) then fall due together, and the daemon
/// wakes once for all of them instead of once for each: what keeps watching many packages
/// cheap. A time before the origin is returned as it is (it is due).
fn on_grid(t: Instant, interval: Duration) -> Instant {
    let epoch = *GRID_EPOCH.get_or_init(Instant::now);
    let step = interval.as_nanos().max(1);
    let Some(since) = t.checked_duration_since(epoch).filter(|d| !d.is_zero()) else {
        return t;
    };
    let n = since.as_nanos().div_ceil(step);
    u64::try_from(n * step)
        .ok()
        .and_then(|ns| epoch.checked_add(Duration::from_nanos(ns)))
        .unwrap_or(t)
}

/// The health command of a watch, prepared once for the subject it was prepared for (a
/// config watch's subject follows the package's experiment, so it is compared each run).
type Prepared = Option<(HealthSubject, HealthCommand)>;

/// One health run of `subject`, with the command prepared for it (prepared again when the
/// subject changed, or when the last start failed: a program may have been installed since).
async fn health_run(
    prepared: &mut Prepared,
    package: &PackageName,
    subject: HealthSubject,
    command: &[String],
    timeout: Duration,
) -> HealthOutcome {
    let (subject, ready) = match prepared.take() {
        Some((s, c)) if s == subject => (s, c),
        _ => {
            let run = HealthRun {
                package,
                experiment: &subject.experiment,
                stable: &subject.stable,
                version_dir: &subject.dir,
                command,
                timeout,
                env: &subject.env,
            };
            match HealthCommand::prepare(&run) {
                Ok(c) => (subject, c),
                Err(e) => return HealthOutcome::not_started(command, &e),
            }
        }
    };
    match ready.run(timeout).await {
        Ok(outcome) => {
            *prepared = Some((subject, ready));
            outcome
        }
        // Not kept: the next run prepares the command again.
        Err(e) => HealthOutcome::not_started(command, &e),
    }
}

/// The task of one watch: sleeps until the next run, the deadline or the promote time, and
/// acts. Ends when it acted or when it is aborted (its experiment ended another way).
pub(crate) async fn run(daemon: Arc<Daemon>, package: PackageName, spec: WatchSpec) {
    let name = package.as_str();
    let key = WatchKey::new(name, spec.target);
    // Wall-clock times (persisted, shared across restarts) to this process's monotonic clock.
    let (t0, w0) = (Instant::now(), now_ms());
    let at = |ms: u64| t0 + Duration::from_millis(ms.saturating_sub(w0));
    let deadline = at(spec.deadline_ms);
    // The first run comes right after the grace period; the next ones on the grid.
    let mut next_run = at(spec.started_at_ms.saturating_add(spec.grace_ms));
    let mut prepared: Prepared = None;
    if Version::new(spec.version.clone()).is_err() {
        tracing::warn!(
            package.name = name,
            "watch with an invalid version; ignored"
        );
        return;
    }
    loop {
        let promote = daemon.watches().promote_at(&key, &spec.id).map(at);
        let mut wake = deadline;
        if spec.command.is_some() {
            wake = wake.min(next_run);
        }
        if let Some(p) = promote {
            wake = wake.min(p);
        }
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if now >= deadline {
            let after = Duration::from_millis(spec.deadline_ms.saturating_sub(spec.started_at_ms));
            let what = match spec.target {
                Target::Package => format!("experiment {}", key.subject(&spec.version)),
                Target::Config => key.subject(&spec.version),
            };
            let mut message = format!(
                "{what} reached its deadline ({} after its start) without a promote; stopped",
                outpost_types::wire::WireDuration(after)
            );
            if let Some(out) = daemon.watches().last_output(&key, &spec.id) {
                message.push_str("; last health output:\n");
                message.push_str(&out);
            }
            let action = Action::Stop {
                code: ErrorCode::ExperimentExpired,
                message,
            };
            act(&daemon, &package, &spec, action).await;
            return;
        }
        if promote.is_some_and(|p| now >= p) {
            act(&daemon, &package, &spec, Action::Promote).await;
            return;
        }
        let Some(command) = spec.command.as_deref() else {
            continue;
        };
        if now < next_run {
            continue;
        }
        let outcome = match daemon.health_subject(&package, &spec) {
            Ok(subject) => {
                let timeout = Duration::from_millis(spec.timeout_ms);
                health_run(&mut prepared, &package, subject, command, timeout).await
            }
            Err(e) => HealthOutcome {
                ok: false,
                exit_code: None,
                output_tail: format!("could not prepare the health run: {e}"),
            },
        };
        let ended = now_ms();
        tracing::debug!(
            package.name = name, experiment = %key.subject(&spec.version), ok = outcome.ok,
            exit_code = outcome.exit_code, "health check"
        );
        daemon.health_ran(&key, outcome.ok);
        let (verdict, persist) = daemon.watches().record(&key, &spec.id, &outcome, ended);
        daemon.watch_changed(&key, persist.as_ref());
        match verdict {
            Verdict::Continue => {}
            Verdict::Gone => return,
            Verdict::Fail(message) => {
                tracing::warn!(package.name = name, experiment = %key.subject(&spec.version), "{message}");
                let action = Action::Stop {
                    code: ErrorCode::HealthCheckFailed,
                    message,
                };
                act(&daemon, &package, &spec, action).await;
                return;
            }
        }
        // The first point of the grid at least one interval after this run's start (or
        // after now, when the run outlasted the interval: runs never overlap).
        next_run = on_grid(
            (next_run + spec.interval()).max(Instant::now()),
            spec.interval(),
        );
    }
}

/// Carries out an action through the serialised operation path; retried every interval
/// (at least every second) while it fails for another reason than the watch being
/// superseded, e.g. a `pre-experiment-stop` hook that refuses.
async fn act(daemon: &Arc<Daemon>, package: &PackageName, spec: &WatchSpec, action: Action) {
    let key = WatchKey::new(package.as_str(), spec.target);
    loop {
        match daemon
            .watch_action(package.clone(), spec.clone(), action.clone())
            .await
        {
            Ok(()) => return,
            Err(e) if e.is_watch_outcome() => return,
            Err(e) => {
                tracing::warn!(
                    package.name = %package, experiment = %key.subject(&spec.version), error = %e,
                    "the watch could not act on the experiment; will retry"
                );
                tokio::time::sleep(spec.interval().max(Duration::from_secs(1))).await;
                if !daemon.watches().is_current(&key, &spec.id) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(failures: u32) -> WatchSpec {
        WatchSpec {
            id: "w".into(),
            target: Target::Package,
            version: "2".into(),
            stable: "1".into(),
            command: Some(vec!["check".into()]),
            interval_ms: 100,
            timeout_ms: 100,
            failures,
            grace_ms: 0,
            started_at_ms: 1_000,
            deadline_ms: 100_000,
            auto_promote_after_ms: Some(500),
            last_failure_ms: None,
        }
    }

    fn run(ok: bool) -> HealthOutcome {
        HealthOutcome {
            ok,
            exit_code: Some(if ok { 0 } else { 1 }),
            output_tail: if ok { "fine\n" } else { "broken\n" }.into(),
        }
    }

    #[test]
    fn consecutive_failures_stop_and_a_pass_resets_them() {
        let w = Watches::default();
        w.insert(&WatchKey::package("p"), spec(3));
        assert_eq!(
            w.record(&WatchKey::package("p"), "w", &run(false), 2_000).0,
            Verdict::Continue
        );
        assert_eq!(
            w.record(&WatchKey::package("p"), "w", &run(false), 2_100).0,
            Verdict::Continue
        );
        assert_eq!(
            w.record(&WatchKey::package("p"), "w", &run(true), 2_200).0,
            Verdict::Continue
        );
        assert_eq!(
            w.snapshot()[&WatchKey::package("p")].consecutive_failures,
            0
        );
        w.record(&WatchKey::package("p"), "w", &run(false), 2_300);
        w.record(&WatchKey::package("p"), "w", &run(false), 2_400);
        let (verdict, persist) = w.record(&WatchKey::package("p"), "w", &run(false), 2_500);
        let Verdict::Fail(message) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            message.contains("failed 3 time(s)") && message.contains("broken"),
            "{message}"
        );
        assert_eq!(persist.unwrap().last_failure_ms, Some(2_500));
        assert_eq!(
            w.record(&WatchKey::package("p"), "other", &run(true), 2_600)
                .0,
            Verdict::Gone
        );
    }

    #[test]
    fn flapping_counts_as_failing_and_blocks_promotion() {
        let w = Watches::default();
        w.insert(&WatchKey::package("p"), spec(100));
        let mut verdicts = Vec::new();
        for (i, ok) in [true, false, true, false, true].into_iter().enumerate() {
            verdicts.push(
                w.record(&WatchKey::package("p"), "w", &run(ok), 2_000 + i as u64)
                    .0,
            );
        }
        // Four flips among five runs: flapping on the fifth.
        assert!(
            verdicts[..4].iter().all(|v| *v == Verdict::Continue),
            "{verdicts:?}"
        );
        assert!(
            matches!(&verdicts[4], Verdict::Fail(m) if m.contains("flapping")),
            "{verdicts:?}"
        );
        assert_eq!(w.promote_at(&WatchKey::package("p"), "w"), None);
    }

    #[test]
    fn promotion_needs_a_pass_and_restarts_after_a_failure() {
        let w = Watches::default();
        w.insert(&WatchKey::package("p"), spec(3));
        assert_eq!(
            w.promote_at(&WatchKey::package("p"), "w"),
            None,
            "no pass yet"
        );
        w.record(&WatchKey::package("p"), "w", &run(true), 1_100);
        assert_eq!(w.promote_at(&WatchKey::package("p"), "w"), Some(1_500));
        w.record(&WatchKey::package("p"), "w", &run(false), 1_200);
        assert_eq!(w.promote_at(&WatchKey::package("p"), "w"), None);
        w.record(&WatchKey::package("p"), "w", &run(true), 1_300);
        assert_eq!(w.promote_at(&WatchKey::package("p"), "w"), Some(1_700));
        let mut no_command = spec(3);
        no_command.command = None;
        w.insert(&WatchKey::package("q"), no_command);
        assert_eq!(w.promote_at(&WatchKey::package("q"), "w"), Some(1_500));
    }

    #[test]
    fn grid_points_are_multiples_of_the_interval_from_one_origin() {
        let second = Duration::from_secs(1);
        let _ = on_grid(Instant::now(), second);
        let epoch = *GRID_EPOCH.get().unwrap();
        let ms = Duration::from_millis;
        // On the grid already, or rounded up to the next point.
        assert_eq!(on_grid(epoch + ms(2000), second), epoch + ms(2000));
        assert_eq!(on_grid(epoch + ms(1500), second), epoch + ms(2000));
        assert_eq!(on_grid(epoch + ms(2001), second), epoch + ms(3000));
        // Intervals that divide each other share points; any interval has its own grid.
        assert_eq!(on_grid(epoch + ms(9100), ms(500)), epoch + ms(9500));
        assert_eq!(on_grid(epoch + ms(9100), ms(300)), epoch + ms(9300));
        // Times at or before the origin are due as they are.
        assert_eq!(on_grid(epoch, second), epoch);
        if let Some(before) = epoch.checked_sub(ms(10)) {
            assert_eq!(on_grid(before, second), before);
        }
    }

    #[test]
    fn the_package_and_config_watches_of_a_package_have_their_own_keys() {
        let w = Watches::default();
        let (package, config) = (WatchKey::package("p"), WatchKey::config("p"));
        assert_eq!(package.store_key(), "p");
        assert_eq!(config.store_key(), "p/config");
        for key in [&package, &config] {
            assert_eq!(&WatchKey::from_store_key(&key.store_key()), key);
        }
        let mut other = spec(1);
        other.id = "c".into();
        other.target = Target::Config;
        w.insert(&package, spec(1));
        assert!(
            w.insert(&config, other).is_none(),
            "a config watch replaces nothing"
        );
        let (verdict, _) = w.record(&config, "c", &run(false), 2_000);
        assert!(
            matches!(&verdict, Verdict::Fail(m) if m.contains("config experiment 2 of p")),
            "{verdict:?}"
        );
        assert_eq!(w.snapshot()[&package].consecutive_failures, 0);
        assert_eq!(w.record(&package, "c", &run(true), 2_100).0, Verdict::Gone);
        assert!(w.remove(&config).is_some());
        assert!(w.is_current(&package, "w"));
    }
}
