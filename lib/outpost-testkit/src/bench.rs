//! What the unpack and registry benchmarks share: text-like data, scratch directories, and the
//! alternating-median ratio they print.
// Test support: a fixture that cannot be built fails the test that asked for it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::noise;

/// Text-like data: words drawn at random from a small vocabulary (compresses about 3:1).
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "package",
        "version",
        "stable",
        "experiment",
        "agent",
        "check",
        "metric",
        "host",
        "the",
        "of",
        "and",
        "install",
        "digest",
        "layer",
        "index",
        "manifest",
    ];
    let noise = noise(len / 4 + 8, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[usize::from(noise[i % noise.len()] & 15)].as_bytes());
        out.push(if noise[(i + 1) % noise.len()] < 24 {
            b'\n'
        } else {
            b' '
        });
        i += 2;
    }
    out.truncate(len);
    out
}

/// A new empty directory under `root`, removed when dropped.
pub fn fresh_dir(root: &Path) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dest-")
        .tempdir_in(root)
        .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prints and returns the ratio of the medians of two sides timed alternately.
pub fn print_ratio(label: &str, ours: Vec<Duration>, theirs: Vec<Duration>) -> f64 {
    let rounds = ours.len();
    let (ma, mb) = (median(ours), median(theirs));
    let ratio = ma.as_secs_f64() / mb.as_secs_f64();
    println!(
        "ratio {label}: ours {:.1} ms / theirs {:.1} ms = {ratio:.3} (median of {rounds}, alternating)",
        ma.as_secs_f64() * 1e3,
        mb.as_secs_f64() * 1e3
    );
    ratio
}

/// The peak resident set (`VmHWM`, KiB) from the text of `/proc/<pid>/status`.
pub fn vm_hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status:?}"))
}
