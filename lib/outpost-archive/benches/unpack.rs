//! Unpacking speed and memory.
//!
//! - `unpack/{tar.gz,tar.zst}/{ours,theirs}`: a 200 MB tarball of incompressible data
//!   (four 50 MB files of random bytes), unpacked by `unpack_tarball_file` (digest checked in
//!   the same pass) and by `sha256sum -c` followed by `tar -xzf` / `zstd -dc | tar -x`.
//! - After the criterion groups, the two sides are run alternately a few more times and the
//!   ratio of their medians is printed, so it comes from one run under one load.
//! - `inflate/{random,text}`: gzip decompression alone (flate2, whichever backend the build
//!   selected), of the random tarball and of a compressible one, to compare backends.
//! - Peak memory: a child process (this binary, re-executed) unpacks a 1 GB tarball of each
//!   kind and reports its `VmHWM`.
//!
//! Without `--bench` (as `cargo test --benches` runs it) everything runs once on small
//! inputs, as a smoke test.

// A benchmark harness: any failed step is a failed run.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use outpost_archive::{Cancel, Digest, Expected, Limits, NoProgress, unpack_tarball_file};

use outpost_testkit::bench::{fresh_dir, print_ratio, text_bytes, vm_hwm_kib};
use outpost_testkit::noise;

const CHILD_ENV: &str = "OUTPOST_BENCH_UNPACK_CHILD";

fn gzip_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let out = fs_err::File::create(&path).unwrap();
    let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap();
    path
}

fn inflate(path: &Path) -> u64 {
    let file = std::io::BufReader::with_capacity(1 << 20, fs_err::File::open(path).unwrap());
    let mut d = flate2::bufread::MultiGzDecoder::new(file);
    std::io::copy(&mut d, &mut std::io::sink()).unwrap()
}

struct Tarball {
    path: PathBuf,
    expect: Expected,
    /// A `sha256sum -c` input for the file.
    check_file: PathBuf,
}

/// Writes `files` random files of `each` bytes as a tar, then as .tar.gz and .tar.zst.
fn make_tarballs(dir: &Path, files: usize, each: usize) -> (Tarball, Tarball) {
    let tar_path = dir.join("payload.tar");
    {
        let out = std::io::BufWriter::new(fs_err::File::create(&tar_path).unwrap());
        let mut b = tar::Builder::new(out);
        for i in 0..files {
            let data = noise(each, i as u64 + 1);
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("data/blob-{i}.bin"), &data[..])
                .unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
    }
    let gz = dir.join("payload.tar.gz");
    {
        let mut src = fs_err::File::open(&tar_path).unwrap();
        let out = fs_err::File::create(&gz).unwrap();
        let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut src, &mut e).unwrap();
        e.finish().unwrap();
    }
    let zst = dir.join("payload.tar.zst");
    {
        let mut src = fs_err::File::open(&tar_path).unwrap();
        let out = fs_err::File::create(&zst).unwrap();
        zstd::stream::copy_encode(&mut src, out, 3).unwrap();
    }
    fs_err::remove_file(&tar_path).unwrap();
    (describe(gz), describe(zst))
}

fn describe(path: PathBuf) -> Tarball {
    let data = fs_err::read(&path).unwrap();
    let digest = Digest::of(&data);
    let check_file = path.with_extension("sha256");
    fs_err::write(
        &check_file,
        format!("{}  {}\n", digest.hex(), path.display()),
    )
    .unwrap();
    Tarball {
        expect: Expected {
            digest,
            size: Some(data.len() as u64),
        },
        path,
        check_file,
    }
}

fn ours(t: &Tarball, dest: &Path) {
    let stats = unpack_tarball_file(
        &t.path,
        &t.expect,
        dest,
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
    .unwrap();
    assert!(stats.files > 0);
}

fn theirs(t: &Tarball, dest: &Path) {
    let extract = if t.path.extension().is_some_and(|e| e == "gz") {
        format!("tar -xzf '{}' -C '{}'", t.path.display(), dest.display())
    } else {
        format!(
            "zstd -dcq '{}' | tar -x -C '{}'",
            t.path.display(),
            dest.display()
        )
    };
    let script = format!(
        "sha256sum -c --status '{}' && {extract}",
        t.check_file.display()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(status.success(), "{script}");
}

/// Runs both sides alternately and prints the ratio of the medians.
fn ratio_report(label: &str, t: &Tarball, root: &Path, rounds: usize) -> f64 {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (side, times) in [(true, &mut a), (false, &mut b)] {
            let dest = fresh_dir(root);
            let start = Instant::now();
            if side {
                ours(t, dest.path());
            } else {
                theirs(t, dest.path());
            }
            times.push(start.elapsed());
        }
    }
    print_ratio(label, a, b)
}

/// The child side of the memory measurement: unpack, then print the peak RSS.
fn child() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, dest, hex, size] = &args[..] else {
        panic!("usage: FILE DEST SHA256 SIZE")
    };
    let expect = Expected::sha256(hex, Some(size.parse().unwrap())).unwrap();
    unpack_tarball_file(
        Path::new(file),
        &expect,
        Path::new(dest),
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
    .unwrap();
    println!(
        "{}",
        vm_hwm_kib(&fs_err::read_to_string("/proc/self/status").unwrap())
    );
}

/// Peak RSS in KiB of a child process unpacking `t`.
fn peak_rss(t: &Tarball, root: &Path) -> u64 {
    let dest = fresh_dir(root);
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .arg(&t.path)
        .arg(dest.path())
        .arg(t.expect.digest.hex())
        .arg(t.expect.size.unwrap().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("child printed {text:?}, not a size in KiB: {e}"))
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    // A criterion filter (`cargo bench --bench unpack -- tar.gz`) also selects which of the
    // ratio and memory reports run (`rss` for the memory one).
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-")
        .tempdir()
        .unwrap();
    let (files, each) = if benching {
        (4, 50 << 20)
    } else {
        (2, 1 << 20)
    };
    let (gz, zst) = make_tarballs(root.path(), files, each);

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12))
        .configure_from_args();
    for (label, t) in [("tar.gz", &gz), ("tar.zst", &zst)] {
        let mut g = c.benchmark_group(format!("unpack/{label}"));
        g.throughput(criterion::Throughput::Bytes((files * each) as u64));
        g.bench_function("ours", |b| {
            b.iter_batched(
                || fresh_dir(root.path()),
                |dest| {
                    ours(t, dest.path());
                    dest
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("theirs", |b| {
            b.iter_batched(
                || fresh_dir(root.path()),
                |dest| {
                    theirs(t, dest.path());
                    dest
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }

    let text_gz = gzip_file(root.path(), "text.gz", &text_bytes(99, files * each));
    let mut g = c.benchmark_group("inflate");
    g.throughput(criterion::Throughput::Bytes((files * each) as u64));
    g.bench_function("random", |b| b.iter(|| inflate(&gz.path)));
    g.bench_function("text", |b| b.iter(|| inflate(&text_gz)));
    g.finish();

    let rounds = if benching { 7 } else { 1 };
    for (label, t) in [("unpack/tar.gz", &gz), ("unpack/tar.zst", &zst)] {
        if wanted(label) {
            ratio_report(label, t, root.path(), rounds);
        }
    }

    if benching && wanted("rss") {
        drop((gz, zst));
        let big = tempfile::Builder::new()
            .prefix("outpost-bench-1g-")
            .tempdir()
            .unwrap();
        let (gz, zst) = make_tarballs(big.path(), 8, 128 << 20);
        for (label, t) in [("tar.gz", &gz), ("tar.zst", &zst)] {
            let kib = peak_rss(t, big.path());
            println!(
                "peak RSS unpacking 1 GiB {label}: {kib} KiB ({:.1} MiB)",
                kib as f64 / 1024.0
            );
        }
    } else if !benching {
        let kib = peak_rss(&zst, root.path());
        println!("peak RSS (smoke, 2 MiB tar.zst): {kib} KiB");
    }
    c.final_summary();
}
