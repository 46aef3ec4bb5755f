//! What the scheduler runs: the [`Job`] trait, and what it learns from each run.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Something run at an interval on a runner thread: a check instance in production
/// ([`crate::PythonCheck`]), a Rust job in the scheduler's tests and benchmarks.
///
/// `run` blocks its runner thread for as long as the job works; the scheduler never calls it
/// twice at once for one job, but may call [`Job::cancel`] from another thread while it runs.
pub trait Job: Send + Sync + 'static {
    /// What one run produces (handed to the [`Observer`] and to run-now callers).
    type Report: JobReport;

    /// The job's stable identity (a check ID). Two jobs with the same ID are one job.
    fn id(&self) -> &str;

    /// Time between two scheduled runs. A zero interval is treated as one millisecond.
    fn interval(&self) -> Duration;

    /// How long a run may take before it is reported late and [`Job::cancel`] is requested;
    /// `None` leaves it to the scheduler's default (its configured timeout, else the interval).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs the job once, on a runner thread. May block.
    fn run(&self) -> Self::Report;

    /// Asks a run in progress to stop (and a job that is being removed to release what it
    /// holds). Called from a thread of its own, never from the scheduling loop; must not
    /// panic.
    fn cancel(&self);
}

/// What the scheduler keeps from a run's report for its statistics.
pub trait JobReport: Send + Sync + 'static {
    /// The error, warnings and submission counts of the run.
    fn summary(&self) -> RunSummary;

    /// Set when the run must disable its job: it is no longer scheduled (see the module
    /// docs of [`super`]). `None` by default.
    fn disable(&self) -> Option<DisableReason> {
        None
    }
}

/// Why a job was disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DisableReason {
    /// A run went over the check memory limit (`agent.check_memory_limit`): an allocation
    /// was refused and the run stopped.
    MemoryLimit {
        /// The limit, in bytes.
        limit_bytes: u64,
        /// What the instance held when the allocation was refused, in bytes.
        inuse_bytes: u64,
    },
}

impl std::fmt::Display for DisableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MemoryLimit {
                limit_bytes,
                inuse_bytes,
            } => write!(
                f,
                "went over agent.check_memory_limit ({limit_bytes} bytes) holding about \
                 {inuse_bytes} bytes"
            ),
        }
    }
}

/// A disabled job: why, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Disabled {
    /// Why.
    #[serde(flatten)]
    pub reason: DisableReason,
    /// When the run that disabled it started (Unix seconds).
    #[serde(rename = "at", serialize_with = "super::stats::ser_unix")]
    pub at: SystemTime,
}

/// An error a run reported, as the statistics keep it (for a check: its exception and
/// traceback).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobError {
    /// What went wrong.
    pub message: String,
    /// Where (a Python traceback for a check; may be empty).
    pub traceback: String,
}

/// The part of a run the statistics keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// `None` when the run succeeded.
    pub error: Option<JobError>,
    /// Warnings the run reported.
    pub warnings: Vec<String>,
    /// Metric samples submitted.
    pub metric_count: usize,
    /// Service checks submitted.
    pub service_check_count: usize,
    /// Events submitted.
    pub event_count: usize,
    /// Histogram buckets submitted.
    pub histogram_bucket_count: usize,
}

/// Why a job ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Its interval came round.
    Scheduled,
    /// Someone asked for a run now (the run also counts as scheduled when its due time had
    /// come while it waited).
    Manual,
}

/// When and how a run happened, as the runner thread saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// Why it ran.
    pub kind: RunKind,
    /// When it was due (scheduled runs), on the scheduler's clock.
    pub due: Option<tokio::time::Instant>,
    /// When the runner thread started it, on the scheduler's clock.
    pub started: tokio::time::Instant,
    /// When it returned, on the scheduler's clock.
    pub finished: tokio::time::Instant,
    /// Wall-clock time at the start, for reports and timestamps.
    pub started_at: SystemTime,
    /// CPU time the runner thread spent inside [`Job::run`].
    pub cpu_time: Duration,
}

impl RunInfo {
    /// How long the run took.
    pub fn duration(&self) -> Duration {
        self.finished.saturating_duration_since(self.started)
    }

    /// How long after its due time it started (zero for manual runs).
    pub fn start_delay(&self) -> Duration {
        self.due.map_or(Duration::ZERO, |due| {
            self.started.saturating_duration_since(due)
        })
    }
}

/// Receives what the scheduler's runs produce: the sinks in production.
pub trait Observer<J: Job>: Send + Sync + 'static {
    /// Called on the runner thread right after each run, before the job can run again and
    /// before the run counts as finished (so a removed job's last run is committed before
    /// [`Observer::retired`]).
    fn completed(&self, job: &Arc<J>, report: &J::Report, run: &RunInfo);

    /// Called once a removed job will never run again (after its last run finished).
    fn retired(&self, job: &Arc<J>) {
        let _ = job;
    }

    /// Called on the scheduling loop when a run disabled its job ([`JobReport::disable`]):
    /// the job is no longer scheduled and the scheduler lets go of it (after `cancel()`) as
    /// soon as this returns. Must not drop the job's last reference on this thread.
    fn disabled(&self, job: &Arc<J>, disabled: &Disabled) {
        let _ = (job, disabled);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl<J: Job> Observer<J> for NoObserver {
    fn completed(&self, _job: &Arc<J>, _report: &J::Report, _run: &RunInfo) {}
}
