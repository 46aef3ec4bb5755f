//! Runs on runner threads: a run, its statistics and its completion posted to the mailbox,
//! and the loop's side of a finished run; `cancel()` requests on threads of their own.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::engine::{Engine, Running, Timer};
use super::handle::ManualRun;
use super::job::{Disabled, Job, JobError, JobReport, RunInfo, RunKind, RunSummary};
use super::mailbox::{Completion, RunFlags};
use super::timing::next_due;
use crate::error::AgentError;

impl<J: Job> Engine<J> {
    /// Starts a run of `id` on a runner of the pool: the run, the observer, the statistics,
    /// then the completion posted to the mailbox.
    pub(super) fn start(&mut self, id: Arc<str>) {
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
        self.in_flight += 1;
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
                abandoned: false,
            });
        }
        self.stats.started(&id, now);
        if kind == RunKind::Scheduled {
            self.stats.set_next_due(&id, None);
        }
        let observer = Arc::clone(&self.observer);
        let mailbox = Arc::clone(&self.mailbox);
        let stats = self.stats.clone();
        let hold = self.clock_hold.clone();
        if let Some(h) = &hold {
            h.enter();
        }
        self.pool.submit(Box::new(move || {
            let started = Instant::now();
            let started_at = SystemTime::now();
            let cpu_before = thread_cpu_time();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| job.run()));
            flags.done.store(true, Ordering::SeqCst);
            let abandoned = flags.returned();
            let cpu_time = thread_cpu_time().saturating_sub(cpu_before);
            let info = RunInfo {
                kind,
                due,
                started,
                finished: Instant::now(),
                started_at,
                cpu_time,
            };
            let mut disabled = None;
            let (outcome, summary) = match result {
                Ok(report) => {
                    disabled = report.disable().map(|reason| Disabled {
                        reason,
                        at: started_at,
                    });
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
                        error: Some(JobError {
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
            let next = due
                .filter(|_| disabled.is_none())
                .map(|due| next_due(due, interval, info.started, info.finished));
            stats.finished(
                &id,
                &info,
                summary,
                flags.late.load(Ordering::SeqCst),
                overrun,
                abandoned,
                next,
                disabled,
            );
            // A disabled job leaves the loop's tables at once.
            let wake = flags.wake.load(Ordering::SeqCst) || disabled.is_some();
            mailbox.post(
                Completion {
                    id,
                    generation,
                    run,
                    info,
                    outcome,
                    disabled,
                },
                next,
                wake,
            );
            if let Some(h) = hold {
                h.leave();
            }
            abandoned
        }));
    }

    /// The loop's side of a finished run: frees its runner (an abandoned run's was freed at
    /// its timeout), answers run-now callers, retires
    /// a removed job, and sets the next due time.
    pub(super) fn on_completion(&mut self, done: Completion<J>) {
        let Some(e) = self.entries.get_mut(&done.id) else {
            return;
        };
        if e.generation != done.generation {
            return;
        }
        let Some(running) = e.running.take_if(|r| r.run == done.run) else {
            return;
        };
        self.in_flight -= 1;
        if !running.abandoned {
            self.free += 1;
        }
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
        if let Some(disabled) = done.disabled {
            self.disable(&done.id, &disabled);
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
}

pub(super) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Calls `cancel()` on each job, in order, on a blocking thread of its own (a cancel may
/// wait for the interpreter).
pub(super) fn spawn_cancel<J: Job>(jobs: Vec<Arc<J>>) {
    tokio::task::spawn_blocking(move || {
        for job in jobs {
            let id = job.id().to_owned();
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| job.cancel())) {
                tracing::error!(check.id = %id, panic = %panic_message(&*p), "cancel panicked");
            }
        }
    });
}
