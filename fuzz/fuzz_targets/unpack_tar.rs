//! Arbitrary bytes as a plain tar stream: the unpacker never panics, never writes outside its
//! destination, and never leaves a special file or an escaping symlink.
#![no_main]

#[path = "escape_check.rs"]
mod escape_check;

use libfuzzer_sys::fuzz_target;
use outpost_archive::{Cancel, Limits, unpack_tar};

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let dest = sandbox.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    let limits = Limits { max_total_bytes: 1 << 20, max_file_bytes: 256 << 10, max_entries: 256 };
    let _ = unpack_tar(data, &dest, &limits, &Cancel::default());
    escape_check::assert_contained(sandbox.path(), &dest);
});
