//! The `PyMem_SetAllocator` hooks of the `MEM` and `OBJ` domains that do without block
//! sizes, and the installation of every set of hooks (those with sizes are in
//! [`super::exact`]).
//!
//! Without sizes every allocation counts its requested size and every free is counted (a
//! free checks the sampled region, then adds one to the thread's frees). Only sampled blocks
//! (about one per sampling interval of bytes allocated) take the out-of-line paths.
//!
//! Semantics kept from the underlying allocator: `malloc(0)` and `realloc(p, 0)` return a
//! unique pointer; `free(NULL)` does nothing; a failed `realloc` leaves the block untouched;
//! `calloc` overflow is the underlying allocator's to refuse. A `realloc` is counted as the
//! free of the old block plus the allocation of the new one.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use pyo3::ffi::{PyMemAllocatorDomain, PyMemAllocatorEx};

use super::{EXACT, INSTALLED, arena, exact, local, sampled};

/// The allocator that was in place before ours, passed to the hooks as their context: its
/// functions, a missing one replaced by one that fails (a null block, a free that does
/// nothing), so that the hooks call them without a check.
pub(super) struct Underlying {
    pub(super) ctx: *mut c_void,
    pub(super) malloc: Malloc,
    pub(super) calloc: Calloc,
    pub(super) realloc: Realloc,
    pub(super) free: Free,
}

extern "C" fn no_malloc(_: *mut c_void, _: usize) -> *mut c_void {
    std::ptr::null_mut()
}
extern "C" fn no_calloc(_: *mut c_void, _: usize, _: usize) -> *mut c_void {
    std::ptr::null_mut()
}
extern "C" fn no_realloc(_: *mut c_void, _: *mut c_void, _: usize) -> *mut c_void {
    std::ptr::null_mut()
}
extern "C" fn no_free(_: *mut c_void, _: *mut c_void) {}

impl Underlying {
    fn new(a: &PyMemAllocatorEx) -> Self {
        Self {
            ctx: a.ctx,
            malloc: a.malloc.unwrap_or(no_malloc),
            calloc: a.calloc.unwrap_or(no_calloc),
            realloc: a.realloc.unwrap_or(no_realloc),
            free: a.free.unwrap_or(no_free),
        }
    }

    /// As the C API has it.
    fn allocator(&self) -> PyMemAllocatorEx {
        PyMemAllocatorEx {
            ctx: self.ctx,
            malloc: Some(self.malloc),
            calloc: Some(self.calloc),
            realloc: Some(self.realloc),
            free: Some(self.free),
        }
    }
}

/// # Safety
/// `ctx` is the context installed with the hooks: a leaked `Underlying`.
#[inline(always)]
pub(super) unsafe fn underlying<'a>(ctx: *mut c_void) -> &'a Underlying {
    // SAFETY: per the contract; leaked, so valid for the rest of the process.
    unsafe { &*ctx.cast::<Underlying>() }
}

extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    if local::with(|l| l.sample(size)) {
        return malloc_sampled(ctx, size);
    }
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    let p = (under.malloc)(under.ctx, size);
    if !p.is_null() {
        local::with(|l| l.count_alloc((size, false)));
    }
    p
}

/// A `malloc` that the sampling countdown picked.
#[cold]
#[inline(never)]
extern "C" fn malloc_sampled(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    local::with(|l| {
        let p = sampled_alloc(under, size, l.owner(), false);
        if !p.is_null() {
            l.count_alloc((size, false));
        }
        p
    })
}

extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    let Some(size) = nelem.checked_mul(elsize) else {
        // An overflowing product is the underlying allocator's to refuse.
        return (under.calloc)(under.ctx, nelem, elsize);
    };
    local::with(|l| {
        let p = if l.sample(size) {
            sampled_alloc(under, size, l.owner(), true)
        } else {
            (under.calloc)(under.ctx, nelem, elsize)
        };
        if !p.is_null() {
            l.count_alloc((size, false));
        }
        p
    })
}

extern "C" fn hook_realloc(ctx: *mut c_void, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    if sampled::contains(ptr) {
        // SAFETY: `ptr` is in the sampled region, so it is a live sampled block (Python only
        // reallocates live blocks of this domain).
        return unsafe { realloc_sampled(under, ptr, new_size) };
    }
    local::with(|l| {
        let sample = l.sample(new_size);
        if sample && super::refuse(l.owner(), new_size) {
            // The old block is untouched, as after any failed realloc.
            return std::ptr::null_mut();
        }
        let q = (under.realloc)(under.ctx, ptr, new_size);
        if q.is_null() {
            // The old block is untouched.
            return q;
        }
        if !ptr.is_null() {
            l.count_free(0);
        }
        if sample {
            // Move the block into the sampled region; keep it where it is if that fails.
            let s = sampled::alloc(new_size, l.owner(), false);
            if !s.is_null() {
                // SAFETY: `q` holds `new_size` bytes, `s` has room for them; distinct blocks.
                unsafe { std::ptr::copy_nonoverlapping(q.cast::<u8>(), s.cast::<u8>(), new_size) };
                (under.free)(under.ctx, q);
                l.count_alloc((new_size, false));
                return s;
            }
        }
        l.count_alloc((new_size, false));
        q
    })
}

/// Every free is counted; a sampled block's gives its size back to its owner.
extern "C" fn hook_free(ctx: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    if sampled::contains(ptr) {
        // SAFETY: `ptr` is in the sampled region, so it is a live sampled block, freed once.
        unsafe { free_sampled(ptr) };
        return;
    }
    local::with(|l| l.count_free(0));
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    (under.free)(under.ctx, ptr);
}

/// Frees a sampled block, counting its size.
///
/// # Safety
/// `ptr` is a live sampled block, not used afterwards.
#[cold]
#[inline(never)]
pub(super) unsafe fn free_sampled(ptr: *mut c_void) {
    // SAFETY: per the contract.
    unsafe {
        let size = sampled::size_of(ptr);
        local::with(|l| l.count_free(size));
        sampled::free(ptr);
    }
}

/// A sampled block, or an unsampled one from the underlying allocator when the region is
/// full.
#[cold]
#[inline(never)]
fn sampled_alloc(under: &Underlying, size: usize, owner: u16, zeroed: bool) -> *mut c_void {
    if super::refuse(owner, size) {
        return std::ptr::null_mut();
    }
    let p = sampled::alloc(size, owner, zeroed);
    if !p.is_null() {
        return p;
    }
    if zeroed {
        (under.calloc)(under.ctx, 1, size)
    } else {
        (under.malloc)(under.ctx, size)
    }
}

/// `realloc` of a sampled block: a new block (sampled or not, as any allocation), the data
/// copied, the old block freed.
///
/// # Safety
/// `ptr` is a live sampled block.
#[cold]
#[inline(never)]
unsafe fn realloc_sampled(under: &Underlying, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    local::with(|l| {
        let q = if l.sample(new_size) {
            sampled_alloc(under, new_size, l.owner(), false)
        } else {
            (under.malloc)(under.ctx, new_size)
        };
        if q.is_null() {
            return q;
        }
        // SAFETY: `ptr` is a live sampled block (contract) of `old` bytes; `q` is a distinct
        // block of at least `new_size` bytes.
        let old = unsafe {
            let old = sampled::size_of(ptr);
            std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), q.cast::<u8>(), old.min(new_size));
            sampled::free(ptr);
            old
        };
        l.count_free(old);
        l.count_alloc((new_size, false));
        q
    })
}

extern "C" fn forward_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    (under.malloc)(under.ctx, size)
}

extern "C" fn forward_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    (under.calloc)(under.ctx, nelem, elsize)
}

extern "C" fn forward_realloc(ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    (under.realloc)(under.ctx, ptr, size)
}

extern "C" fn forward_free(ctx: *mut c_void, ptr: *mut c_void) {
    // SAFETY: the hooks are only installed with an `Underlying` context.
    let under = unsafe { underlying(ctx) };
    (under.free)(under.ctx, ptr);
}

pub(super) type Malloc = extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub(super) type Calloc = extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
pub(super) type Realloc = extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void;
pub(super) type Free = extern "C" fn(*mut c_void, *mut c_void);

/// The four functions of one set of hooks.
type Hooks = (Malloc, Calloc, Realloc, Free);

const DOMAINS: [PyMemAllocatorDomain; 2] = [
    PyMemAllocatorDomain::PYMEM_DOMAIN_MEM,
    PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ,
];

/// The hooks that do without block sizes.
fn hooks() -> Hooks {
    (hook_malloc, hook_calloc, hook_realloc, hook_free)
}

/// The contexts of the tracking hooks (`MEM`, `OBJ`): each domain's previous allocator.
static CONTEXTS: [AtomicPtr<c_void>; 2] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 2];

/// Installs `hooks` on the `MEM` and `OBJ` domains, with `contexts` (or, for `None`, each
/// domain's current allocator) as their contexts; returns the contexts.
///
/// # Safety
/// No other thread may use the `MEM`/`OBJ` allocators during the call: hold the GIL, or
/// call before the interpreter starts. Given contexts wrap the domains' allocators.
unsafe fn set_hooks(hooks: Hooks, contexts: Option<[*mut c_void; 2]>) -> [*mut c_void; 2] {
    let (malloc, calloc, realloc, free) = hooks;
    let mut installed = [std::ptr::null_mut(); 2];
    for (i, domain) in DOMAINS.into_iter().enumerate() {
        let ctx = match contexts {
            Some(c) => c[i],
            None => {
                let mut old = PyMemAllocatorEx {
                    ctx: std::ptr::null_mut(),
                    malloc: None,
                    calloc: None,
                    realloc: None,
                    free: None,
                };
                // SAFETY: valid out-pointer; no concurrent allocator use (contract).
                unsafe { pyo3::ffi::PyMem_GetAllocator(domain, &mut old) };
                let ctx: *mut Underlying = Box::leak(Box::new(Underlying::new(&old)));
                ctx.cast()
            }
        };
        installed[i] = ctx;
        let mut hooks = PyMemAllocatorEx {
            ctx,
            malloc: Some(malloc),
            calloc: Some(calloc),
            realloc: Some(realloc),
            free: Some(free),
        };
        // SAFETY: as above; the context lives for the rest of the process.
        unsafe { pyo3::ffi::PyMem_SetAllocator(domain, &mut hooks) };
    }
    installed
}

/// Wraps the `MEM` and `OBJ` domains with hooks that only forward (the floor of any
/// `PyMem_SetAllocator` wrapper, for benchmarks); does nothing when tracking is installed.
/// Counts nothing: [`super::snapshot`] keeps reporting tracking as disabled.
pub fn install_forwarding_only(_py: pyo3::Python<'_>) {
    static FORWARDING: AtomicBool = AtomicBool::new(false);
    if INSTALLED.load(Ordering::SeqCst) || FORWARDING.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: the GIL is held (the token), so no other thread uses the allocators.
    unsafe {
        set_hooks(
            (
                forward_malloc,
                forward_calloc,
                forward_realloc,
                forward_free,
            ),
            None,
        );
    }
}

/// Whether the environment leaves pymalloc with its usual layout: no debug hooks
/// (`PYTHONMALLOC`, `PYTHONDEVMODE`, a debug build) and no other allocator. [`confirm`]
/// verifies it once the interpreter runs.
fn pymalloc_expected() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let allocator_ok = std::env::var_os("PYTHONMALLOC")
        .is_none_or(|v| v.is_empty() || v.as_encoded_bytes() == b"pymalloc");
    allocator_ok && !set("PYTHONDEVMODE") && !cfg!(py_sys_config = "Py_DEBUG")
}

/// Wraps the `MEM` and `OBJ` domains (once; later calls do nothing), before the interpreter
/// starts, so that no block of these domains predates the hooks. When pymalloc is expected
/// with its usual layout, it also takes pymalloc's arenas ([`arena`]) and installs the hooks
/// that count exact sizes, which [`confirm`] verifies. Not installed (and reported as
/// disabled) on a free-threaded build or when the sampled region cannot be reserved.
///
/// # Safety
/// After `Py_PreInitialize` and before `Py_InitializeFromConfig`, with no other thread
/// using the Python API.
pub(crate) unsafe fn install() {
    if cfg!(Py_GIL_DISABLED) || INSTALLED.load(Ordering::SeqCst) {
        return;
    }
    if !sampled::reserve() {
        tracing::warn!(
            "memory tracking is off: no address space could be reserved for sampled blocks"
        );
        return;
    }
    // SAFETY: before the interpreter starts (contract): no arena exists yet.
    let exact = pymalloc_expected() && unsafe { arena::take_arenas() };
    // The domains' allocators, each wrapped in a context for the hooks without sizes.
    let mut old = [const { empty_allocator() }; 2];
    for (o, domain) in old.iter_mut().zip(DOMAINS) {
        // SAFETY: valid out-pointer; no concurrent allocator use (contract).
        unsafe { pyo3::ffi::PyMem_GetAllocator(domain, o) };
    }
    let contexts = old.each_ref().map(|o| {
        let ctx: *mut Underlying = Box::leak(Box::new(Underlying::new(o)));
        ctx.cast::<c_void>()
    });
    // The exact hooks call pymalloc's functions for both domains with each domain's context.
    let addresses = |o: &PyMemAllocatorEx| {
        [
            o.malloc.map(|f| f as usize),
            o.calloc.map(|f| f as usize),
            o.realloc.map(|f| f as usize),
            o.free.map(|f| f as usize),
        ]
    };
    let same = addresses(&old[0]) == addresses(&old[1]) && old[0].free.is_some();
    let exact = exact && same;
    INSTALLED.store(true, Ordering::SeqCst);
    EXACT.store(exact, Ordering::SeqCst);
    for (slot, ctx) in CONTEXTS.iter().zip(contexts) {
        slot.store(ctx, Ordering::SeqCst);
    }
    if !exact {
        // SAFETY: no concurrent allocator use (contract); the contexts wrap the domains'.
        unsafe { set_hooks(hooks(), Some(contexts)) };
        return;
    }
    // SAFETY: `contexts[1]` is the OBJ domain's, just leaked.
    exact::set_pymalloc(unsafe { underlying(contexts[1]) });
    // SAFETY: no concurrent allocator use (contract).
    unsafe {
        let mut raw = empty_allocator();
        pyo3::ffi::PyMem_GetAllocator(PyMemAllocatorDomain::PYMEM_DOMAIN_RAW, &mut raw);
        let ctx: *mut Underlying = Box::leak(Box::new(Underlying::new(&raw)));
        let mut hooks = PyMemAllocatorEx {
            ctx: ctx.cast(),
            malloc: Some(exact::raw_malloc),
            calloc: Some(exact::raw_calloc),
            realloc: Some(exact::raw_realloc),
            free: Some(exact::raw_free),
        };
        pyo3::ffi::PyMem_SetAllocator(PyMemAllocatorDomain::PYMEM_DOMAIN_RAW, &mut hooks);
        for (o, domain) in old.iter().zip(DOMAINS) {
            // pymalloc's own context and free: a free reaches pymalloc with no hook.
            let mut hooks = PyMemAllocatorEx {
                ctx: o.ctx,
                malloc: Some(exact::malloc),
                calloc: Some(exact::calloc),
                realloc: Some(exact::realloc),
                free: o.free,
            };
            pyo3::ffi::PyMem_SetAllocator(domain, &mut hooks);
        }
    }
}

const fn empty_allocator() -> PyMemAllocatorEx {
    PyMemAllocatorEx {
        ctx: std::ptr::null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    }
}

/// Verifies, once the interpreter runs, the layout the exact hooks read; if it does not
/// hold, puts the hooks that do without block sizes in their place (same contexts).
///
/// # Safety
/// The GIL is held.
pub(crate) unsafe fn confirm() {
    if !EXACT.load(Ordering::SeqCst) {
        return;
    }
    let obj = CONTEXTS[1].load(Ordering::SeqCst);
    // SAFETY: the OBJ context installed by `install`, a leaked `Underlying`; the GIL is held.
    if unsafe { arena::verify(&underlying(obj).allocator()) } {
        return;
    }
    tracing::warn!(
        "memory tracking cannot read block sizes of this interpreter's allocator: \
         FreedBytes and InuseBytes are estimates"
    );
    EXACT.store(false, Ordering::SeqCst);
    let contexts = CONTEXTS.each_ref().map(|c| c.load(Ordering::SeqCst));
    // SAFETY: the GIL is held; the contexts wrap the domains' allocators (pymalloc's).
    unsafe { set_hooks(hooks(), Some(contexts)) };
}

#[cfg(test)]
pub(super) mod testing {
    //! An `Underlying` over the C library's allocator, for the hooks' unit tests (the `RAW`
    //! hooks read the eight bytes before a block, where `malloc` keeps its chunk's size).
    use super::*;

    unsafe extern "C" {
        #[link_name = "malloc"]
        fn c_malloc(size: usize) -> *mut c_void;
        #[link_name = "calloc"]
        fn c_calloc(nelem: usize, elsize: usize) -> *mut c_void;
        #[link_name = "realloc"]
        fn c_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        #[link_name = "free"]
        fn c_free(ptr: *mut c_void);
    }
    extern "C" fn sys_malloc(_: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: the C library's malloc.
        unsafe { c_malloc(size.max(1)) }
    }
    extern "C" fn sys_calloc(_: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
        // SAFETY: the C library's calloc (it refuses an overflowing product).
        unsafe { c_calloc(nelem.max(1), elsize.max(1)) }
    }
    extern "C" fn sys_realloc(_: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: a block of the C library's allocator (the callers').
        unsafe { c_realloc(ptr, size.max(1)) }
    }
    extern "C" fn sys_free(_: *mut c_void, ptr: *mut c_void) {
        // SAFETY: a block of the C library's allocator (the callers').
        unsafe { c_free(ptr) }
    }

    /// A hooks' context over the C library's allocator (the sampled region reserved).
    pub(crate) fn ctx() -> *mut c_void {
        assert!(sampled::reserve());
        let u = Box::leak(Box::new(Underlying {
            ctx: std::ptr::null_mut(),
            malloc: sys_malloc,
            calloc: sys_calloc,
            realloc: sys_realloc,
            free: sys_free,
        }));
        (u as *mut Underlying).cast()
    }
}

#[cfg(test)]
mod tests {
    //! The hooks over the C library's allocator ([`testing::ctx`]), so they are tested
    //! without an interpreter; the runtime tests check attribution under Python.
    use super::super::slot;
    use super::testing::ctx;
    use super::*;
    use crate::memtrack::local::testing::{force_sample, mine, redraw};
    use crate::memtrack::local::{
        ARENA_ALLOCATED_BYTES, ARENA_ALLOCATIONS, OUTSIDE_ALLOCATED_BYTES, OUTSIDE_ALLOCATIONS,
        OUTSIDE_FREES,
    };

    fn fill(p: *mut c_void, n: usize, byte: u8) {
        // SAFETY: callers pass blocks of at least `n` bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), byte, n) }
    }
    fn all(p: *mut c_void, n: usize, byte: u8) -> bool {
        // SAFETY: callers pass blocks of at least `n` bytes.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) }
            .iter()
            .all(|b| *b == byte)
    }

    /// Runs `f` with `owner` as this thread's owner.
    fn as_owner<R>(owner: u16, f: impl FnOnce() -> R) -> R {
        let previous = local::switch_owner(owner);
        let r = f();
        local::switch_owner(previous);
        r
    }

    #[test]
    fn counts_are_exact_for_every_call() {
        let ctx = ctx();
        force_sample(false);
        let before = mine();
        let p = hook_malloc(ctx, 100);
        fill(p, 100, 0xab);
        let z = hook_calloc(ctx, 4, 8);
        assert!(all(z, 32, 0));
        let p2 = hook_realloc(ctx, p, 1000);
        assert!(all(p2, 100, 0xab), "realloc keeps the data");
        let fresh = hook_realloc(ctx, std::ptr::null_mut(), 24);
        let empty = hook_malloc(ctx, 0);
        assert!(!empty.is_null());
        hook_free(ctx, std::ptr::null_mut());
        for b in [p2, z, fresh, empty] {
            hook_free(ctx, b);
        }
        let after = mine();
        // Without sizes every block is counted as outside the arenas.
        let delta = |i: usize| after[i] - before[i];
        assert_eq!(
            delta(OUTSIDE_ALLOCATIONS),
            5,
            "malloc, calloc, two reallocs, malloc(0)"
        );
        assert_eq!(
            delta(OUTSIDE_FREES),
            5,
            "realloc's free and four frees, not free(NULL)"
        );
        assert_eq!(delta(OUTSIDE_ALLOCATED_BYTES), 100 + 32 + 1000 + 24);
        assert_eq!(
            [delta(ARENA_ALLOCATIONS), delta(ARENA_ALLOCATED_BYTES)],
            [0, 0]
        );
        redraw();
    }

    #[test]
    fn failed_allocations_are_not_counted() {
        let ctx = ctx();
        force_sample(false);
        let before = mine();
        assert!(hook_malloc(ctx, usize::MAX - 4).is_null());
        assert!(hook_calloc(ctx, usize::MAX, 2).is_null());
        let p = hook_malloc(ctx, 8);
        assert!(hook_realloc(ctx, p, usize::MAX - 4).is_null());
        hook_free(ctx, p);
        let after = mine();
        let delta = |i: usize| after[i] - before[i];
        assert_eq!([delta(OUTSIDE_ALLOCATIONS), delta(OUTSIDE_FREES)], [1, 1]);
        assert_eq!(delta(OUTSIDE_ALLOCATED_BYTES), 8);
        redraw();
    }

    #[test]
    fn sampled_blocks_live_in_the_region_and_keep_their_data() {
        let ctx = ctx();
        let owner = 1001u16;
        let s0 = slot(owner).read();
        as_owner(owner, || {
            // malloc, sampled.
            force_sample(true);
            let a = hook_malloc(ctx, 300);
            assert!(sampled::contains(a));
            assert_eq!(a as usize % 16, 0, "16-byte aligned");
            fill(a, 300, 7);
            // Grows into an unsampled block: data kept, weight returned.
            force_sample(false);
            let b = hook_realloc(ctx, a, 5000);
            assert!(!sampled::contains(b));
            assert!(all(b, 300, 7));
            assert_eq!(slot(owner).read().inuse_bytes, s0.inuse_bytes);
            // An unsampled block moves into the region when its realloc is sampled.
            fill(b, 5000, 9);
            force_sample(true);
            let c = hook_realloc(ctx, b, 6000);
            assert!(sampled::contains(c));
            assert!(all(c, 5000, 9));
            assert_eq!(
                slot(owner).read().inuse_bytes - s0.inuse_bytes,
                sampled::weight(6000)
            );
            // Sampled to sampled, shrinking.
            force_sample(true);
            let d = hook_realloc(ctx, c, 100);
            assert!(sampled::contains(d));
            assert!(all(d, 100, 9));
            // calloc, sampled: zeroed even on a reused (dirty) slot.
            force_sample(true);
            let e = hook_calloc(ctx, 10, 40);
            assert!(sampled::contains(e));
            assert!(all(e, 400, 0));
            assert_eq!(
                slot(owner).read().inuse_bytes - s0.inuse_bytes,
                sampled::weight(100) + sampled::weight(400)
            );
            force_sample(false);
            hook_free(ctx, d);
            hook_free(ctx, e);
        });
        let s1 = slot(owner).read();
        assert_eq!(s1.inuse_bytes, s0.inuse_bytes, "every sample freed");
        assert_eq!(
            slot(owner).live_samples.load(Ordering::Relaxed),
            0,
            "the slot could be reused"
        );
        assert_eq!(s1.allocations - s0.allocations, 5);
        assert_eq!(s1.frees - s0.frees, 5);
        redraw();
    }

    #[test]
    fn a_check_keeping_50_mb_is_estimated_within_10_percent() {
        let ctx = ctx();
        let owner = 1002u16;
        // A finer interval than the default, where 10% on small blocks is 4 standard errors
        // (each sample keeps its weight: tests running meanwhile stay unbiased).
        super::super::set_interval(32 * 1024);
        redraw();
        let s0 = slot(owner).read();
        let mb50 = 50_000_000usize;
        // One large buffer, and the same amount in 1 KiB blocks (the hard case for
        // sampling: about 1,500 samples, standard error 2.6%, 10% is 3.9 of them).
        let (big, small) = as_owner(owner, || {
            let big = hook_calloc(ctx, 1, mb50);
            let after_big = slot(owner).read().inuse_bytes - s0.inuse_bytes;
            assert!(
                after_big.abs_diff(mb50 as u64) < mb50 as u64 / 10,
                "{after_big}"
            );
            let small: Vec<_> = (0..mb50 / 1024).map(|_| hook_malloc(ctx, 1024)).collect();
            (big, small)
        });
        let est = slot(owner).read().inuse_bytes - s0.inuse_bytes;
        let kept = 2 * mb50 as u64;
        assert!(
            est.abs_diff(kept) < kept / 10,
            "estimate {est} for {kept} kept"
        );
        // Freed from another thread: credited to the owner, back to the baseline exactly.
        let addrs: Vec<usize> = small
            .iter()
            .map(|p| *p as usize)
            .chain([big as usize])
            .collect();
        let ctx = ctx as usize;
        std::thread::spawn(move || {
            for a in addrs {
                hook_free(ctx as *mut c_void, a as *mut c_void);
            }
        })
        .join()
        .unwrap();
        assert_eq!(slot(owner).read().inuse_bytes, s0.inuse_bytes);
        assert_eq!(slot(owner).live_samples.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn two_threads_with_two_owners_are_told_apart() {
        let ctx = ctx() as usize;
        let (a, b) = (1003u16, 1004u16);
        let (a0, b0) = (slot(a).read().inuse_bytes, slot(b).read().inuse_bytes);
        let n0 = slot(a).read().allocations;
        let run = move |owner: u16, blocks: usize| {
            std::thread::spawn(move || {
                as_owner(owner, || {
                    (0..blocks)
                        .map(|_| hook_malloc(ctx as *mut c_void, 64 * 1024) as usize)
                        .collect::<Vec<_>>()
                })
            })
        };
        // 40 MB and 20 MB in 64 KiB blocks, at the 32 KiB interval (sampled with probability
        // 0.86: standard errors of 2%).
        super::super::set_interval(32 * 1024);
        let (ha, hb) = (run(a, 640), run(b, 320));
        let (ka, kb) = (ha.join().unwrap(), hb.join().unwrap());
        let ea = slot(a).read().inuse_bytes - a0;
        let eb = slot(b).read().inuse_bytes - b0;
        let (ta, tb) = (640 * 64 * 1024u64, 320 * 64 * 1024u64);
        assert!(ea.abs_diff(ta) < ta / 10, "a: {ea} for {ta}");
        assert!(eb.abs_diff(tb) < tb / 10, "b: {eb} for {tb}");
        assert_eq!(slot(a).read().allocations - n0, 640, "exact, per owner");
        for p in ka.into_iter().chain(kb) {
            hook_free(ctx as *mut c_void, p as *mut c_void);
        }
        assert_eq!(slot(a).read().inuse_bytes, a0);
        assert_eq!(slot(b).read().inuse_bytes, b0);
    }
}
