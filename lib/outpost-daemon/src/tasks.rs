//! The last task of each package: what `/status` shows in `remote_config_state`.
//!
//! The table lives in memory behind a short lock so that `/status` never waits for an
//! operation, and is written through to the store so it survives a restart. A task found
//! `RUNNING` at start-up was interrupted by a crash or a kill: it is reported as an error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use outpost_types::ErrorCode;
use outpost_types::error::ApiError;
use outpost_types::wire::{Phase, Progress, Task, TaskState, format_rfc3339};

/// Progress of the running task, updated by the fetch pipeline without locks.
#[derive(Debug, Default)]
pub struct ProgressCell {
    phase: AtomicU8,
    done: AtomicU64,
    /// `u64::MAX` when unknown.
    total: AtomicU64,
}

impl ProgressCell {
    /// Records the current phase and byte counts.
    pub fn set(&self, phase: Phase, done: u64, total: Option<u64>) {
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
        self.total
            .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn snapshot(&self) -> Progress {
        let phase = match self.phase.load(Ordering::Relaxed) {
            x if x == Phase::Unpack as u8 => Phase::Unpack,
            x if x == Phase::Switch as u8 => Phase::Switch,
            _ => Phase::Download,
        };
        let total = self.total.load(Ordering::Relaxed);
        Progress {
            phase,
            bytes_done: self.done.load(Ordering::Relaxed),
            bytes_total: (total != u64::MAX).then_some(total),
        }
    }
}

impl outpost_fetch::Progress for ProgressCell {
    fn report(&self, phase: Phase, bytes_done: u64, bytes_total: Option<u64>) {
        self.set(phase, bytes_done, bytes_total);
    }
}

#[derive(Debug)]
struct Entry {
    task: Task,
    progress: Option<Arc<ProgressCell>>,
}

/// The in-memory table of last tasks.
#[derive(Debug, Default)]
pub(crate) struct TaskTable {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl TaskTable {
    /// Loads persisted tasks, turning interrupted `RUNNING` ones into errors.
    pub(crate) fn from_persisted(tasks: BTreeMap<String, Task>) -> (Self, Vec<(String, Task)>) {
        let mut repaired = Vec::new();
        let entries = tasks
            .into_iter()
            .map(|(pkg, mut task)| {
                if task.state == TaskState::Running {
                    task.state = TaskState::Error;
                    task.progress = None;
                    task.error = Some(ApiError::new(
                        ErrorCode::Internal,
                        "interrupted: the daemon stopped while this task was running; the repository was left in its previous state or the new one, never between",
                    ));
                    repaired.push((pkg.clone(), task.clone()));
                }
                (pkg, Entry { task, progress: None })
            })
            .collect();
        (
            Self {
                entries: Mutex::new(entries),
            },
            repaired,
        )
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (each update is a
        // single insert), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a task for `package`; returns it and its progress cell.
    pub(crate) fn start(
        &self,
        package: &str,
        operation: &str,
        version: Option<&str>,
    ) -> (Task, Arc<ProgressCell>, Option<Task>) {
        let task = Task {
            id: new_task_id(),
            operation: operation.to_string(),
            version: version.map(str::to_string),
            state: TaskState::Running,
            error: None,
            progress: None,
            started_at: Some(format_rfc3339(crate::watch::now_ms())),
            finished_at: None,
        };
        let cell = Arc::new(ProgressCell::default());
        let previous = self
            .lock()
            .insert(
                package.to_string(),
                Entry {
                    task: task.clone(),
                    progress: Some(cell.clone()),
                },
            )
            .map(|e| e.task);
        (task, cell, previous)
    }

    /// Puts back the task `start` replaced (none: the package has no task again), if task `id`
    /// is still the package's: an operation refused before it changed anything does not
    /// rewrite the package's history.
    pub(crate) fn restore(&self, package: &str, id: &str, previous: Option<Task>) {
        let mut map = self.lock();
        if map.get(package).is_none_or(|e| e.task.id != id) {
            return;
        }
        match previous {
            Some(task) => {
                map.insert(
                    package.to_string(),
                    Entry {
                        task,
                        progress: None,
                    },
                );
            }
            None => {
                map.remove(package);
            }
        }
    }

    /// Finishes the task of `package` with the given outcome; returns the final task. A task
    /// that reaches here with `invalid_state` was refused by its `expected_state` (the other
    /// refusals restore the previous task instead): its state is `INVALID_STATE`.
    pub(crate) fn finish(
        &self,
        package: &str,
        id: &str,
        outcome: Result<(), ApiError>,
    ) -> Option<Task> {
        let mut map = self.lock();
        let entry = map.get_mut(package).filter(|e| e.task.id == id)?;
        entry.progress = None;
        entry.task.progress = None;
        entry.task.finished_at = Some(format_rfc3339(crate::watch::now_ms()));
        match outcome {
            Ok(()) => entry.task.state = TaskState::Done,
            Err(e) => {
                entry.task.state = if e.code == ErrorCode::InvalidState {
                    TaskState::InvalidState
                } else {
                    TaskState::Error
                };
                entry.task.error = Some(e);
            }
        }
        Some(entry.task.clone())
    }

    /// A snapshot of every task, with live progress for running ones.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Task> {
        self.lock()
            .iter()
            .map(|(pkg, e)| {
                let mut task = e.task.clone();
                if let Some(cell) = &e.progress {
                    task.progress = Some(cell.snapshot());
                }
                (pkg.clone(), task)
            })
            .collect()
    }
}

/// A task id unique within this host: milliseconds since the epoch, the pid and a counter.
fn new_task_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{millis:x}-{:x}-{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_types::wire::parse_rfc3339;

    #[test]
    fn lifecycle_and_progress() {
        let table = TaskTable::default();
        let (task, cell, previous) = table.start("p", "install", Some("1"));
        assert!(previous.is_none());
        cell.set(Phase::Unpack, 10, Some(100));
        let snap = table.snapshot();
        assert_eq!(snap["p"].state, TaskState::Running);
        assert_eq!(
            snap["p"].progress,
            Some(Progress {
                phase: Phase::Unpack,
                bytes_done: 10,
                bytes_total: Some(100)
            })
        );
        let done = table
            .finish(
                "p",
                &task.id,
                Err(ApiError::new(ErrorCode::Integrity, "bad")),
            )
            .unwrap();
        assert_eq!(done.state, TaskState::Error);
        assert!(table.snapshot()["p"].progress.is_none());
        // Both timestamps, in order, in the one RFC 3339 form.
        let started = parse_rfc3339(task.started_at.as_deref().unwrap()).unwrap();
        assert_eq!(done.started_at, task.started_at);
        let finished = parse_rfc3339(done.finished_at.as_deref().unwrap()).unwrap();
        assert!(started <= finished && finished <= crate::watch::now_ms());
        assert!(task.finished_at.is_none());
        // A stale id does not overwrite a newer task.
        let (newer, _, previous) = table.start("p", "remove", None);
        assert_eq!(previous.as_ref().map(|t| &t.id), Some(&task.id));
        assert!(table.finish("p", &task.id, Ok(())).is_none());
        assert_eq!(table.snapshot()["p"].id, newer.id);
    }

    #[test]
    fn an_invalid_state_outcome_is_its_own_task_state() {
        let table = TaskTable::default();
        let (task, _, _) = table.start("p", "remove", None);
        let done = table
            .finish(
                "p",
                &task.id,
                Err(ApiError::new(ErrorCode::InvalidState, "expected")),
            )
            .unwrap();
        assert_eq!(done.state, TaskState::InvalidState);
        assert!(done.finished_at.is_some());
    }

    #[test]
    fn a_refused_task_puts_the_previous_one_back() {
        let table = TaskTable::default();
        // No previous task: the package has none again.
        let (first, _, previous) = table.start("p", "start_experiment", Some("2"));
        table.restore("p", &first.id, previous);
        assert!(!table.snapshot().contains_key("p"));
        // A previous task comes back as it was.
        let (install, _, _) = table.start("p", "install", Some("1"));
        let done = table.finish("p", &install.id, Ok(())).unwrap();
        let (refused, _, previous) = table.start("p", "promote_experiment", None);
        table.restore("p", &refused.id, previous);
        assert_eq!(table.snapshot()["p"], done);
        // A stale id restores nothing.
        let (current, _, _) = table.start("p", "remove", None);
        table.restore("p", &refused.id, None);
        assert_eq!(table.snapshot()["p"].id, current.id);
    }

    #[test]
    fn interrupted_tasks_become_errors() {
        let mut persisted = BTreeMap::new();
        persisted.insert(
            "p".to_string(),
            Task {
                id: "x".into(),
                operation: "install".into(),
                version: None,
                state: TaskState::Running,
                error: None,
                progress: None,
                started_at: Some("2026-12-03T06:00:00.000Z".into()),
                finished_at: None,
            },
        );
        let (table, repaired) = TaskTable::from_persisted(persisted);
        assert_eq!(repaired.len(), 1);
        let t = &table.snapshot()["p"];
        assert_eq!(t.state, TaskState::Error);
        assert!(t.error.as_ref().unwrap().message.contains("interrupted"));
    }

    #[test]
    fn ids_are_unique() {
        let a = new_task_id();
        let b = new_task_id();
        assert_ne!(a, b);
    }
}
