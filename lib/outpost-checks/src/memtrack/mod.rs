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
//!
//! # Layout
//!
//! * `counters`: the per-slot counters the hooks bump, and their totals.
//! * `stats`: the public snapshot types ([`MemoryStats`], [`CheckMemory`],
//!   [`MemorySnapshot`]).
//! * `slots`: owner slots of check instances and the thread's current owner.
//! * `table`: the sparse side tables from a block's address to its entry.
//! * `record`: what an entry holds, and the bookkeeping of one allocation or free.
//! * `hooks`: the allocator wrappers and their installation.

use std::sync::atomic::{AtomicBool, Ordering};

mod counters;
mod hooks;
mod record;
mod slots;
mod stats;
mod table;
#[cfg(test)]
mod tests;

pub(crate) use hooks::install;
pub(crate) use slots::{OwnerGuard, Slot};
pub use stats::{CheckMemory, MemorySnapshot, MemoryStats};

/// Set once the hooks are installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// True when tracking is installed.
pub fn enabled() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Copies every counter (no GIL needed).
pub fn snapshot() -> MemorySnapshot {
    // The counters are read with the registry locked, as a slot's reuse (which moves its
    // counts to the retired ones) happens under that lock: the totals never count it twice.
    slots::with_checks(|checks| MemorySnapshot {
        enabled: enabled(),
        total: counters::total(),
        untracked_frees: counters::UNTRACKED_FREES.load(Ordering::Relaxed),
        unattributed: counters::SLOTS[0].read(),
        checks,
    })
}
