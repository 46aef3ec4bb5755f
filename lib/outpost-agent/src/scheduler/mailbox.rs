//! Where runner threads leave finished runs.
//!
//! # Finished runs do not always wake the loop
//! Waking a thread costs more than everything the loop does for a run, so a runner thread
//! records the run's statistics itself, posts the completion in a mailbox, and wakes the loop
//! only when it must act before its next wake-up anyway: the job's next due time comes before
//! the loop's next timer, someone waits for the run (run-now), jobs wait for a runner, or
//! shutdown waits for runs. Otherwise the loop takes the completion at its next wake-up,
//! before it looks at any timer (so a run that finished is never reported late). With many
//! jobs the loop wakes about once per due time instead of twice per run.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use super::job::{Disabled, Job, RunInfo};

pub(super) struct Completion<J: Job> {
    pub(super) id: Arc<str>,
    pub(super) generation: u64,
    pub(super) run: u64,
    pub(super) info: RunInfo,
    /// The report, or the panic message of a run that panicked.
    pub(super) outcome: Result<Arc<J::Report>, String>,
    /// Set when the run disabled its job.
    pub(super) disabled: Option<Disabled>,
}

/// What a run shares with the loop while it is in progress.
#[derive(Debug, Default)]
pub(super) struct RunFlags {
    /// `run()` has returned (a timeout that fires now is not a late run).
    pub(super) done: AtomicBool,
    /// The loop found it past its timeout.
    pub(super) late: AtomicBool,
    /// The loop must hear of its end at once: someone waits for it or for the job's next
    /// run (run-now), or the job was removed and retires with it.
    pub(super) wake: AtomicBool,
    /// [`RUNNING`], then [`RETURNED`] (by its thread) or [`ABANDONED`] (by the loop),
    /// whichever comes first.
    pub(super) state: AtomicU8,
}

const RUNNING: u8 = 0;
const RETURNED: u8 = 1;
const ABANDONED: u8 = 2;

impl RunFlags {
    /// The loop gives the run's runner back; false when the run has already returned.
    pub(super) fn abandon(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The run's thread after `run()` returned: true when the run was abandoned (the thread
    /// was replaced and must end after this run).
    pub(super) fn returned(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, RETURNED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    }
}

/// Whether the loop sleeps, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoopState {
    /// It is working, and looks at the mailbox before it sleeps again.
    Awake,
    /// It sleeps until this time (`None`: until something wakes it).
    Asleep(Option<Instant>),
}

pub(super) struct MailboxState<J: Job> {
    pub(super) completions: Vec<Completion<J>>,
    pub(super) state: LoopState,
    /// Jobs due and waiting for a runner.
    pub(super) queued: usize,
    pub(super) shutting_down: bool,
}

/// Where runner threads leave finished runs (see the module docs).
pub(super) struct Mailbox<J: Job> {
    pub(super) state: Mutex<MailboxState<J>>,
    pub(super) wake: tokio::sync::Notify,
}

impl<J: Job> Mailbox<J> {
    pub(super) fn new() -> Self {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState<J>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts a finished run; wakes the loop when it must act before its next wake-up.
    /// `next_due`: the job's next due time (scheduled runs); `urgent`: someone waits.
    pub(super) fn post(&self, done: Completion<J>, next_due: Option<Instant>, urgent: bool) {
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
    pub(super) fn take(&self) -> Vec<Completion<J>> {
        let mut m = self.lock();
        m.state = LoopState::Awake;
        std::mem::take(&mut m.completions)
    }

    /// The loop is about to sleep until `until`: false (stay awake) when runs were posted
    /// since it last looked.
    pub(super) fn sleep(&self, until: Option<Instant>, queued: usize, shutting_down: bool) -> bool {
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
