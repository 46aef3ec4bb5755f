//! Sampled blocks: allocated from a region of address space reserved for them, so that a
//! free recognises one from its address alone.
//!
//! The region is one anonymous `MAP_NORESERVE` mapping: pages are backed only once written.
//! Freed runs are kept for reuse up to [`CACHE_PAGES`] (as glibc keeps freed heap memory:
//! handing every large run back and faulting it in again on the next allocation cost more
//! than everything else the tracker does); beyond that, runs of 16 pages or more are handed
//! back to the kernel (`MADV_DONTNEED`).
//! Each sampled block starts with a [`Header`] (owner, size, weight) right before the
//! pointer given to Python. Blocks whose header and data fit in [`SMALL_SLOT`] bytes share
//! pages, in slots kept for reuse; larger ones get their own run of pages. The bookkeeping
//! is behind a mutex: sampling happens about once per sampling interval of bytes
//! allocated, far from the hot path.
//!
//! If the region cannot be mapped, tracking is not installed; if it is full, a sampled
//! allocation falls back to the underlying allocator unsampled (counted exactly, missing
//! from the estimate) and [`exhausted`] says how often that happened.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{interval, slot};

const PAGE: usize = 4096;
/// Header plus data of small sampled blocks (pymalloc's small requests are up to 512 bytes).
const SMALL_SLOT: usize = 576;
/// Bytes in front of each sampled block: keeps the block 16-byte aligned.
const HEADER: usize = 32;
/// Freed runs of at least this many pages are handed back to the kernel.
const RELEASE_PAGES: usize = 16;
/// Pages of freed runs kept without handing them back (8 MiB).
const CACHE_PAGES: usize = 2048;
/// Reservation sizes tried in turn (virtual address space only).
const REGION_SIZES: [usize; 3] = [64 << 30, 4 << 30, 256 << 20];
const MAGIC: u32 = 0x5A4D_5054;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static EXHAUSTED: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Header {
    magic: u32,
    /// Pages of the run, 0 for a small slot.
    pages: u32,
    owner: u16,
    /// The unsampled pymalloc blocks this sample stands for ([`arena_blocks`]).
    arena_blocks: u32,
    size: u64,
    weight: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

#[derive(Default)]
struct Pages {
    /// Offset of the first never-used page.
    bump: usize,
    /// Free runs: offset -> (pages, known to read as zeros).
    free: BTreeMap<usize, (usize, bool)>,
    /// Free small slots (offsets).
    slots: Vec<usize>,
    /// Pages of free runs kept without `MADV_DONTNEED` (about: merges are not tracked).
    cached: usize,
}

static PAGES: Mutex<Pages> = Mutex::new(Pages {
    bump: 0,
    free: BTreeMap::new(),
    slots: Vec::new(),
    cached: 0,
});

/// Reserves the region (once). False when no size could be mapped.
pub(super) fn reserve() -> bool {
    if LEN.load(Ordering::Acquire) != 0 {
        return true;
    }
    for len in REGION_SIZES {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing else
        // refers to it.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::NORESERVE,
            )
        };
        if let Ok(p) = mapped {
            // With transparent huge pages set to "always", one small sample would back 2 MiB;
            // best effort (the region works either way).
            // SAFETY: advice on the mapping just made, which nothing uses yet.
            let _ = unsafe { rustix::mm::madvise(p, len, rustix::mm::Advice::LinuxNoHugepage) };
            BASE.store(p as usize, Ordering::Relaxed);
            LEN.store(len, Ordering::Release);
            return true;
        }
    }
    false
}

/// Whether `ptr` is a sampled block (one subtraction and one compare).
#[inline(always)]
pub(super) fn contains(ptr: *mut c_void) -> bool {
    (ptr as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < LEN.load(Ordering::Relaxed)
}

/// Sampled allocations that fell back to the underlying allocator (region full).
pub(super) fn exhausted() -> u64 {
    EXHAUSTED.load(Ordering::Relaxed)
}

/// The weight of a sampled block of `size` bytes: `size / P(sampled)`.
pub(super) fn weight(size: usize) -> u64 {
    let interval = interval();
    let x = size as f64 / interval as f64;
    // 1 - exp(-x), precise for small x.
    let p = -(-x).exp_m1();
    if p <= 0.0 {
        return interval;
    }
    (size as f64 / p).round() as u64
}

/// The pymalloc blocks a sampled block of `size` bytes stands for besides itself, when
/// sizes are known and pymalloc would have served it (up to 512 bytes): `1 / P(sampled) - 1`.
/// Summed over an owner's live samples, an unbiased estimate of its blocks in pymalloc's
/// arenas, from which its frees there are derived (see [`super::SlotCounters`]).
pub(super) fn arena_blocks(size: usize) -> u32 {
    if !super::exact() || size > super::arena::SMALL_REQUEST_THRESHOLD {
        return 0;
    }
    let x = size.max(1) as f64 / interval() as f64;
    let p = -(-x).exp_m1();
    if p <= 0.0 {
        return u32::MAX;
    }
    let n = (1.0 / p - 1.0).round();
    if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        n as u32
    }
}

/// Allocates a sampled block of `size` bytes for `owner`, zeroed if `zeroed`. Null when the
/// region is full (the caller falls back to the underlying allocator).
pub(super) fn alloc(size: usize, owner: u16, zeroed: bool) -> *mut c_void {
    let base = BASE.load(Ordering::Relaxed);
    let (offset, pages, zero) = {
        let mut p = PAGES.lock().unwrap_or_else(PoisonError::into_inner);
        let found = if size <= SMALL_SLOT - HEADER {
            p.small_slot().map(|o| (o, 0, false))
        } else {
            size.checked_add(HEADER + PAGE - 1)
                .map(|n| n / PAGE)
                .and_then(|pages| p.run(pages).map(|(o, zero)| (o, pages, zero)))
        };
        match found {
            Some(f) => f,
            None => {
                EXHAUSTED.fetch_add(1, Ordering::Relaxed);
                return std::ptr::null_mut();
            }
        }
    };
    let weight = weight(size);
    let arena_blocks = arena_blocks(size);
    let block = (base + offset) as *mut Header;
    // SAFETY: `offset` starts a slot or run of the mapped region that the lock just gave to
    // this call alone, at least HEADER + size bytes long and 16-byte aligned.
    unsafe {
        block.write(Header {
            magic: MAGIC,
            pages: pages as u32,
            owner,
            arena_blocks,
            size: size as u64,
            weight,
        });
        let data = block.cast::<u8>().add(HEADER);
        if zeroed && !zero {
            std::ptr::write_bytes(data, 0, size);
        }
        let s = slot(owner);
        s.inuse_estimate.fetch_add(weight, Ordering::Relaxed);
        s.arena_blocks_estimate
            .fetch_add(u64::from(arena_blocks), Ordering::Relaxed);
        s.live_samples.fetch_add(1, Ordering::Release);
        data.cast()
    }
}

/// The size of the sampled block at `ptr`.
///
/// # Safety
/// `ptr` is a live block returned by [`alloc`] ([`contains`] is true for it).
pub(super) unsafe fn size_of(ptr: *mut c_void) -> usize {
    // SAFETY: per the contract, a header precedes `ptr`.
    unsafe { (*ptr.cast::<u8>().sub(HEADER).cast::<Header>()).size as usize }
}

/// Frees the sampled block at `ptr`, crediting its owner's estimate.
///
/// # Safety
/// `ptr` is a live block returned by [`alloc`] ([`contains`] is true for it); it is not used
/// afterwards.
pub(super) unsafe fn free(ptr: *mut c_void) {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: per the contract, a header precedes `ptr`.
    let header = unsafe { &*ptr.cast::<u8>().sub(HEADER).cast::<Header>() };
    if header.magic != MAGIC {
        // Overwritten by a buggy extension: leak the slot rather than trust its fields.
        return;
    }
    let s = slot(header.owner);
    s.inuse_estimate.fetch_sub(header.weight, Ordering::Relaxed);
    s.arena_blocks_estimate
        .fetch_sub(u64::from(header.arena_blocks), Ordering::Relaxed);
    s.live_samples.fetch_sub(1, Ordering::Release);
    let offset = ptr as usize - HEADER - base;
    let pages = header.pages as usize;
    let mut p = PAGES.lock().unwrap_or_else(PoisonError::into_inner);
    if pages == 0 {
        p.slots.push(offset);
        return;
    }
    let mut zero = false;
    if pages >= RELEASE_PAGES && p.cached + pages > CACHE_PAGES {
        // SAFETY: the run belongs to the region and to this block alone; its contents are
        // dead. Afterwards the pages read as zeros and hold no memory.
        zero = unsafe {
            rustix::mm::madvise(
                (base + offset) as *mut c_void,
                pages * PAGE,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }
        .is_ok();
    }
    if !zero && pages >= RELEASE_PAGES {
        p.cached += pages;
    }
    p.release(offset, pages, zero);
}

impl Pages {
    fn small_slot(&mut self) -> Option<usize> {
        if let Some(o) = self.slots.pop() {
            return Some(o);
        }
        let (page, _) = self.run(1)?;
        let per_page = PAGE / SMALL_SLOT;
        // Hand out the first, keep the others (last first, so they are used in order).
        self.slots
            .extend((1..per_page).rev().map(|i| page + i * SMALL_SLOT));
        Some(page)
    }

    /// A run of `pages` pages: the first free run that is long enough, else fresh pages.
    fn run(&mut self, pages: usize) -> Option<(usize, bool)> {
        let fit = self
            .free
            .iter()
            .find(|(_, (n, _))| *n >= pages)
            .map(|(o, e)| (*o, *e));
        if let Some((offset, (n, zero))) = fit {
            self.free.remove(&offset);
            if !zero && pages >= RELEASE_PAGES {
                self.cached = self.cached.saturating_sub(pages);
            }
            if n > pages {
                self.free.insert(offset + pages * PAGE, (n - pages, zero));
            }
            return Some((offset, zero));
        }
        let len = pages.checked_mul(PAGE)?;
        let end = self.bump.checked_add(len)?;
        if end > LEN.load(Ordering::Relaxed) {
            return None;
        }
        let offset = self.bump;
        self.bump = end;
        Some((offset, true))
    }

    /// Returns a run, merged with free neighbours.
    fn release(&mut self, mut offset: usize, mut pages: usize, mut zero: bool) {
        if let Some((&prev, &(n, z))) = self.free.range(..offset).next_back()
            && prev + n * PAGE == offset
        {
            self.free.remove(&prev);
            offset = prev;
            pages += n;
            zero &= z;
        }
        if let Some((n, z)) = self.free.remove(&(offset + pages * PAGE)) {
            pages += n;
            zero &= z;
        }
        self.free.insert(offset, (pages, zero));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_undo_the_sampling_probability() {
        // Huge blocks are always sampled: weight = size.
        assert_eq!(weight(50 << 20), 50 << 20);
        // Small blocks stand for about one interval of allocation each.
        let t = interval();
        let w = weight(64);
        assert!(w.abs_diff(t) <= 64, "{w}");
        // In between: size / (1 - e^-1) at one interval.
        let w = weight(t as usize) as f64;
        let expected = t as f64 / (1.0 - (-1.0f64).exp());
        assert!((w - expected).abs() < 1.0);
        assert_eq!(weight(0), t);
    }

    #[test]
    fn runs_are_reused_and_merged() {
        assert!(reserve());
        let mut p = Pages::default();
        let (a, za) = p.run(2).unwrap();
        let (b, _) = p.run(3).unwrap();
        let (c, _) = p.run(1).unwrap();
        assert!(za, "fresh pages read as zeros");
        assert_eq!((b, c), (a + 2 * PAGE, a + 5 * PAGE));
        p.release(a, 2, false);
        p.release(c, 1, true);
        p.release(b, 3, true);
        assert_eq!(p.free.len(), 1, "three neighbours merge: {:?}", p.free);
        assert_eq!(p.free.get(&a), Some(&(6, false)), "dirty if any part is");
        let (d, zero) = p.run(4).unwrap();
        assert_eq!((d, zero), (a, false));
        assert_eq!(p.free.get(&(a + 4 * PAGE)), Some(&(2, false)));
    }
}
