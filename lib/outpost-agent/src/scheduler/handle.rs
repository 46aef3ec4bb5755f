//! The handle to the scheduling loop, [`Scheduler`], its settings and the answers it gives.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::engine::Engine;
use super::job::{Job, Observer, RunInfo};
use super::stats::{JobStats, SchedulerStats, SharedStats};
use crate::error::{AgentError, InvalidValue};

/// How the scheduler runs jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Runs at once: the runner threads of the pool; at least 1. Default 4. A run abandoned
    /// past its timeout keeps its thread and a new one takes its place.
    pub runners: usize,
    /// Default run timeout; `None`: each job's interval. A job's own
    /// [`Job::timeout`] wins.
    pub timeout: Option<Duration>,
    /// Spread first runs over the interval (default true); off, a new job runs at once.
    pub spread: bool,
    /// Run the scheduling loop on a thread of its own (`check-scheduler`, a current-thread
    /// tokio runtime) instead of the caller's runtime (default true). A wake-up of the loop
    /// (a due time, a finished run) then wakes that one thread, where a multi-thread
    /// runtime may wake a second worker to look for work; the loop is on the clock of its
    /// own runtime, so tests on the paused clock turn this off.
    pub dedicated_thread: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            runners: 4,
            timeout: None,
            spread: true,
            dedicated_thread: true,
        }
    }
}

/// The result of a run requested with [`Scheduler::run_now`].
pub struct ManualRun<J: Job> {
    /// What the run produced (also committed to the observer).
    pub report: Arc<J::Report>,
    /// When and how it ran.
    pub info: RunInfo,
}

impl<J: Job> std::fmt::Debug for ManualRun<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualRun")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<J: Job> Clone for ManualRun<J> {
    fn clone(&self) -> Self {
        Self {
            report: Arc::clone(&self.report),
            info: self.info.clone(),
        }
    }
}

/// What [`Scheduler::shutdown`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Jobs that were asked to cancel.
    pub cancelled: usize,
    /// Jobs whose run was still going when the grace period ended.
    pub unfinished: Vec<String>,
}

pub(super) type RunReply<J> = oneshot::Sender<Result<ManualRun<J>, AgentError>>;

pub(super) enum Command<J: Job> {
    Add {
        job: Arc<J>,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
    Remove {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    RunNow {
        id: String,
        reply: RunReply<J>,
    },
    Shutdown {
        grace: Duration,
        reply: oneshot::Sender<ShutdownReport>,
    },
}

/// A handle to a running scheduler. Cheap to clone; the loop stops when shut down, or when
/// every handle is dropped (as a shutdown with a 5 s grace period).
pub struct Scheduler<J: Job> {
    commands: mpsc::UnboundedSender<Command<J>>,
    stats: SharedStats,
}

impl<J: Job> Clone for Scheduler<J> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<J: Job> std::fmt::Debug for Scheduler<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("stats", &self.stats.totals())
            .finish_non_exhaustive()
    }
}

impl<J: Job> Scheduler<J> {
    /// Starts the scheduling loop: on a thread of its own, or on the current tokio runtime
    /// when [`SchedulerConfig::dedicated_thread`] is off.
    ///
    /// # Errors
    /// [`AgentError::InvalidConfig`] for zero runners; [`AgentError::Thread`] when the
    /// scheduler's thread or a runner thread cannot start; [`AgentError::NoRuntime`] outside a tokio runtime
    /// (without a dedicated thread).
    pub fn start(
        config: SchedulerConfig,
        observer: Arc<dyn Observer<J>>,
    ) -> Result<Self, AgentError> {
        if config.runners == 0 {
            return Err(AgentError::InvalidConfig {
                key: "agent.runners",
                problem: InvalidValue::Zero,
            });
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let stats = SharedStats::new(config.runners);
        if config.dedicated_thread {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("check-runner")
                .build()
                .map_err(|source| AgentError::Thread {
                    what: "the scheduler's runtime",
                    source,
                })?;
            let engine = Engine::new(config, observer, stats.clone(), runtime.handle(), false)?;
            std::thread::Builder::new()
                .name("check-scheduler".into())
                .spawn(move || {
                    runtime.block_on(engine.run(command_rx));
                    // Runs still stuck in a check are abandoned, not waited for.
                    runtime.shutdown_background();
                })
                .map_err(|source| AgentError::Thread {
                    what: "the scheduler thread",
                    source,
                })?;
        } else {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| AgentError::NoRuntime)?;
            // On the caller's current-thread runtime (tests on the paused clock), runs hold
            // the clock like blocking tasks do.
            let hold_clock =
                handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
            let engine = Engine::new(config, observer, stats.clone(), &handle, hold_clock)?;
            handle.spawn(engine.run(command_rx));
        }
        Ok(Self { commands, stats })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command<J>,
    ) -> Result<T, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| AgentError::SchedulerStopped)?;
        rx.await.map_err(|_| AgentError::SchedulerStopped)
    }

    /// Schedules `job` (first run after its spread offset).
    ///
    /// # Errors
    /// [`AgentError::DuplicateJob`] when a job with its ID is scheduled;
    /// [`AgentError::ShuttingDown`]; [`AgentError::SchedulerStopped`].
    pub async fn add(&self, job: Arc<J>) -> Result<(), AgentError> {
        self.ask(|reply| Command::Add { job, reply }).await?
    }

    /// Unschedules the job `id` (see the module docs). Returns whether it was scheduled.
    ///
    /// # Errors
    /// [`AgentError::SchedulerStopped`].
    pub async fn remove(&self, id: &str) -> Result<bool, AgentError> {
        let id = id.to_owned();
        self.ask(|reply| Command::Remove { id, reply }).await
    }

    /// Runs the job `id` now (or as soon as it and a runner are free) and returns what the
    /// run produced; the run is committed to the observer like any other.
    ///
    /// # Errors
    /// [`AgentError::UnknownJob`]; [`AgentError::JobRemoved`] when it is removed before the
    /// run; [`AgentError::RunPanicked`]; [`AgentError::ShuttingDown`];
    /// [`AgentError::SchedulerStopped`].
    pub async fn run_now(&self, id: &str) -> Result<ManualRun<J>, AgentError> {
        let id = id.to_owned();
        self.ask(|reply| Command::RunNow { id, reply }).await?
    }

    /// Stops scheduling, requests `cancel()` for every job and waits up to `grace` for runs
    /// in progress. Later calls wait for the same end.
    ///
    /// # Errors
    /// [`AgentError::SchedulerStopped`] when the loop had already ended.
    pub async fn shutdown(&self, grace: Duration) -> Result<ShutdownReport, AgentError> {
        self.ask(|reply| Command::Shutdown { grace, reply }).await
    }

    /// Overall statistics.
    pub fn stats(&self) -> SchedulerStats {
        self.stats.totals()
    }

    /// Every job's statistics, in ID order.
    pub fn jobs(&self) -> Vec<JobStats> {
        self.stats.jobs()
    }

    /// One job's statistics.
    pub fn job(&self, id: &str) -> Option<JobStats> {
        self.stats.job(id)
    }
}
