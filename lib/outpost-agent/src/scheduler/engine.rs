//! The scheduling loop: one tokio task that owns every job's timing (see the module docs of
//! [`super`]), takes commands from the [`super::Scheduler`] handles and finished runs from
//! the mailbox, and hands due jobs to runners.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::handle::{Command, RunReply, SchedulerConfig, ShutdownReport};
use super::job::{Disabled, Job, Observer, RunKind};
use super::mailbox::{Mailbox, RunFlags};
use super::pool::{ClockHold, Pool};
use super::runner::{panic_message, spawn_cancel};
use super::stats::SharedStats;
use super::timing::{MIN_PERIOD, spread_offset};
use crate::error::AgentError;

/// A run in progress, as the loop knows it.
pub(super) struct Running<J: Job> {
    pub(super) run: u64,
    pub(super) kind: RunKind,
    pub(super) due: Option<Instant>,
    /// Its timeout timer, removed when the run ends (a stale timer would wake the loop for
    /// nothing, about once per run with the default timeout of one interval).
    pub(super) timeout_timer: (Instant, u64),
    pub(super) flags: Arc<RunFlags>,
    pub(super) waiters: Vec<RunReply<J>>,
    /// Past its timeout, its runner was given back (its thread stays with it until it
    /// returns, and another thread took its place in the pool).
    pub(super) abandoned: bool,
}

/// One scheduled job and where it stands.
pub(super) struct Entry<J: Job> {
    pub(super) job: Arc<J>,
    pub(super) generation: u64,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    /// The due time that came and has not been served yet.
    pub(super) due: Option<Instant>,
    /// Run-now requests waiting for the next run.
    pub(super) waiters: Vec<RunReply<J>>,
    pub(super) queued: bool,
    pub(super) running: Option<Running<J>>,
    pub(super) removed: bool,
    /// A job with the same ID added while this one was retiring.
    pub(super) successor: Option<Arc<J>>,
}

/// What a timer of the loop is for (stale ones, of an older generation or run, are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Due { generation: u64 },
    Timeout { generation: u64, run: u64 },
    Grace,
}

/// A shutdown under way: who waits for it, and whether the grace period is over.
pub(super) struct ShutdownState {
    pub(super) replies: Vec<oneshot::Sender<ShutdownReport>>,
    pub(super) cancelled: usize,
    pub(super) grace_over: bool,
}

/// The loop's state; owned by the loop's task, never shared.
pub(super) struct Engine<J: Job> {
    pub(super) config: SchedulerConfig,
    pub(super) observer: Arc<dyn Observer<J>>,
    pub(super) stats: SharedStats,
    pub(super) mailbox: Arc<Mailbox<J>>,
    pub(super) entries: HashMap<Arc<str>, Entry<J>>,
    /// Keyed by time then sequence number (unique); `Arc<str>` is the job (empty for Grace).
    pub(super) timers: BTreeMap<(Instant, u64), (Arc<str>, Timer)>,
    pub(super) ready: VecDeque<Arc<str>>,
    /// Runners not serving a run (an abandoned run does not count against them).
    pub(super) free: usize,
    /// Runs started and not yet seen finished, abandoned ones included.
    pub(super) in_flight: usize,
    pub(super) pool: Pool,
    /// Set on a current-thread runtime (see [`ClockHold`]).
    pub(super) clock_hold: Option<Arc<ClockHold>>,
    pub(super) seq: u64,
    pub(super) shutdown: Option<ShutdownState>,
}

impl<J: Job> Engine<J> {
    /// The loop's state, with its pool of `config.runners` threads started; runs execute in
    /// the context of `runtime` (the loop's: its clock, its handle).
    ///
    /// # Errors
    /// [`AgentError::Thread`] when a runner thread cannot start.
    pub(super) fn new(
        config: SchedulerConfig,
        observer: Arc<dyn Observer<J>>,
        stats: SharedStats,
        runtime: &tokio::runtime::Handle,
        hold_clock: bool,
    ) -> Result<Self, AgentError> {
        Ok(Self {
            free: config.runners,
            in_flight: 0,
            pool: Pool::new(config.runners, runtime.clone())?,
            clock_hold: hold_clock.then(Arc::default),
            config,
            observer,
            stats,
            mailbox: Arc::new(Mailbox::new()),
            entries: HashMap::new(),
            timers: BTreeMap::new(),
            ready: VecDeque::new(),
            seq: 0,
            shutdown: None,
        })
    }

    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn add_timer(&mut self, at: Instant, id: Arc<str>, timer: Timer) -> (Instant, u64) {
        let seq = self.next_seq();
        self.timers.insert((at, seq), (id, timer));
        (at, seq)
    }

    pub(super) fn busy(&self) -> usize {
        self.config.runners - self.free
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command<J>>) {
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

    pub(super) fn on_command(&mut self, command: Command<J>) {
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

    pub(super) fn add(&mut self, job: Arc<J>) -> Result<(), AgentError> {
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

    pub(super) fn insert(&mut self, id: Arc<str>, job: Arc<J>) {
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

    pub(super) fn remove(&mut self, id: &str) -> bool {
        let Some((key, e)) = self.entries.get_key_value(id) else {
            // A disabled job: only its statistics are left.
            return self.stats.remove(id);
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

    /// Stops scheduling a job one of its runs disabled (that run has finished): run-now
    /// requests waiting for its next run are refused, the observer is told, `cancel()` is
    /// requested, and the loop lets go of the job. Its statistics stay, marked disabled.
    pub(super) fn disable(&mut self, id: &Arc<str>, disabled: &Disabled) {
        let Some(e) = self.entries.remove(id) else {
            return;
        };
        for w in e.waiters {
            let _ = w.send(Err(AgentError::JobDisabled {
                id: id.to_string(),
                reason: disabled.reason,
            }));
        }
        tracing::debug!(check.id = %id, reason = %disabled.reason, "job disabled");
        let observer = Arc::clone(&self.observer);
        if let Err(p) =
            std::panic::catch_unwind(AssertUnwindSafe(|| observer.disabled(&e.job, disabled)))
        {
            tracing::error!(check.id = %id, panic = %panic_message(&*p), "observer panicked on disable");
        }
        // The cancel thread, not the loop, lets go of the job last.
        spawn_cancel(vec![e.job]);
    }

    /// Forgets a removed job that no longer runs, and schedules its successor if any.
    pub(super) fn retire(&mut self, id: &Arc<str>) {
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

    pub(super) fn on_timers(&mut self, now: Instant) {
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

    pub(super) fn on_due(&mut self, id: &Arc<str>, generation: u64, at: Instant) {
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

    pub(super) fn on_timeout(&mut self, id: &Arc<str>, generation: u64, run: u64) {
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
        let flags = Arc::clone(&r.flags);
        let job = Arc::clone(&e.job);
        self.stats.late(id);
        tracing::warn!(
            check.id = %id,
            timeout_ms = e.timeout.as_millis(),
            "run is late: still going after its timeout; cancel requested"
        );
        spawn_cancel(vec![job]);
        self.abandon(id, &flags);
    }

    /// Gives the runner of a late run back to the pool: a new thread takes its place and the
    /// run keeps its own until it returns. When no thread can start, the run keeps its runner.
    fn abandon(&mut self, id: &Arc<str>, flags: &RunFlags) {
        if let Err(error) = self.pool.replace() {
            tracing::error!(
                check.id = %id,
                %error,
                "cannot start a runner in place of a late run's; it keeps its runner"
            );
            return;
        }
        if !flags.abandon() {
            // It returned in the meantime (its completion is on its way): one thread too many.
            self.pool.retire_one();
            return;
        }
        if let Some(r) = self.entries.get_mut(id).and_then(|e| e.running.as_mut()) {
            r.abandoned = true;
        }
        self.free += 1;
        self.stats.abandoned();
        tracing::warn!(
            check.id = %id,
            "late run abandoned: it keeps its thread, a new runner took its place"
        );
    }

    pub(super) fn dispatch(&mut self) {
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

    pub(super) fn begin_shutdown(
        &mut self,
        grace: Duration,
        reply: Option<oneshot::Sender<ShutdownReport>>,
    ) {
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
    pub(super) fn try_finish(&mut self) -> bool {
        let Some(state) = self.shutdown.as_mut() else {
            return false;
        };
        if self.in_flight > 0 && !state.grace_over {
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
                unfinished = %unfinished.join(", "),
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
