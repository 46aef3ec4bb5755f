//! Arbitrary bytes as a (possibly compressed) tarball with a digest: the digest check and the
//! decompressors never panic, and a failed unpack is reported, never half-trusted.
#![no_main]

#[path = "escape_check.rs"]
mod escape_check;

use libfuzzer_sys::fuzz_target;
use outpost_archive::{Cancel, Expected, Limits, NoProgress, unpack_tarball};

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let dest = sandbox.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    let limits = Limits { max_total_bytes: 1 << 20, max_file_bytes: 256 << 10, max_entries: 256 };
    // A digest that never matches: whatever the archive holds, the result must be an error.
    let expect = Expected::sha256(&"0".repeat(64), None).expect("valid hex");
    let result = unpack_tarball(data, &expect, &dest, &limits, &Cancel::default(), &NoProgress);
    assert!(result.is_err(), "a wrong digest was accepted");
    escape_check::assert_contained(sandbox.path(), &dest);
});
