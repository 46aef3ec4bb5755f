//! Per-thread state of the hooks: exact counters, the sampling countdown, the current owner.
//!
//! A thread's counters live in a block that only that thread writes (relaxed load and store:
//! plain moves) and that readers fold with every other. Blocks are allocated on a thread's
//! first allocation (or first owner switch), are never freed, and are reused: when a thread
//! ends, a thread-local destructor adds its block's counts to [`EXITED`], zeroes the block and
//! returns it to the pool, under the registry lock that readers also take, so a fold never
//! misses or doubles a count.
//!
//! Before it has a block (and after its block went back to the pool, if it still frees
//! something), a thread counts into [`BOOT`], shared but written only with the GIL held (the
//! hooks' domains require it), so its relaxed load-and-store updates are serialised and
//! exact too.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{interval, slot};

/// Exact counts of one thread: its allocations in pymalloc's arenas by size class (see
/// [`super::arena`]), then the allocations, bytes allocated, frees and bytes freed of every
/// other block (`malloc` blocks and sampled ones; every block when sizes are not known).
/// An arena allocation is one increment, of its class's count: the bytes are the counts
/// times the classes' sizes, summed when read. Frees of arena blocks are not counted: the
/// pools count the blocks they hold, and the frees are the allocations no longer held.
/// Written by its thread on every allocation: cache lines of its own.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Counters([AtomicU64; RAW]);

/// pymalloc's size classes: 16 to 512 bytes in steps of 16.
pub(super) const CLASSES: usize = super::arena::SMALL_REQUEST_THRESHOLD >> 4;
/// Raw counts of a thread: one per size class, then the four of other blocks.
const RAW: usize = CLASSES + 4;

/// The counts read from a thread (and kept per owner), in this order.
pub(super) const ARENA_ALLOCATIONS: usize = 0;
pub(super) const ARENA_ALLOCATED_BYTES: usize = 1;
pub(super) const OUTSIDE_ALLOCATIONS: usize = 2;
pub(super) const OUTSIDE_ALLOCATED_BYTES: usize = 3;
pub(super) const OUTSIDE_FREES: usize = 4;
pub(super) const OUTSIDE_FREED_BYTES: usize = 5;
/// Number of counts per thread (and per owner).
pub(super) const COUNTS: usize = 6;

impl Counters {
    const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; RAW])
    }

    /// Single writer (the owning thread, or the GIL holder for [`BOOT`]): a relaxed load and
    /// store, no locked instruction.
    #[inline(always)]
    fn bump(&self, raw: usize, by: u64) {
        let c = &self.0[raw];
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    /// The counts, in the order of [`COUNTS`]: the classes' counts summed, and their
    /// bytes.
    fn read(&self) -> [u64; COUNTS] {
        let (mut allocations, mut bytes) = (0u64, 0u64);
        for (class, c) in self.0[..CLASSES].iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            allocations = allocations.wrapping_add(n);
            bytes = bytes.wrapping_add(n.wrapping_mul(((class as u64) + 1) << 4));
        }
        let other = |k: usize| self.0[outside(k)].load(Ordering::Relaxed);
        [
            allocations,
            bytes,
            other(OUTSIDE_ALLOCATIONS),
            other(OUTSIDE_ALLOCATED_BYTES),
            other(OUTSIDE_FREES),
            other(OUTSIDE_FREED_BYTES),
        ]
    }

    /// Adds every raw count of `other` to this block's (whose writer is the caller).
    fn add(&self, other: &Counters) {
        for (mine, theirs) in self.0.iter().zip(&other.0) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// The raw index of an outside count.
const fn outside(which: usize) -> usize {
    CLASSES + which - OUTSIDE_ALLOCATIONS
}

/// Counts of threads that have no block of their own.
static BOOT: Counters = Counters::new();
/// Counts of exited threads.
static EXITED: Counters = Counters::new();

#[derive(Default)]
struct Registry {
    live: Vec<&'static Counters>,
    pool: Vec<&'static Counters>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    pool: Vec::new(),
});

/// The counts of every thread, live or exited (in the order of [`Counters`]).
pub(super) fn totals() -> [u64; COUNTS] {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mut sum = [0u64; COUNTS];
    for block in registry.live.iter().copied().chain([&BOOT, &EXITED]) {
        for (s, v) in sum.iter_mut().zip(block.read()) {
            *s = s.wrapping_add(v);
        }
    }
    sum
}

/// What the `RAW` domain's hook does with this thread's next allocation (see
/// `super::exact`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RawMode {
    /// Forward it, uncounted: the interpreter's own buffers.
    Forward,
    /// A block of the `MEM` or `OBJ` domain: tracked and counted.
    Count,
    /// A sampled block of the `MEM` or `OBJ` domain, of this many bytes.
    Sample(usize),
}

/// The hooks' thread-local state. `const`-initialised and without a destructor, so that an
/// access is a plain thread-pointer-relative load.
pub(super) struct Local {
    counters: Cell<&'static Counters>,
    /// Bytes left to allocate before the next sample; 0 until the first draw.
    countdown: Cell<u64>,
    /// xorshift64* state; 0 until seeded.
    rng: Cell<u64>,
    owner: Cell<u16>,
    /// The counts at the last owner switch (what was already charged).
    mark: Cell<[u64; COUNTS]>,
    raw: Cell<RawMode>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            counters: Cell::new(&BOOT),
            countdown: Cell::new(0),
            rng: Cell::new(0),
            owner: Cell::new(0),
            mark: Cell::new([0; COUNTS]),
            raw: Cell::new(RawMode::Forward),
        }
    };
    /// Registered with the thread's own block: returns it when the thread ends.
    static EXIT: ExitGuard = const { ExitGuard(Cell::new(None)) };
}

/// Runs `f` with this thread's state.
#[inline(always)]
pub(super) fn with<R>(f: impl FnOnce(&Local) -> R) -> R {
    LOCAL.with(f)
}

impl Local {
    /// Counts one allocation of `size` bytes: in pymalloc's arenas (then `size` is a size
    /// class, 16 to 512) or not.
    #[inline(always)]
    pub(super) fn count_alloc(&self, (size, in_arena): (usize, bool)) {
        if in_arena {
            self.count_small(size);
        } else {
            let c = self.counters.get();
            c.bump(outside(OUTSIDE_ALLOCATIONS), 1);
            c.bump(outside(OUTSIDE_ALLOCATED_BYTES), size as u64);
        }
    }

    /// Counts the allocation in pymalloc's arenas of a request of `size` bytes (1 to 512):
    /// one increment, of its size class's count.
    #[inline(always)]
    pub(super) fn count_small(&self, size: usize) {
        self.counters.get().bump((size - 1) >> 4, 1);
    }

    /// Counts the free of a block outside pymalloc's arenas, of `size` bytes (0 when sizes
    /// are not known). Frees of arena blocks are not counted (see [`Counters`]).
    #[inline(always)]
    pub(super) fn count_free(&self, size: usize) {
        let c = self.counters.get();
        c.bump(outside(OUTSIDE_FREES), 1);
        if size != 0 {
            c.bump(outside(OUTSIDE_FREED_BYTES), size as u64);
        }
    }

    /// Takes `size` bytes off the countdown if it outlasts them; false, with nothing taken,
    /// when it runs out during them (or was never drawn).
    #[inline(always)]
    fn outlasts(&self, size: u64) -> bool {
        let left = self.countdown.get();
        if size < left {
            self.countdown.set(left - size);
            return true;
        }
        false
    }

    /// Whether the allocation of `size` bytes about to be made is sampled: true when the
    /// countdown runs out during it (then a new interval is drawn).
    #[inline(always)]
    pub(super) fn sample(&self, size: usize) -> bool {
        let size = size as u64;
        !self.outlasts(size) && self.sample_slow(size)
    }

    /// For a request of `size` bytes (1 to 512) that pymalloc serves from its arenas:
    /// whether it is sampled (the sampled path counts it), else counts it.
    #[inline(always)]
    pub(super) fn sample_small(&self, size: usize) -> bool {
        if self.sample(size) {
            return true;
        }
        self.count_small(size);
        false
    }

    /// The common case of [`Self::sample_small`], with no call in it: counts the request of
    /// `size` bytes (1 to 512) and returns true when the countdown outlasts it; false, with
    /// nothing done, when [`Self::sample_small`] must decide.
    #[inline(always)]
    pub(super) fn count_small_unsampled(&self, size: usize) -> bool {
        if !self.outlasts(size as u64) {
            return false;
        }
        self.count_small(size);
        true
    }

    /// The countdown ran out, or was never drawn (a thread's first allocation: the block of
    /// counters is taken here too).
    #[cold]
    #[inline(never)]
    fn sample_slow(&self, size: u64) -> bool {
        if self.rng.get() == 0 {
            self.register();
            self.seed();
            let left = self.draw();
            if size < left {
                self.countdown.set(left - size);
                return false;
            }
        }
        self.countdown.set(self.draw());
        true
    }

    /// What the `RAW` hook does with this thread's next allocation.
    #[inline(always)]
    pub(super) fn raw_mode(&self) -> RawMode {
        self.raw.get()
    }

    pub(super) fn set_raw_mode(&self, mode: RawMode) {
        self.raw.set(mode);
    }

    /// The owner charged with what this thread allocates now.
    #[inline(always)]
    pub(super) fn owner(&self) -> u16 {
        self.owner.get()
    }

    /// Charges the counts since the last switch to the current owner (slot 0's are left in
    /// the unattributed remainder) and starts a new period.
    fn flush(&self) {
        let now = self.counters.get().read();
        let mark = self.mark.replace(now);
        let owner = self.owner.get();
        if owner == 0 || std::ptr::eq(self.counters.get(), &BOOT) {
            return;
        }
        let s = slot(owner);
        for (counter, (n, m)) in s.counts().iter().zip(now.into_iter().zip(mark)) {
            counter.fetch_add(n.wrapping_sub(m), Ordering::Relaxed);
        }
    }

    /// Gives the thread a block of its own, once (stays on [`BOOT`] if the thread is
    /// already being torn down).
    fn register(&self) {
        if !std::ptr::eq(self.counters.get(), &BOOT) {
            return;
        }
        let registered = EXIT.try_with(|guard| {
            let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
            let block = registry
                .pool
                .pop()
                .unwrap_or_else(|| Box::leak(Box::new(Counters::new())));
            registry.live.push(block);
            guard.0.set(Some(block));
            block
        });
        if let Ok(block) = registered {
            self.flush();
            self.counters.set(block);
            self.mark.set(block.read());
        }
    }

    fn seed(&self) {
        // Distinct per thread and per process; quality matters little (xorshift64*).
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let addr = std::ptr::from_ref(self) as u64;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = splitmix(n ^ addr.rotate_left(32) ^ time ^ u64::from(std::process::id()));
        self.rng.set(seed | 1);
    }

    /// An exponentially distributed interval with the mean in force, at least 1.
    fn draw(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let bits = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        // Uniform in (0, 1]: 53 random bits, never 0.
        let u = (bits as f64 + 1.0) / (1u64 << 53) as f64;
        let interval = -u.ln() * interval() as f64;
        (interval as u64).max(1)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Makes `owner` the thread's current owner, charging the counts made so far to the previous
/// one; returns the previous one.
pub(super) fn switch_owner(owner: u16) -> u16 {
    LOCAL.with(|l| {
        l.register();
        l.flush();
        l.owner.replace(owner)
    })
}

struct ExitGuard(Cell<Option<&'static Counters>>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let Some(block) = self.0.take() else {
            return;
        };
        // `LOCAL` has no destructor: it is still usable here. Charge the last period, move
        // the thread to BOOT, then fold and recycle the block.
        LOCAL.with(|l| {
            l.flush();
            l.counters.set(&BOOT);
            l.mark.set(BOOT.read());
        });
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        EXITED.add(block);
        for c in &block.0 {
            c.store(0, Ordering::Relaxed);
        }
        registry.live.retain(|b| !std::ptr::eq(*b, block));
        registry.pool.push(block);
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! Test access to this thread's state.
    use super::*;

    /// This thread's own counts (in the order of [`Counters`]).
    pub(crate) fn mine() -> [u64; COUNTS] {
        LOCAL.with(|l| {
            l.register();
            l.counters.get().read()
        })
    }

    /// Makes the next allocation of this thread sampled (or not).
    pub(crate) fn force_sample(next: bool) {
        LOCAL.with(|l| {
            l.register();
            if l.rng.get() == 0 {
                l.seed();
            }
            l.countdown.set(if next { 0 } else { u64::MAX });
        });
    }

    /// Back to random sampling.
    pub(crate) fn redraw() {
        LOCAL.with(|l| {
            if l.rng.get() == 0 {
                l.seed();
            }
            l.countdown.set(l.draw());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_average_the_sample_interval() {
        LOCAL.with(|l| {
            l.seed();
            let n = 100_000u64;
            let sum: u64 = (0..n).map(|_| l.draw()).sum();
            let mean = sum as f64 / n as f64;
            // Standard error of the mean: interval / sqrt(n) = 0.3%.
            assert!(
                (mean / interval() as f64 - 1.0).abs() < 0.02,
                "mean interval {mean}"
            );
        });
    }

    #[test]
    fn exited_threads_are_folded() {
        let before = totals();
        let handle = std::thread::spawn(|| {
            LOCAL.with(|l| {
                l.register();
                for _ in 0..1000 {
                    l.count_alloc((10, false));
                }
                l.count_free(10);
            });
            let live = totals();
            (
                live,
                std::ptr::from_ref(LOCAL.with(|l| l.counters.get())) as usize,
            )
        });
        let (live, block) = handle.join().unwrap();
        let after = totals();
        // Other tests of this process may count too: at least ours, and nothing lost at exit.
        assert!(live[OUTSIDE_ALLOCATIONS] - before[OUTSIDE_ALLOCATIONS] >= 1000);
        assert!(after[OUTSIDE_ALLOCATIONS] - before[OUTSIDE_ALLOCATIONS] >= 1000);
        assert!(after[OUTSIDE_ALLOCATED_BYTES] - before[OUTSIDE_ALLOCATED_BYTES] >= 10_000);
        assert!(after[OUTSIDE_FREES] > before[OUTSIDE_FREES]);
        let registry = REGISTRY.lock().unwrap();
        assert!(
            registry
                .pool
                .iter()
                .any(|b| std::ptr::from_ref(*b) as usize == block),
            "the block went back to the pool"
        );
        assert!(
            !registry
                .live
                .iter()
                .any(|b| std::ptr::from_ref(*b) as usize == block),
            "and is no longer folded as live"
        );
    }

    #[test]
    fn owner_switches_charge_exact_counts() {
        // Slot numbers private to this test (tests of this process share the slots).
        let (a, b) = (1021u16, 1022u16);
        let read = |s: u16| slot(s).read();
        let (a0, b0) = (read(a), read(b));
        let (a_freed, b_freed) = (
            slot(a).counts()[OUTSIDE_FREED_BYTES].load(Ordering::Relaxed),
            slot(b).counts()[OUTSIDE_FREED_BYTES].load(Ordering::Relaxed),
        );
        let outer = switch_owner(a);
        LOCAL.with(|l| {
            l.count_alloc((100, false));
            l.count_alloc((50, false));
        });
        let inner = switch_owner(b);
        assert_eq!(inner, a);
        LOCAL.with(|l| {
            l.count_alloc((7, false));
            l.count_free(10);
        });
        switch_owner(a);
        LOCAL.with(|l| l.count_free(3));
        switch_owner(outer);
        let (a1, b1) = (read(a), read(b));
        assert_eq!(a1.allocations - a0.allocations, 2);
        assert_eq!(a1.allocated_bytes - a0.allocated_bytes, 150);
        assert_eq!(a1.frees - a0.frees, 1);
        assert_eq!(b1.allocations - b0.allocations, 1);
        assert_eq!(b1.allocated_bytes - b0.allocated_bytes, 7);
        assert_eq!(b1.frees - b0.frees, 1);
        // Bytes freed outside the arenas, as counted.
        assert_eq!(
            slot(b).counts()[OUTSIDE_FREED_BYTES].load(Ordering::Relaxed) - b_freed,
            10
        );
        assert_eq!(
            slot(a).counts()[OUTSIDE_FREED_BYTES].load(Ordering::Relaxed) - a_freed,
            3
        );
    }
}
