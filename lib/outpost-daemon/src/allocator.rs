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
//! [`release_code_pages`] drops this process's page-table entries for the pages of its own
//! executable code (the binary's `r-xp` mappings). A daemon that installed a package, or
//! applied a fleet document, has touched the code of the registry client, TLS, the unpacker
//! and the hooks: clean pages of the binary, read from the page cache, that stay counted in
//! its resident set (about 4.5 MB over a just-started daemon) though an idle daemon never runs
//! them again. Dropping the mappings frees no page of the file (they stay in the page cache,
//! shared with any other process running the binary); the code an idle daemon does run comes
//! back on its next use, by a minor fault. Only mappings of the executable that hold no
//! anonymous (copied-on-write) page are touched, so nothing written can be lost. The fleet
//! poller calls it, with [`trim`], after a poll that changed something.
//!
//! Other allocators and C libraries: all three are no-ops.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    // SAFETY (for the declarations): these are glibc's `mallopt(3)` and `malloc_trim(3)`,
    // with their C signatures.
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
        fn madvise(addr: *mut std::ffi::c_void, length: usize, advice: c_int) -> c_int;
    }

    const MADV_DONTNEED: c_int = 4;

    const M_MMAP_THRESHOLD: c_int = -3;
    const M_ARENA_MAX: c_int = -8;

    pub(super) fn tune() -> bool {
        // SAFETY: mallopt only changes allocator parameters; any values are accepted or
        // refused (return 0) by glibc, with no effect on memory already allocated.
        unsafe { mallopt(M_ARENA_MAX, 2) == 1 && mallopt(M_MMAP_THRESHOLD, 256 << 10) == 1 }
    }

    /// `madvise(MADV_DONTNEED)` over `[start, end)`; true when the kernel took it.
    pub(super) fn drop_range(start: usize, end: usize) -> bool {
        // SAFETY: the range is a whole private, read-and-execute mapping of the executable
        // with no anonymous page (checked by the caller from /proc/self/smaps): every page is
        // the file's own content, which the kernel maps again from the page cache at the next
        // access. No memory the process wrote is discarded.
        unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_DONTNEED) == 0 }
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

/// Drops the page-table entries of the executable's code (see the module docs); returns the
/// bytes of the mappings released. Reads `/proc/self/smaps`; anything unexpected in it
/// (another format, an anonymous page in a code mapping) leaves that mapping alone.
pub fn release_code_pages() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(exe) = fs_err::read_link("/proc/self/exe") else {
            return 0;
        };
        let Ok(smaps) = fs_err::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let exe = exe.to_string_lossy();
        code_mappings(&smaps, &exe)
            .into_iter()
            .filter(|&(start, end)| glibc::drop_range(start, end))
            .map(|(start, end)| end - start)
            .sum()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// The `[start, end)` of each private read-and-execute mapping of `exe` in `smaps` whose
/// `Anonymous:` line says 0 kB.
fn code_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            current = (perms == "r-xp" && path == exe && start < end).then_some((start, end));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && fields.next() == Some("0")
        {
            found.push(range);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_clean_code_mappings_of_the_executable_are_chosen() {
        let smaps = "\
5555000-5556000 r--p 00000000 fe:01 12 /usr/bin/outpost
Rss:                   4 kB
Anonymous:             0 kB
5556000-5558000 r-xp 00001000 fe:01 12 /usr/bin/outpost
Rss:                   8 kB
Anonymous:             0 kB
5558000-5559000 r-xp 00003000 fe:01 12 /usr/bin/outpost
Anonymous:             4 kB
7f00000-7f01000 r-xp 00000000 fe:01 13 /usr/lib/libc.so.6
Anonymous:             0 kB
7f01000-7f02000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";
        assert_eq!(
            super::code_mappings(smaps, "/usr/bin/outpost"),
            vec![(0x555_6000, 0x555_8000)]
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn released_code_runs_again() {
        let before = super::release_code_pages();
        assert!(before > 0, "the test binary has code mappings");
        // The code of this very function, and of what it calls, faults back in.
        let sum: u64 = (1..=1000u64).map(|i| i * i).sum();
        assert_eq!(sum, 333_833_500);
        assert!(super::release_code_pages() > 0);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::tune());
    }
}
