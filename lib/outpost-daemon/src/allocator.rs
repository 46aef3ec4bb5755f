//! Keeping the daemon small: glibc malloc settings and trimming.
//!
//! The daemon idles for hours between operations, so what matters is what it keeps after
//! one. Left alone, glibc gives each thread that allocates under contention an arena of its
//! own (up to eight per core), raises its mmap threshold each time a large block is freed (so
//! later large buffers, such as the decompressor's window, land in an arena and stay there),
//! and keeps freed memory in every arena. After an install that unpacked on a blocking
//! thread, megabytes of freed buffers stayed resident.
//!
//! [`tune`] (call it first thing, before threads start) caps the arenas at two and fixes the
//! mmap threshold at 256 KiB, so large buffers are mapped and unmapped whole. [`trim`] hands
//! freed memory back to the system; the daemon calls it after each garbage collection, that
//! is after every operation and on the GC timer, never on the request path.
//!
//! Other allocators and C libraries: both are no-ops.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    // SAFETY (for the declarations): these are glibc's `mallopt(3)` and `malloc_trim(3)`,
    // with their C signatures.
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    const M_MMAP_THRESHOLD: c_int = -3;
    const M_ARENA_MAX: c_int = -8;

    pub(super) fn tune() -> bool {
        // SAFETY: mallopt only changes allocator parameters; any values are accepted or
        // refused (return 0) by glibc, with no effect on memory already allocated.
        unsafe { mallopt(M_ARENA_MAX, 2) == 1 && mallopt(M_MMAP_THRESHOLD, 256 << 10) == 1 }
    }

    pub(super) fn trim() {
        // SAFETY: malloc_trim releases free memory of the allocator's own arenas; it is
        // thread-safe and touches no live allocation.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Caps malloc arenas at two and fixes the mmap threshold at 256 KiB (see the module docs).
/// Call before the runtime starts its threads. Returns whether the allocator took the
/// settings (false on other C libraries).
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::tune()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns freed heap memory to the system (see the module docs).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::tune());
    }
}
