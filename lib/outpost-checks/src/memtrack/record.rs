//! What a small-table entry holds, and the bookkeeping of one allocation or free.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU16, Ordering};

use super::counters::{Counters, UNTRACKED_FREES, slot_counters};
use super::slots::current_owner;
use super::table::{LARGE_SHIFT, LARGE_TOP, MIN_REQUEST, entry, entry_in};

/// Requests up to this size are "small": counted at their 16-byte-rounded size.
const SMALL_MAX: usize = 512;

/// Small-table entry: bits 0..9 owner slot + 1 (0: no block), bits 10..14 size class
/// (`(class + 1) * 16` bytes, 32 to 512), bit 15: large block, exact size in the large
/// table.
pub(super) const OWNER_BITS: u16 = 0x3ff;
const CLASS_SHIFT: u32 = 10;
const CLASS_BITS: u16 = 0x1f;
const LARGE: u16 = 1 << 15;

/// Records a new block of `size` bytes at `ptr` for the current owner.
#[inline(always)]
pub(super) fn record_alloc(ptr: *mut c_void, size: usize) {
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
pub(super) fn lookup(ptr: *mut c_void) -> (Option<&'static AtomicU16>, u16) {
    let e = entry(ptr as usize, false);
    let word = e.map_or(0, |e| e.load(Ordering::Relaxed));
    (e, word)
}

/// Records the end of the block at `ptr` whose entry [`lookup`] read: credited to its
/// owner, or an untracked free. Split from the lookup so that the entry's cache miss can
/// overlap with the underlying allocator's work.
#[inline(always)]
pub(super) fn record_free(ptr: *mut c_void, e: Option<&'static AtomicU16>, word: u16) {
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
