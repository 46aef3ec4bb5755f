//! The counters the hooks bump: one set per owner slot, plus the retired owners' and the
//! untracked frees. Updated only by the hooks (serialised by the GIL), read by snapshots.

use std::sync::atomic::{AtomicU64, Ordering};

use super::stats::MemoryStats;

/// Number of owner slots (slot 0 is "unattributed").
pub(super) const MAX_SLOTS: usize = 1023;

/// Counters of one owner (or of everything).
#[derive(Debug)]
pub(super) struct Counters {
    allocations: AtomicU64,
    frees: AtomicU64,
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
}

impl Counters {
    pub(super) const fn new() -> Self {
        Self {
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
        }
    }

    /// Serialised by the GIL: a relaxed load and store, no locked instruction.
    #[inline(always)]
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub(super) fn on_alloc(&self, size: u64) {
        Self::bump(&self.allocations, 1);
        Self::bump(&self.allocated_bytes, size);
    }

    #[inline(always)]
    pub(super) fn on_free(&self, size: u64) {
        Self::bump(&self.frees, 1);
        Self::bump(&self.freed_bytes, size);
    }

    pub(super) fn read(&self) -> MemoryStats {
        let allocations = self.allocations.load(Ordering::Relaxed);
        let frees = self.frees.load(Ordering::Relaxed);
        let allocated_bytes = self.allocated_bytes.load(Ordering::Relaxed);
        let freed_bytes = self.freed_bytes.load(Ordering::Relaxed);
        MemoryStats {
            allocations,
            frees,
            allocated_bytes,
            freed_bytes,
            inuse_bytes: allocated_bytes.saturating_sub(freed_bytes),
        }
    }

    pub(super) fn live_blocks(&self) -> u64 {
        self.allocations
            .load(Ordering::Relaxed)
            .wrapping_sub(self.frees.load(Ordering::Relaxed))
    }

    /// Adds `other`'s counts to these (serialised by the GIL, like the hooks).
    pub(super) fn absorb(&self, other: &Counters) {
        Self::bump(&self.allocations, other.allocations.load(Ordering::Relaxed));
        Self::bump(&self.frees, other.frees.load(Ordering::Relaxed));
        Self::bump(
            &self.allocated_bytes,
            other.allocated_bytes.load(Ordering::Relaxed),
        );
        Self::bump(&self.freed_bytes, other.freed_bytes.load(Ordering::Relaxed));
    }

    pub(super) fn reset(&self) {
        self.allocations.store(0, Ordering::Relaxed);
        self.frees.store(0, Ordering::Relaxed);
        self.allocated_bytes.store(0, Ordering::Relaxed);
        self.freed_bytes.store(0, Ordering::Relaxed);
    }
}

/// Counts of reused slots' previous owners, kept for the totals.
pub(super) static RETIRED: Counters = Counters::new();
/// Frees of blocks the tracker never saw allocated.
pub(super) static UNTRACKED_FREES: AtomicU64 = AtomicU64::new(0);
/// The counters of each owner slot; slot 0 is "unattributed".
pub(super) static SLOTS: [Counters; MAX_SLOTS] = [const { Counters::new() }; MAX_SLOTS];

/// The sum over every slot (the hooks count per slot only, to keep them short).
pub(super) fn total() -> MemoryStats {
    let mut t = MemoryStats::default();
    for slot in std::iter::once(&RETIRED).chain(&SLOTS) {
        let s = slot.read();
        t.allocations = t.allocations.wrapping_add(s.allocations);
        t.frees = t.frees.wrapping_add(s.frees);
        t.allocated_bytes = t.allocated_bytes.wrapping_add(s.allocated_bytes);
        t.freed_bytes = t.freed_bytes.wrapping_add(s.freed_bytes);
    }
    t.inuse_bytes = t.allocated_bytes.saturating_sub(t.freed_bytes);
    t
}

/// The counters of `owner`; an out-of-range owner counts as unattributed.
#[inline(always)]
pub(super) fn slot_counters(owner: u16) -> &'static Counters {
    SLOTS.get(usize::from(owner)).unwrap_or(&SLOTS[0])
}
