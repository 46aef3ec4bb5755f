//! The side tables: a sparse three-level table from a block's address (in 32-byte steps)
//! to its 16-bit entry, and one in 512-byte steps to the exact size of large blocks. Nodes
//! are made on first use and never freed or moved.

use std::sync::atomic::{AtomicPtr, AtomicU16, AtomicU64, AtomicUsize, Ordering};

/// Entries per leaf.
pub(super) const LEAF_BITS: u32 = 18;
/// Leaves per middle node.
pub(super) const MID_BITS: u32 = 12;
/// Largest user address + 1 (47-bit user space).
pub(super) const ADDR_BITS: u32 = 47;
/// The small table has one entry per 32 bytes: requests of up to 16 bytes are served from
/// 32-byte blocks (see [`MIN_REQUEST`]), so no two live blocks start in the same 32 bytes.
pub(super) const SMALL_SHIFT: u32 = 5;
/// Requests smaller than this are raised to it before reaching the underlying allocator:
/// pymalloc then never hands out its 16-byte class, and glibc's smallest chunk is 32 bytes,
/// so live blocks are at least 32 bytes apart. Only objects of at most 16 bytes (rare:
/// every Python object but `object()` is larger) grow to 32.
pub(super) const MIN_REQUEST: usize = 17;
/// The large table has one entry per 512 bytes: blocks of more than 512 bytes never start
/// in the same 512-byte window.
pub(super) const LARGE_SHIFT: u32 = 9;

struct Leaf<T>([T; 1 << LEAF_BITS]);
pub(super) struct Mid<T>([AtomicPtr<Leaf<T>>; 1 << MID_BITS]);

static SMALL_TOP: [AtomicPtr<Mid<AtomicU16>>;
    1 << (ADDR_BITS - SMALL_SHIFT - LEAF_BITS - MID_BITS)] =
    [const { AtomicPtr::new(std::ptr::null_mut()) };
        1 << (ADDR_BITS - SMALL_SHIFT - LEAF_BITS - MID_BITS)];
pub(super) static LARGE_TOP: [AtomicPtr<Mid<AtomicU64>>;
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
pub(super) fn entry_in<T>(
    top: &'static [AtomicPtr<Mid<T>>],
    key: usize,
    create: bool,
) -> Option<&'static T> {
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
pub(super) fn entry(addr: usize, create: bool) -> Option<&'static AtomicU16> {
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
