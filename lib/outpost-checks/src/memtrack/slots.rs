//! Owner slots: one per loaded instance, and the slot of the instance running on a thread.

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

use super::counters::{MAX_SLOTS, RETIRED, SLOTS};
use super::enabled;
use super::stats::CheckMemory;

thread_local! {
    /// The slot allocations on this thread are charged to (0: unattributed).
    static OWNER: Cell<u16> = const { Cell::new(0) };
}

/// The slot allocations on this thread are charged to now.
#[inline(always)]
pub(super) fn current_owner() -> u16 {
    OWNER.with(Cell::get)
}

#[derive(Debug)]
struct SlotEntry {
    check_id: String,
    check_name: String,
    live: bool,
}

/// `entries[i]` describes slot `i + 1`.
static REGISTRY: Mutex<Vec<SlotEntry>> = Mutex::new(Vec::new());

/// Runs `f` on the memory of every instance that had a slot, with the registry locked.
pub(super) fn with_checks<R>(f: impl FnOnce(Vec<CheckMemory>) -> R) -> R {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let checks = registry
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.check_id.is_empty())
        .map(|(i, e)| CheckMemory {
            check_id: e.check_id.clone(),
            check_name: e.check_name.clone(),
            live: e.live,
            stats: SLOTS[i + 1].read(),
        })
        .collect();
    let result = f(checks);
    drop(registry);
    result
}

/// The owner slot of one instance. Dropping it retires the slot (kept until its blocks are
/// freed).
#[derive(Debug)]
pub(crate) struct Slot(u16);

impl Slot {
    /// Takes a slot for `check_id`. `None` when tracking is off or every slot is taken.
    /// Must be called with the GIL held (a reused slot's counters are reset, which must not
    /// race with the allocator hooks).
    pub(crate) fn acquire(_py: pyo3::Python<'_>, check_id: &str, check_name: &str) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = SlotEntry {
            check_id: check_id.to_owned(),
            check_name: check_name.to_owned(),
            live: true,
        };
        let reusable = registry
            .iter()
            .position(|e| !e.live)
            .filter(|&i| SLOTS[i + 1].live_blocks() == 0);
        let index = match reusable {
            Some(i) => {
                RETIRED.absorb(&SLOTS[i + 1]);
                SLOTS[i + 1].reset();
                registry[i] = entry;
                i
            }
            None if registry.len() + 1 < MAX_SLOTS => {
                registry.push(entry);
                registry.len() - 1
            }
            None => {
                tracing::warn!(
                    check.id = check_id,
                    "memory tracking has no free slot left; this instance is counted as unattributed"
                );
                return None;
            }
        };
        u16::try_from(index + 1).ok().map(Slot)
    }

    pub(crate) fn index(&self) -> u16 {
        self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = registry.get_mut(usize::from(self.0) - 1) {
            e.live = false;
        }
    }
}

/// Charges allocations on this thread to `slot` until dropped (restores the previous owner).
pub(crate) struct OwnerGuard {
    previous: u16,
}

impl OwnerGuard {
    pub(crate) fn enter(slot: Option<&Slot>) -> Self {
        Self::enter_index(slot.map_or(0, Slot::index))
    }

    /// Charges allocations to slot `index` (0: unattributed).
    pub(super) fn enter_index(index: u16) -> Self {
        Self {
            previous: OWNER.with(|o| o.replace(index)),
        }
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        OWNER.with(|o| o.set(self.previous));
    }
}
