//! The sinks, as the scheduler's observer: every finished run goes to the series store and
//! the `--output` file; a retired instance's series go away; a disabled instance leaves the
//! agent's scheduled instances for its disabled ones, and the log says so once.
//!
//! A failing instance is logged when its state changes (ok to error, error to ok, one error
//! to a different one) and then reminded of at most every [`REMINDER_INTERVAL`] with the
//! number of failed runs ([`FailureLog`]), instead of once per run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use outpost_checks::RunReport;

use super::Loaded;
use super::disabled::{DisabledInstance, log_disabled};
use crate::check::PythonCheck;
use crate::scheduler::{Disabled, Observer, RunInfo};
use crate::sinks::{JsonLines, RunFormat, SeriesStore, submission_lines};

/// How long a failing instance with an unchanged error stays quiet before a reminder.
pub(super) const REMINDER_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What one finished run changes in what the log has said about its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transition {
    /// It was ok (or never ran) and failed.
    Failing { error: String },
    /// It failed again, with an error other than the one last logged.
    Changed { error: String, failed_runs: u64 },
    /// It still fails with the same error, and the last line about it is old enough.
    StillFailing {
        error: String,
        failed_runs: u64,
        since_last: Duration,
    },
    /// It ran without error after failing.
    Recovered { failed_runs: u64 },
}

impl Transition {
    /// Logs the transition: one line, the check id once (as `check.id`).
    pub(super) fn log(&self, id: &str) {
        match self {
            Self::Failing { error } => {
                tracing::warn!(check.id = %id, error = %error, "check failing")
            }
            Self::Changed { error, failed_runs } => tracing::warn!(
                check.id = %id,
                error = %error,
                failed_runs,
                "check failing with a different error"
            ),
            Self::StillFailing {
                error,
                failed_runs,
                since_last,
            } => tracing::warn!(
                check.id = %id,
                error = %error,
                failed_runs,
                since_last_s = since_last.as_secs(),
                "check still failing"
            ),
            Self::Recovered { failed_runs } => {
                tracing::info!(check.id = %id, failed_runs, "check recovered")
            }
        }
    }
}

/// What was last logged about a failing instance.
struct Failing {
    error: String,
    /// Failed runs since it last was ok.
    failed_runs: u64,
    /// When a line about it was last written (the scheduler's clock).
    logged_at: Instant,
}

/// The failing instances, by check id; an instance that is ok has no entry.
#[derive(Default)]
pub(super) struct FailureLog {
    failing: Mutex<HashMap<String, Failing>>,
}

impl FailureLog {
    /// Notes a run of `id` that finished at `now` with `error` (`None`: it succeeded) and
    /// returns what should be logged, if anything. Never fails; the lock is only held for the
    /// map update.
    pub(super) fn observe(
        &self,
        id: &str,
        error: Option<&str>,
        now: Instant,
    ) -> Option<Transition> {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(error) = error else {
            return failing.remove(id).map(|f| Transition::Recovered {
                failed_runs: f.failed_runs,
            });
        };
        let Some(state) = failing.get_mut(id) else {
            failing.insert(
                id.to_owned(),
                Failing {
                    error: error.to_owned(),
                    failed_runs: 1,
                    logged_at: now,
                },
            );
            return Some(Transition::Failing {
                error: error.to_owned(),
            });
        };
        state.failed_runs += 1;
        if state.error != error {
            state.error = error.to_owned();
            state.logged_at = now;
            return Some(Transition::Changed {
                error: error.to_owned(),
                failed_runs: state.failed_runs,
            });
        }
        let since_last = now.saturating_duration_since(state.logged_at);
        if since_last < REMINDER_INTERVAL {
            return None;
        }
        state.logged_at = now;
        Some(Transition::StillFailing {
            error: error.to_owned(),
            failed_runs: state.failed_runs,
            since_last,
        })
    }

    /// Forgets an instance that is no longer scheduled.
    pub(super) fn forget(&self, id: &str) {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// The sinks, as the scheduler's observer.
pub(super) struct Sinks {
    pub(super) store: Arc<SeriesStore>,
    pub(super) output: Option<Arc<JsonLines>>,
    pub(super) format: Arc<dyn RunFormat>,
    pub(super) failures: FailureLog,
    pub(super) loaded: Arc<Mutex<Loaded>>,
}

impl Observer<PythonCheck> for Sinks {
    fn completed(&self, _job: &Arc<PythonCheck>, report: &RunReport, run: &RunInfo) {
        let id = report.check_id.as_str();
        let error = report.error.as_ref().map(|e| e.message.as_str());
        // A run over the memory limit disables its instance, which is logged then.
        if report.memory_limit.is_none()
            && let Some(transition) = self.failures.observe(id, error, run.finished)
        {
            transition.log(id);
        }
        for w in &report.warnings {
            tracing::info!(check.id = %id, warning = %w, "check warning");
        }
        self.store.commit_run(report);
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

    fn disabled(&self, job: &Arc<PythonCheck>, disabled: &Disabled) {
        let id = <PythonCheck as crate::Job>::id(job);
        // Its last reference goes on the scheduler's cancel thread, which may wait for the GIL.
        job.instance().release_on_drop();
        self.failures.forget(id);
        let series = self.store.remove_submitted(id);
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
            // The scheduler still holds the job: this is not its last reference.
            if loaded.jobs.remove(id).is_some() {
                loaded
                    .disabled
                    .insert(id.to_owned(), DisabledInstance::of(job, *disabled));
            }
        }
        log_disabled(id, disabled, series);
    }

    fn retired(&self, job: &Arc<PythonCheck>) {
        self.failures.forget(<PythonCheck as crate::Job>::id(job));
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const ID: &str = "http:0123456789abcdef";

    /// Everything a subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Feeds one run per minute (the clock is the scheduler's: here only arithmetic on an
    /// instant, nothing waits) and returns the text lines logged.
    fn log_runs(runs: &[Option<&str>]) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let log = FailureLog::default();
        let start = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for (minute, error) in (0u64..).zip(runs) {
                let now = start + Duration::from_secs(60 * minute);
                if let Some(t) = log.observe(ID, *error, now) {
                    t.log(ID);
                }
            }
        });
        let bytes = captured.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_failing_check_logs_changes_and_then_a_reminder_every_ten_minutes() {
        // 25 failed runs a minute apart, then a different error, then recovery.
        let mut runs: Vec<Option<&str>> = vec![Some("connection refused"); 25];
        runs.push(Some("timed out"));
        runs.push(None);
        runs.push(None);
        let lines = log_runs(&runs);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].contains("check failing"), "{}", lines[0]);
        assert!(
            lines[0].contains("error=connection refused"),
            "{}",
            lines[0]
        );
        // Minute 10: 11 failed runs so far; minute 20: 21.
        assert!(lines[1].contains("check still failing"), "{}", lines[1]);
        assert!(lines[1].contains("failed_runs=11"), "{}", lines[1]);
        assert!(lines[1].contains("since_last_s=600"), "{}", lines[1]);
        assert!(lines[2].contains("failed_runs=21"), "{}", lines[2]);
        assert!(
            lines[3].contains("check failing with a different error"),
            "{}",
            lines[3]
        );
        assert!(
            lines[3].contains("error=timed out failed_runs=26"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("check recovered") && lines[4].contains("failed_runs=26"),
            "{}",
            lines[4]
        );
        for line in &lines {
            assert_eq!(line.matches(ID).count(), 1, "the id once per line: {line}");
            assert!(!line.contains("Some("), "{line}");
        }
    }

    #[test]
    fn ok_runs_log_nothing_and_a_retired_instance_starts_afresh() {
        assert!(log_runs(&[None, None, None]).is_empty());
        let log = FailureLog::default();
        let now = Instant::now();
        assert_eq!(
            log.observe(ID, Some("boom"), now),
            Some(Transition::Failing {
                error: "boom".into()
            })
        );
        assert_eq!(log.observe(ID, Some("boom"), now), None);
        log.forget(ID);
        assert_eq!(
            log.observe(ID, Some("boom"), now),
            Some(Transition::Failing {
                error: "boom".into()
            }),
            "a forgotten instance is new again"
        );
        // A clock that goes backwards (never, for tokio's) does not remind early.
        assert_eq!(
            log.observe(ID, Some("boom"), now - Duration::from_secs(1)),
            None
        );
    }
}
