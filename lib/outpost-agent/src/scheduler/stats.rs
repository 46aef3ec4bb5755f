//! Statistics the scheduler keeps per job and overall, readable at any time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use super::job::{Disabled, RunInfo, RunKind, RunSummary};

/// Serialises a duration as fractional milliseconds.
pub(crate) fn ser_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn ser_opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_ms(d, s),
        None => s.serialize_none(),
    }
}

fn ser_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Serialises a wall-clock time as fractional seconds since the Unix epoch.
pub(crate) fn ser_unix<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(unix_seconds(*t))
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The last run of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    /// Why it ran.
    pub kind: RunKind,
    /// When it started (Unix seconds).
    #[serde(serialize_with = "ser_unix")]
    pub started_at: SystemTime,
    /// How long it took.
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    /// How long after its due time it started.
    #[serde(rename = "start_delay_ms", serialize_with = "ser_ms")]
    pub start_delay: Duration,
    /// CPU time of the runner thread inside the run.
    #[serde(rename = "cpu_ms", serialize_with = "ser_ms")]
    pub cpu_time: Duration,
    /// It ran past its timeout (reported late, cancel requested).
    pub late: bool,
    /// It took longer than its interval.
    pub overrun: bool,
    /// Error, warnings and counts.
    #[serde(flatten)]
    pub summary: RunSummary,
}

/// Statistics of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStats {
    /// The job's ID.
    pub id: String,
    /// Its interval.
    #[serde(rename = "interval_s", serialize_with = "ser_secs")]
    pub interval: Duration,
    /// Its timeout.
    #[serde(rename = "timeout_s", serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// Runs finished (scheduled and manual).
    pub runs: u64,
    /// Of which manual.
    pub manual_runs: u64,
    /// Runs that reported an error.
    pub errors: u64,
    /// Warnings reported, over all runs.
    pub warnings: u64,
    /// Runs that took longer than the interval (each delayed the next one).
    pub overruns: u64,
    /// Runs that went past their timeout (reported late; cancel requested).
    pub late: u64,
    /// A run is in progress.
    pub running: bool,
    /// How long the run in progress has been going.
    #[serde(rename = "running_for_ms", serialize_with = "ser_opt_ms")]
    pub running_for: Option<Duration>,
    /// Time until the next scheduled run is due (zero when due and waiting for a runner or
    /// for the run in progress).
    #[serde(rename = "next_run_in_ms", serialize_with = "ser_opt_ms")]
    pub next_run_in: Option<Duration>,
    /// Sum of the run durations.
    #[serde(rename = "total_duration_ms", serialize_with = "ser_ms")]
    pub total_duration: Duration,
    /// Sum of the runner threads' CPU time inside runs.
    #[serde(rename = "total_cpu_ms", serialize_with = "ser_ms")]
    pub total_cpu: Duration,
    /// The last finished run.
    pub last_run: Option<LastRun>,
    /// Set once a run disabled the job: it is no longer scheduled.
    pub disabled: Option<Disabled>,
    /// Durations of the last [`RECENT_RUNS`] runs in milliseconds, oldest first (the status
    /// page's sparkline; not in `GET /checks`, which stays small).
    #[serde(skip)]
    pub recent_ms: Vec<f64>,
}

/// Run durations kept per job in [`JobStats::recent_ms`].
pub const RECENT_RUNS: usize = 60;

/// Counts of scheduled runs by how long after their due time they started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelayHistogram {
    /// Upper bounds of the buckets, in milliseconds; a last, unbounded bucket follows.
    pub bounds_ms: Vec<u64>,
    /// Runs per bucket (not cumulative); one more entry than `bounds_ms`.
    pub counts: Vec<u64>,
}

/// Bucket bounds of [`DelayHistogram`] (milliseconds).
const DELAY_BOUNDS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

impl Default for DelayHistogram {
    fn default() -> Self {
        Self {
            bounds_ms: DELAY_BOUNDS_MS.to_vec(),
            counts: vec![0; DELAY_BOUNDS_MS.len() + 1],
        }
    }
}

impl DelayHistogram {
    fn record(&mut self, delay: Duration) {
        let ms = delay.as_secs_f64() * 1000.0;
        #[allow(clippy::cast_precision_loss)] // bounds are small integers
        let index = self.bounds_ms.partition_point(|b| (*b as f64) < ms);
        if let Some(c) = self.counts.get_mut(index) {
            *c += 1;
        }
    }

    /// Runs recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Runs that started at most `bound_ms` after their due time; `bound_ms` must be one of
    /// the bounds (else the next lower bound is used).
    pub fn at_most(&self, bound_ms: u64) -> u64 {
        let buckets = self.bounds_ms.partition_point(|b| *b <= bound_ms);
        self.counts.iter().take(buckets).sum()
    }
}

/// Statistics of the whole scheduler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerStats {
    /// Runner slots.
    pub runners: usize,
    /// Slots busy now (a run past its timeout is abandoned and gives its slot back).
    pub busy: usize,
    /// Threads of abandoned runs still going: past their timeout, each keeps the thread it
    /// runs on (a new one took its place in the pool), until it returns. The threads running
    /// checks are `runners + abandoned`.
    pub abandoned: usize,
    /// Runs abandoned past their timeout so far.
    pub abandoned_total: u64,
    /// Jobs due and waiting for a free runner.
    pub queued: usize,
    /// Jobs scheduled (disabled ones not included).
    pub jobs: usize,
    /// Jobs disabled by one of their runs (no longer scheduled; their statistics stay).
    pub disabled: usize,
    /// Runs finished.
    pub runs: u64,
    /// Runs that reported an error.
    pub errors: u64,
    /// Runs that took longer than their interval.
    pub overruns: u64,
    /// Runs that went past their timeout.
    pub late: u64,
    /// Manual runs finished.
    pub manual_runs: u64,
    /// Sum of the runner threads' CPU time inside runs.
    #[serde(rename = "run_cpu_ms", serialize_with = "ser_ms")]
    pub run_cpu: Duration,
    /// Scheduled runs by start delay.
    pub start_delay: DelayHistogram,
    /// Shutdown has begun.
    pub shutting_down: bool,
}

#[derive(Debug)]
struct JobRecord {
    stats: JobStats,
    running_since: Option<tokio::time::Instant>,
    next_due: Option<tokio::time::Instant>,
}

#[derive(Debug)]
struct Table {
    jobs: BTreeMap<Arc<str>, JobRecord>,
    totals: SchedulerStats,
}

impl Table {
    /// Takes a record that left the table out of the counts.
    fn uncount(&mut self, gone: Option<&JobRecord>) {
        match gone {
            Some(r) if r.stats.disabled.is_some() => {
                self.totals.disabled = self.totals.disabled.saturating_sub(1);
            }
            Some(_) => self.totals.jobs = self.totals.jobs.saturating_sub(1),
            None => {}
        }
    }
}

/// The statistics, shared between the scheduling loop (which writes) and readers.
#[derive(Debug, Clone)]
pub(crate) struct SharedStats(Arc<Mutex<Table>>);

impl SharedStats {
    pub(crate) fn new(runners: usize) -> Self {
        Self(Arc::new(Mutex::new(Table {
            jobs: BTreeMap::new(),
            totals: SchedulerStats {
                runners,
                busy: 0,
                abandoned: 0,
                abandoned_total: 0,
                queued: 0,
                jobs: 0,
                disabled: 0,
                runs: 0,
                errors: 0,
                overruns: 0,
                late: 0,
                manual_runs: 0,
                run_cpu: Duration::ZERO,
                start_delay: DelayHistogram::default(),
                shutting_down: false,
            },
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add(
        &self,
        id: &Arc<str>,
        interval: Duration,
        timeout: Duration,
        next_due: tokio::time::Instant,
    ) {
        let mut t = self.lock();
        let replaced = t.jobs.insert(
            Arc::clone(id),
            JobRecord {
                stats: JobStats {
                    id: id.to_string(),
                    interval,
                    timeout,
                    runs: 0,
                    manual_runs: 0,
                    errors: 0,
                    warnings: 0,
                    overruns: 0,
                    late: 0,
                    running: false,
                    running_for: None,
                    next_run_in: None,
                    total_duration: Duration::ZERO,
                    total_cpu: Duration::ZERO,
                    last_run: None,
                    disabled: None,
                    recent_ms: Vec::new(),
                },
                running_since: None,
                next_due: Some(next_due),
            },
        );
        t.uncount(replaced.as_ref());
        t.totals.jobs += 1;
    }

    /// Forgets a job's statistics; true when there were any.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut t = self.lock();
        let gone = t.jobs.remove(id);
        t.uncount(gone.as_ref());
        gone.is_some()
    }

    pub(crate) fn started(&self, id: &str, at: tokio::time::Instant) {
        let mut t = self.lock();
        t.totals.busy += 1;
        if let Some(r) = t.jobs.get_mut(id) {
            r.stats.running = true;
            r.running_since = Some(at);
        }
    }

    pub(crate) fn late(&self, id: &str) {
        let mut t = self.lock();
        t.totals.late += 1;
        if let Some(r) = t.jobs.get_mut(id) {
            r.stats.late += 1;
        }
    }

    /// A late run gave its runner back and keeps its thread.
    pub(crate) fn abandoned(&self) {
        let mut t = self.lock();
        t.totals.busy = t.totals.busy.saturating_sub(1);
        t.totals.abandoned += 1;
        t.totals.abandoned_total += 1;
    }

    pub(crate) fn set_next_due(&self, id: &str, next: Option<tokio::time::Instant>) {
        if let Some(r) = self.lock().jobs.get_mut(id) {
            r.next_due = next;
        }
    }

    pub(crate) fn set_queued(&self, queued: usize) {
        self.lock().totals.queued = queued;
    }

    pub(crate) fn shutting_down(&self) {
        self.lock().totals.shutting_down = true;
    }

    /// Records a finished run (on its runner thread); `next_due`: the job's next due time,
    /// for scheduled runs; `abandoned`: its runner was given back at its timeout (its thread
    /// is counted in `abandoned` until now, not in `busy`).
    #[allow(clippy::too_many_arguments)] // one call site, on the runner thread
    pub(crate) fn finished(
        &self,
        id: &str,
        info: &RunInfo,
        summary: RunSummary,
        late: bool,
        overrun: bool,
        abandoned: bool,
        next_due: Option<tokio::time::Instant>,
        disabled: Option<Disabled>,
    ) {
        let mut t = self.lock();
        let failed = summary.error.is_some();
        let totals = &mut t.totals;
        if abandoned {
            totals.abandoned = totals.abandoned.saturating_sub(1);
        } else {
            totals.busy = totals.busy.saturating_sub(1);
        }
        totals.runs += 1;
        totals.errors += u64::from(failed);
        totals.overruns += u64::from(overrun);
        totals.manual_runs += u64::from(info.kind == RunKind::Manual);
        totals.run_cpu += info.cpu_time;
        if info.due.is_some() {
            totals.start_delay.record(info.start_delay());
        }
        let mut newly_disabled = false;
        if let Some(r) = t.jobs.get_mut(id) {
            let s = &mut r.stats;
            s.runs += 1;
            s.manual_runs += u64::from(info.kind == RunKind::Manual);
            s.errors += u64::from(failed);
            s.warnings += summary.warnings.len() as u64;
            s.overruns += u64::from(overrun);
            s.running = false;
            s.total_duration += info.duration();
            s.total_cpu += info.cpu_time;
            if s.recent_ms.len() >= RECENT_RUNS {
                s.recent_ms.remove(0);
            }
            s.recent_ms.push(info.duration().as_secs_f64() * 1000.0);
            r.running_since = None;
            if next_due.is_some() {
                r.next_due = next_due;
            }
            if disabled.is_some() {
                newly_disabled = s.disabled.is_none();
                s.disabled = disabled;
                r.next_due = None;
            }
            s.last_run = Some(LastRun {
                kind: info.kind,
                started_at: info.started_at,
                duration: info.duration(),
                start_delay: info.start_delay(),
                cpu_time: info.cpu_time,
                late,
                overrun,
                summary,
            });
        }
        if newly_disabled {
            t.totals.jobs = t.totals.jobs.saturating_sub(1);
            t.totals.disabled += 1;
        }
    }

    fn view(r: &JobRecord, now: tokio::time::Instant) -> JobStats {
        let mut s = r.stats.clone();
        s.running_for = r.running_since.map(|t| now.saturating_duration_since(t));
        s.next_run_in = r.next_due.map(|t| t.saturating_duration_since(now));
        s
    }

    /// Every job's statistics, in ID order.
    pub(crate) fn jobs(&self) -> Vec<JobStats> {
        let now = tokio::time::Instant::now();
        self.lock()
            .jobs
            .values()
            .map(|r| Self::view(r, now))
            .collect()
    }

    /// One job's statistics.
    pub(crate) fn job(&self, id: &str) -> Option<JobStats> {
        let now = tokio::time::Instant::now();
        self.lock().jobs.get(id).map(|r| Self::view(r, now))
    }

    pub(crate) fn totals(&self) -> SchedulerStats {
        self.lock().totals.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_histogram_buckets() {
        let mut h = DelayHistogram::default();
        for ms in [0, 1, 2, 99, 100, 101, 20_000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.total(), 7);
        assert_eq!(h.at_most(1), 2, "0 and 1 ms");
        assert_eq!(h.at_most(100), 5, "up to and including 100 ms");
        assert_eq!(h.at_most(10_000), 6);
        assert_eq!(h.counts.last(), Some(&1), "20 s is past the last bound");
    }
}
