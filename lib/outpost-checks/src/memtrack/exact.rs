//! The hooks installed when block sizes are known ([`super::arena`]): the free of a block
//! goes to pymalloc with no hook at all.
//!
//! The `MEM` and `OBJ` domains keep pymalloc's own context and `free`; only `malloc`,
//! `calloc` and `realloc` are wrapped, and they pass the context through. What a free must
//! be seen for is a block outside pymalloc's arenas, and pymalloc hands each of those to the
//! `RAW` domain, which is wrapped too ([`raw_free`]):
//!
//! * a request of 1 to 512 bytes is pymalloc's: counted in its size class, then a tail call
//!   (its free is counted by its pool, see [`super::local::Counters`]);
//! * a larger request goes to pymalloc, which takes it from the `RAW` domain: this thread's
//!   [`RawMode`] tells the `RAW` hook, for that one call, to allocate the block with a
//!   16-byte header that marks it as a tracked block ([`TAG`]) and to count it. A free or
//!   reallocation of a marked block in the `RAW` domain, whoever makes it, counts it;
//! * a sampled block comes from the sampled region, also through pymalloc and the `RAW`
//!   domain (a small one by asking pymalloc for 513 bytes, which it cannot serve), so that
//!   pymalloc counts it among its raw blocks as it will when it frees it: what
//!   `sys.getallocatedblocks()` reports stays right.
//!
//! Every other `RAW` call (the interpreter's own buffers, from any thread) is forwarded
//! after one compare, counted as before: not at all.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::hooks::{Calloc, Free, Malloc, Realloc, Underlying, underlying};
use super::local::RawMode;
use super::{arena, local, sampled};

/// The last eight bytes of a tracked `RAW` block's header. Where a `malloc` block has its
/// chunk's size (glibc: below 2^48, with three flag bits), so no untracked block reads as
/// one.
const TAG: u64 = 0xF7AC_4ED0_0B7E_C7ED;
/// Bytes in front of a tracked `RAW` block (keeps `malloc`'s 16-byte alignment).
const TAG_HEADER: usize = 16;

/// pymalloc's functions (the `MEM` and `OBJ` domains' allocator: the same for both, checked
/// when the hooks are installed), as addresses.
static PY_MALLOC: AtomicUsize = AtomicUsize::new(0);
static PY_CALLOC: AtomicUsize = AtomicUsize::new(0);
static PY_REALLOC: AtomicUsize = AtomicUsize::new(0);
static PY_FREE: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
fn py_malloc() -> Malloc {
    // SAFETY: set from a function pointer before any hook is installed.
    unsafe { std::mem::transmute::<usize, Malloc>(PY_MALLOC.load(Ordering::Relaxed)) }
}
#[inline(always)]
fn py_calloc() -> Calloc {
    // SAFETY: as in `py_malloc`.
    unsafe { std::mem::transmute::<usize, Calloc>(PY_CALLOC.load(Ordering::Relaxed)) }
}
#[inline(always)]
fn py_realloc() -> Realloc {
    // SAFETY: as in `py_malloc`.
    unsafe { std::mem::transmute::<usize, Realloc>(PY_REALLOC.load(Ordering::Relaxed)) }
}
#[inline(always)]
fn py_free() -> Free {
    // SAFETY: as in `py_malloc`.
    unsafe { std::mem::transmute::<usize, Free>(PY_FREE.load(Ordering::Relaxed)) }
}

/// Records pymalloc's functions, `under` being the `OBJ` domain's allocator.
pub(super) fn set_pymalloc(under: &Underlying) {
    PY_MALLOC.store(under.malloc as usize, Ordering::Relaxed);
    PY_CALLOC.store(under.calloc as usize, Ordering::Relaxed);
    PY_REALLOC.store(under.realloc as usize, Ordering::Relaxed);
    PY_FREE.store(under.free as usize, Ordering::Relaxed);
}

/// The `malloc` of the `MEM` and `OBJ` domains.
pub(super) extern "C" fn malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    if !arena::is_small(size) {
        return malloc_raw(ctx, size, false);
    }
    // Counted before the call, so that the call is a tail call; the draw of a sample is out
    // of line, so that nothing needs a frame.
    if !local::with(|l| l.count_small_unsampled(size)) {
        return malloc_small_drawn(ctx, size, false);
    }
    py_malloc()(ctx, size)
}

/// The `calloc` of the `MEM` and `OBJ` domains.
pub(super) extern "C" fn calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let Some(size) = nelem.checked_mul(elsize) else {
        // An overflowing product is pymalloc's to refuse.
        return py_calloc()(ctx, nelem, elsize);
    };
    if !arena::is_small(size) {
        return malloc_raw(ctx, size, true);
    }
    if !local::with(|l| l.count_small_unsampled(size)) {
        return malloc_small_drawn(ctx, size, true);
    }
    py_calloc()(ctx, nelem, elsize)
}

/// A small request whose size outlasts the sampling countdown: sampled, or counted and
/// forwarded.
#[inline(never)]
extern "C" fn malloc_small_drawn(ctx: *mut c_void, size: usize, zeroed: bool) -> *mut c_void {
    if local::with(|l| l.sample_small(size)) {
        return through_raw(ctx, size, RawMode::Sample(size), zeroed);
    }
    if zeroed {
        py_calloc()(ctx, 1, size)
    } else {
        py_malloc()(ctx, size)
    }
}

/// A request of more than 512 bytes (or of 0): sampled or not, a block the `RAW` hook
/// allocates and counts.
#[inline(never)]
extern "C" fn malloc_raw(ctx: *mut c_void, size: usize, zeroed: bool) -> *mut c_void {
    let mode = if local::with(|l| l.sample(size)) {
        RawMode::Sample(size)
    } else {
        RawMode::Count
    };
    through_raw(ctx, size, mode, zeroed)
}

/// Asks pymalloc for a block of `size` bytes (zeroed if `zeroed`) that it takes from the
/// `RAW` domain, whose hook serves it as `mode` says: for a request it cannot serve itself,
/// pymalloc makes that one `RAW` call and no other.
fn through_raw(ctx: *mut c_void, size: usize, mode: RawMode, zeroed: bool) -> *mut c_void {
    // A small sampled block is asked for as 513 bytes: pymalloc then goes to `RAW`, whose
    // hook gives the block of `size` bytes that `mode` names.
    let asked = if arena::is_small(size) {
        arena::SMALL_REQUEST_THRESHOLD + 1
    } else {
        size
    };
    local::with(|l| l.set_raw_mode(mode));
    let p = if zeroed {
        py_calloc()(ctx, 1, asked)
    } else {
        py_malloc()(ctx, asked)
    };
    local::with(|l| l.set_raw_mode(RawMode::Forward));
    p
}

/// The `realloc` of the `MEM` and `OBJ` domains: the reallocation of a block counts as its
/// free and the allocation of the new one.
pub(super) extern "C" fn realloc(ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc(ctx, size);
    }
    let in_arena = arena::contains(ptr);
    let sample = local::with(|l| l.sample(size));
    // A sampled block, old or new, is moved by hand (a sampled block is never resized in
    // place); so is a pymalloc block growing past 512 bytes, which pymalloc would take from
    // `RAW` with no mode set.
    if sample || sampled::contains(ptr) || (in_arena && !arena::is_small(size)) {
        return move_block(ctx, ptr, size, in_arena, sample);
    }
    // In the arenas and staying there (in place, or moved by pymalloc, its old block's free
    // counted by its pool); or a tracked `RAW` block, which pymalloc reallocates in `RAW`,
    // whose hook counts it.
    let q = py_realloc()(ctx, ptr, size);
    if in_arena && arena::contains(q) {
        // SAFETY: in the region: a pymalloc block.
        local::with(|l| l.count_alloc((unsafe { arena::pool_block_size(q) }, true)));
    }
    q
}

/// Reallocates by allocating (a sampled block if `sample`), copying and freeing through
/// pymalloc. A failed allocation leaves `ptr` untouched.
#[cold]
#[inline(never)]
fn move_block(
    ctx: *mut c_void,
    ptr: *mut c_void,
    size: usize,
    in_arena: bool,
    sample: bool,
) -> *mut c_void {
    let old = if in_arena {
        // SAFETY: in the region: a pymalloc block.
        unsafe { arena::pool_block_size(ptr) }
    } else if sampled::contains(ptr) {
        // SAFETY: a live sampled block.
        unsafe { sampled::size_of(ptr) }
    } else {
        // SAFETY: a live block of these domains outside the arenas and the sampled region: a
        // tracked `RAW` block.
        unsafe { raw_size(ptr) }
    };
    let q = if sample {
        through_raw(ctx, size, RawMode::Sample(size), false)
    } else if arena::is_small(size) {
        local::with(|l| l.count_small(size));
        py_malloc()(ctx, size)
    } else {
        through_raw(ctx, size, RawMode::Count, false)
    };
    if q.is_null() {
        return q;
    }
    // SAFETY: `ptr` holds `old` bytes, `q` at least `size`; distinct live blocks.
    unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), q.cast::<u8>(), old.min(size)) };
    py_free()(ctx, ptr);
    q
}

/// Whether `ptr`, a live block of the `RAW` domain that is not sampled, is tracked.
///
/// # Safety
/// `ptr` is a live, non-null block of the `RAW` domain (a `malloc` block, whose chunk header
/// precedes it, or a tracked one).
#[inline(always)]
unsafe fn tracked(ptr: *mut c_void) -> bool {
    // SAFETY: per the contract, eight readable bytes precede `ptr`.
    unsafe { ptr.cast::<u64>().sub(1).read() == TAG }
}

/// The bytes a tracked `RAW` block holds.
///
/// # Safety
/// `ptr` is a live tracked block.
unsafe fn raw_size(ptr: *mut c_void) -> usize {
    // SAFETY: per the contract: the `malloc` block starts `TAG_HEADER` bytes before.
    unsafe { arena::malloc_size(ptr.cast::<u8>().sub(TAG_HEADER).cast()) - TAG_HEADER }
}

/// Marks the `malloc` block `base` as tracked and counts it; returns the pointer given out.
///
/// # Safety
/// `base` is a live `malloc` block of at least `TAG_HEADER` bytes.
unsafe fn mark(base: *mut c_void) -> *mut c_void {
    // SAFETY: per the contract.
    unsafe {
        base.cast::<u64>().write(0);
        base.cast::<u64>().add(1).write(TAG);
        let p = base.cast::<u8>().add(TAG_HEADER).cast::<c_void>();
        if super::exact() {
            local::with(|l| l.count_alloc((raw_size(p), false)));
        }
        p
    }
}

/// Allocates in the `RAW` domain as this thread's mode says; `None` to forward.
#[inline(always)]
fn raw_alloc(under: &Underlying, size: usize, zeroed: bool) -> Option<*mut c_void> {
    let mode = local::with(|l| l.raw_mode());
    if matches!(mode, RawMode::Forward) {
        return None;
    }
    Some(raw_alloc_tracked(under, size, zeroed, mode))
}

#[cold]
#[inline(never)]
fn raw_alloc_tracked(under: &Underlying, size: usize, zeroed: bool, mode: RawMode) -> *mut c_void {
    // One `RAW` call per mode set.
    local::with(|l| l.set_raw_mode(RawMode::Forward));
    if let RawMode::Sample(sample) = mode {
        let owner = local::with(|l| l.owner());
        if super::refuse(owner, sample) {
            return std::ptr::null_mut();
        }
        let p = sampled::alloc(sample, owner, zeroed);
        if !p.is_null() {
            local::with(|l| l.count_alloc((sample, false)));
            return p;
        }
        // The sampled region is full: a tracked block of the size asked (at least the
        // sample's), unsampled.
    }
    let Some(total) = size.checked_add(TAG_HEADER) else {
        return std::ptr::null_mut();
    };
    let base = if zeroed {
        (under.calloc)(under.ctx, 1, total)
    } else {
        (under.malloc)(under.ctx, total)
    };
    if base.is_null() {
        return base;
    }
    // SAFETY: a fresh `malloc` block of `total` bytes.
    unsafe { mark(base) }
}

/// The `malloc` of the `RAW` domain.
pub(super) extern "C" fn raw_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the `RAW` hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    if let Some(p) = raw_alloc(under, size, false) {
        return p;
    }
    (under.malloc)(under.ctx, size)
}

/// The `calloc` of the `RAW` domain.
pub(super) extern "C" fn raw_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: the `RAW` hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    if let Some(size) = nelem.checked_mul(elsize)
        && let Some(p) = raw_alloc(under, size, true)
    {
        return p;
    }
    (under.calloc)(under.ctx, nelem, elsize)
}

/// The `realloc` of the `RAW` domain: a tracked block stays tracked.
pub(super) extern "C" fn raw_realloc(
    ctx: *mut c_void,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    // SAFETY: the `RAW` hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    if ptr.is_null() {
        return raw_malloc(ctx, size);
    }
    if sampled::contains(ptr) {
        // The `MEM` and `OBJ` hooks move their sampled blocks themselves; only a caller
        // mixing the domains' functions gets here.
        // SAFETY: a live sampled block.
        return unsafe { realloc_sampled_raw(under, ptr, size) };
    }
    // SAFETY: a live `RAW` block, not sampled.
    if !unsafe { tracked(ptr) } {
        return (under.realloc)(under.ctx, ptr, size);
    }
    // SAFETY: a live tracked block.
    unsafe { realloc_tracked(under, ptr, size) }
}

/// Moves a sampled block into a tracked one.
///
/// # Safety
/// `ptr` is a live sampled block.
#[cold]
#[inline(never)]
unsafe fn realloc_sampled_raw(under: &Underlying, ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(total) = size.checked_add(TAG_HEADER) else {
        return std::ptr::null_mut();
    };
    let base = (under.malloc)(under.ctx, total);
    if base.is_null() {
        return base;
    }
    // SAFETY: a fresh block of `total` bytes; `ptr` a live sampled block (contract) of
    // `old` bytes, distinct from it, freed once.
    unsafe {
        let q = mark(base);
        let old = sampled::size_of(ptr);
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), q.cast::<u8>(), old.min(size));
        super::hooks::free_sampled(ptr);
        q
    }
}

/// # Safety
/// `ptr` is a live tracked block.
#[inline(never)]
unsafe fn realloc_tracked(under: &Underlying, ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(total) = size.checked_add(TAG_HEADER) else {
        return std::ptr::null_mut();
    };
    // SAFETY: per the contract.
    let old = unsafe { raw_size(ptr) };
    // SAFETY: the `malloc` block of a tracked one starts `TAG_HEADER` bytes before it.
    let base = unsafe { ptr.cast::<u8>().sub(TAG_HEADER) }.cast::<c_void>();
    let moved = (under.realloc)(under.ctx, base, total);
    if moved.is_null() {
        // The old block is untouched.
        return moved;
    }
    if super::exact() {
        local::with(|l| l.count_free(old));
    }
    // SAFETY: a live `malloc` block of `total` bytes, its header moved with it.
    unsafe { mark(moved) }
}

/// The `free` of the `RAW` domain: counts sampled and tracked blocks.
pub(super) extern "C" fn raw_free(ctx: *mut c_void, ptr: *mut c_void) {
    // SAFETY: the `RAW` hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    if ptr.is_null() {
        return;
    }
    if sampled::contains(ptr) {
        // SAFETY: a live sampled block, freed once.
        unsafe { super::hooks::free_sampled(ptr) };
        return;
    }
    // SAFETY: a live `RAW` block.
    if unsafe { tracked(ptr) } {
        // SAFETY: a live tracked block.
        unsafe { free_tracked(under, ptr) };
        return;
    }
    (under.free)(under.ctx, ptr);
}

/// # Safety
/// `ptr` is a live tracked block, not used afterwards.
#[inline(never)]
unsafe fn free_tracked(under: &Underlying, ptr: *mut c_void) {
    // SAFETY: per the contract.
    let size = unsafe { raw_size(ptr) };
    // Counted while sizes are known (without them, the domains' own free hook counts it).
    if super::exact() {
        local::with(|l| l.count_free(size));
    }
    // SAFETY: the `malloc` block of a tracked one starts `TAG_HEADER` bytes before it; its
    // tag is cleared so that no later block at this address reads as tracked by chance.
    unsafe {
        let base = ptr.cast::<u8>().sub(TAG_HEADER).cast::<u64>();
        base.add(1).write(0);
        (under.free)(under.ctx, base.cast());
    }
}

#[cfg(test)]
mod tests {
    //! The `RAW` hooks over the C library's allocator, not installed (the runtime tests
    //! check the counts under Python, with the hooks installed).
    use super::super::hooks::testing::ctx;
    use super::*;

    #[test]
    fn a_mode_serves_one_call_and_tracked_blocks_stay_tracked() {
        let ctx = ctx();
        local::with(|l| l.set_raw_mode(RawMode::Count));
        let p = raw_malloc(ctx, 100);
        let untracked = raw_malloc(ctx, 100);
        // SAFETY: live blocks of the hooks.
        unsafe {
            assert!(tracked(p), "the mode's call is tracked");
            assert!(!tracked(untracked), "the next is the interpreter's own");
            assert!(raw_size(p) >= 100);
            p.cast::<u8>().write_bytes(0xab, 100);
        }
        let q = raw_realloc(ctx, p, 5000);
        // SAFETY: live blocks of the hooks.
        unsafe {
            assert!(tracked(q) && raw_size(q) >= 5000);
            assert!(
                (0..100).all(|i| *q.cast::<u8>().add(i) == 0xab),
                "data kept"
            );
        }
        local::with(|l| l.set_raw_mode(RawMode::Count));
        let z = raw_calloc(ctx, 10, 30);
        // SAFETY: a live block of 300 bytes.
        unsafe {
            assert!(tracked(z));
            assert!((0..300).all(|i| *z.cast::<u8>().add(i) == 0), "zeroed");
        }
        for b in [q, untracked, z] {
            raw_free(ctx, b);
        }
        raw_free(ctx, std::ptr::null_mut());
    }

    #[test]
    fn sampled_blocks_come_from_the_region_and_leave_it_when_moved() {
        let ctx = ctx();
        local::with(|l| l.set_raw_mode(RawMode::Sample(40)));
        // pymalloc asks for 513 bytes for a small sampled block: the block is the 40 asked.
        let p = raw_malloc(ctx, 513);
        assert!(sampled::contains(p));
        // SAFETY: a live sampled block.
        unsafe {
            assert_eq!(sampled::size_of(p), 40);
            p.cast::<u8>().write_bytes(7, 40);
        }
        // Only a caller mixing the domains reallocates a sampled block through `RAW`.
        let q = raw_realloc(ctx, p, 1000);
        assert!(!sampled::contains(q));
        // SAFETY: a live tracked block.
        unsafe {
            assert!(tracked(q));
            assert!((0..40).all(|i| *q.cast::<u8>().add(i) == 7));
        }
        raw_free(ctx, q);
        assert_eq!(local::with(|l| l.raw_mode()), RawMode::Forward);
    }
}
