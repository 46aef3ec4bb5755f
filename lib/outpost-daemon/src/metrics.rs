//! The daemon's own telemetry, served on `/telemetry` beside the API's request counters:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `outpost_daemon_operations_total` | counter | `operation`, `result` (`ok` or the error code) |
//! | `outpost_daemon_operation_duration_seconds` | histogram | `operation` |
//! | `outpost_daemon_operations_waiting` | gauge | |
//! | `outpost_daemon_packages_installed` | gauge | |
//! | `outpost_daemon_catalog_entries` | gauge | |
//! | `outpost_daemon_gc_runs_total` | counter | `result` (`ok`, `error`) |
//! | `outpost_daemon_gc_removed_versions_total` | counter | |
//! | `outpost_daemon_start_time_seconds` | gauge | |
//! | `outpost_daemon_experiment_watches_total` | counter | `package`, `outcome` (`promoted`, `auto_promoted`, `stopped`, `health_check_failed`, `experiment_expired`, `replaced`, `removed`, `abandoned`) |
//! | `outpost_daemon_config_experiment_watches_total` | counter | `package`, `outcome` (the same), for the watches of config experiments |
//! | `outpost_daemon_health_runs_total` | counter | `package`, `target` (`package`, `config`), `result` (`pass`, `fail`) |
//!
//! With `fleet:` configured, the fleet poller's series (declared by [`DaemonMetrics::fleet_enabled`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `outpost_fleet_generation` | gauge | | the generation applied (absent before the first) |
//! | `outpost_fleet_converged` | gauge | | 1 when the host is in the applied document's state |
//! | `outpost_fleet_poll_errors_total` | counter | `reason` |
//! | `outpost_fleet_polls_total` | counter | |
//! | `outpost_fleet_applied_timestamp_seconds` | gauge | | when the host first reached the applied generation's state (absent before) |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_api::{MetricKind, Telemetry};

const OPERATIONS: &str = "outpost_daemon_operations_total";
const DURATION: &str = "outpost_daemon_operation_duration_seconds";
const WAITING: &str = "outpost_daemon_operations_waiting";
const PACKAGES: &str = "outpost_daemon_packages_installed";
const CATALOG: &str = "outpost_daemon_catalog_entries";
const GC_RUNS: &str = "outpost_daemon_gc_runs_total";
const GC_REMOVED: &str = "outpost_daemon_gc_removed_versions_total";
const START_TIME: &str = "outpost_daemon_start_time_seconds";
const WATCHES: &str = "outpost_daemon_experiment_watches_total";
const CONFIG_WATCHES: &str = "outpost_daemon_config_experiment_watches_total";
const HEALTH_RUNS: &str = "outpost_daemon_health_runs_total";
/// The generation of the fleet document applied.
pub(crate) const FLEET_GENERATION: &str = "outpost_fleet_generation";
/// 1 when the host is converged to the applied fleet document, else 0.
pub(crate) const FLEET_CONVERGED: &str = "outpost_fleet_converged";
/// Polls of the fleet document that ended in an error or a refusal, by reason.
pub(crate) const FLEET_POLL_ERRORS: &str = "outpost_fleet_poll_errors_total";
/// Polls of the fleet document.
pub(crate) const FLEET_POLLS: &str = "outpost_fleet_polls_total";
/// When the host first reached the applied generation's desired state (Unix seconds).
pub(crate) const FLEET_APPLIED_AT: &str = "outpost_fleet_applied_timestamp_seconds";

/// Operation durations: from a no-op switch to a download of many minutes.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// The daemon's metrics, in the registry its API serves.
#[derive(Debug, Clone)]
pub(crate) struct DaemonMetrics {
    telemetry: Telemetry,
}

/// Logs a failed registry call: the names are fixed, so this only happens if another part of
/// the process registered one of them with another type, which is a bug to see, not to die of.
fn logged(result: Result<(), outpost_api::Error>) {
    if let Err(error) = result {
        tracing::warn!(%error, "daemon metric not recorded");
    }
}

impl DaemonMetrics {
    /// Declares every family in `telemetry` and records the start time.
    pub(crate) fn new(telemetry: Telemetry) -> Self {
        let described = [
            (
                OPERATIONS,
                "Package operations finished, by operation and result (ok or the error code).",
                MetricKind::Counter,
            ),
            (
                WAITING,
                "Mutations waiting for the one running now.",
                MetricKind::Gauge,
            ),
            (
                PACKAGES,
                "Packages installed in the repository.",
                MetricKind::Gauge,
            ),
            (CATALOG, "Entries in the catalog.", MetricKind::Gauge),
            (
                GC_RUNS,
                "Garbage collection passes, by result.",
                MetricKind::Counter,
            ),
            (
                GC_REMOVED,
                "Version directories removed by garbage collection.",
                MetricKind::Counter,
            ),
            (
                WATCHES,
                "Experiment watches ended, by package and outcome (a rollback is \
                 health_check_failed or experiment_expired).",
                MetricKind::Counter,
            ),
            (
                CONFIG_WATCHES,
                "Config experiment watches ended, by package and outcome (a rollback is \
                 health_check_failed or experiment_expired).",
                MetricKind::Counter,
            ),
            (
                HEALTH_RUNS,
                "Health command runs of experiment watches, by package, target (package or \
                 config) and result (pass or fail).",
                MetricKind::Counter,
            ),
            (
                START_TIME,
                "When the daemon started, in seconds since the Unix epoch.",
                MetricKind::Gauge,
            ),
        ];
        for (name, help, kind) in described {
            logged(telemetry.describe(name, help, kind));
        }
        logged(telemetry.describe_histogram(
            DURATION,
            "How long package operations took, by operation.",
            &DURATION_BUCKETS,
        ));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        logged(telemetry.set_gauge(START_TIME, &[], now.as_secs_f64()));
        Self { telemetry }
    }

    /// The registry (served on `/telemetry`).
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// One finished operation: `result` is `"ok"` or the error's code.
    pub(crate) fn operation(&self, operation: &str, result: &str, elapsed: Duration) {
        logged(self.telemetry.add_counter(
            OPERATIONS,
            &[("operation", operation), ("result", result)],
            1.0,
        ));
        logged(self.telemetry.observe(
            DURATION,
            &[("operation", operation)],
            elapsed.as_secs_f64(),
        ));
    }

    /// Mutations waiting for the operation lock.
    pub(crate) fn waiting(&self, n: usize) {
        logged(self.telemetry.set_gauge(WAITING, &[], n as f64));
    }

    /// Packages installed.
    pub(crate) fn packages(&self, n: usize) {
        logged(self.telemetry.set_gauge(PACKAGES, &[], n as f64));
    }

    /// Catalog size.
    pub(crate) fn catalog_entries(&self, n: usize) {
        logged(self.telemetry.set_gauge(CATALOG, &[], n as f64));
    }

    /// One experiment watch ended with `outcome` (`health_check_failed` for a rollback).
    pub(crate) fn watch_ended(&self, package: &str, outcome: &str) {
        logged(self.telemetry.add_counter(
            WATCHES,
            &[("package", package), ("outcome", outcome)],
            1.0,
        ));
    }

    /// One config experiment watch ended with `outcome`: a series of its own, so that the
    /// rollbacks of package rollouts are counted apart.
    pub(crate) fn config_watch_ended(&self, package: &str, outcome: &str) {
        logged(self.telemetry.add_counter(
            CONFIG_WATCHES,
            &[("package", package), ("outcome", outcome)],
            1.0,
        ));
    }

    /// One health run of a watch of `package`'s `target` (`package` or `config`).
    pub(crate) fn health_run(&self, package: &str, target: &str, passed: bool) {
        let result = if passed { "pass" } else { "fail" };
        logged(self.telemetry.add_counter(
            HEALTH_RUNS,
            &[("package", package), ("target", target), ("result", result)],
            1.0,
        ));
    }

    /// Declares the fleet families, with every poll error `reason` at zero (a counter at zero
    /// is a fact too), and the converged gauge at 0 until the first convergence.
    pub(crate) fn fleet_enabled(&self, reasons: &[&str]) {
        for (name, help, kind) in [
            (
                FLEET_GENERATION,
                "Generation of the fleet document applied on this host.",
                MetricKind::Gauge,
            ),
            (
                FLEET_CONVERGED,
                "1 when this host is in the desired state of the applied fleet document, else 0.",
                MetricKind::Gauge,
            ),
            (
                FLEET_POLL_ERRORS,
                "Polls of the fleet document that failed or refused the document, by reason.",
                MetricKind::Counter,
            ),
            (
                FLEET_POLLS,
                "Polls of the fleet document.",
                MetricKind::Counter,
            ),
            (
                FLEET_APPLIED_AT,
                "When this host first reached the desired state of the applied generation \
                 (Unix time, seconds); absent until it does.",
                MetricKind::Gauge,
            ),
        ] {
            logged(self.telemetry.describe(name, help, kind));
        }
        for reason in reasons {
            logged(
                self.telemetry
                    .add_counter(FLEET_POLL_ERRORS, &[("reason", reason)], 0.0),
            );
        }
        logged(self.telemetry.add_counter(FLEET_POLLS, &[], 0.0));
        self.fleet_converged(false);
    }

    /// The generation of the fleet document applied.
    pub(crate) fn fleet_generation(&self, generation: u64) {
        logged(
            self.telemetry
                .set_gauge(FLEET_GENERATION, &[], generation as f64),
        );
    }

    /// Whether the host is converged to the applied fleet document.
    pub(crate) fn fleet_converged(&self, converged: bool) {
        logged(
            self.telemetry
                .set_gauge(FLEET_CONVERGED, &[], if converged { 1.0 } else { 0.0 }),
        );
    }

    /// The host reached the applied generation's desired state at `unix_ms`.
    pub(crate) fn fleet_applied_at(&self, unix_ms: u64) {
        logged(
            self.telemetry
                .set_gauge(FLEET_APPLIED_AT, &[], unix_ms as f64 / 1000.0),
        );
    }

    /// One poll of the fleet document; `error` is the reason of its failure, if any.
    pub(crate) fn fleet_poll(&self, error: Option<&str>) {
        logged(self.telemetry.add_counter(FLEET_POLLS, &[], 1.0));
        if let Some(reason) = error {
            logged(
                self.telemetry
                    .add_counter(FLEET_POLL_ERRORS, &[("reason", reason)], 1.0),
            );
        }
    }

    /// One garbage collection pass: `removed` versions when it succeeded, `None` when it failed.
    pub(crate) fn gc(&self, removed: Option<usize>) {
        let result = if removed.is_some() { "ok" } else { "error" };
        logged(
            self.telemetry
                .add_counter(GC_RUNS, &[("result", result)], 1.0),
        );
        logged(
            self.telemetry
                .add_counter(GC_REMOVED, &[], removed.unwrap_or(0) as f64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render() {
        let metrics = DaemonMetrics::new(Telemetry::new());
        metrics.operation("install", "ok", Duration::from_millis(30));
        metrics.operation("install", "integrity", Duration::from_secs(2));
        metrics.waiting(2);
        metrics.packages(3);
        metrics.catalog_entries(5);
        metrics.gc(Some(1));
        metrics.gc(None);
        metrics.watch_ended("web", "health_check_failed");
        metrics.watch_ended("web", "health_check_failed");
        let text = metrics.telemetry().render();
        for expected in [
            "outpost_daemon_operations_total{operation=\"install\",result=\"ok\"} 1",
            "outpost_daemon_operations_total{operation=\"install\",result=\"integrity\"} 1",
            "outpost_daemon_operation_duration_seconds_bucket{operation=\"install\",le=\"0.05\"} 1",
            "outpost_daemon_operation_duration_seconds_count{operation=\"install\"} 2",
            "outpost_daemon_operations_waiting 2",
            "outpost_daemon_packages_installed 3",
            "outpost_daemon_catalog_entries 5",
            "outpost_daemon_gc_runs_total{result=\"ok\"} 1",
            "outpost_daemon_gc_runs_total{result=\"error\"} 1",
            "outpost_daemon_gc_removed_versions_total 1",
            "outpost_daemon_experiment_watches_total{outcome=\"health_check_failed\",package=\"web\"} 2",
            "# TYPE outpost_daemon_operation_duration_seconds histogram",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            text.contains("outpost_daemon_start_time_seconds "),
            "{text}"
        );
        assert!(
            !text.contains("outpost_fleet"),
            "no fleet series unless enabled"
        );
    }

    #[test]
    fn fleet_families_render() {
        let metrics = DaemonMetrics::new(Telemetry::new());
        metrics.fleet_enabled(&["registry", "expired"]);
        let text = metrics.telemetry().render();
        assert!(
            text.contains("outpost_fleet_poll_errors_total{reason=\"expired\"} 0"),
            "{text}"
        );
        assert!(text.contains("outpost_fleet_converged 0"), "{text}");
        metrics.fleet_generation(7);
        metrics.fleet_converged(true);
        metrics.fleet_poll(None);
        metrics.fleet_poll(Some("expired"));
        let text = metrics.telemetry().render();
        for expected in [
            "outpost_fleet_generation 7",
            "outpost_fleet_converged 1",
            "outpost_fleet_polls_total 2",
            "outpost_fleet_poll_errors_total{reason=\"expired\"} 1",
            "outpost_fleet_poll_errors_total{reason=\"registry\"} 0",
            "# TYPE outpost_fleet_poll_errors_total counter",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
