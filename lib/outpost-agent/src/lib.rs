//! The check agent: scheduler, sinks, memory tracking exports and the agent API modules.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod error;
pub mod scheduler;

pub use error::AgentError;
pub use scheduler::{
    Job, JobReport, Observer, RunInfo, RunKind, RunSummary, Scheduler, SchedulerConfig,
};
