//! Memory tracking of the embedded interpreter (`memtrack_enabled`, default true).
//!
//! # Design
//!
//! Python's `MEM` and `OBJ` allocator domains are wrapped with `PyMem_SetAllocator` before
//! the interpreter starts (after its pre-initialisation, which only uses the raw domain), so
//! no block of these domains predates the hooks. The hooks keep no per-block record: a
//! small allocation (pymalloc's, up to 512 bytes) costs a compare, the sampling countdown
//! and one thread-local increment, made before a tail call to pymalloc (no frame), and a
//! free reaches pymalloc with no hook at all: a pymalloc block is counted by its pool, and
//! pymalloc hands any other block to the `RAW` domain, whose hook counts those these
//! domains made there ([`exact`]). Per-check attribution of the bytes in use comes from
//! sampling, the way tcmalloc and jemalloc profile heaps.
//!
//! * **Exact counters, per thread** ([`local`]). Each thread that allocates owns a block of
//!   counters (allocations in pymalloc's arenas per size class, whose bytes are the counts
//!   times the classes' sizes; allocations, bytes allocated, frees and bytes freed of the
//!   other blocks) that only it writes, with a relaxed load and store (plain moves, no
//!   locked instruction, no shared cache line).
//!   Readers fold the blocks of the live threads and those of exited threads, whose counts
//!   are added to a global when the thread ends.
//! * **Block sizes from addresses** ([`arena`]). Before the interpreter starts, pymalloc's
//!   arena allocator (`PyObject_SetArenaAllocator`) is replaced by one that carves arenas out
//!   of a reserved region of address space. A block in that region is a pymalloc block, and
//!   the header of its pool (its address rounded down to the pool size) names its size
//!   class; any other block of these domains comes from `malloc`, and `malloc_usable_size`
//!   gives its size. Allocations count their block's size. A request of 1 to 512 bytes is
//!   counted in its size class before it is forwarded: pymalloc serves it from its arenas
//!   unless it cannot get an arena, which the arena allocator sees (the region full, or an
//!   arena given back unused) and which turns [`MemorySnapshot::exact`] false. A larger
//!   block is made in the `RAW` domain with a header that marks it as tracked, and counted
//!   at its `malloc` size; its free, which pymalloc hands to the `RAW` domain, counts one
//!   free and that size. A free of a pymalloc block counts nothing: the blocks in use in
//!   pymalloc's pools and their bytes are read, when counters are read, from the pools
//!   themselves (each pool counts its blocks in use; one pass over the pool headers of the
//!   arenas handed out, 64 per MiB). So the total `InuseBytes` is exact, `FreedBytes` is
//!   `AllocatedBytes - InuseBytes`, and `Frees` is the frees counted plus the allocations
//!   in the arenas no longer in use, exact too, without the free of a small block reading
//!   its pool header (a cache miss when many objects are released at once) or touching a
//!   counter (measured, see `BENCHMARKS.md`). Sizes are the blocks' real sizes: requests rounded up to pymalloc's
//!   16-byte size classes, or to `malloc`'s chunk. Counters read while Python runs (they
//!   need no GIL) may see an allocation in flight on either side. The layout read is
//!   verified once the interpreter runs (one block of every small size allocated, read back
//!   and found in the pools' counts); when it does not hold (debug hooks through
//!   `PYTHONMALLOC` or `PYTHONDEVMODE`, `PYTHONMALLOC=malloc`, a debug build, another
//!   allocator), hooks that do not read sizes take over (see **Without sizes** below) and
//!   [`MemorySnapshot::exact`] is false.
//! * **Exact per-check counts.** The runner thread knows which check it runs: when an
//!   [`OwnerGuard`] is entered or left, the thread's counts since the last switch are added
//!   to the owner's slot. A check's `Allocations` and `AllocatedBytes` are therefore what
//!   its runs did, updated when each run ends. A check's `FreedBytes` is its
//!   `AllocatedBytes` minus its estimated `InuseBytes`, and its `Frees` the frees its runs
//!   made of blocks outside the arenas plus its arena allocations minus the estimate of
//!   its arena blocks still in use (each small sample stands for `1 / P(sampled) - 1`
//!   unsampled blocks), both held at their last value rather than go down (they are
//!   exported as counters). Without block sizes its `Frees` are the frees its runs made.
//! * **Bytes in use per check, by sampling** ([`sampled`]). Each thread draws exponentially
//!   distributed intervals of allocated bytes with a mean `T` of [`SAMPLE_INTERVAL`]; the
//!   block during which an interval runs out is sampled, so a block of `s` bytes is sampled
//!   with probability `1 - exp(-s / T)` and recorded with the weight
//!   `s / (1 - exp(-s / T))`, which makes the sum of the weights of the live
//!   samples an unbiased estimate of the bytes in use. A sampled block is allocated from a
//!   region of address space reserved for samples, with a small header naming its owner,
//!   size and weight: a free knows whether its block was sampled from its address alone
//!   (one subtraction and one compare). Blocks of a few hundred KiB or more are sampled
//!   almost surely (a 50 MB buffer is counted exactly); for many small blocks the relative
//!   standard error is `sqrt(T / bytes)`: 7% for 50 MB at the default 256 KiB, 2.5% at
//!   32 KiB. The interval trades resolution for cost: each sample takes a lock and moves its
//!   block out of Python's heap (see `BENCHMARKS.md`). A check's `InuseBytes` is the
//!   estimate of the samples its runs allocated, whoever frees them; the total `InuseBytes`
//!   is exact.
//! * **Untracked frees** are frees of blocks the hooks never saw allocated. The hooks are in
//!   place before the interpreter allocates from these domains, so there are none:
//!   `UntrackedFrees` is 0 (a block allocated from the raw domain and freed through these
//!   would be a bug of the extension doing it, and is not detected).
//! * **Without sizes** (layout not verified): `FreedBytes` is `AllocatedBytes - InuseBytes`
//!   from the sampled estimate, held at its last value rather than go down (it is exported
//!   as a counter), and `AllocatedBytes` counts requested sizes.
//! * **`RAW`'s own blocks are not counted.** The raw domain is called without the GIL
//!   (thread states, the GIL machinery, C extensions releasing the GIL) and holds the
//!   interpreter's internal buffers, not the objects checks create. Its hook (with sizes
//!   known) serves the blocks the `MEM` and `OBJ` hooks ask pymalloc for, and recognises
//!   them and sampled blocks when they are freed; every other call is forwarded after one
//!   compare (and, for a free, one read of the eight bytes before the block).
//! * **Slots** are a fixed table of 1023 owners. A slot is reused only once its previous
//!   owner is gone and every block of it that was sampled has been freed. When all are
//!   taken, new instances are counted as unattributed.
//!
//! A free-threaded CPython build has no GIL to serialise the hooks' use of shared state (the
//! block of counters of threads that have not allocated yet, the sampled region): there,
//! tracking is not installed and [`snapshot`] reports it as disabled.

mod arena;
mod exact;
mod hooks;
mod local;
mod sampled;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

pub use arena::REGION_MIB_ENV;
#[doc(hidden)]
pub use hooks::install_forwarding_only;
pub(crate) use hooks::{confirm, install};

/// Mean number of bytes allocated between two samples, per thread, by default.
pub const SAMPLE_INTERVAL: u64 = 256 * 1024;

/// The mean sampling interval in force (each sample keeps the weight it was given).
static INTERVAL: AtomicU64 = AtomicU64::new(SAMPLE_INTERVAL);

fn interval() -> u64 {
    INTERVAL.load(Ordering::Relaxed)
}

/// Sets the mean sampling interval (tests: finer estimates at a higher cost).
#[cfg(test)]
fn set_interval(bytes: u64) {
    INTERVAL.store(bytes.max(1), Ordering::Relaxed);
}

/// Number of owner slots (slot 0 is "unattributed").
const MAX_SLOTS: usize = 1024;

/// What is known of one owner: exact counts flushed by [`OwnerGuard`] switches, and the
/// estimates of its bytes in use and of its blocks in pymalloc's arenas, kept by the sampled
/// allocations and frees.
#[derive(Debug)]
struct SlotCounters {
    /// The threads' counts charged to this owner, in the order of [`local::Counters`].
    counts: [AtomicU64; local::COUNTS],
    /// Sum of the weights of the owner's live samples.
    inuse_estimate: AtomicU64,
    /// Sum of the pymalloc blocks its live samples stand for ([`sampled::arena_blocks`]).
    arena_blocks_estimate: AtomicU64,
    /// Live samples (the slot is reusable once this is 0).
    live_samples: AtomicU64,
    /// The largest `FreedBytes` and `Frees` reported (counters never go down).
    freed_reported: AtomicU64,
    frees_reported: AtomicU64,
    /// Set when an allocation was refused for the check memory limit; taken after each run.
    over_limit: AtomicBool,
}

impl SlotCounters {
    const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; local::COUNTS],
            inuse_estimate: AtomicU64::new(0),
            arena_blocks_estimate: AtomicU64::new(0),
            live_samples: AtomicU64::new(0),
            freed_reported: AtomicU64::new(0),
            frees_reported: AtomicU64::new(0),
            over_limit: AtomicBool::new(false),
        }
    }

    /// The exact counts, in the order of the threads' counters.
    fn counts(&self) -> &[AtomicU64; local::COUNTS] {
        &self.counts
    }

    fn read(&self) -> MemoryStats {
        MemoryStats::estimated(
            self.counts.each_ref().map(|c| c.load(Ordering::Relaxed)),
            self.inuse_estimate.load(Ordering::Relaxed),
            self.arena_blocks_estimate.load(Ordering::Relaxed),
        )
        .monotonic(&self.freed_reported, &self.frees_reported)
    }
}

/// Slot `i` of owner `i`; slot 0 holds only the samples of allocations made outside checks.
static SLOTS: [SlotCounters; MAX_SLOTS] = [const { SlotCounters::new() }; MAX_SLOTS];
/// Exact counts of reused slots' previous owners (for the unattributed remainder).
static RETIRED_SLOTS: [AtomicU64; local::COUNTS] = [const { AtomicU64::new(0) }; local::COUNTS];
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Whether the hooks count the real size of every block, allocated and freed.
static EXACT: AtomicBool = AtomicBool::new(false);
/// The largest total `FreedBytes` and `Frees` reported.
static TOTAL_FREED_REPORTED: AtomicU64 = AtomicU64::new(0);
static TOTAL_FREES_REPORTED: AtomicU64 = AtomicU64::new(0);

/// The check memory limit in bytes (`agent.check_memory_limit`); 0 is none.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Sets the most memory one check instance may keep in use (the sampled estimate of what its
/// runs allocated and did not free); `None` removes the limit. Needs tracking
/// ([`enabled`]): without it nothing is measured and nothing refused.
///
/// The limit is enforced where the estimate changes, on sampled allocations (about one per
/// [`SAMPLE_INTERVAL`] bytes allocated, and almost every allocation of a few hundred KiB or
/// more): a sampled allocation that would take the check's estimate past the limit fails, so
/// Python raises `MemoryError` in the check. A check can therefore go past the limit by
/// about one sampling interval of small blocks before it is stopped.
pub fn set_check_limit(bytes: Option<u64>) {
    LIMIT.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The check memory limit in force, if any.
pub fn check_limit() -> Option<u64> {
    Some(LIMIT.load(Ordering::Relaxed)).filter(|l| *l != 0)
}

/// Whether a sampled allocation of `size` bytes by `owner` must fail for the limit (and if so,
/// marks the owner). Allocations outside checks (owner 0) are never refused.
#[cold]
fn refuse(owner: u16, size: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    if owner == 0 || limit == 0 {
        return false;
    }
    let s = slot(owner);
    if s.inuse_estimate
        .load(Ordering::Relaxed)
        .saturating_add(size as u64)
        <= limit
    {
        return false;
    }
    s.over_limit.store(true, Ordering::Relaxed);
    true
}

/// The counters of `owner`; an out-of-range owner counts as unattributed.
fn slot(owner: u16) -> &'static SlotCounters {
    SLOTS.get(usize::from(owner)).unwrap_or(&SLOTS[0])
}

/// Memory counters, as exported in the `rtloader` expvar map. In the totals, every counter
/// is exact (block sizes; `FreedBytes` is `AllocatedBytes - InuseBytes`). Per check,
/// `Allocations`, `Frees` and `AllocatedBytes` are exact, `InuseBytes` is the sampled
/// estimate and `FreedBytes` is `AllocatedBytes - InuseBytes`, except that it never goes
/// down (a counter): when a sample raises the estimate faster than allocations grow, it
/// keeps its last value. Without block sizes ([`MemorySnapshot::exact`] false), the totals
/// are made like a check's and `AllocatedBytes` counts requested sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryStats {
    /// Blocks allocated.
    pub allocations: u64,
    /// Blocks freed (per check: frees its runs made).
    pub frees: u64,
    /// Bytes allocated (block sizes; requested sizes without them).
    pub allocated_bytes: u64,
    /// Bytes freed: `allocated_bytes - inuse_bytes` (never going down per check).
    pub freed_bytes: u64,
    /// Bytes allocated and not yet freed: exact in the totals, the sampled estimate per
    /// check (and everywhere without block sizes).
    pub inuse_bytes: u64,
}

impl MemoryStats {
    /// Keeps `freed_bytes` and `frees` from going down (they are exported as counters) when
    /// a new sample raises an estimate faster than allocations grow, or a read of the pools
    /// catches an allocation in flight: the larger of the derived value and the largest
    /// reported, which `high_bytes` and `high_frees` remember.
    fn monotonic(mut self, high_bytes: &AtomicU64, high_frees: &AtomicU64) -> Self {
        let previous = high_bytes.fetch_max(self.freed_bytes, Ordering::Relaxed);
        self.freed_bytes = self.freed_bytes.max(previous).min(self.allocated_bytes);
        let previous = high_frees.fetch_max(self.frees, Ordering::Relaxed);
        self.frees = self.frees.max(previous).min(self.allocations);
        self
    }

    fn derive(allocations: u64, frees: u64, allocated_bytes: u64, inuse_bytes: u64) -> Self {
        Self {
            allocations,
            frees,
            allocated_bytes,
            freed_bytes: allocated_bytes.saturating_sub(inuse_bytes),
            inuse_bytes,
        }
    }

    /// The stats of an owner (or of the unattributed remainder) from its exact `counts` (in
    /// the order of [`local::Counters`]) and its estimates: bytes in use, and blocks in
    /// pymalloc's arenas, whose frees are not counted (its arena allocations no longer
    /// live are).
    fn estimated(counts: [u64; local::COUNTS], inuse: u64, arena_blocks: u64) -> Self {
        let arena_allocations = counts[local::ARENA_ALLOCATIONS];
        let frees = counts[local::OUTSIDE_FREES]
            .wrapping_add(arena_allocations.saturating_sub(arena_blocks));
        Self::derive(
            arena_allocations.wrapping_add(counts[local::OUTSIDE_ALLOCATIONS]),
            frees,
            counts[local::ARENA_ALLOCATED_BYTES]
                .wrapping_add(counts[local::OUTSIDE_ALLOCATED_BYTES]),
            inuse,
        )
    }
}

/// Memory attributed to one check instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckMemory {
    /// The instance's check ID.
    pub check_id: String,
    /// The check name.
    pub check_name: String,
    /// False once the instance was dropped (its blocks may still be alive).
    pub live: bool,
    /// Its counters.
    pub stats: MemoryStats,
}

/// A point-in-time copy of every counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemorySnapshot {
    /// Whether tracking is installed (`memtrack_enabled` and a GIL build).
    pub enabled: bool,
    /// Whether the totals are exact: block sizes known (else `FreedBytes` and the total
    /// `InuseBytes` are derived from the sampled estimate), and pymalloc never short of an
    /// arena (else a few small blocks it then took from `malloc` are miscounted).
    pub exact: bool,
    /// Mean bytes allocated between two samples (the estimates' resolution).
    pub sample_interval: u64,
    /// Everything tracked.
    pub total: MemoryStats,
    /// Frees of blocks the tracker never saw allocated: 0, the hooks being in place before
    /// the interpreter allocates (see the module docs).
    pub untracked_frees: u64,
    /// Allocations that should have been sampled but were not (sampled region full): the
    /// estimates miss them.
    pub sampling_failures: u64,
    /// Allocations made outside any check (imports, the runtime itself).
    pub unattributed: MemoryStats,
    /// Per instance.
    pub checks: Vec<CheckMemory>,
}

impl MemorySnapshot {
    /// The expvar-style `rtloader` map: `Allocations`, `Frees`, `AllocatedBytes`,
    /// `FreedBytes`, `InuseBytes`, `UntrackedFrees`, plus `Checks` keyed by check ID.
    pub fn rtloader_expvar(&self) -> serde_json::Value {
        let mut checks = serde_json::Map::new();
        for c in &self.checks {
            checks.insert(
                c.check_id.clone(),
                serde_json::to_value(c.stats).unwrap_or(serde_json::Value::Null),
            );
        }
        serde_json::json!({
            "Allocations": self.total.allocations,
            "Frees": self.total.frees,
            "AllocatedBytes": self.total.allocated_bytes,
            "FreedBytes": self.total.freed_bytes,
            "InuseBytes": self.total.inuse_bytes,
            "UntrackedFrees": self.untracked_frees,
            "Checks": checks,
        })
    }

    /// The counters of one check instance.
    pub fn check(&self, check_id: &str) -> Option<&CheckMemory> {
        self.checks.iter().find(|c| c.check_id == check_id)
    }
}

#[derive(Debug)]
struct SlotEntry {
    check_id: String,
    check_name: String,
    live: bool,
}

/// `entries[i]` describes slot `i + 1`.
static REGISTRY: Mutex<Vec<SlotEntry>> = Mutex::new(Vec::new());

/// True when tracking is installed.
pub fn enabled() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// True when the hooks know the size of every block they see allocated or freed, so that
/// `FreedBytes` and the total `InuseBytes` are exact (see the module docs).
pub fn exact() -> bool {
    EXACT.load(Ordering::Relaxed)
}

/// Copies every counter (no GIL needed). Counts a run has made are in its check's counters
/// once the run ends; until then they are in the unattributed remainder.
pub fn snapshot() -> MemorySnapshot {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let checks: Vec<CheckMemory> = registry
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
    let counts = local::totals();
    let inuse: u64 = SLOTS
        .iter()
        .map(|s| s.inuse_estimate.load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add);
    // What no check was charged with: the totals minus every slot, current or retired.
    let mut charged = RETIRED_SLOTS.each_ref().map(|c| c.load(Ordering::Relaxed));
    for s in &SLOTS[1..] {
        for (c, n) in charged.iter_mut().zip(s.counts()) {
            *c = c.wrapping_add(n.load(Ordering::Relaxed));
        }
    }
    let exact = exact();
    let allocations =
        counts[local::ARENA_ALLOCATIONS].wrapping_add(counts[local::OUTSIDE_ALLOCATIONS]);
    let allocated_bytes =
        counts[local::ARENA_ALLOCATED_BYTES].wrapping_add(counts[local::OUTSIDE_ALLOCATED_BYTES]);
    let total = if exact {
        // pymalloc's blocks in use, counted in its pools; the arena allocations not among
        // them were freed. Outside the arenas every allocation and free is counted.
        let (arena_blocks, arena_bytes) = arena::live();
        let inuse = arena_bytes.wrapping_add(
            counts[local::OUTSIDE_ALLOCATED_BYTES].wrapping_sub(counts[local::OUTSIDE_FREED_BYTES]),
        );
        MemoryStats {
            allocations,
            frees: counts[local::OUTSIDE_FREES]
                .wrapping_add(counts[local::ARENA_ALLOCATIONS].saturating_sub(arena_blocks)),
            allocated_bytes,
            freed_bytes: allocated_bytes.saturating_sub(inuse),
            inuse_bytes: inuse,
        }
    } else {
        MemoryStats::derive(
            allocations,
            counts[local::OUTSIDE_FREES],
            allocated_bytes,
            inuse,
        )
    }
    .monotonic(&TOTAL_FREED_REPORTED, &TOTAL_FREES_REPORTED);
    let unattributed = MemoryStats::estimated(
        std::array::from_fn(|i| counts[i].saturating_sub(charged[i])),
        SLOTS[0].inuse_estimate.load(Ordering::Relaxed),
        SLOTS[0].arena_blocks_estimate.load(Ordering::Relaxed),
    );
    MemorySnapshot {
        enabled: enabled(),
        exact: exact && arena::refusals() == 0,
        sample_interval: interval(),
        total,
        untracked_frees: 0,
        sampling_failures: sampled::exhausted(),
        unattributed,
        checks,
    }
}

/// The owner slot of one instance. Dropping it retires the slot (kept until its sampled
/// blocks are freed).
#[derive(Debug)]
pub(crate) struct Slot(u16);

impl Slot {
    /// Takes a slot for `check_id`. `None` when tracking is off or every slot is taken.
    /// Called with the GIL held, like every owner switch.
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
        // A retired slot with no live sample: no guard can name it any more (its `Slot` was
        // dropped) and no sampled free will credit it.
        let reusable = registry
            .iter()
            .enumerate()
            .position(|(i, e)| !e.live && SLOTS[i + 1].live_samples.load(Ordering::Acquire) == 0);
        let index = match reusable {
            Some(i) => {
                let s = &SLOTS[i + 1];
                for (retired, counter) in RETIRED_SLOTS.iter().zip(s.counts()) {
                    retired.fetch_add(counter.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                }
                s.inuse_estimate.store(0, Ordering::Relaxed);
                s.arena_blocks_estimate.store(0, Ordering::Relaxed);
                s.freed_reported.store(0, Ordering::Relaxed);
                s.frees_reported.store(0, Ordering::Relaxed);
                s.over_limit.store(false, Ordering::Relaxed);
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

    /// Whether an allocation of this instance was refused for the check memory limit since
    /// the last call (clears the mark).
    pub(crate) fn take_over_limit(&self) -> bool {
        slot(self.0).over_limit.swap(false, Ordering::Relaxed)
    }

    /// The instance's estimated bytes in use.
    pub(crate) fn inuse_bytes(&self) -> u64 {
        slot(self.0).inuse_estimate.load(Ordering::Relaxed)
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

/// Charges what this thread allocates to `slot` until dropped (restores the previous owner).
pub(crate) struct OwnerGuard {
    previous: u16,
}

impl OwnerGuard {
    pub(crate) fn enter(slot: Option<&Slot>) -> Self {
        Self {
            previous: local::switch_owner(slot.map_or(0, Slot::index)),
        }
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        local::switch_owner(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_counters_keep_the_identity() {
        let s = MemoryStats::derive(10, 4, 1000, 300);
        assert_eq!(s.freed_bytes, 700);
        assert_eq!(s.allocated_bytes - s.freed_bytes, s.inuse_bytes);
        // An estimate above what was allocated (one heavy sample) frees nothing.
        assert_eq!(MemoryStats::derive(1, 0, 100, 32 * 1024).freed_bytes, 0);
    }

    #[test]
    fn freed_bytes_and_frees_never_go_down() {
        let (high, frees) = (AtomicU64::new(0), AtomicU64::new(0));
        assert_eq!(
            MemoryStats::derive(2, 1, 1000, 300)
                .monotonic(&high, &frees)
                .freed_bytes,
            700
        );
        // A new sample raised the estimate by more than was allocated since.
        let s = MemoryStats::derive(3, 1, 1100, 600).monotonic(&high, &frees);
        assert_eq!((s.freed_bytes, s.inuse_bytes), (700, 600));
        assert_eq!(
            MemoryStats::derive(4, 2, 1200, 100)
                .monotonic(&high, &frees)
                .freed_bytes,
            1100
        );
        // Frees derived from a live count that caught an allocation in flight.
        assert_eq!(
            MemoryStats::derive(10, 9, 0, 0)
                .monotonic(&high, &frees)
                .frees,
            9
        );
        assert_eq!(
            MemoryStats::derive(11, 8, 0, 0)
                .monotonic(&high, &frees)
                .frees,
            9
        );
    }

    #[test]
    fn arena_frees_are_the_allocations_no_longer_live() {
        let mut counts = [0u64; local::COUNTS];
        counts[local::ARENA_ALLOCATIONS] = 1000;
        counts[local::ARENA_ALLOCATED_BYTES] = 32_000;
        counts[local::OUTSIDE_ALLOCATIONS] = 10;
        counts[local::OUTSIDE_ALLOCATED_BYTES] = 10_000;
        counts[local::OUTSIDE_FREES] = 4;
        // 300 arena blocks estimated live: 700 of them freed, plus the 4 counted.
        let s = MemoryStats::estimated(counts, 5_000, 300);
        assert_eq!(
            (
                s.allocations,
                s.frees,
                s.allocated_bytes,
                s.inuse_bytes,
                s.freed_bytes
            ),
            (1010, 704, 42_000, 5_000, 37_000)
        );
        // Without sizes nothing is in the arenas: the frees are those counted.
        let mut plain = [0u64; local::COUNTS];
        plain[local::OUTSIDE_ALLOCATIONS] = 10;
        plain[local::OUTSIDE_FREES] = 3;
        assert_eq!(MemoryStats::estimated(plain, 0, 0).frees, 3);
    }

    #[test]
    fn expvar_has_the_agent_keys() {
        let snap = snapshot();
        let v = snap.rtloader_expvar();
        for key in [
            "Allocations",
            "Frees",
            "AllocatedBytes",
            "FreedBytes",
            "InuseBytes",
            "UntrackedFrees",
        ] {
            assert!(v[key].is_u64(), "{key}: {v}");
        }
        assert!(v["Checks"].is_object());
        assert_eq!(snap.sample_interval, interval());
    }
}
