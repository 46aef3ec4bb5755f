//! The hooks are exercised here over the system allocator, so the table logic is tested
//! without an interpreter; the runtime tests check attribution under Python.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use pyo3::ffi::PyMemAllocatorEx;

use super::counters::{SLOTS, UNTRACKED_FREES};
use super::hooks::{Underlying, hook_calloc, hook_free, hook_malloc, hook_realloc};
use super::record::OWNER_BITS;
use super::slots::{OwnerGuard, current_owner};
use super::table::{ADDR_BITS, MIN_REQUEST, SMALL_SHIFT, entry};

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
    let _g = OwnerGuard::enter_index(owner);
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
