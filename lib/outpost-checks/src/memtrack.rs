//! Memory tracking of the embedded interpreter (`memtrack_enabled`, default true).
//!
//! # Design
//!
//! Python's `MEM` and `OBJ` allocator domains are wrapped with `PyMem_SetAllocator` when the
//! runtime has started (interpreter up, datadog-checks-base imported), with the GIL held; the
//! wrappers call the allocator that was in place (pymalloc, or whatever `PYTHONMALLOC` chose)
//! with the caller's exact request and pass every pointer through unchanged, which is what
//! makes installing them on a running interpreter safe. Blocks keep their size class and
//! Python's heap its layout and speed. What the interpreter and the base library allocated
//! before (about 10 MiB) is not tracked: their frees are the `UntrackedFrees`, and they cost
//! no table memory.
//!
//! * **Side tables.** What the tracker knows about a live block is a 16-bit entry in a
//!   sparse three-level table indexed by the block's address in 32-byte steps (requests of
//!   up to 16 bytes are served from 32-byte blocks, so two live blocks never start in the
//!   same 32 bytes): the owner slot and, for requests of up to 512 bytes (pymalloc's small
//!   blocks), the size rounded up to 16 bytes, which is what such a block really occupies.
//!   Larger blocks keep their exact size in a second table of 64-bit entries in 512-byte
//!   steps (blocks of more than 512 bytes never start in the same 512 bytes). Leaves are
//!   allocated on first use and their pages are only backed where blocks live: 256 bytes of
//!   table per 4 KiB page of small objects, under 2% for large ones. No lock, no hashing, no bytes added to
//!   Python's blocks, so the heap keeps its size classes and its cache behaviour.
//! * **Untracked frees.** A free whose address has no entry was not allocated through the
//!   wrapper (e.g. allocated before it was installed, or a foreign pointer handed to
//!   `PyMem_Free`); it is counted in `UntrackedFrees`. The pointer always goes to the
//!   underlying allocator unchanged, so a wrong classification can only skew a counter,
//!   never memory safety. A `realloc` is a free of the old block (tracked or not) plus an
//!   allocation of the new one.
//! * **Attribution.** Each loaded instance gets an owner slot; the slot of the instance
//!   running on a thread is in a thread-local while it runs (and while it is instantiated).
//!   Allocations are charged to it; a free is credited to the slot recorded for the block,
//!   i.e. to the check that allocated it, whoever frees it. A `realloc` is a free (credited
//!   to the old owner) plus an allocation (charged to the current one), so
//!   `AllocatedBytes - FreedBytes == InuseBytes` always holds. Allocations outside any check
//!   (imports, the runtime itself) go to slot 0, "unattributed".
//! * **No locked atomics.** The `MEM` and `OBJ` domains may only be used with the GIL held,
//!   so their calls are serialised: counters and table entries are updated with a relaxed
//!   load and a relaxed store (plain moves on x86-64), never a locked read-modify-write.
//!   Readers (snapshots) may run without the GIL and see a slightly stale, never torn, value
//!   of each counter.
//! * **`RAW` is not wrapped.** The raw domain is called without the GIL (thread states,
//!   the GIL machinery itself, C extensions releasing the GIL), so counting it would need
//!   real atomic read-modify-writes and a thread-safe table; it holds the interpreter's
//!   internal buffers, not the objects checks create (large objects go through `OBJ`/`MEM`
//!   first, where they are counted). Keeping it out keeps the hot path cheap.
//! * **Slots** are a fixed table of 1023 counters (32 KiB). A slot is reused only once its previous owner is gone and every block it
//!   allocated has been freed. When all are taken, new instances are counted as unattributed.
//!
//! A free-threaded CPython build has no GIL to serialise the counters: there, tracking is
//! not installed and [`snapshot`] reports it as disabled.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Number of owner slots (slot 0 is "unattributed").
const MAX_SLOTS: usize = 1023;

/// Counters of one owner (or of everything).
#[derive(Debug)]
struct Counters {
    allocations: AtomicU64,
    frees: AtomicU64,
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
        }
    }

    /// Serialised by the GIL: a relaxed load and store, no locked instruction.
    #[inline(always)]
    fn bump(counter: &AtomicU64, by: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    fn on_alloc(&self, size: u64) {
        Self::bump(&self.allocations, 1);
        Self::bump(&self.allocated_bytes, size);
    }

    #[inline(always)]
    fn on_free(&self, size: u64) {
        Self::bump(&self.frees, 1);
        Self::bump(&self.freed_bytes, size);
    }

    fn read(&self) -> MemoryStats {
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

    fn live_blocks(&self) -> u64 {
        self.allocations
            .load(Ordering::Relaxed)
            .wrapping_sub(self.frees.load(Ordering::Relaxed))
    }

    /// Adds `other`'s counts to these (serialised by the GIL, like the hooks).
    fn absorb(&self, other: &Counters) {
        Self::bump(&self.allocations, other.allocations.load(Ordering::Relaxed));
        Self::bump(&self.frees, other.frees.load(Ordering::Relaxed));
        Self::bump(
            &self.allocated_bytes,
            other.allocated_bytes.load(Ordering::Relaxed),
        );
        Self::bump(&self.freed_bytes, other.freed_bytes.load(Ordering::Relaxed));
    }

    fn reset(&self) {
        self.allocations.store(0, Ordering::Relaxed);
        self.frees.store(0, Ordering::Relaxed);
        self.allocated_bytes.store(0, Ordering::Relaxed);
        self.freed_bytes.store(0, Ordering::Relaxed);
    }
}

/// Counts of reused slots' previous owners, kept for the totals.
static RETIRED: Counters = Counters::new();
static UNTRACKED_FREES: AtomicU64 = AtomicU64::new(0);
static SLOTS: [Counters; MAX_SLOTS] = [const { Counters::new() }; MAX_SLOTS];
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static OWNER: Cell<u16> = const { Cell::new(0) };
}

/// Memory counters, as exported in the `rtloader` expvar map. Blocks of up to 512 bytes are
/// counted at their size rounded up to 16 bytes, at least 32 (their real footprint in
/// pymalloc); larger ones at their requested size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryStats {
    /// Blocks allocated.
    pub allocations: u64,
    /// Blocks freed.
    pub frees: u64,
    /// Bytes allocated (requested sizes, headers excluded).
    pub allocated_bytes: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Bytes allocated and not yet freed.
    pub inuse_bytes: u64,
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
    /// Everything tracked.
    pub total: MemoryStats,
    /// Frees of blocks the tracker never saw allocated.
    pub untracked_frees: u64,
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

/// The sum over every slot (the hooks count per slot only, to keep them short).
fn total() -> MemoryStats {
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

/// Copies every counter (no GIL needed).
pub fn snapshot() -> MemorySnapshot {
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
    MemorySnapshot {
        enabled: enabled(),
        total: total(),
        untracked_frees: UNTRACKED_FREES.load(Ordering::Relaxed),
        unattributed: SLOTS[0].read(),
        checks,
    }
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
        let index = slot.map_or(0, Slot::index);
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

// ---------------------------------------------------------------------------------------------
// The side tables.

use std::sync::atomic::{AtomicPtr, AtomicU16, AtomicUsize};

/// Entries per leaf.
const LEAF_BITS: u32 = 18;
/// Leaves per middle node.
const MID_BITS: u32 = 12;
/// Largest user address + 1 (47-bit user space).
const ADDR_BITS: u32 = 47;
/// The small table has one entry per 32 bytes: requests of up to 16 bytes are served from
/// 32-byte blocks (see [`MIN_REQUEST`]), so no two live blocks start in the same 32 bytes.
const SMALL_SHIFT: u32 = 5;
/// Requests smaller than this are raised to it before reaching the underlying allocator:
/// pymalloc then never hands out its 16-byte class, and glibc's smallest chunk is 32 bytes,
/// so live blocks are at least 32 bytes apart. Only objects of at most 16 bytes (rare:
/// every Python object but `object()` is larger) grow to 32.
const MIN_REQUEST: usize = 17;
/// The large table has one entry per 512 bytes: blocks of more than 512 bytes never start
/// in the same 512-byte window.
const LARGE_SHIFT: u32 = 9;
/// Requests up to this size are "small": counted at their 16-byte-rounded size.
const SMALL_MAX: usize = 512;

/// Small-table entry: bits 0..9 owner slot + 1 (0: no block), bits 10..14 size class
/// (`(class + 1) * 16` bytes, 32 to 512), bit 15: large block, exact size in the large
/// table.
const OWNER_BITS: u16 = 0x3ff;
const CLASS_SHIFT: u32 = 10;
const CLASS_BITS: u16 = 0x1f;
const LARGE: u16 = 1 << 15;

struct Leaf<T>([T; 1 << LEAF_BITS]);
struct Mid<T>([AtomicPtr<Leaf<T>>; 1 << MID_BITS]);

static SMALL_TOP: [AtomicPtr<Mid<AtomicU16>>;
    1 << (ADDR_BITS - SMALL_SHIFT - LEAF_BITS - MID_BITS)] =
    [const { AtomicPtr::new(std::ptr::null_mut()) };
        1 << (ADDR_BITS - SMALL_SHIFT - LEAF_BITS - MID_BITS)];
static LARGE_TOP: [AtomicPtr<Mid<AtomicU64>>;
    1 << (ADDR_BITS - LARGE_SHIFT - LEAF_BITS - MID_BITS)] =
    [const { AtomicPtr::new(std::ptr::null_mut()) };
        1 << (ADDR_BITS - LARGE_SHIFT - LEAF_BITS - MID_BITS)];

/// A zeroed node from the system allocator (never Python's: no recursion into the hooks).
/// Large zeroed allocations are fresh mappings, backed page by page as they are touched.
fn new_node<T>() -> *mut T {
    let layout = std::alloc::Layout::new::<T>();
    // SAFETY: the layout has a non-zero size; all-zero bytes are valid for atomics and
    // null pointers.
    unsafe { std::alloc::alloc_zeroed(layout).cast() }
}

/// The node in `slot`, made when missing and `create`.
#[inline(always)]
fn node<T>(slot: &AtomicPtr<T>, create: bool) -> Option<*mut T> {
    let current = slot.load(Ordering::Acquire);
    if !current.is_null() {
        return Some(current);
    }
    if !create {
        return None;
    }
    make_node(slot)
}

/// Makes and publishes the node of `slot`. Publication uses a compare-exchange (rare: once
/// per node), so even callers not serialised by the GIL never lose a node. Kept out of line
/// so that the hooks' fast path stays short.
#[cold]
#[inline(never)]
fn make_node<T>(slot: &AtomicPtr<T>) -> Option<*mut T> {
    let fresh = new_node::<T>();
    if fresh.is_null() {
        return None;
    }
    match slot.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: `fresh` came from `new_node::<T>` and was never published.
            unsafe { std::alloc::dealloc(fresh.cast(), std::alloc::Layout::new::<T>()) };
            Some(winner)
        }
    }
}

/// The entry for `key` (an address shifted by the table's step) in the table rooted at
/// `top`; with `create`, missing nodes are made. `None` for keys outside the table or when
/// a node cannot be allocated.
#[inline(always)]
fn entry_in<T>(top: &'static [AtomicPtr<Mid<T>>], key: usize, create: bool) -> Option<&'static T> {
    let top_slot = top.get(key >> (LEAF_BITS + MID_BITS))?;
    let mid = node(top_slot, create)?;
    let mid_index = (key >> LEAF_BITS) & ((1 << MID_BITS) - 1);
    // SAFETY: published nodes are valid for the rest of the process (never freed).
    let leaf = node(unsafe { &(*mid).0[mid_index] }, create)?;
    // SAFETY: as above.
    Some(unsafe { &(*leaf).0[key & ((1 << LEAF_BITS) - 1)] })
}

/// The leaf of the small table used last, and its key prefix (`key >> LEAF_BITS`, plus one so
/// that 0 means none): consecutive blocks mostly live in the same 8 MiB of address space,
/// and this saves the walk from the top. Updated by the hooks, serialised by the GIL; a
/// stale pair is still valid (leaves are never freed or moved).
static LAST_LEAF: AtomicPtr<Leaf<AtomicU16>> = AtomicPtr::new(std::ptr::null_mut());
static LAST_PREFIX: AtomicUsize = AtomicUsize::new(0);

/// The small-table entry of the block at `addr`.
#[inline(always)]
fn entry(addr: usize, create: bool) -> Option<&'static AtomicU16> {
    let key = addr >> SMALL_SHIFT;
    let prefix = (key >> LEAF_BITS) + 1;
    let index = key & ((1 << LEAF_BITS) - 1);
    if LAST_PREFIX.load(Ordering::Relaxed) == prefix {
        let leaf = LAST_LEAF.load(Ordering::Relaxed);
        // SAFETY: LAST_LEAF holds a published leaf whenever LAST_PREFIX is non-zero
        // (written in this order below, read back in the same thread or after the GIL
        // handed over, which orders them).
        return Some(unsafe { &(*leaf).0[index] });
    }
    entry_walk(key, create)
}

/// [`entry`] when the block is not in the leaf used last: walks the table from the top and
/// remembers the leaf. Out of line, so that the hooks' fast path needs few registers.
#[cold]
#[inline(never)]
fn entry_walk(key: usize, create: bool) -> Option<&'static AtomicU16> {
    let prefix = (key >> LEAF_BITS) + 1;
    let index = key & ((1 << LEAF_BITS) - 1);
    let e = entry_in(&SMALL_TOP, key, create)?;
    // The leaf is the start of the array that holds `e`.
    let leaf = (e as *const AtomicU16).wrapping_sub(index) as *mut Leaf<AtomicU16>;
    LAST_PREFIX.store(0, Ordering::Relaxed);
    LAST_LEAF.store(leaf, Ordering::Relaxed);
    LAST_PREFIX.store(prefix, Ordering::Relaxed);
    Some(e)
}

/// The counters of `owner`; an out-of-range owner counts as unattributed.
#[inline(always)]
fn slot_counters(owner: u16) -> &'static Counters {
    SLOTS.get(usize::from(owner)).unwrap_or(&SLOTS[0])
}

#[inline(always)]
fn current_owner() -> u16 {
    OWNER.with(Cell::get)
}

/// Records a new block of `size` bytes at `ptr` for the current owner.
#[inline(always)]
fn record_alloc(ptr: *mut c_void, size: usize) {
    let owner = current_owner();
    let addr = ptr as usize;
    let Some(e) = entry(addr, true) else {
        // Untrackable (no table node): its free will count as untracked.
        return;
    };
    let owner_bits = (owner & OWNER_BITS).wrapping_add(1) & OWNER_BITS;
    let counted = if size <= SMALL_MAX {
        let class = (size.max(MIN_REQUEST) - 1) >> 4;
        e.store(
            ((class as u16) << CLASS_SHIFT) | owner_bits,
            Ordering::Relaxed,
        );
        (class + 1) << 4
    } else {
        return record_large_alloc(e, owner, owner_bits, addr, size);
    };
    slot_counters(owner).on_alloc(counted as u64);
}

/// The part of [`record_alloc`] for blocks over [`SMALL_MAX`] bytes (rarer, and out of line
/// to keep the common path short).
#[cold]
#[inline(never)]
fn record_large_alloc(
    e: &'static AtomicU16,
    owner: u16,
    owner_bits: u16,
    addr: usize,
    size: usize,
) {
    let Some(large) = entry_in(&LARGE_TOP, addr >> LARGE_SHIFT, true) else {
        return;
    };
    large.store(size as u64, Ordering::Relaxed);
    e.store(LARGE | owner_bits, Ordering::Relaxed);
    slot_counters(owner).on_alloc(size as u64);
}

/// Reads the small-table entry of the block at `ptr` (first half of a free).
#[inline(always)]
fn lookup(ptr: *mut c_void) -> (Option<&'static AtomicU16>, u16) {
    let e = entry(ptr as usize, false);
    let word = e.map_or(0, |e| e.load(Ordering::Relaxed));
    (e, word)
}

/// Records the end of the block at `ptr` whose entry [`lookup`] read: credited to its
/// owner, or an untracked free. Split from the lookup so that the entry's cache miss can
/// overlap with the underlying allocator's work.
#[inline(always)]
fn record_free(ptr: *mut c_void, e: Option<&'static AtomicU16>, word: u16) {
    let Some(e) = e.filter(|_| word & OWNER_BITS != 0) else {
        Counters::bump(&UNTRACKED_FREES, 1);
        return;
    };
    e.store(0, Ordering::Relaxed);
    let size = if word & LARGE != 0 {
        entry_in(&LARGE_TOP, ptr as usize >> LARGE_SHIFT, false).map_or(0, |l| {
            let size = l.load(Ordering::Relaxed);
            l.store(0, Ordering::Relaxed);
            size
        })
    } else {
        u64::from(((word >> CLASS_SHIFT) & CLASS_BITS) + 1) << 4
    };
    slot_counters((word & OWNER_BITS) - 1).on_free(size);
}

// ---------------------------------------------------------------------------------------------
// The hooks.

use pyo3::ffi::{PyMemAllocatorDomain, PyMemAllocatorEx};

/// The allocator that was in place before ours, passed to the hooks as their context.
#[repr(transparent)]
struct Underlying(PyMemAllocatorEx);

extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(malloc) = under.malloc else {
        return std::ptr::null_mut();
    };
    let p = malloc(under.ctx, size.max(MIN_REQUEST));
    if !p.is_null() {
        record_alloc(p, size);
    }
    p
}

extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(calloc) = under.calloc else {
        return std::ptr::null_mut();
    };
    let size = nelem.checked_mul(elsize);
    let p = match size {
        Some(n) if n < MIN_REQUEST => calloc(under.ctx, 1, MIN_REQUEST),
        // An overflowing product is the underlying allocator's to refuse.
        _ => calloc(under.ctx, nelem, elsize),
    };
    if let (false, Some(n)) = (p.is_null(), size) {
        record_alloc(p, n);
    }
    p
}

extern "C" fn hook_realloc(ctx: *mut c_void, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(realloc) = under.realloc else {
        return std::ptr::null_mut();
    };
    let (e, word) = if ptr.is_null() {
        (None, 0)
    } else {
        lookup(ptr)
    };
    let q = realloc(under.ctx, ptr, new_size.max(MIN_REQUEST));
    if q.is_null() {
        // The old block is untouched and keeps its entry.
        return q;
    }
    if !ptr.is_null() {
        record_free(ptr, e, word);
    }
    record_alloc(q, new_size);
    q
}

extern "C" fn hook_free(ctx: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    // Bookkeeping first, while the block is still allocated (the GIL is held, so nobody can
    // free or reuse it meanwhile); the underlying free is then a tail call, with no frame of
    // ours left to restore.
    let (e, word) = lookup(ptr);
    record_free(ptr, e, word);
    if let Some(free) = under.free {
        free(under.ctx, ptr);
    }
}

/// Wraps the `MEM` and `OBJ` domains (once; later calls do nothing). Blocks allocated before
/// are untracked: their frees count as untracked frees.
///
/// # Safety
/// No other thread may use the `MEM`/`OBJ` allocators during the call: hold the GIL.
pub(crate) unsafe fn install() {
    if cfg!(Py_GIL_DISABLED) || INSTALLED.swap(true, Ordering::SeqCst) {
        if cfg!(Py_GIL_DISABLED) {
            INSTALLED.store(false, Ordering::SeqCst);
        }
        return;
    }
    for domain in [
        PyMemAllocatorDomain::PYMEM_DOMAIN_MEM,
        PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ,
    ] {
        let mut old = PyMemAllocatorEx {
            ctx: std::ptr::null_mut(),
            malloc: None,
            calloc: None,
            realloc: None,
            free: None,
        };
        // SAFETY: valid out-pointer; no concurrent allocator use (function contract).
        unsafe { pyo3::ffi::PyMem_GetAllocator(domain, &mut old) };
        let ctx: *mut Underlying = Box::leak(Box::new(Underlying(old)));
        let mut hooks = PyMemAllocatorEx {
            ctx: ctx.cast(),
            malloc: Some(hook_malloc),
            calloc: Some(hook_calloc),
            realloc: Some(hook_realloc),
            free: Some(hook_free),
        };
        // SAFETY: as above; the context lives for the rest of the process.
        unsafe { pyo3::ffi::PyMem_SetAllocator(domain, &mut hooks) };
    }
}

#[cfg(test)]
mod tests {
    //! The hooks are exercised here over the system allocator, so the table logic is tested
    //! without an interpreter; the runtime tests check attribution under Python.
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};

    // The test allocator remembers sizes itself so that realloc/free get a correct layout.
    static SIZES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
    fn remember(p: *mut c_void, size: usize) {
        SIZES.lock().unwrap().push((p as usize, size));
    }
    fn take_size(p: *mut c_void) -> usize {
        let mut s = SIZES.lock().unwrap();
        let i = s
            .iter()
            .position(|(q, _)| *q == p as usize)
            .expect("known block");
        s.swap_remove(i).1
    }
    fn layout(size: usize) -> Option<Layout> {
        Layout::from_size_align(size.max(1), 16).ok()
    }
    extern "C" fn sys_malloc(_: *mut c_void, size: usize) -> *mut c_void {
        let Some(l) = layout(size) else {
            return std::ptr::null_mut();
        };
        // SAFETY: non-zero layout.
        let p: *mut c_void = unsafe { System.alloc(l).cast() };
        remember(p, l.size());
        p
    }
    extern "C" fn sys_calloc(_: *mut c_void, n: usize, e: usize) -> *mut c_void {
        let Some(l) = n.checked_mul(e).and_then(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: non-zero layout.
        let p: *mut c_void = unsafe { System.alloc_zeroed(l).cast() };
        remember(p, l.size());
        p
    }
    extern "C" fn sys_realloc(c: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
        if p.is_null() {
            return sys_malloc(c, size);
        }
        if layout(size).is_none() {
            return std::ptr::null_mut();
        }
        let old = take_size(p);
        // SAFETY: `p` was allocated here with `old` bytes; the new size is a valid layout.
        let q: *mut c_void = unsafe {
            System
                .realloc(p.cast(), layout(old).unwrap(), size.max(1))
                .cast()
        };
        if q.is_null() {
            remember(p, old);
        } else {
            remember(q, size.max(1));
        }
        q
    }
    extern "C" fn sys_free(_: *mut c_void, p: *mut c_void) {
        let size = take_size(p);
        // SAFETY: `p` was allocated here with `size` bytes.
        unsafe { System.dealloc(p.cast(), layout(size).unwrap()) }
    }

    fn underlying() -> *mut c_void {
        let u = Box::leak(Box::new(Underlying(PyMemAllocatorEx {
            ctx: std::ptr::null_mut(),
            malloc: Some(sys_malloc),
            calloc: Some(sys_calloc),
            realloc: Some(sys_realloc),
            free: Some(sys_free),
        })));
        (u as *mut Underlying).cast()
    }

    fn with_owner<R>(owner: u16, f: impl FnOnce() -> R) -> R {
        let _g = OwnerGuard {
            previous: OWNER.with(|o| o.replace(owner)),
        };
        f()
    }

    #[test]
    fn table_round_trip_and_untracked_frees() {
        // Counters are process-wide: measure deltas, on a private slot.
        let ctx = underlying();
        let slot = 1000u16;
        let before = SLOTS[usize::from(slot)].read();
        let untracked_before = UNTRACKED_FREES.load(Ordering::Relaxed);
        with_owner(slot, || {
            let p = hook_malloc(ctx, 100);
            // SAFETY: 100 writable bytes.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xab, 100) };
            let z = hook_calloc(ctx, 4, 8);
            // SAFETY: 32 readable bytes.
            assert!(
                unsafe { std::slice::from_raw_parts(z.cast::<u8>(), 32) }
                    .iter()
                    .all(|b| *b == 0)
            );
            let p2 = hook_realloc(ctx, p, 1000);
            // SAFETY: the first 100 bytes survive realloc.
            assert!(
                unsafe { std::slice::from_raw_parts(p2.cast::<u8>(), 100) }
                    .iter()
                    .all(|b| *b == 0xab)
            );
            let big = hook_malloc(ctx, 3 << 20);
            assert_eq!(
                SLOTS[usize::from(slot)].read().inuse_bytes - before.inuse_bytes,
                32 + 1000 + (3 << 20),
                "small blocks at their 16-byte-rounded size, large ones exact"
            );
            hook_free(ctx, big);
            hook_free(ctx, p2);
            hook_free(ctx, z);
        });
        let after = SLOTS[usize::from(slot)].read();
        assert_eq!(
            after.allocations - before.allocations,
            4,
            "malloc, calloc, realloc, big"
        );
        assert_eq!(
            after.frees - before.frees,
            4,
            "realloc's free and three frees"
        );
        assert_eq!(
            after.allocated_bytes - before.allocated_bytes,
            112 + 32 + 1000 + (3 << 20)
        );
        assert_eq!(after.inuse_bytes, before.inuse_bytes);
        assert_eq!(UNTRACKED_FREES.load(Ordering::Relaxed), untracked_before);

        // Blocks from the underlying allocator directly: freeing one is untracked, and a
        // realloc of one is an untracked free plus a tracked allocation.
        with_owner(slot, || {
            let foreign = sys_malloc(std::ptr::null_mut(), 64);
            let moved = hook_realloc(ctx, foreign, 128);
            assert_eq!(
                UNTRACKED_FREES.load(Ordering::Relaxed) - untracked_before,
                1
            );
            let entry = entry(moved as usize, false)
                .unwrap()
                .load(Ordering::Relaxed);
            assert_eq!(entry & OWNER_BITS, slot + 1, "tracked, owned by the slot");
            hook_free(ctx, moved);
            let other = sys_malloc(std::ptr::null_mut(), 48);
            hook_free(ctx, other);
        });
        assert_eq!(
            UNTRACKED_FREES.load(Ordering::Relaxed) - untracked_before,
            2
        );
        assert_eq!(
            SLOTS[usize::from(slot)].read().inuse_bytes,
            before.inuse_bytes
        );
    }

    #[test]
    fn frees_are_credited_to_the_allocating_owner() {
        let ctx = underlying();
        let (a, b) = (1001u16, 1002u16);
        let (a0, b0) = (SLOTS[usize::from(a)].read(), SLOTS[usize::from(b)].read());
        let p = with_owner(a, || hook_malloc(ctx, 4096));
        assert_eq!(
            SLOTS[usize::from(a)].read().inuse_bytes - a0.inuse_bytes,
            4096
        );
        with_owner(b, || hook_free(ctx, p));
        assert_eq!(SLOTS[usize::from(a)].read().inuse_bytes, a0.inuse_bytes);
        assert_eq!(
            SLOTS[usize::from(b)].read(),
            b0,
            "b allocated nothing, freed nothing"
        );
        assert_eq!(current_owner(), 0, "guards restore the owner");
    }

    #[test]
    fn failed_allocations_are_not_recorded() {
        let ctx = underlying();
        let slot = 1003u16;
        let before = SLOTS[usize::from(slot)].read();
        with_owner(slot, || {
            assert!(hook_malloc(ctx, usize::MAX - 4).is_null());
            assert!(hook_calloc(ctx, usize::MAX, 2).is_null());
            let p = hook_malloc(ctx, 8);
            assert!(hook_realloc(ctx, p, usize::MAX - 4).is_null());
            // The failed realloc left the block, and its entry, alone (8 bytes: a 32-byte
            // block).
            assert_eq!(
                SLOTS[usize::from(slot)].read().inuse_bytes - before.inuse_bytes,
                32
            );
            hook_free(ctx, p);
        });
        assert_eq!(
            SLOTS[usize::from(slot)].read().inuse_bytes,
            before.inuse_bytes
        );
    }

    #[test]
    fn sizes_at_the_small_large_boundary() {
        let ctx = underlying();
        let slot = 1004u16;
        let before = SLOTS[usize::from(slot)].read();
        with_owner(slot, || {
            let blocks: Vec<_> = [0usize, 1, 16, 17, 511, 512, 513, 600, 600, 4096]
                .iter()
                .map(|&n| hook_malloc(ctx, n))
                .collect();
            let after = SLOTS[usize::from(slot)].read();
            assert_eq!(
                after.allocated_bytes - before.allocated_bytes,
                32 + 32 + 32 + 32 + 512 + 512 + 513 + 600 + 600 + 4096
            );
            for b in blocks {
                hook_free(ctx, b);
            }
        });
        let after = SLOTS[usize::from(slot)].read();
        assert_eq!(after.inuse_bytes, before.inuse_bytes);
        assert_eq!(after.frees - before.frees, 10);
    }

    #[test]
    fn tiny_requests_get_blocks_32_bytes_apart() {
        let ctx = underlying();
        let blocks: Vec<_> = (0..64).map(|i| hook_malloc(ctx, i % 17)).collect();
        // The underlying allocator saw at least MIN_REQUEST bytes for each.
        {
            let sizes = SIZES.lock().unwrap();
            for b in &blocks {
                let (_, size) = sizes.iter().find(|(p, _)| *p == *b as usize).unwrap();
                assert!(*size >= MIN_REQUEST, "{size}");
            }
        }
        let mut windows: Vec<usize> = blocks.iter().map(|b| *b as usize >> SMALL_SHIFT).collect();
        windows.sort_unstable();
        windows.dedup();
        assert_eq!(windows.len(), blocks.len(), "one table entry per block");
        for b in blocks {
            hook_free(ctx, b);
        }
    }

    #[test]
    fn addresses_outside_the_table_are_untracked() {
        assert!(entry(1 << ADDR_BITS, true).is_none());
        assert!(entry(usize::MAX & !15, false).is_none());
        assert!(entry(0x7fff_ffff_fff0, true).is_some());
    }
}
