//! Per check instance run metrics for the exposition: runs, errors and run durations.
//!
//! * `outpost_agent_check_runs_total{check_name,check_id}` (counter): runs finished.
//! * `outpost_agent_check_run_errors_total{check_name,check_id}` (counter): runs that
//!   reported an error.
//! * `outpost_agent_check_run_duration_seconds{check_name,check_id}` (histogram, buckets
//!   [`DURATION_BOUNDS`]): how long runs took.
//!
//! The series of an instance go away when it is unscheduled (with its submitted series).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::exposition::{Exposition, labels};

/// Upper bounds of the run duration buckets, in seconds (a `+Inf` bucket follows).
pub const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

const RUNS: &str = "outpost_agent_check_runs_total";
const ERRORS: &str = "outpost_agent_check_run_errors_total";
const DURATION: &str = "outpost_agent_check_run_duration_seconds";

#[derive(Debug, Clone)]
struct InstanceRuns {
    /// `check_name="…",check_id="…"`, escaped once.
    labels: String,
    runs: u64,
    errors: u64,
    /// Per bucket (not cumulative); one more entry than [`DURATION_BOUNDS`].
    buckets: [u64; DURATION_BOUNDS.len() + 1],
    sum_seconds: f64,
}

/// Run counts and durations by check instance.
#[derive(Debug, Default)]
pub struct RunMetrics {
    instances: Mutex<BTreeMap<String, InstanceRuns>>,
}

impl RunMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InstanceRuns>> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one finished run of instance `check_id` of check `check_name`.
    pub fn record(&self, check_name: &str, check_id: &str, duration: Duration, failed: bool) {
        let seconds = duration.as_secs_f64();
        let mut instances = self.lock();
        let entry = instances
            .entry(check_id.to_owned())
            .or_insert_with(|| InstanceRuns {
                labels: labels(&[("check_name", check_name), ("check_id", check_id)]),
                runs: 0,
                errors: 0,
                buckets: [0; DURATION_BOUNDS.len() + 1],
                sum_seconds: 0.0,
            });
        entry.runs += 1;
        entry.errors += u64::from(failed);
        let index = DURATION_BOUNDS.partition_point(|b| *b < seconds);
        entry.buckets[index] += 1;
        entry.sum_seconds += seconds;
    }

    /// Forgets an instance; true if it had runs.
    pub fn remove(&self, check_id: &str) -> bool {
        self.lock().remove(check_id).is_some()
    }

    /// Instances with runs.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no instance has runs.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    pub(crate) fn render(&self, out: &mut Exposition) {
        let instances = self.lock();
        if instances.is_empty() {
            return;
        }
        if out.family(RUNS, "counter", "Runs finished, by check instance") {
            for i in instances.values() {
                out.sample(RUNS, "", &i.labels, None, i.runs as f64);
            }
        }
        if out.family(
            ERRORS,
            "counter",
            "Runs that reported an error, by check instance",
        ) {
            for i in instances.values() {
                out.sample(ERRORS, "", &i.labels, None, i.errors as f64);
            }
        }
        if out.family(DURATION, "histogram", "Run durations, by check instance") {
            for i in instances.values() {
                let mut cumulative = 0;
                for (bound, count) in DURATION_BOUNDS.iter().zip(&i.buckets) {
                    cumulative += count;
                    out.sample(
                        DURATION,
                        "_bucket",
                        &i.labels,
                        Some(*bound),
                        cumulative as f64,
                    );
                }
                out.sample(
                    DURATION,
                    "_bucket",
                    &i.labels,
                    Some(f64::INFINITY),
                    i.runs as f64,
                );
                out.sample(DURATION, "_sum", &i.labels, None, i.sum_seconds);
                out.sample(DURATION, "_count", &i.labels, None, i.runs as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_errors_and_durations_by_instance() {
        let m = RunMetrics::default();
        // Durations exact in binary, so that the sum is too.
        m.record("a", "a:1", Duration::from_nanos(3_906_250), false);
        m.record("a", "a:1", Duration::from_nanos(31_250_000), true);
        m.record("b", "b:2", Duration::from_secs(1000), false);
        let mut out = Exposition::default();
        m.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains("# TYPE outpost_agent_check_runs_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("outpost_agent_check_runs_total{check_name=\"a\",check_id=\"a:1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "outpost_agent_check_run_errors_total{check_name=\"a\",check_id=\"a:1\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("outpost_agent_check_run_duration_seconds_bucket{check_name=\"a\",check_id=\"a:1\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("outpost_agent_check_run_duration_seconds_bucket{check_name=\"a\",check_id=\"a:1\",le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("outpost_agent_check_run_duration_seconds_bucket{check_name=\"b\",check_id=\"b:2\",le=\"300\"} 0\n"), "{text}");
        assert!(text.contains("outpost_agent_check_run_duration_seconds_bucket{check_name=\"b\",check_id=\"b:2\",le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.contains("outpost_agent_check_run_duration_seconds_sum{check_name=\"a\",check_id=\"a:1\"} 0.03515625\n"), "{text}");
        assert!(m.remove("a:1"));
        assert!(!m.remove("a:1"));
        assert_eq!(m.len(), 1);
        let mut out = Exposition::default();
        m.render(&mut out);
        assert!(!out.finish().contains("a:1"));
    }
}
