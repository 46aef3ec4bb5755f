//! Block sizes of the `MEM` and `OBJ` domains from their addresses, and the bytes in use in
//! pymalloc's pools: what makes the global bytes freed and in use exact without a
//! per-block record.
//!
//! Python's object allocator (pymalloc) serves requests of up to 512 bytes from pools of
//! blocks of one size class, carved out of arenas it asks the *arena allocator* for; larger
//! requests (and any it cannot serve) go to the raw allocator, `malloc`. Before the
//! interpreter starts, the arena allocator is replaced by one that hands out pymalloc's
//! arenas from a region of address space reserved here (`PyObject_SetArenaAllocator`, a
//! public API; requests of other sizes, such as the frames' data stack, go to the previous
//! allocator), so that every pymalloc block of the process lies in that region. Then:
//!
//! * a block in the region is a pymalloc block, whose pool starts at the address rounded
//!   down to the pool size and whose pool header names the size class (`szidx`): the block
//!   holds `(szidx + 1) * 16` bytes;
//! * a block elsewhere is a `malloc` block, sized by `malloc_usable_size`;
//! * the bytes in use in pymalloc's blocks are the sum over the pools of the blocks each
//!   counts (`ref.count`) times its size class, and the blocks in use the sum of those
//!   counts ([`live`]).
//!
//! The layout read (pool header, size classes, pool size) is CPython's, the same from 3.10
//! to 3.13 on 64-bit builds; it is verified when tracking is confirmed ([`verify`]), by
//! allocating one block of every small size and reading it back, and if it does not hold (a
//! debug allocator, `PYTHONMALLOC=malloc`, another layout) the tracker does without block
//! sizes.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use pyo3::ffi::{PyMemAllocatorEx, PyObjectArenaAllocator};

unsafe extern "C" {
    /// glibc and musl: the usable size of a block `malloc` returned.
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

/// Reservation sizes tried in turn (virtual address space only).
const REGION_SIZES: [usize; 3] = [64 << 30, 8 << 30, 1 << 30];
/// Environment variable that sets the region's size in MiB instead (a test of what happens
/// when it is full).
pub const REGION_MIB_ENV: &str = "OUTPOST_MEMTRACK_ARENA_MIB";
/// Size of CPython's `struct pool_header` (64-bit).
const POOL_HEADER_SIZE: usize = 48;
/// pymalloc's arenas hold this many pools (256 KiB / 4 KiB and 1 MiB / 16 KiB alike).
const POOLS_PER_ARENA: usize = 64;
/// Offset of `szidx` in CPython's `struct pool_header` (64-bit).
const SZIDX_OFFSET: usize = 36;
/// pymalloc's `ALIGNMENT_SHIFT` on 64-bit platforms (16-byte size classes).
const ALIGNMENT_SHIFT: u32 = 4;
/// pymalloc's largest small request.
pub(super) const SMALL_REQUEST_THRESHOLD: usize = 512;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// See [`refusals`].
static REFUSALS: AtomicU64 = AtomicU64::new(0);

/// Times pymalloc was left without a new arena: the region was full, or pymalloc gave an
/// arena back unused (its radix tree of arenas could not record it). Each time, pymalloc
/// served the small request in flight from `malloc`, where the hooks, which count a small
/// request before forwarding it (see `hooks`), counted a pool block: the totals may be
/// off by those blocks, and are no longer reported exact.
///
/// One case goes unseen: pymalloc gives up before asking for an arena when `malloc` fails
/// to grow its table of arenas (at 16, 32, 64... arenas). Only a process already out of
/// memory gets there.
pub(super) fn refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Arenas {
    /// Offset of the first never-used arena.
    bump: usize,
    /// Freed arenas (offsets), handed back to the kernel, reused first.
    free: Vec<usize>,
}

static ARENAS: Mutex<Arenas> = Mutex::new(Arenas {
    bump: 0,
    free: Vec::new(),
});

/// Whether `ptr` lies in the arena region (one subtraction and one compare).
#[inline(always)]
pub(super) fn contains(ptr: *mut c_void) -> bool {
    (ptr as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < LEN.load(Ordering::Relaxed)
}

/// The size of the pymalloc block at `ptr`: its pool's size class.
///
/// # Safety
/// `ptr` is in the region ([`contains`]).
#[inline(always)]
pub(super) unsafe fn pool_block_size(ptr: *mut c_void) -> usize {
    let pool = ptr as usize & !(POOL_SIZE - 1);
    // SAFETY: in the region, which is mapped whole; a pymalloc block's pool starts with a
    // header (if the layout is as expected, which `verify` checks; otherwise only the size
    // read is wrong).
    let szidx = unsafe { (pool as *const u8).add(SZIDX_OFFSET).cast::<u32>().read() };
    ((szidx as usize) + 1) << ALIGNMENT_SHIFT
}

/// Whether pymalloc serves a request of `size` bytes from its arenas (1 to 512 bytes): it
/// always does, unless it cannot get an arena ([`refusals`]).
#[inline(always)]
pub(super) fn is_small(size: usize) -> bool {
    size.wrapping_sub(1) < SMALL_REQUEST_THRESHOLD
}

/// The size class pymalloc serves a request of `size` bytes (1 to 512) from.
#[inline(always)]
pub(super) fn size_class(size: usize) -> usize {
    (size + (1 << ALIGNMENT_SHIFT) - 1) & !((1 << ALIGNMENT_SHIFT) - 1)
}

/// The size of the `malloc` block at `ptr`.
///
/// # Safety
/// `ptr` is a live block that `malloc` returned.
#[inline(always)]
pub(super) unsafe fn malloc_size(ptr: *mut c_void) -> usize {
    // SAFETY: per the contract.
    unsafe { malloc_usable_size(ptr) }
}

/// The pymalloc blocks in use and their bytes: the blocks each pool counts, and those times
/// the pool's size class, over every arena handed out. Read without the GIL: while Python
/// runs, a count may be read before or after an allocation in flight.
pub(super) fn live() -> (u64, u64) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return (0, 0);
    }
    let end = ARENAS.lock().unwrap_or_else(PoisonError::into_inner).bump;
    let (mut blocks, mut bytes) = (0u64, 0u64);
    for offset in (0..end).step_by(POOL_SIZE) {
        let pool = (base + offset) as *mut u32;
        // SAFETY: a pool-aligned address of an arena handed out, mapped whole (pages never
        // written read as zeros: no pool, count 0). The count (`ref.count`, the first field)
        // and the size class are 32-bit fields that pymalloc writes with the GIL held: read
        // atomically, a value is either side of a concurrent update.
        let (count, szidx) = unsafe {
            (
                std::sync::atomic::AtomicU32::from_ptr(pool).load(Ordering::Relaxed),
                std::sync::atomic::AtomicU32::from_ptr(pool.byte_add(SZIDX_OFFSET))
                    .load(Ordering::Relaxed),
            )
        };
        if count != 0 {
            blocks += u64::from(count);
            bytes += u64::from(count) * ((u64::from(szidx) + 1) << ALIGNMENT_SHIFT);
        }
    }
    (blocks, bytes)
}

/// The arena allocator in place before ours: serves every request of another size.
struct Previous(PyObjectArenaAllocator);

// SAFETY: CPython's default arena allocator (mmap/munmap) has a null context and may be
// called from any thread holding the GIL.
unsafe impl Send for Previous {}
// SAFETY: as above; never mutated once set.
unsafe impl Sync for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// The pool size of CPython's 64-bit builds: 16 KiB since 3.10 (with the radix tree of
/// arenas, on by default), 4 KiB before.
const POOL_SIZE: usize = if cfg!(Py_3_10) { 16 << 10 } else { 4 << 10 };
/// The arena size pymalloc asks for (`POOLS_PER_ARENA` pools).
const ARENA_SIZE: usize = POOL_SIZE * POOLS_PER_ARENA;

extern "C" fn arena_alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size != ARENA_SIZE {
        // Not one of pymalloc's arenas (CPython also takes the frames' data stack from this
        // allocator): from the previous allocator, outside the region.
        return match PREVIOUS.get() {
            Some(Previous(p)) => p
                .alloc
                .map_or(std::ptr::null_mut(), |alloc| alloc(p.ctx, size)),
            None => std::ptr::null_mut(),
        };
    }
    let base = BASE.load(Ordering::Relaxed);
    let mut a = ARENAS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(offset) = a.free.pop() {
        return (base + offset) as *mut c_void;
    }
    let offset = a.bump;
    let Some(end) = offset.checked_add(size) else {
        return std::ptr::null_mut();
    };
    if end > LEN.load(Ordering::Relaxed) {
        // Region full: pymalloc serves the request in flight from `malloc`.
        REFUSALS.fetch_add(1, Ordering::Relaxed);
        return std::ptr::null_mut();
    }
    a.bump = end;
    (base + offset) as *mut c_void
}

extern "C" fn arena_free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if !contains(ptr) {
        if let Some(p) = PREVIOUS.get()
            && let Some(free) = p.0.free
        {
            free(p.0.ctx, ptr, size);
        }
        return;
    }
    // pymalloc carves pools from an arena's start (aligned here) as it needs them, so an
    // arena it used has its first pool's header written. One given back with none was
    // refused after all (see `refusals`).
    // SAFETY: an arena of the region, mapped whole.
    let header = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), POOL_HEADER_SIZE) };
    if header.iter().all(|&b| b == 0) {
        REFUSALS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: an arena of the region that pymalloc no longer uses: its pages can go.
    let _ = unsafe { rustix::mm::madvise(ptr, size, rustix::mm::Advice::LinuxDontNeed) };
    let offset = ptr as usize - BASE.load(Ordering::Relaxed);
    ARENAS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .free
        .push(offset);
}

/// Reserves the region and makes it pymalloc's source of arenas. False when no region
/// could be mapped (the arena allocator is left alone).
///
/// # Safety
/// Before the interpreter allocates anything through pymalloc (after `Py_PreInitialize`,
/// before `Py_InitializeFromConfig`), with no other thread using the Python API.
pub(super) unsafe fn take_arenas() -> bool {
    if LEN.load(Ordering::Acquire) != 0 {
        return true;
    }
    let chosen = std::env::var(REGION_MIB_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .and_then(|mib| mib.checked_mul(1 << 20));
    let sizes = match chosen {
        Some(len) => vec![len],
        None => REGION_SIZES.to_vec(),
    };
    for len in sizes {
        // Room to align the region to 1 MiB (arenas then start on a pool boundary).
        let Some(map_len) = len.checked_add(1 << 20) else {
            continue;
        };
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                map_len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::NORESERVE,
            )
        };
        let Ok(p) = mapped else {
            continue;
        };
        let base = (p as usize + (1 << 20) - 1) & !((1 << 20) - 1);
        BASE.store(base, Ordering::Relaxed);
        LEN.store(len, Ordering::Release);
        let mut previous = PyObjectArenaAllocator {
            ctx: std::ptr::null_mut(),
            alloc: None,
            free: None,
        };
        // SAFETY: valid out-pointer; no other thread uses Python (contract).
        unsafe { pyo3::ffi::PyObject_GetArenaAllocator(&mut previous) };
        let _ = PREVIOUS.set(Previous(previous));
        let mut arenas = PyObjectArenaAllocator {
            ctx: std::ptr::null_mut(),
            alloc: Some(arena_alloc),
            free: Some(arena_free),
        };
        // SAFETY: per the contract, no arena exists yet and no other thread uses Python.
        unsafe { pyo3::ffi::PyObject_SetArenaAllocator(&mut arenas) };
        return true;
    }
    false
}

/// Checks, with the domain's underlying allocator `obj`, that blocks of every small size lie
/// in the region with the size class their pool header names and are counted by their
/// pools ([`live`]), and that a large block is a `malloc` block. False when sizes
/// cannot be read this way.
///
/// # Safety
/// After [`take_arenas`], with no other thread using the allocator (GIL held, or before
/// the interpreter starts).
pub(super) unsafe fn verify(obj: &PyMemAllocatorEx) -> bool {
    let (Some(malloc), Some(free)) = (obj.malloc, obj.free) else {
        return false;
    };
    if LEN.load(Ordering::Acquire) == 0 {
        return false;
    }
    let before = live();
    let blocks: Vec<(*mut c_void, usize)> = (1..=SMALL_REQUEST_THRESHOLD)
        .map(|size| (malloc(obj.ctx, size), size))
        .chain([(malloc(obj.ctx, 4000), 4000)])
        .collect();
    // The pools count the small blocks at their size classes.
    let small: usize = (1..=SMALL_REQUEST_THRESHOLD).map(size_class).sum();
    let after = live();
    let counted = after.1.wrapping_sub(before.1) == small as u64
        && after.0.wrapping_sub(before.0) == SMALL_REQUEST_THRESHOLD as u64;
    let pool = POOL_SIZE;
    let ok = counted
        && blocks.iter().all(|&(p, size)| {
            if p.is_null() {
                return false;
            }
            if size > SMALL_REQUEST_THRESHOLD {
                // SAFETY: not in the region, so (if the layout holds) a `malloc` block.
                return !contains(p) && unsafe { malloc_usable_size(p) } >= size;
            }
            if !contains(p) {
                return false;
            }
            // SAFETY: `p` is in the region: a block of one of our arenas, whose pool header
            // (if the layout holds) starts at the pool boundary below it; the arena is
            // mapped and readable either way.
            let szidx = unsafe {
                ((p as usize & !(pool - 1)) as *const u8)
                    .add(SZIDX_OFFSET)
                    .cast::<u32>()
                    .read()
            };
            szidx as usize == (size - 1) >> ALIGNMENT_SHIFT
        });
    for (p, _) in blocks {
        if !p.is_null() {
            free(obj.ctx, p);
        }
    }
    ok
}
