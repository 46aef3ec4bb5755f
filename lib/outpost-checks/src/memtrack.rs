//! Memory tracking of the embedded interpreter (`memtrack_enabled`, default true).
//!
//! # Design
//!
//! Python's `MEM` and `OBJ` allocator domains are wrapped with `PyMem_SetAllocator` before the
//! interpreter is initialised; the wrappers call the allocator that was in place (pymalloc,
//! or whatever `PYTHONMALLOC` chose), so Python's own performance characteristics stay.
//!
//! * **Size header.** Each block gets a 16-byte header in front of it: the requested size
//!   (48 bits) with the owner slot (16 bits), and a tag word `MAGIC ^ address ^ first word`.
//!   A free reads the size and owner back from the header, so no global pointer map (and no
//!   lock) is needed. 16 bytes keep the 16-byte alignment Python guarantees.
//! * **Untracked frees.** A pointer whose tag does not match was not allocated through the
//!   wrapper (e.g. allocated before it was installed, or a foreign pointer handed to
//!   `PyMem_Free`); it is passed to the underlying allocator unchanged and counted in
//!   `UntrackedFrees`. A `realloc` of such a block is an untracked free plus a tracked
//!   allocation: the data is moved up behind a fresh header. The tag of a freed block is
//!   cleared first, so a stale header is never mistaken for a live one.
//! * **Attribution.** Each loaded instance gets an owner slot; the slot of the instance
//!   running on a thread is in a thread-local while it runs (and while it is instantiated).
//!   Allocations are charged to it; a free is credited to the slot recorded in the block's
//!   header, i.e. to the check that allocated it, whoever frees it. A `realloc` is a free
//!   (credited to the old owner) plus an allocation (charged to the current one), so
//!   `AllocatedBytes - FreedBytes == InuseBytes` always holds. Allocations outside any check
//!   (imports, the runtime itself) go to slot 0, "unattributed".
//! * **No locked atomics.** The `MEM` and `OBJ` domains may only be used with the GIL held,
//!   so their calls are serialised: counters are updated with a relaxed load and a relaxed
//!   store (plain moves on x86-64), never a locked read-modify-write. Readers (snapshots)
//!   may run without the GIL and see a slightly stale, never torn, value of each counter.
//! * **`RAW` is not wrapped.** The raw domain is called without the GIL (thread states,
//!   the GIL machinery itself, C extensions releasing the GIL), so counting it would need
//!   real atomic read-modify-writes and a thread-safe attribution; it also holds only the
//!   interpreter's internal buffers, not the objects checks create (large objects go through
//!   `OBJ`/`MEM` first, where they are counted). Keeping it out keeps the hot path cheap.
//! * **Slots** are a fixed table of 4096 counters (about 200 KiB, untouched pages cost no
//!   memory). A slot is reused only once its previous owner is gone and every block it
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
const MAX_SLOTS: usize = 4096;
/// Size of the header in front of every tracked block.
const HEADER: usize = 16;
/// Requested sizes are kept in 48 bits.
const SIZE_BITS: u32 = 48;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;
const MAGIC: u64 = 0x6f75_7470_6f73_7421;

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

    fn reset(&self) {
        self.allocations.store(0, Ordering::Relaxed);
        self.frees.store(0, Ordering::Relaxed);
        self.allocated_bytes.store(0, Ordering::Relaxed);
        self.freed_bytes.store(0, Ordering::Relaxed);
    }
}

static TOTAL: Counters = Counters::new();
static UNTRACKED_FREES: AtomicU64 = AtomicU64::new(0);
static SLOTS: [Counters; MAX_SLOTS] = [const { Counters::new() }; MAX_SLOTS];
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static OWNER: Cell<u16> = const { Cell::new(0) };
}

/// Memory counters, as exported in the `rtloader` expvar map.
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
        total: TOTAL.read(),
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
// The hooks.

use pyo3::ffi::{PyMemAllocatorDomain, PyMemAllocatorEx};

/// The allocator that was in place before ours, passed to the hooks as their context.
#[repr(transparent)]
struct Underlying(PyMemAllocatorEx);

#[inline(always)]
fn tag_for(user: usize, word: u64) -> u64 {
    MAGIC ^ (user as u64).rotate_left(29) ^ word
}

/// The counters of `owner`; an out-of-range owner (impossible with a valid header) counts as
/// unattributed rather than panicking inside an allocator hook.
#[inline(always)]
fn slot_counters(owner: u16) -> &'static Counters {
    SLOTS.get(usize::from(owner)).unwrap_or(&SLOTS[0])
}

#[inline(always)]
fn current_owner() -> u16 {
    OWNER.with(Cell::get)
}

/// Writes the header in front of `raw` and returns the user pointer; charges the owner.
///
/// # Safety
/// `raw` must point to at least `HEADER + size` writable bytes, aligned to 16.
#[inline(always)]
unsafe fn finish_alloc(raw: *mut c_void, size: usize) -> *mut c_void {
    let owner = current_owner();
    let word = (size as u64 & SIZE_MASK) | (u64::from(owner) << SIZE_BITS);
    // SAFETY: the caller guarantees HEADER + size bytes at `raw`.
    let user = unsafe { raw.cast::<u8>().add(HEADER) };
    let header = raw.cast::<u64>();
    // SAFETY: `raw` is 16-aligned and at least 16 bytes long.
    unsafe {
        header.write(word);
        header.add(1).write(tag_for(user as usize, word));
    }
    TOTAL.on_alloc(size as u64);
    slot_counters(owner).on_alloc(size as u64);
    user.cast()
}

/// Reads the header of `user` if it is a block of ours: `(size, owner)`.
///
/// # Safety
/// `user` must be non-null and either a block returned by [`finish_alloc`] or a pointer
/// from the underlying allocator (whose 16 preceding bytes are allocator metadata, hence
/// readable).
#[inline(always)]
unsafe fn tracked(user: *mut c_void) -> Option<(usize, u16)> {
    // SAFETY: see the function contract.
    let (word, tag) = unsafe {
        let header = user.cast::<u8>().sub(HEADER).cast::<u64>();
        (header.read(), header.add(1).read())
    };
    (tag == tag_for(user as usize, word))
        .then_some(((word & SIZE_MASK) as usize, (word >> SIZE_BITS) as u16))
}

/// Credits a tracked block's free to its owner and clears its tag.
///
/// # Safety
/// `user` must be a tracked block (see [`tracked`]).
#[inline(always)]
unsafe fn forget(user: *mut c_void, size: usize, owner: u16) -> *mut c_void {
    // SAFETY: tracked blocks have a writable header.
    let raw = unsafe { user.cast::<u8>().sub(HEADER) };
    // SAFETY: as above.
    unsafe { raw.cast::<u64>().add(1).write(0) };
    TOTAL.on_free(size as u64);
    slot_counters(owner).on_free(size as u64);
    raw.cast()
}

extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let (Some(malloc), Some(total)) = (under.malloc, size.checked_add(HEADER)) else {
        return std::ptr::null_mut();
    };
    let raw = malloc(under.ctx, total);
    if raw.is_null() {
        return raw;
    }
    // SAFETY: the underlying allocator returned `total` bytes, 16-aligned.
    unsafe { finish_alloc(raw, size) }
}

extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(size) = nelem.checked_mul(elsize) else {
        return std::ptr::null_mut();
    };
    let (Some(calloc), Some(total)) = (under.calloc, size.checked_add(HEADER)) else {
        return std::ptr::null_mut();
    };
    let raw = calloc(under.ctx, 1, total);
    if raw.is_null() {
        return raw;
    }
    // SAFETY: as in hook_malloc; the header overwrites zeroed bytes, the user part stays zero.
    unsafe { finish_alloc(raw, size) }
}

extern "C" fn hook_realloc(ctx: *mut c_void, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    if ptr.is_null() {
        return hook_malloc(ctx, new_size);
    }
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let (Some(realloc), Some(total)) = (under.realloc, new_size.checked_add(HEADER)) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `ptr` came from this domain: ours or the underlying allocator's.
    match unsafe { tracked(ptr) } {
        Some((old_size, owner)) => {
            // SAFETY: tracked block: its real start is HEADER bytes before.
            let raw = unsafe { ptr.cast::<u8>().sub(HEADER) }.cast::<c_void>();
            let new_raw = realloc(under.ctx, raw, total);
            if new_raw.is_null() {
                // The old block is untouched and still ours.
                return new_raw;
            }
            TOTAL.on_free(old_size as u64);
            slot_counters(owner).on_free(old_size as u64);
            // SAFETY: `new_raw` holds `total` bytes; the data already sits after the header.
            unsafe { finish_alloc(new_raw, new_size) }
        }
        None => {
            let new_raw = realloc(under.ctx, ptr, total);
            if new_raw.is_null() {
                return new_raw;
            }
            Counters::bump(&UNTRACKED_FREES, 1);
            // SAFETY: `new_raw` holds new_size + HEADER bytes; the old data (at most new_size
            // of it matters) is moved up behind the header; memmove handles the overlap.
            unsafe {
                std::ptr::copy(
                    new_raw.cast::<u8>(),
                    new_raw.cast::<u8>().add(HEADER),
                    new_size,
                );
                finish_alloc(new_raw, new_size)
            }
        }
    }
}

extern "C" fn hook_free(ctx: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(free) = under.free else { return };
    // SAFETY: `ptr` came from this domain: ours or the underlying allocator's.
    match unsafe { tracked(ptr) } {
        Some((size, owner)) => {
            // SAFETY: tracked block.
            let raw = unsafe { forget(ptr, size, owner) };
            free(under.ctx, raw);
        }
        None => {
            Counters::bump(&UNTRACKED_FREES, 1);
            free(under.ctx, ptr);
        }
    }
}

/// Wraps the `MEM` and `OBJ` domains. Call once, before the interpreter is initialised
/// (after pre-initialisation, so that a `PYTHONMALLOC` choice is what gets wrapped).
///
/// # Safety
/// No other thread may use the Python allocators during the call.
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
    //! The hooks are exercised here over libc's allocator (through Rust's `System`), so the
    //! header logic is tested without an interpreter; the runtime tests check attribution.
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};

    extern "C" fn sys_malloc(_: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: non-zero layout (size + 16 from the hook, or >= 1 here).
        unsafe {
            System
                .alloc(Layout::from_size_align(size.max(1), 16).unwrap())
                .cast()
        }
    }
    extern "C" fn sys_calloc(_: *mut c_void, n: usize, e: usize) -> *mut c_void {
        // SAFETY: as above.
        unsafe {
            System
                .alloc_zeroed(Layout::from_size_align((n * e).max(1), 16).unwrap())
                .cast()
        }
    }
    // The test allocator remembers sizes itself so that realloc/free get a correct layout.
    extern "C" fn sys_realloc(_: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: `p` was allocated by sys_malloc with the size stored in SIZES.
        unsafe {
            let old = take_size(p);
            let new = System.realloc(
                p.cast(),
                Layout::from_size_align(old, 16).unwrap(),
                size.max(1),
            );
            remember(new.cast(), size.max(1));
            new.cast()
        }
    }
    extern "C" fn sys_free(_: *mut c_void, p: *mut c_void) {
        // SAFETY: `p` was allocated by sys_malloc with the size stored in SIZES.
        unsafe { System.dealloc(p.cast(), Layout::from_size_align(take_size(p), 16).unwrap()) }
    }
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
    extern "C" fn tracked_malloc(c: *mut c_void, size: usize) -> *mut c_void {
        let p = sys_malloc(c, size);
        remember(p, size.max(1));
        p
    }
    extern "C" fn tracked_calloc(c: *mut c_void, n: usize, e: usize) -> *mut c_void {
        let p = sys_calloc(c, n, e);
        remember(p, (n * e).max(1));
        p
    }

    fn underlying() -> *mut c_void {
        let u = Box::leak(Box::new(Underlying(PyMemAllocatorEx {
            ctx: std::ptr::null_mut(),
            malloc: Some(tracked_malloc),
            calloc: Some(tracked_calloc),
            realloc: Some(sys_realloc),
            free: Some(sys_free),
        })));
        (u as *mut Underlying).cast()
    }

    #[test]
    fn header_round_trip_and_untracked_frees() {
        // These counters are process-wide: measure deltas, on a private slot.
        let ctx = underlying();
        let slot = 4000u16;
        OWNER.with(|o| o.set(slot));
        let before = SLOTS[usize::from(slot)].read();
        let untracked_before = UNTRACKED_FREES.load(Ordering::Relaxed);

        let p = hook_malloc(ctx, 100);
        assert_eq!(p as usize % 16, 0, "alignment kept");
        // SAFETY: 100 writable bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xab, 100) };
        // SAFETY: p is ours.
        assert_eq!(unsafe { tracked(p) }, Some((100, slot)));
        let z = hook_calloc(ctx, 4, 8);
        // SAFETY: 32 readable bytes.
        assert!(
            unsafe { std::slice::from_raw_parts(z.cast::<u8>(), 32) }
                .iter()
                .all(|b| *b == 0)
        );
        let p2 = hook_realloc(ctx, p, 1000);
        // SAFETY: first 100 bytes kept by realloc.
        assert!(
            unsafe { std::slice::from_raw_parts(p2.cast::<u8>(), 100) }
                .iter()
                .all(|b| *b == 0xab)
        );
        hook_free(ctx, p2);
        hook_free(ctx, z);
        let after = SLOTS[usize::from(slot)].read();
        assert_eq!(
            after.allocations - before.allocations,
            3,
            "malloc, calloc, realloc"
        );
        assert_eq!(
            after.frees - before.frees,
            3,
            "realloc's free and two frees"
        );
        assert_eq!(
            after.allocated_bytes - before.allocated_bytes,
            100 + 32 + 1000
        );
        assert_eq!(after.inuse_bytes, before.inuse_bytes);
        assert_eq!(UNTRACKED_FREES.load(Ordering::Relaxed), untracked_before);

        // A block from the underlying allocator directly: freeing it is untracked, and a
        // realloc of one becomes tracked with its data intact.
        let foreign = tracked_malloc(std::ptr::null_mut(), 64);
        // SAFETY: 64 writable bytes.
        unsafe { std::ptr::write_bytes(foreign.cast::<u8>(), 0x5a, 64) };
        let moved = hook_realloc(ctx, foreign, 64);
        // SAFETY: 64 readable bytes.
        assert!(
            unsafe { std::slice::from_raw_parts(moved.cast::<u8>(), 64) }
                .iter()
                .all(|b| *b == 0x5a)
        );
        // SAFETY: moved is ours now.
        assert_eq!(unsafe { tracked(moved) }, Some((64, slot)));
        hook_free(ctx, moved);
        let other = tracked_malloc(std::ptr::null_mut(), 48);
        hook_free(ctx, other);
        assert_eq!(
            UNTRACKED_FREES.load(Ordering::Relaxed) - untracked_before,
            2
        );
        OWNER.with(|o| o.set(0));
    }

    #[test]
    fn frees_are_credited_to_the_allocating_owner() {
        let ctx = underlying();
        let (a, b) = (4001u16, 4002u16);
        let (a0, b0) = (SLOTS[usize::from(a)].read(), SLOTS[usize::from(b)].read());
        let p = {
            let _g = OwnerGuard {
                previous: OWNER.with(|o| o.replace(a)),
            };
            hook_malloc(ctx, 4096)
        };
        assert_eq!(
            SLOTS[usize::from(a)].read().inuse_bytes - a0.inuse_bytes,
            4096
        );
        {
            let _g = OwnerGuard {
                previous: OWNER.with(|o| o.replace(b)),
            };
            hook_free(ctx, p);
        }
        assert_eq!(SLOTS[usize::from(a)].read().inuse_bytes, a0.inuse_bytes);
        assert_eq!(
            SLOTS[usize::from(b)].read(),
            b0,
            "b allocated nothing, freed nothing"
        );
        assert_eq!(current_owner(), 0, "guards restore the owner");
    }

    #[test]
    fn impossible_sizes_fail_cleanly() {
        let ctx = underlying();
        assert!(hook_malloc(ctx, usize::MAX - 4).is_null());
        assert!(hook_calloc(ctx, usize::MAX, 2).is_null());
    }
}
