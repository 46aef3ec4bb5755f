//! The scheduling loop: one tokio task that owns every job's timing, and hands runs to
//! runner threads.
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
//!   timeout, else the job's interval) is reported *late* and [`Job::cancel`] is requested
//!   on a thread of its own. The run keeps its runner until it returns: a hung job occupies
//!   exactly one runner, and the others keep serving the other jobs.
//! * **Run now**: [`Scheduler::run_now`] waits for a run that starts after the request (right
//!   away when a runner is free and the job idle). It does not move the job's schedule; a due
//!   time that comes while it runs is served right after.
//! * **Removal**: [`Scheduler::remove`] requests `cancel()`, stops scheduling the job, and
//!   retires it ([`Observer::retired`]) once its run in progress, if any, has finished.
//!   Adding a job whose ID is still retiring schedules the new one when the old one retires.
//! * **Shutdown**: no new runs start, `cancel()` is requested for every job (running ones
//!   first), and the loop waits up to the grace period for the runs in progress.
//!
//! # Threads and the clock
//! Runs execute through [`tokio::task::spawn_blocking`], so each run has a thread of its own
//! for as long as it lasts. All timing uses [`tokio::time::Instant`]: under tokio's paused
//! test clock the loop is fully deterministic (the clock does not auto-advance while a run is
//! in progress on a current-thread runtime, and a finished run is posted before it does
//! again).
//!
//! # Finished runs do not always wake the loop
//! Waking a thread costs more than everything the loop does for a run, so a runner thread
//! records the run's statistics itself, posts the completion in a mailbox, and wakes the loop
//! only when it must act before its next wake-up anyway: the job's next due time comes before
//! the loop's next timer, someone waits for the run (run-now), jobs wait for a runner, or
//! shutdown waits for runs. Otherwise the loop takes the completion at its next wake-up,
//! before it looks at any timer (so a run that finished is never reported late). With many
//! jobs the loop wakes about once per due time instead of twice per run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use outpost_checks::CheckError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::job::{Job, JobReport, Observer, RunInfo, RunKind, RunSummary};
use super::stats::{JobStats, SchedulerStats, SharedStats};
use crate::error::AgentError;

/// The shortest interval and timeout the loop uses (a zero interval would spin).
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// How the scheduler runs jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Runs at once (runner threads in use); at least 1. Default 4.
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

/// The offset of a job's first run when spreading: FNV-1a of its ID modulo the interval.
/// Deterministic: the same ID and interval always give the same offset, in `[0, interval)`.
pub fn spread_offset(id: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let period = interval.max(MIN_PERIOD).as_nanos();
    let offset = u128::from(hash) % period;
    Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

type RunReply<J> = oneshot::Sender<Result<ManualRun<J>, AgentError>>;

enum Command<J: Job> {
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

struct Completion<J: Job> {
    id: Arc<str>,
    generation: u64,
    run: u64,
    info: RunInfo,
    /// The report, or the panic message of a run that panicked.
    outcome: Result<Arc<J::Report>, String>,
}

/// What a run shares with the loop while it is in progress.
#[derive(Debug, Default)]
struct RunFlags {
    /// `run()` has returned (a timeout that fires now is not a late run).
    done: AtomicBool,
    /// The loop found it past its timeout.
    late: AtomicBool,
    /// The loop must hear of its end at once: someone waits for it or for the job's next
    /// run (run-now), or the job was removed and retires with it.
    wake: AtomicBool,
}

/// Whether the loop sleeps, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopState {
    /// It is working, and looks at the mailbox before it sleeps again.
    Awake,
    /// It sleeps until this time (`None`: until something wakes it).
    Asleep(Option<Instant>),
}

struct MailboxState<J: Job> {
    completions: Vec<Completion<J>>,
    state: LoopState,
    /// Jobs due and waiting for a runner.
    queued: usize,
    shutting_down: bool,
}

/// Where runner threads leave finished runs (see the module docs).
struct Mailbox<J: Job> {
    state: Mutex<MailboxState<J>>,
    wake: tokio::sync::Notify,
}

impl<J: Job> Mailbox<J> {
    fn new() -> Self {
        Self {
            state: Mutex::new(MailboxState {
                completions: Vec::new(),
                state: LoopState::Awake,
                queued: 0,
                shutting_down: false,
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState<J>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts a finished run; wakes the loop when it must act before its next wake-up.
    /// `next_due`: the job's next due time (scheduled runs); `urgent`: someone waits.
    fn post(&self, done: Completion<J>, next_due: Option<Instant>, urgent: bool) {
        let mut m = self.lock();
        let wake = match m.state {
            LoopState::Awake => false,
            LoopState::Asleep(until) => {
                urgent
                    || m.queued > 0
                    || m.shutting_down
                    || match (next_due, until) {
                        (Some(due), Some(until)) => due < until,
                        (Some(_), None) => true,
                        (None, _) => false,
                    }
            }
        };
        m.completions.push(done);
        if wake {
            m.state = LoopState::Awake;
        }
        drop(m);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The loop wakes: takes what was posted.
    fn take(&self) -> Vec<Completion<J>> {
        let mut m = self.lock();
        m.state = LoopState::Awake;
        std::mem::take(&mut m.completions)
    }

    /// The loop is about to sleep until `until`: false (stay awake) when runs were posted
    /// since it last looked.
    fn sleep(&self, until: Option<Instant>, queued: usize, shutting_down: bool) -> bool {
        let mut m = self.lock();
        if !m.completions.is_empty() {
            return false;
        }
        m.state = LoopState::Asleep(until);
        m.queued = queued;
        m.shutting_down = shutting_down;
        true
    }
}

/// When a scheduled run that was due at `due` and ran from `started` to `finished` makes the
/// next one due (see the module docs).
fn next_due(due: Instant, interval: Duration, started: Instant, finished: Instant) -> Instant {
    let mut next = due + interval;
    if next <= started {
        // It waited for a runner past its next due time: skip the missed slots instead of
        // catching up with back-to-back runs.
        next = started + interval;
    }
    // An overrun: the next run comes right after this one.
    next.max(finished)
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
    /// scheduler's thread cannot start; [`AgentError::NoRuntime`] outside a tokio runtime
    /// (without a dedicated thread).
    pub fn start(
        config: SchedulerConfig,
        observer: Arc<dyn Observer<J>>,
    ) -> Result<Self, AgentError> {
        if config.runners == 0 {
            return Err(AgentError::InvalidConfig {
                key: "agent.runners",
                message: "must be at least 1".into(),
            });
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let stats = SharedStats::new(config.runners);
        let engine = Engine {
            free: config.runners,
            config,
            observer,
            stats: stats.clone(),
            mailbox: Arc::new(Mailbox::new()),
            entries: HashMap::new(),
            timers: BTreeMap::new(),
            ready: VecDeque::new(),
            seq: 0,
            shutdown: None,
        };
        if engine.config.dedicated_thread {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("check-runner")
                .build()
                .map_err(|source| AgentError::Thread {
                    what: "the scheduler's runtime",
                    source,
                })?;
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

struct Running<J: Job> {
    run: u64,
    kind: RunKind,
    due: Option<Instant>,
    /// Its timeout timer, removed when the run ends (a stale timer would wake the loop for
    /// nothing, about once per run with the default timeout of one interval).
    timeout_timer: (Instant, u64),
    flags: Arc<RunFlags>,
    waiters: Vec<RunReply<J>>,
}

struct Entry<J: Job> {
    job: Arc<J>,
    generation: u64,
    interval: Duration,
    timeout: Duration,
    /// The due time that came and has not been served yet.
    due: Option<Instant>,
    /// Run-now requests waiting for the next run.
    waiters: Vec<RunReply<J>>,
    queued: bool,
    running: Option<Running<J>>,
    removed: bool,
    /// A job with the same ID added while this one was retiring.
    successor: Option<Arc<J>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Due { generation: u64 },
    Timeout { generation: u64, run: u64 },
    Grace,
}

struct ShutdownState {
    replies: Vec<oneshot::Sender<ShutdownReport>>,
    cancelled: usize,
    grace_over: bool,
}

struct Engine<J: Job> {
    config: SchedulerConfig,
    observer: Arc<dyn Observer<J>>,
    stats: SharedStats,
    mailbox: Arc<Mailbox<J>>,
    entries: HashMap<Arc<str>, Entry<J>>,
    /// Keyed by time then sequence number (unique); `Arc<str>` is the job (empty for Grace).
    timers: BTreeMap<(Instant, u64), (Arc<str>, Timer)>,
    ready: VecDeque<Arc<str>>,
    free: usize,
    seq: u64,
    shutdown: Option<ShutdownState>,
}

fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

impl<J: Job> Engine<J> {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn add_timer(&mut self, at: Instant, id: Arc<str>, timer: Timer) -> (Instant, u64) {
        let seq = self.next_seq();
        self.timers.insert((at, seq), (id, timer));
        (at, seq)
    }

    fn busy(&self) -> usize {
        self.config.runners - self.free
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command<J>>) {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let mut handles_gone = false;
        let mailbox = Arc::clone(&self.mailbox);
        loop {
            // Finished runs first: a run that finished is never reported late.
            for done in mailbox.take() {
                self.on_completion(done);
            }
            self.on_timers(Instant::now());
            self.dispatch();
            if self.try_finish() {
                return;
            }
            let next = self.timers.first_key_value().map(|((at, _), _)| *at);
            if !mailbox.sleep(next, self.ready.len(), self.shutdown.is_some()) {
                continue;
            }
            if let Some(at) = next
                && armed != Some(at)
            {
                sleep.as_mut().reset(at);
                armed = Some(at);
            }
            tokio::select! {
                biased;
                () = mailbox.wake.notified() => {}
                command = commands.recv(), if !handles_gone => match command {
                    Some(c) => self.on_command(c),
                    None => {
                        handles_gone = true;
                        self.begin_shutdown(Duration::from_secs(5), None);
                    }
                },
                () = &mut sleep, if next.is_some() => armed = None,
            }
        }
    }

    fn on_command(&mut self, command: Command<J>) {
        match command {
            Command::Add { job, reply } => {
                let result = self.add(job);
                // The caller may have given up waiting; the job is scheduled either way.
                let _ = reply.send(result);
            }
            Command::Remove { id, reply } => {
                let removed = self.remove(&id);
                let _ = reply.send(removed);
            }
            Command::RunNow { id, reply } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(AgentError::ShuttingDown));
                    return;
                }
                let key = self
                    .entries
                    .get_key_value(id.as_str())
                    .filter(|(_, e)| !e.removed)
                    .map(|(k, _)| Arc::clone(k));
                let Some(key) = key else {
                    let _ = reply.send(Err(AgentError::UnknownJob { id }));
                    return;
                };
                if let Some(e) = self.entries.get_mut(&key) {
                    e.waiters.push(reply);
                    if let Some(r) = &e.running {
                        r.flags.wake.store(true, Ordering::SeqCst);
                    }
                    if e.running.is_none() && !e.queued {
                        e.queued = true;
                        self.ready.push_back(key);
                    }
                }
            }
            Command::Shutdown { grace, reply } => self.begin_shutdown(grace, Some(reply)),
        }
    }

    fn add(&mut self, job: Arc<J>) -> Result<(), AgentError> {
        if self.shutdown.is_some() {
            return Err(AgentError::ShuttingDown);
        }
        let id: Arc<str> = Arc::from(job.id());
        if let Some(existing) = self.entries.get_mut(&id) {
            if existing.removed && existing.successor.is_none() {
                existing.successor = Some(job);
                return Ok(());
            }
            return Err(AgentError::DuplicateJob { id: id.to_string() });
        }
        self.insert(id, job);
        Ok(())
    }

    fn insert(&mut self, id: Arc<str>, job: Arc<J>) {
        let interval = job.interval().max(MIN_PERIOD);
        let timeout = job
            .timeout()
            .or(self.config.timeout)
            .unwrap_or(interval)
            .max(MIN_PERIOD);
        let offset = if self.config.spread {
            spread_offset(&id, interval)
        } else {
            Duration::ZERO
        };
        let first = Instant::now() + offset;
        let generation = self.next_seq();
        self.stats.add(&id, interval, timeout, first);
        tracing::debug!(
            check.id = %id,
            interval_ms = interval.as_millis(),
            first_run_in_ms = offset.as_millis(),
            "job scheduled"
        );
        self.entries.insert(
            Arc::clone(&id),
            Entry {
                job,
                generation,
                interval,
                timeout,
                due: None,
                waiters: Vec::new(),
                queued: false,
                running: None,
                removed: false,
                successor: None,
            },
        );
        self.add_timer(first, id, Timer::Due { generation });
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some((key, e)) = self.entries.get_key_value(id) else {
            return false;
        };
        let key = Arc::clone(key);
        if e.removed {
            // Already retiring; a successor waiting for it goes away with this request.
            if let Some(e) = self.entries.get_mut(&key) {
                let had = e.successor.take().is_some();
                return had;
            }
            return false;
        }
        let Some(e) = self.entries.get_mut(&key) else {
            return false;
        };
        e.removed = true;
        e.due = None;
        for w in e.waiters.drain(..) {
            let _ = w.send(Err(AgentError::JobRemoved { id: id.to_owned() }));
        }
        let job = Arc::clone(&e.job);
        let running = e.running.is_some();
        if let Some(r) = &e.running {
            r.flags.wake.store(true, Ordering::SeqCst);
        }
        self.stats.set_next_due(id, None);
        spawn_cancel(vec![job]);
        if !running {
            self.retire(&key);
        }
        true
    }

    /// Forgets a removed job that no longer runs, and schedules its successor if any.
    fn retire(&mut self, id: &Arc<str>) {
        let Some(e) = self.entries.remove(id) else {
            return;
        };
        self.stats.remove(id);
        tracing::debug!(check.id = %id, "job retired");
        let observer = Arc::clone(&self.observer);
        if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| observer.retired(&e.job))) {
            tracing::error!(check.id = %id, panic = %panic_message(&*p), "observer panicked on retire");
        }
        if let Some(next) = e.successor
            && self.shutdown.is_none()
        {
            self.insert(Arc::clone(id), next);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), (id, timer)) = entry.remove_entry();
            match timer {
                Timer::Grace => {
                    if let Some(s) = self.shutdown.as_mut() {
                        s.grace_over = true;
                    }
                }
                Timer::Due { generation } => self.on_due(&id, generation, at),
                Timer::Timeout { generation, run } => self.on_timeout(&id, generation, run),
            }
        }
    }

    fn on_due(&mut self, id: &Arc<str>, generation: u64, at: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if e.generation != generation || e.removed {
            return;
        }
        e.due = Some(at);
        self.stats.set_next_due(id, Some(at));
        if e.running.is_none() && !e.queued {
            e.queued = true;
            self.ready.push_back(Arc::clone(id));
        }
    }

    fn on_timeout(&mut self, id: &Arc<str>, generation: u64, run: u64) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if e.generation != generation {
            return;
        }
        let Some(r) = e.running.as_ref().filter(|r| r.run == run) else {
            return;
        };
        if r.flags.done.load(Ordering::SeqCst) || r.flags.late.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stats.late(id);
        tracing::warn!(
            check.id = %id,
            timeout_ms = e.timeout.as_millis(),
            "run is late: still going after its timeout; cancel requested"
        );
        spawn_cancel(vec![Arc::clone(&e.job)]);
    }

    fn dispatch(&mut self) {
        if self.shutdown.is_none() {
            while self.free > 0 {
                let Some(id) = self.ready.pop_front() else {
                    break;
                };
                let Some(e) = self.entries.get_mut(&id) else {
                    continue;
                };
                e.queued = false;
                if e.removed || e.running.is_some() || (e.due.is_none() && e.waiters.is_empty()) {
                    continue;
                }
                self.start(id);
            }
        }
        self.stats.set_queued(self.ready.len());
    }

    fn start(&mut self, id: Arc<str>) {
        let run = self.next_seq();
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let due = e.due.take();
        let kind = if due.is_some() {
            RunKind::Scheduled
        } else {
            RunKind::Manual
        };
        let waiters = std::mem::take(&mut e.waiters);
        let flags = Arc::new(RunFlags {
            wake: AtomicBool::new(!waiters.is_empty()),
            ..RunFlags::default()
        });
        let generation = e.generation;
        let (timeout, interval) = (e.timeout, e.interval);
        let job = Arc::clone(&e.job);
        self.free -= 1;
        let now = Instant::now();
        let timeout_timer = self.add_timer(
            now + timeout,
            Arc::clone(&id),
            Timer::Timeout { generation, run },
        );
        if let Some(e) = self.entries.get_mut(&id) {
            e.running = Some(Running {
                run,
                kind,
                due,
                timeout_timer,
                flags: Arc::clone(&flags),
                waiters,
            });
        }
        self.stats.started(&id, now);
        if kind == RunKind::Scheduled {
            self.stats.set_next_due(&id, None);
        }
        let observer = Arc::clone(&self.observer);
        let mailbox = Arc::clone(&self.mailbox);
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let started_at = SystemTime::now();
            let cpu_before = thread_cpu_time();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| job.run()));
            flags.done.store(true, Ordering::SeqCst);
            let cpu_time = thread_cpu_time().saturating_sub(cpu_before);
            let info = RunInfo {
                kind,
                due,
                started,
                finished: Instant::now(),
                started_at,
                cpu_time,
            };
            let (outcome, summary) = match result {
                Ok(report) => {
                    let report = Arc::new(report);
                    let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        observer.completed(&job, &report, &info);
                    }));
                    if let Err(p) = committed {
                        tracing::error!(
                            check.id = %id,
                            panic = %panic_message(&*p),
                            "observer panicked; this run's submissions may be incomplete"
                        );
                    }
                    let summary = report.summary();
                    (Ok(report), summary)
                }
                Err(p) => {
                    let message = panic_message(&*p);
                    let summary = RunSummary {
                        error: Some(CheckError {
                            message: format!("the run panicked: {message}"),
                            traceback: String::new(),
                        }),
                        ..RunSummary::default()
                    };
                    (Err(message), summary)
                }
            };
            let overrun = kind == RunKind::Scheduled && info.duration() > interval;
            if overrun {
                tracing::warn!(
                    check.id = %id,
                    duration_ms = info.duration().as_millis(),
                    interval_ms = interval.as_millis(),
                    "run took longer than its interval; the next run is delayed"
                );
            }
            let next = due.map(|due| next_due(due, interval, info.started, info.finished));
            stats.finished(
                &id,
                &info,
                summary,
                flags.late.load(Ordering::SeqCst),
                overrun,
                next,
            );
            mailbox.post(
                Completion {
                    id,
                    generation,
                    run,
                    info,
                    outcome,
                },
                next,
                flags.wake.load(Ordering::SeqCst),
            );
        });
    }

    fn on_completion(&mut self, done: Completion<J>) {
        let Some(e) = self.entries.get_mut(&done.id) else {
            return;
        };
        if e.generation != done.generation {
            return;
        }
        let Some(running) = e.running.take_if(|r| r.run == done.run) else {
            return;
        };
        self.free += 1;
        self.timers.remove(&running.timeout_timer);
        for waiter in running.waiters {
            let answer = match &done.outcome {
                Ok(report) => Ok(ManualRun {
                    report: Arc::clone(report),
                    info: done.info.clone(),
                }),
                Err(message) => Err(AgentError::RunPanicked {
                    id: done.id.to_string(),
                    message: message.clone(),
                }),
            };
            // A caller that stopped waiting does not need the answer.
            let _ = waiter.send(answer);
        }
        if e.removed {
            self.retire(&done.id);
            return;
        }
        if self.shutdown.is_some() {
            return;
        }
        if let (RunKind::Scheduled, Some(due)) = (running.kind, running.due) {
            let next = next_due(due, e.interval, done.info.started, done.info.finished);
            let generation = e.generation;
            if next <= Instant::now() {
                e.due = Some(next);
            } else {
                self.add_timer(next, Arc::clone(&done.id), Timer::Due { generation });
            }
        }
        if let Some(e) = self.entries.get_mut(&done.id)
            && (e.due.is_some() || !e.waiters.is_empty())
            && !e.queued
        {
            e.queued = true;
            self.ready.push_back(Arc::clone(&done.id));
        }
    }

    fn begin_shutdown(&mut self, grace: Duration, reply: Option<oneshot::Sender<ShutdownReport>>) {
        if let Some(s) = self.shutdown.as_mut() {
            s.replies.extend(reply);
            return;
        }
        tracing::info!(
            jobs = self.entries.len(),
            running = self.busy(),
            grace_ms = grace.as_millis(),
            "scheduler shutting down: cancelling every job"
        );
        self.stats.shutting_down();
        self.mailbox.lock().shutting_down = true;
        self.ready.clear();
        let mut running = Vec::new();
        let mut idle = Vec::new();
        for (id, e) in &mut self.entries {
            e.due = None;
            e.queued = false;
            e.successor = None;
            for w in e.waiters.drain(..) {
                let _ = w.send(Err(AgentError::ShuttingDown));
            }
            if e.running.is_some() {
                running.push(Arc::clone(&e.job));
            } else {
                idle.push(Arc::clone(&e.job));
            }
            self.stats.set_next_due(id, None);
        }
        let cancelled = running.len() + idle.len();
        running.extend(idle);
        if !running.is_empty() {
            spawn_cancel(running);
        }
        self.shutdown = Some(ShutdownState {
            replies: reply.into_iter().collect(),
            cancelled,
            grace_over: false,
        });
        let at = Instant::now() + grace;
        self.add_timer(at, Arc::from(""), Timer::Grace);
    }

    /// True when shutdown is complete (every run finished, or the grace period is over);
    /// the replies are sent then.
    fn try_finish(&mut self) -> bool {
        let Some(state) = self.shutdown.as_mut() else {
            return false;
        };
        if self.free < self.config.runners && !state.grace_over {
            return false;
        }
        let mut unfinished: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.running.is_some())
            .map(|(id, _)| id.to_string())
            .collect();
        unfinished.sort();
        if !unfinished.is_empty() {
            tracing::warn!(
                unfinished = ?unfinished,
                "grace period over; runs still going are abandoned"
            );
        }
        let report = ShutdownReport {
            cancelled: state.cancelled,
            unfinished,
        };
        for reply in state.replies.drain(..) {
            let _ = reply.send(report.clone());
        }
        true
    }
}

/// Calls `cancel()` on each job, in order, on a blocking thread of its own (a cancel may
/// wait for the interpreter).
fn spawn_cancel<J: Job>(jobs: Vec<Arc<J>>) {
    tokio::task::spawn_blocking(move || {
        for job in jobs {
            let id = job.id().to_owned();
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| job.cancel())) {
                tracing::error!(check.id = %id, panic = %panic_message(&*p), "cancel panicked");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_offsets_are_stable_and_bounded() {
        let interval = Duration::from_secs(15);
        let a = spread_offset("hello:0123456789abcdef", interval);
        assert_eq!(a, spread_offset("hello:0123456789abcdef", interval));
        assert!(a < interval);
        let offsets: std::collections::BTreeSet<Duration> = (0..200)
            .map(|i| spread_offset(&format!("check:{i:016x}"), interval))
            .collect();
        assert!(offsets.len() > 190, "hash offsets barely collide");
        let early = offsets.iter().filter(|o| **o < interval / 2).count();
        assert!(
            (60..=140).contains(&early),
            "{early} of 200 in the first half"
        );
        assert!(
            spread_offset("x", Duration::ZERO) < MIN_PERIOD,
            "a zero interval is 1 ms"
        );
    }
}
