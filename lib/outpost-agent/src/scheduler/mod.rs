//! The scheduler: runs [`Job`]s at their interval on a bounded pool of runner threads.
//!
//! * `job`: the [`Job`] trait (a check instance in production), [`Observer`] (the sinks),
//!   and what the scheduler keeps of a run ([`RunSummary`]; it knows nothing of checks).
//! * `handle`: [`Scheduler`], the handle callers hold, and its settings.
//! * `engine`: the scheduling loop, which owns every job's timing.
//! * `pool`: the fixed pool of runner threads.
//! * `runner`: what happens on a runner thread, and the loop's side of a finished run.
//! * `mailbox`: where runner threads leave finished runs, and when they wake the loop.
//! * `timing`: the spread of first runs and the due time of the next run.
//! * `stats`: per-job and overall statistics.
//!
//! # Timing rules
//! * **First run**: `spread_offset(id, interval)` after the job is added (a hash of its ID
//!   modulo the interval, so the first runs of many jobs spread over their interval and the
//!   same ID always gets the same offset); immediately when spreading is off.
//! * **Next run**: due `interval` after the previous due time. A run that takes longer than
//!   its interval is an *overrun*: it is counted and the next run is due when it finishes
//!   (delayed, never stacked: a job never runs twice at once). A run that waited for a
//!   runner until past its next due time makes the next one due `interval` after its start:
//!   missed slots are skipped, not caught up.
//! * **Runners**: at most `runners` runs at once. A due job waits in FIFO order for a free
//!   runner; its *start delay* (start minus due time) is recorded.
//! * **Timeout**: a run still going `timeout` after it started (default: the scheduler's
//!   timeout, else the job's interval) is reported *late*, [`Job::cancel`] is requested
//!   on a thread of its own, and the run is *abandoned*: its runner goes back to the pool
//!   (a new thread takes its place) while the run keeps its thread until it returns, then
//!   that thread ends. The job does not run again before it returns (no overlap); the
//!   threads of abandoned runs are counted in [`SchedulerStats::abandoned`].
//! * **Run now**: [`Scheduler::run_now`] waits for a run that starts after the request (right
//!   away when a runner is free and the job idle). It does not move the job's schedule; a due
//!   time that comes while it runs is served right after.
//! * **Removal**: [`Scheduler::remove`] requests `cancel()`, stops scheduling the job, and
//!   retires it ([`Observer::retired`]) once its run in progress, if any, has finished.
//!   Adding a job whose ID is still retiring schedules the new one when the old one retires.
//! * **Disabling**: a run whose report asks for it ([`JobReport::disable`]: a check over the
//!   check memory limit) disables its job: no further scheduled run, run-now requests
//!   waiting for it are answered [`AgentError::JobDisabled`](crate::AgentError::JobDisabled),
//!   [`Observer::disabled`] is told, `cancel()` is requested and the scheduler lets go of the
//!   job. Its statistics stay, marked [`JobStats::disabled`], and count in
//!   [`SchedulerStats::disabled`] instead of [`SchedulerStats::jobs`]; it is never late
//!   or queued. Adding a job with its ID schedules it afresh; removing its ID forgets them.
//! * **Shutdown**: no new runs start, `cancel()` is requested for every job (running ones
//!   first), and the loop waits up to the grace period for the runs in progress.
//!
//! # Threads and the clock
//! Runs execute on a fixed pool of `runners` OS threads (`check-run`) fed by a channel, so
//! the threads running checks are `runners` plus the abandoned runs still going, however
//! long the agent runs. All timing uses [`tokio::time::Instant`]: under tokio's paused test
//! clock the loop is fully deterministic (on a current-thread runtime the clock does not
//! auto-advance while a run is in progress, and a finished run is posted before it does
//! again).
//!

mod engine;
mod handle;
mod job;
mod mailbox;
mod pool;
mod runner;
mod stats;
mod timing;

pub use self::handle::{ManualRun, Scheduler, SchedulerConfig, ShutdownReport};
pub use self::job::{
    DisableReason, Disabled, Job, JobError, JobReport, NoObserver, Observer, RunInfo, RunKind,
    RunSummary,
};
pub use self::stats::{
    DelayHistogram, JobStats, LastRun, RECENT_RUNS, SchedulerStats, unix_seconds,
};
pub use self::timing::spread_offset;
