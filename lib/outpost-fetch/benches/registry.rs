//! Registry install and pack speed, and the memory of an install.
//!
//! - `install/{ours,theirs}`: a 200 MB single-layer package (four 50 MB files of random
//!   bytes, zstd) pushed to a local `docker-registry`, installed by `outpost_fetch::fetch`
//!   (the daemon's entry point, on a runtime shaped like the daemon's) and by `curl` to a
//!   file, `sha256sum -c`, then `zstd -dc | tar -x`.
//! - `pack/{random,text}/{ours,theirs}`: `pack::pack` of a 200 MB directory (random bytes,
//!   or text-like data that compresses about 3:1) against `tar -c | zstd -3` of the same
//!   directory.
//! - After the criterion groups the two sides of each comparison run alternately (7 rounds)
//!   and the ratio of their medians is printed, so it comes from one run under one load.
//! - Peak memory: a child process (this binary, re-executed) installs the package with the
//!   daemon's runtime shape and reports its `VmHWM`.
//! - The real daemon: with `OUTPOST_BENCH_DAEMON=/path/to/outpost`, that binary is started
//!   as a daemon on a temporary root, the package is installed through its socket
//!   (alternating with the curl pipeline, removing it in between), and the daemon's
//!   `VmHWM` is read from `/proc` after the installs.
//!
//! Without `--bench` (as `cargo test --benches` runs it) everything runs once on small
//! inputs, as a smoke test.

// A benchmark harness: any failed step is a failed run.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use outpost_fetch::pack::{PackOptions, PackedImage, pack};
use outpost_fetch::{Cancel, FetchContext, Limits, RegistrySettings};
use outpost_testkit::Registry;
use outpost_testkit::client::{Req, send_blocking};
use outpost_types::source::OciReference;
use outpost_types::wire::{CatalogEntry, ResolvedPackage};
use outpost_types::{PackageName, Version};

use outpost_testkit::bench::{fresh_dir, print_ratio, text_bytes, vm_hwm_kib};
use outpost_testkit::noise;

const CHILD_ENV: &str = "OUTPOST_BENCH_REGISTRY_CHILD";
const DAEMON_ENV: &str = "OUTPOST_BENCH_DAEMON";

/// A directory of `files` files of `each` bytes.
fn make_tree(dir: &Path, files: usize, each: usize, text: bool) {
    fs_err::create_dir_all(dir.join("data")).unwrap();
    for i in 0..files {
        let data = if text {
            text_bytes(i as u64 + 1, each)
        } else {
            noise(each, i as u64 + 1)
        };
        fs_err::write(dir.join(format!("data/blob-{i}.bin")), data).unwrap();
    }
    fs_err::write(dir.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
}

/// Runs `a` and `b` alternately `rounds` times (with `between`, untimed, after each pair)
/// and prints the ratio of their medians. What each side returns (its output directory) is
/// dropped, and so removed, outside the timing.
fn ratio_report<A, B>(
    label: &str,
    rounds: usize,
    mut a: impl FnMut() -> A,
    mut b: impl FnMut() -> B,
    mut between: impl FnMut(),
) -> f64 {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let out = a();
        ta.push(start.elapsed());
        drop(out);
        let start = Instant::now();
        let out = b();
        tb.push(start.elapsed());
        drop(out);
        between();
    }
    print_ratio(label, ta, tb)
}

fn runtime() -> tokio::runtime::Runtime {
    // The daemon's shape: two workers, a few blocking threads.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap()
}

fn resolved(url: &str) -> ResolvedPackage {
    CatalogEntry {
        package: "bench".into(),
        version: "1.0.0".into(),
        url: url.into(),
        sha256: String::new(),
        size: 0,
        platform: String::new(),
        arch: String::new(),
        health: None,
    }
    .resolve()
    .unwrap()
}

fn settings(host: &str) -> RegistrySettings {
    RegistrySettings {
        insecure_hosts: vec![host.to_owned()],
        ..RegistrySettings::default()
    }
}

/// Installs the package with the library, as the daemon does.
fn ours_install(rt: &tokio::runtime::Runtime, host: &str, url: &str, dest: &Path) {
    let ctx = FetchContext::new(settings(host), Limits::default());
    let meta = rt
        .block_on(outpost_fetch::fetch(&resolved(url), dest, &ctx))
        .unwrap();
    assert!(meta.stats.files > 0);
}

struct Blob {
    url: String,
    check_file: PathBuf,
    download: PathBuf,
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Absent when the step that makes it failed, which already failed the run.
        let _ = fs_err::remove_file(&self.0);
    }
}

/// `curl` to a file, `sha256sum -c`, `zstd -dc | tar -x`. The downloaded file is removed
/// when the returned guard drops.
fn theirs_install(blob: &Blob, dest: &Path) -> RemoveOnDrop {
    let script = format!(
        "curl -sf -o '{dl}' '{url}' && sha256sum -c --status '{check}' && zstd -dcq '{dl}' | tar -x -C '{dest}'",
        dl = blob.download.display(),
        url = blob.url,
        check = blob.check_file.display(),
        dest = dest.display(),
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(status.success(), "{script}");
    RemoveOnDrop(blob.download.clone())
}

fn ours_pack(tree: &Path, out: &Path) -> PackedImage {
    pack(
        tree,
        &PackageName::new("bench").unwrap(),
        &Version::new("1.0.0").unwrap(),
        &PackOptions::default(),
        out,
    )
    .unwrap()
}

fn theirs_pack(tree: &Path, out: &Path) {
    fs_err::create_dir_all(out).unwrap();
    let script = format!(
        "tar -cf - -C '{}' . | zstd -3 -q -o '{}/layer.tar.zst'",
        tree.display(),
        out.display()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(status.success(), "{script}");
}

/// The child side of the memory measurement: install, then print the peak RSS.
fn child() {
    let args: Vec<String> = std::env::args().collect();
    let [_, host, url, dest] = &args[..] else {
        panic!("usage: HOST URL DEST")
    };
    ours_install(&runtime(), host, url, Path::new(dest));
    println!(
        "{}",
        vm_hwm_kib(&fs_err::read_to_string("/proc/self/status").unwrap())
    );
}

fn peak_rss(host: &str, url: &str, root: &Path) -> u64 {
    let dest = fresh_dir(root);
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .arg(host)
        .arg(url)
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A real `outpost daemon` on a temporary root.
struct RealDaemon {
    child: Child,
    socket: PathBuf,
    _root: tempfile::TempDir,
}

impl RealDaemon {
    fn start(binary: &Path, host: &str, parent: &Path) -> Self {
        let root = tempfile::Builder::new()
            .prefix("daemon-")
            .tempdir_in(parent)
            .unwrap();
        let config = root.path().join("outpost.yaml");
        fs_err::write(
            &config,
            format!("registry:\n  insecure_hosts: [\"{host}\"]\n"),
        )
        .unwrap();
        let socket = root.path().join("run/outpost.sock");
        let child = Command::new(binary)
            .arg("daemon")
            .arg("--root")
            .arg(root.path())
            .arg("--config")
            .arg(&config)
            .arg("-q")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while request(&socket, "GET", "/status", None).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket,
            _root: root,
        }
    }

    fn post(&self, path: &str, body: Option<&str>) {
        let (status, text) = request(&self.socket, "POST", path, body).unwrap();
        assert_eq!(status, 200, "{path}: {text}");
    }

    fn vm_hwm_kib(&self) -> u64 {
        vm_hwm_kib(&fs_err::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap())
    }
}

impl Drop for RealDaemon {
    fn drop(&mut self) {
        // The daemon may already be gone; it is reaped either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over the daemon's socket: `(status, body)`, `None` if it cannot
/// connect.
fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut req = Req::new(method, path);
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let r = send_blocking(socket, &req).ok()?;
    Some((r.status, r.text()))
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-registry-")
        .tempdir()
        .unwrap();
    let (files, each) = if benching {
        (4, 50 << 20)
    } else {
        (2, 1 << 20)
    };
    let rounds = if benching { 7 } else { 1 };
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15))
        .configure_from_args();

    // ---- pack ----
    for (label, text) in [("pack/random", false), ("pack/text", true)] {
        if !wanted(label) {
            continue;
        }
        let tree = root
            .path()
            .join(format!("tree-{}", label.replace('/', "-")));
        make_tree(&tree, files, each, text);
        let mut g = c.benchmark_group(label);
        g.throughput(criterion::Throughput::Bytes((files * each) as u64));
        g.bench_function("ours", |b| {
            b.iter_batched(
                || fresh_dir(root.path()),
                |dir| {
                    ours_pack(&tree, &dir.path().join("layout"));
                    dir
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("theirs", |b| {
            b.iter_batched(
                || fresh_dir(root.path()),
                |dir| {
                    theirs_pack(&tree, &dir.path().join("layout"));
                    dir
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
        ratio_report(
            label,
            rounds,
            || {
                let d = fresh_dir(root.path());
                ours_pack(&tree, &d.path().join("layout"));
                d
            },
            || {
                let d = fresh_dir(root.path());
                theirs_pack(&tree, &d.path().join("layout"));
                d
            },
            || {},
        );
        fs_err::remove_dir_all(&tree).unwrap();
    }

    // ---- install ----
    let needs_registry = wanted("install") || wanted("rss") || wanted("daemon");
    if !needs_registry {
        c.final_summary();
        return;
    }
    let reg = Registry::start();
    let host = reg.host();
    let tree = root.path().join("tree-install");
    make_tree(&tree, files, each, false);
    let layout = root.path().join("install-layout");
    let packed = ours_pack(&tree, &layout);
    fs_err::remove_dir_all(&tree).unwrap();
    let rt = runtime();
    rt.block_on(outpost_fetch::push_layout(
        &settings(&host),
        &layout,
        &OciReference::parse(&format!("{host}/bench:1.0.0")).unwrap(),
        &Cancel::new(),
    ))
    .unwrap();
    let url = format!("oci://{host}/bench:1.0.0");
    let check_file = root.path().join("blob.sha256");
    let download = root.path().join("blob.tar.zst");
    fs_err::write(
        &check_file,
        format!("{}  {}\n", packed.layer.digest.hex(), download.display()),
    )
    .unwrap();
    let blob = Blob {
        url: format!("http://{host}/v2/bench/blobs/{}", packed.layer.digest),
        check_file,
        download,
    };
    fs_err::remove_dir_all(&layout).unwrap();

    if wanted("install") {
        let mut g = c.benchmark_group("install");
        g.throughput(criterion::Throughput::Bytes((files * each) as u64));
        g.bench_function("ours", |b| {
            b.iter_batched(
                || fresh_dir(root.path()),
                |dest| {
                    ours_install(&rt, &host, &url, dest.path());
                    dest
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("theirs", |b| {
            b.iter_batched(
                || fresh_dir(root.path()),
                |dest| {
                    let downloaded = theirs_install(&blob, dest.path());
                    (dest, downloaded)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
        ratio_report(
            "install",
            rounds,
            || {
                let d = fresh_dir(root.path());
                ours_install(&rt, &host, &url, d.path());
                d
            },
            || {
                let d = fresh_dir(root.path());
                let blob = theirs_install(&blob, d.path());
                (d, blob)
            },
            || {},
        );
    }

    if wanted("rss") {
        let kib = peak_rss(&host, &url, root.path());
        println!(
            "peak RSS of an install of {} MiB (library, daemon-shaped runtime): {kib} KiB ({:.1} MiB)",
            (files * each) >> 20,
            kib as f64 / 1024.0
        );
    }

    if wanted("daemon")
        && let Some(binary) = std::env::var_os(DAEMON_ENV)
    {
        let d = RealDaemon::start(Path::new(&binary), &host, root.path());
        d.post(
            "/catalog",
            Some(&format!(
                r#"{{"packages":[{{"package":"bench","version":"1.0.0","url":"{url}"}}]}}"#
            )),
        );
        ratio_report(
            "daemon install",
            rounds,
            || d.post("/bench/install", Some(r#"{"version":"1.0.0"}"#)),
            || {
                let dest = fresh_dir(root.path());
                let blob = theirs_install(&blob, dest.path());
                (dest, blob)
            },
            || d.post("/bench/remove", None),
        );
        let kib = d.vm_hwm_kib();
        println!(
            "peak RSS of the daemon (VmHWM) after {rounds} installs of {} MiB: {kib} KiB ({:.1} MiB)",
            (files * each) >> 20,
            kib as f64 / 1024.0
        );
    }
    c.final_summary();
}
