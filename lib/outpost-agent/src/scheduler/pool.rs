//! The runner pool: a fixed number of OS threads (`check-run`) fed by one channel.
//!
//! # Guarantees
//! * The pool starts with `runners` threads and keeps that many live workers: a run abandoned
//!   past its timeout keeps its thread (a thread stuck in a check cannot be taken back), and
//!   the loop starts a replacement ([`Pool::replace`]); the abandoned thread ends as soon as
//!   its run returns. The threads in use are therefore `runners` plus the abandoned runs
//!   still going, never more; an idle pool never grows nor shrinks.
//! * When the pool is dropped (the loop has ended) the idle workers end; a worker busy with a
//!   run ends after it.
//!
//! # Failure modes
//! A thread that cannot be started is [`AgentError::Thread`]: at start the scheduler does
//! not start; for a replacement the loop keeps the abandoned run's slot busy (the pool is one
//! short until that run returns) and logs the error.
//!
//! # The paused test clock
//! tokio's paused clock does not auto-advance while a blocking task is in flight on a
//! current-thread runtime, which is what makes the scheduler deterministic under it. The
//! pool's threads are not tokio's, so on a current-thread runtime a [`ClockHold`] keeps one
//! blocking task in flight while any run is (one parked thread; nothing otherwise).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::AgentError;

/// A run handed to a worker; returns `true` when the run was abandoned (its worker was
/// replaced and ends after it).
pub(super) type Task = Box<dyn FnOnce() -> bool + Send + 'static>;

/// The workers' side of the channel.
type Queue = Arc<Mutex<Receiver<Task>>>;

/// A fixed pool of runner threads (see the module docs).
pub(super) struct Pool {
    tx: Sender<Task>,
    rx: Queue,
    /// The loop's runtime, entered by every worker (runs see its clock, as blocking tasks
    /// of that runtime would).
    runtime: tokio::runtime::Handle,
}

impl Pool {
    /// Starts `runners` worker threads, each in the context of `runtime`.
    ///
    /// # Errors
    /// [`AgentError::Thread`] when a thread cannot start (those started end with the pool).
    pub(super) fn new(runners: usize, runtime: tokio::runtime::Handle) -> Result<Self, AgentError> {
        let (tx, rx) = channel::<Task>();
        let pool = Self {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            runtime,
        };
        for _ in 0..runners {
            pool.spawn_worker()?;
        }
        Ok(pool)
    }

    fn spawn_worker(&self) -> Result<(), AgentError> {
        let rx = Arc::clone(&self.rx);
        let runtime = self.runtime.clone();
        std::thread::Builder::new()
            .name("check-run".into())
            .stack_size(outpost_checks::guards::RUNNER_STACK_SIZE)
            .spawn(move || {
                let _context = runtime.enter();
                worker(&rx);
            })
            .map(drop)
            .map_err(|source| AgentError::Thread {
                what: "a runner thread",
                source,
            })
    }

    /// Starts a worker in place of one whose run was abandoned.
    ///
    /// # Errors
    /// [`AgentError::Thread`] when the thread cannot start.
    pub(super) fn replace(&self) -> Result<(), AgentError> {
        self.spawn_worker()
    }

    /// Ends one idle worker (after a replacement turned out not to be needed).
    pub(super) fn retire_one(&self) {
        self.submit(Box::new(|| true));
    }

    /// Hands `task` to the next idle worker (the loop only submits when a runner is free).
    pub(super) fn submit(&self, task: Task) {
        // The workers hold the receiver for as long as the pool lives: sending cannot fail.
        let _ = self.tx.send(task);
    }
}

fn worker(rx: &Queue) {
    loop {
        let task = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(task) = task else {
            return;
        };
        if task() {
            tracing::debug!("abandoned run returned; its runner thread ends");
            return;
        }
    }
}

/// Keeps a tokio blocking task in flight while runs are in progress, so that a paused clock
/// on a current-thread runtime does not auto-advance in the middle of a run.
#[derive(Debug, Default)]
pub(super) struct ClockHold {
    runs: Mutex<usize>,
    changed: Condvar,
}

impl ClockHold {
    /// A run starts; the first one of a busy period starts the blocking task.
    pub(super) fn enter(self: &Arc<Self>) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        *runs += 1;
        if *runs == 1 {
            let hold = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                let mut runs = hold.runs.lock().unwrap_or_else(PoisonError::into_inner);
                while *runs > 0 {
                    runs = hold
                        .changed
                        .wait(runs)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            });
        }
    }

    /// A run has ended (after its completion was posted).
    pub(super) fn leave(&self) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        *runs = runs.saturating_sub(1);
        if *runs == 0 {
            self.changed.notify_all();
        }
    }
}
