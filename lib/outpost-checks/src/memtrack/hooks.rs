//! The allocator wrappers of the `MEM` and `OBJ` domains, and their installation.

use std::ffi::c_void;
use std::sync::atomic::Ordering;

use pyo3::ffi::{PyMemAllocatorDomain, PyMemAllocatorEx};

use super::INSTALLED;
use super::record::{lookup, record_alloc, record_free};
use super::table::MIN_REQUEST;

/// The allocator that was in place before ours, passed to the hooks as their context.
#[repr(transparent)]
pub(super) struct Underlying(pub(super) PyMemAllocatorEx);

pub(super) extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(malloc) = under.malloc else {
        return std::ptr::null_mut();
    };
    let p = malloc(under.ctx, size.max(MIN_REQUEST));
    if !p.is_null() {
        record_alloc(p, size);
    }
    p
}

pub(super) extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(calloc) = under.calloc else {
        return std::ptr::null_mut();
    };
    let size = nelem.checked_mul(elsize);
    let p = match size {
        Some(n) if n < MIN_REQUEST => calloc(under.ctx, 1, MIN_REQUEST),
        // An overflowing product is the underlying allocator's to refuse.
        _ => calloc(under.ctx, nelem, elsize),
    };
    if let (false, Some(n)) = (p.is_null(), size) {
        record_alloc(p, n);
    }
    p
}

pub(super) extern "C" fn hook_realloc(
    ctx: *mut c_void,
    ptr: *mut c_void,
    new_size: usize,
) -> *mut c_void {
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    let Some(realloc) = under.realloc else {
        return std::ptr::null_mut();
    };
    let (e, word) = if ptr.is_null() {
        (None, 0)
    } else {
        lookup(ptr)
    };
    let q = realloc(under.ctx, ptr, new_size.max(MIN_REQUEST));
    if q.is_null() {
        // The old block is untouched and keeps its entry.
        return q;
    }
    if !ptr.is_null() {
        record_free(ptr, e, word);
    }
    record_alloc(q, new_size);
    q
}

pub(super) extern "C" fn hook_free(ctx: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: ctx is the leaked `Underlying` installed with this hook.
    let under = unsafe { &(*ctx.cast::<Underlying>()).0 };
    // Bookkeeping first, while the block is still allocated (the GIL is held, so nobody can
    // free or reuse it meanwhile); the underlying free is then a tail call, with no frame of
    // ours left to restore.
    let (e, word) = lookup(ptr);
    record_free(ptr, e, word);
    if let Some(free) = under.free {
        free(under.ctx, ptr);
    }
}

/// Wraps the `MEM` and `OBJ` domains (once; later calls do nothing). Blocks allocated before
/// are untracked: their frees count as untracked frees.
///
/// # Safety
/// No other thread may use the `MEM`/`OBJ` allocators during the call: hold the GIL.
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
