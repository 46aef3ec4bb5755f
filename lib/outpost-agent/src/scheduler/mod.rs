//! The scheduler: runs [`Job`]s at their interval on a bounded pool of runner threads.
//!
//! * `job`: the [`Job`] trait (a check instance in production), [`Observer`] (the sinks).
//! * `engine`: the scheduling loop and its handle, [`Scheduler`].
//! * `stats`: per-job and overall statistics.

mod engine;
mod job;
mod stats;

pub use self::engine::{ManualRun, Scheduler, SchedulerConfig, ShutdownReport, spread_offset};
pub use self::job::{Job, JobReport, NoObserver, Observer, RunInfo, RunKind, RunSummary};
pub use self::stats::{DelayHistogram, JobStats, LastRun, SchedulerStats, unix_seconds};
