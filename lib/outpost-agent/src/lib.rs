//! The check agent (`outpost agent`): schedules the Python checks of the embedded runtime
//! (`outpost-checks`), sends what they submit to its sinks, and serves its API on
//! `<root>/run/agent.sock` through the `outpost-api` router.
//!
//! # Layout
//! * [`scheduler`]: the [`Scheduler`], generic over the [`Job`] trait, with its timing rules
//!   (intervals, spreading, no overlap, overruns, timeouts, run-now, removal, shutdown) and
//!   statistics. [`PythonCheck`] (a `CheckInstance`) is the production job; the scheduler's
//!   tests and benchmarks use Rust jobs on tokio's paused clock.
//! * [`sinks`]: the latest value of every series for the Prometheus endpoint
//!   ([`SeriesStore`], with the tag-to-label and type mapping documented there), and every
//!   submission as JSON lines with rotation ([`JsonLines`]).
//! * [`Agent`]: the runtime, the configurations loaded from `conf.d` (reload: added
//!   instances start, removed ones stop, changed ones restart with their new ID), the
//!   validation of custom checks (once each, on a thread of its own, exported as
//!   `datadog.agent.check_ready`), run-now, and the views the API serves.
//! * [`api`]: the `checks`, `telemetry` and `debug` modules; [`telemetry`]: the exposition,
//!   with the memory tracker's `rtloader__*` series.
//! * [`page`]: the status page of the read-only listener.
//! * [`run()`]: the whole process, with its signals.
//!
//! # API
//! ```text
//! Agent::start(AgentOptions) -> Result<Agent, AgentError>             // inside tokio
//!   agent.reload().await -> Result<ReloadSummary, AgentError>
//!   agent.run_check(name).await -> Result<serde_json::Value, AgentError>  // check run --json
//!   agent.checks_view() -> ChecksView                                  // GET /checks
//!   agent.shutdown().await -> Result<ShutdownReport, AgentError>
//! api::build_api(&agent, AccessPolicy) -> Result<outpost_api::Api, AgentError>
//! run(AgentOptions, &ApiConfig).await -> Result<(), AgentError>        // outpost agent
//!
//! Scheduler::<J: Job>::start(SchedulerConfig, Arc<dyn Observer<J>>) -> Result<Scheduler<J>, _>
//!   add(Arc<J>), remove(id), run_now(id) -> ManualRun<J>, shutdown(grace) -> ShutdownReport
//!   (a run whose report says JobReport::disable() disables its job: JobStats::disabled)
//!   stats() -> SchedulerStats, jobs() -> Vec<JobStats>, job(id) -> Option<JobStats>
//! ```
//!
//! # Configuration (`agent:` section)
//! `runners` (default 4), `memtrack_enabled` (default true), `check_timeout` (seconds or a
//! duration such as `"30s"`; default: each instance's interval), `shutdown_timeout`
//! (default `5s`), `python3_linter_timeout` (validation of one custom check, default 120 s),
//! plus the paths (`conf_dir`, `checks_dir`, `python_venv`) and what checks read through
//! `datadog_agent.get_config`.
//!
//! # Failure handling
//! A check that raises, returns garbage, exits, recurses or hangs is reported (in `/checks`,
//! the log and the run counters) and never takes the agent down; a hung run keeps only its
//! own runner. When Python cannot start the agent still serves its API, with the reason in
//! `/checks` (`python.error`) and `/debug/vars`. A check that goes over
//! `agent.check_memory_limit` is stopped and its instance disabled (no longer scheduled, its
//! Python object let go) until a reload that changes its configuration or
//! `POST /checks/{name}/enable`.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod agent;
pub mod api;
mod check;
mod error;
pub mod page;
pub mod scheduler;
mod serve;
pub mod sinks;
pub mod telemetry;

pub use agent::{
    Agent, AgentOptions, ChecksView, DisabledView, EnableSummary, InstanceView, LoadError,
    OutputOptions, PythonStatus, ReloadSummary,
};
pub use check::{CheckSource, PythonCheck};
pub use error::{AgentError, InvalidValue, OutputStep};
pub use scheduler::{
    DisableReason, Disabled, Job, JobError, JobReport, JobStats, ManualRun, Observer, RunInfo,
    RunKind, RunSummary, Scheduler, SchedulerConfig, SchedulerStats, ShutdownReport,
};
pub use serve::run;
pub use sinks::{JsonLines, RunFormat, SeriesStore};
