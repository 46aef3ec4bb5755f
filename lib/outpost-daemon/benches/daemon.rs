//! The real daemon (`outpost daemon`, release build, its own process) measured from outside:
//!
//! * **throughput**: `GET /status` over 32 concurrent keep-alive connections
//!   (`outpost_testkit::loadgen`), against a bare hyper server answering the very bytes of the
//!   daemon's status, in its own process with the same runtime shape (2 workers); alternating
//!   rounds, medians and their ratio from the same run;
//! * **install**: `GET /status` latency (4 closed-loop connections) while a 500 MB package
//!   installs, and the same without the install;
//! * **memory**: the daemon's VmRSS idle, and after 100,000 requests;
//! * **startup**: from spawning the process to a connection accepted on the socket.
//!
//! `cargo bench -p outpost-daemon --bench daemon [-- throughput|install|memory|startup]`.
//! The `outpost` binary is built with `cargo build --release -p outpost --bin outpost` unless
//! `OUTPOST_BIN` names one. The 500 MB fixture is cached under `target/outpost-bench/`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_fetch::pack::{PackOptions, pack};
use outpost_testkit::loadgen::{LoadOptions, LoadReport, run as load};
use outpost_types::{PackageName, Version};
use serde_json::{Value, json};

const ROUNDS: usize = 7;
const ROUND_REQUESTS: usize = 50_000;
const BIG_BYTES: usize = 500 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare-server") {
        bare_server(Path::new(&args[2]), Path::new(&args[3]));
        return;
    }
    // `--load SOCKET PATH N`: only drive a socket (for profiling a daemon started by hand).
    if args.get(1).map(String::as_str) == Some("--load") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = LoadOptions::get(&args[3], args[4].parse().unwrap());
        options.expect_status = args.get(5).map_or(200, |s| s.parse().unwrap());
        let report = rt.block_on(load(Path::new(&args[2]), &options)).unwrap();
        println!("{report:?}");
        return;
    }
    let filters: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let want = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let bin = outpost_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("outpost daemon benchmark");
    println!("  binary: {}", bin.display());
    println!(
        "  host: {} cores, load average at start: {}",
        cores(),
        loadavg()
    );
    if want("startup") {
        startup(&bin);
    }
    if want("memory") {
        memory(&bin, &rt);
    }
    if want("throughput") {
        throughput(&bin, &rt);
    }
    if want("install") {
        install(&bin, &rt);
    }
    println!("  load average at end: {}", loadavg());
}

// ---- the daemon process ----------------------------------------------------------------------

struct DaemonProc {
    child: Child,
    socket: PathBuf,
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl DaemonProc {
    fn spawn(bin: &Path, root: &Path) -> (Self, Duration) {
        let socket = root.join("run/outpost.sock");
        let log = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.with_extension("log"))
            .unwrap();
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("daemon")
            .arg("--root")
            .arg(root)
            .env_remove("OUTPOST_LOG")
            .env_remove("OUTPOST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.into_parts().0))
            .spawn()
            .unwrap();
        // Poll the socket until a connection is accepted (the listener is bound and served).
        let deadline = started + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_micros(200));
        }
        let took = started.elapsed();
        (
            Self {
                child,
                socket,
                _dir: None,
                root: root.to_path_buf(),
            },
            took,
        )
    }

    fn fresh(bin: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("outpost-bench-")
            .tempdir()
            .unwrap();
        let (mut d, _) = Self::spawn(bin, &dir.path().join("root"));
        d._dir = Some(dir);
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> (u64, u64) {
        let status = fs_err::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn threads(&self) -> u64 {
        let status = fs_err::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    fn stop(mut self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "daemon exit {status}");
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        // Already reaped by `stop`, or killed here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request over a fresh connection; the whole response body.
fn raw(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let body = body.map(|b| serde_json::to_vec(b).unwrap());
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(b) = &body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend(body.unwrap_or_default());
    s.write_all(&bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[end + 4..].to_vec())
}

fn ok(socket: &Path, method: &str, path: &str, body: Option<&Value>) {
    let (status, body) = raw(socket, method, path, body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

// ---- fixtures --------------------------------------------------------------------------------

fn layout(dir: &Path, name: &str, version: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let out = dir.join(format!("layout-{name}-{version}"));
    if out.join("index.json").exists() {
        return out;
    }
    let src = dir.join(format!("src-{name}-{version}"));
    if src.exists() {
        fs_err::remove_dir_all(&src).unwrap();
    }
    for (path, data) in files {
        let p = src.join(path);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(&p, data).unwrap();
    }
    if out.exists() {
        fs_err::remove_dir_all(&out).unwrap();
    }
    pack(
        &src,
        &PackageName::new(name).unwrap(),
        &Version::new(version).unwrap(),
        &PackOptions::default(),
        &out,
    )
    .unwrap();
    fs_err::remove_dir_all(&src).unwrap();
    out
}

fn entry(name: &str, version: &str, layout: &Path) -> Value {
    json!({"package": name, "version": version, "url": format!("file://{}", layout.display())})
}

/// A realistic state: three packages, one with a running experiment, every task done.
fn populate(d: &DaemonProc, dir: &Path) {
    let pkgs = [
        ("datadog-agent", "7.50.0"),
        ("datadog-agent", "7.51.0"),
        ("datadog-apm-inject", "0.10.0"),
        ("outpost-tools", "1.0.0"),
    ];
    let entries: Vec<Value> = pkgs
        .iter()
        .map(|(n, v)| {
            let files = [("bin/app", format!("#!/bin/sh\necho {n} {v}\n").into_bytes())];
            entry(n, v, &layout(dir, n, v, &files))
        })
        .collect();
    ok(
        &d.socket,
        "POST",
        "/catalog",
        Some(&json!({ "packages": entries })),
    );
    for (n, v) in [
        ("datadog-agent", "7.50.0"),
        ("datadog-apm-inject", "0.10.0"),
        ("outpost-tools", "1.0.0"),
    ] {
        ok(
            &d.socket,
            "POST",
            &format!("/{n}/install"),
            Some(&json!({ "version": v })),
        );
    }
    ok(
        &d.socket,
        "POST",
        "/datadog-agent/experiment/start",
        Some(&json!({"version": "7.51.0"})),
    );
}

fn bench_dir() -> PathBuf {
    // <target>/release/deps/daemon-<hash> -> <target>/outpost-bench
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    let dir = target.join("outpost-bench");
    fs_err::create_dir_all(&dir).unwrap();
    dir
}

fn outpost_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("OUTPOST_BIN") {
        return PathBuf::from(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "outpost",
            "--bin",
            "outpost",
        ])
        .status()
        .expect("cargo");
    assert!(status.success(), "building the outpost binary failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("outpost")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn loadavg() -> String {
    fs_err::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---- the bare hyper server (child process) ----------------------------------------------------

fn bare_server(socket: &Path, body_file: &Path) {
    let body = Bytes::from(fs_err::read(body_file).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header(http::header::CONTENT_TYPE, "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                // A client hanging up ends the connection; nothing to report.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

struct BareProc(Child);

impl Drop for BareProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_bare(socket: &Path, body: &[u8]) -> BareProc {
    let body_file = socket.with_extension("body");
    fs_err::write(&body_file, body).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--bare-server")
        .arg(socket)
        .arg(&body_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "bare server did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    BareProc(child)
}

// ---- sections ------------------------------------------------------------------------------------

fn run_load(rt: &tokio::runtime::Runtime, socket: &Path, requests: usize) -> LoadReport {
    let report = rt
        .block_on(load(socket, &LoadOptions::get("/status", requests)))
        .unwrap();
    assert_eq!(
        report.errors,
        0,
        "errors under load on {}",
        socket.display()
    );
    report
}

/// CPU time the process has used so far, all threads (from `/proc/<pid>/task/*/schedstat`,
/// nanoseconds on the CPU). Threads that already exited are not counted: call it around a
/// span during which the servers keep their threads.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for task in fs_err::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(text) = fs_err::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(bin: &Path, rt: &tokio::runtime::Runtime) {
    let d = DaemonProc::fresh(bin);
    let dir = d.root.parent().unwrap().to_path_buf();
    populate(&d, &bench_dir());
    let (_, status_body) = raw(&d.socket, "GET", "/status", None);
    let bare_socket = dir.join("bare.sock");
    let _bare = spawn_bare(&bare_socket, &status_body);
    assert_eq!(raw(&bare_socket, "GET", "/status", None).1, status_body);

    run_load(rt, &d.socket, 10_000);
    run_load(rt, &bare_socket, 10_000);
    let (mut daemon_rps, mut bare_rps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut daemon_cpu, mut bare_cpu) = (Vec::new(), Vec::new());
    let (mut daemon_last, mut bare_last) = (None, None);
    let per_request =
        |before: u64, after: u64| (after - before) as f64 / ROUND_REQUESTS as f64 / 1000.0;
    for _ in 0..ROUNDS {
        let c0 = cpu_ns(d.pid());
        let a = run_load(rt, &d.socket, ROUND_REQUESTS);
        let c1 = cpu_ns(d.pid());
        let b0 = cpu_ns(_bare.0.id());
        let b = run_load(rt, &bare_socket, ROUND_REQUESTS);
        let b1 = cpu_ns(_bare.0.id());
        daemon_cpu.push(per_request(c0, c1));
        bare_cpu.push(per_request(b0, b1));
        ratios.push(a.requests_per_sec / b.requests_per_sec);
        daemon_rps.push(a.requests_per_sec);
        bare_rps.push(b.requests_per_sec);
        daemon_last = Some(a);
        bare_last = Some(b);
    }
    let (a, b) = (median(daemon_rps.clone()), median(bare_rps.clone()));
    println!(
        "\nthroughput: GET /status ({} bytes), 32 keep-alive connections, {ROUNDS} alternating rounds of {ROUND_REQUESTS} requests",
        status_body.len()
    );
    println!(
        "  daemon:     median {a:>9.0} req/s  (rounds: {})",
        fmt_rounds(&daemon_rps)
    );
    println!(
        "  bare hyper: median {b:>9.0} req/s  (rounds: {})",
        fmt_rounds(&bare_rps)
    );
    println!(
        "  ratio daemon/bare: median of medians {:.3}, median of per-round ratios {:.3}",
        a / b,
        median(ratios)
    );
    let (ca, cb) = (median(daemon_cpu), median(bare_cpu));
    println!(
        "  server CPU per request (all threads, median): daemon {ca:.2} µs, bare hyper {cb:.2} µs (bare/daemon {:.3})",
        cb / ca
    );
    for (name, rep) in [("daemon", daemon_last), ("bare hyper", bare_last)] {
        let rep = rep.unwrap();
        println!(
            "  {name} last round latency: p50 {:?} p99 {:?} max {:?}",
            rep.p50, rep.p99, rep.max
        );
    }
    d.stop();
}

fn fmt_rounds(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn memory(bin: &Path, rt: &tokio::runtime::Runtime) {
    let d = DaemonProc::fresh(bin);
    // Let the start-up cleanup finish before reading.
    ok(&d.socket, "GET", "/status", None);
    let (idle_empty, _) = d.rss_kib();
    populate(&d, &bench_dir());
    let (idle_state, _) = d.rss_kib();
    let threads = d.threads();
    let report = run_load(rt, &d.socket, 100_000);
    let (after, hwm) = d.rss_kib();
    println!("\nmemory: daemon VmRSS (KiB)");
    println!("  idle, just started:                    {idle_empty:>7}");
    println!("  idle, after catalog + 4 operations:   {idle_state:>7}  ({threads} threads)");
    println!(
        "  after 100,000 GET /status (32 conns):  {after:>7}  (peak {hwm}; {:.0} req/s)",
        report.requests_per_sec
    );
    d.stop();
}

fn startup(bin: &Path) {
    let dir = tempfile::Builder::new()
        .prefix("outpost-bench-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    // A root with state: catalog, packages, tasks.
    {
        let (d, _) = DaemonProc::spawn(bin, &root);
        populate(&d, &bench_dir());
        d.stop();
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let (d, took) = DaemonProc::spawn(bin, &root);
        times.push(took.as_secs_f64() * 1000.0);
        d.stop();
    }
    let log = fs_err::read_to_string(root.with_extension("log")).unwrap_or_default();
    let internal: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("startup_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "\nstartup: spawn to a connection accepted on the socket, 20 starts on a populated root"
    );
    println!(
        "  min {:.1} ms, median {:.1} ms, max {:.1} ms (the daemon's own startup_ms: median {:.1})",
        sorted[0],
        median(times),
        sorted[sorted.len() - 1],
        median(internal)
    );
}

/// Closed-loop `GET /status` on `connections` keep-alive connections until `stop`; every
/// latency.
async fn poll_status(socket: PathBuf, connections: usize, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            // The poller only measures answers.
            let _ = conn.await;
        });
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("/status")
                    .header(http::header::HOST, "x")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let began = Instant::now();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                lat.push(began.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn install(bin: &Path, rt: &tokio::runtime::Runtime) {
    let cache = bench_dir();
    let started = Instant::now();
    let big = {
        let out = cache.join("layout-big-500m");
        if !out.join("index.json").exists() {
            let mut data = Vec::with_capacity(BIG_BYTES);
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            while data.len() < BIG_BYTES {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&x.to_le_bytes());
            }
            layout(&cache, "big", "500m", &[("payload.bin", data)]);
            fs_err::rename(cache.join("layout-big-500m"), &out).unwrap();
        }
        out
    };
    let fixture_time = started.elapsed();
    let d = DaemonProc::fresh(bin);
    populate(&d, &cache);
    ok(
        &d.socket,
        "POST",
        "/catalog",
        Some(&json!({"packages": [entry("big", "500m", &big)]})),
    );
    const CONNS: usize = 4;
    // Baseline: the same polling without an install, for about as long.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = rt.spawn(poll_status(d.socket.clone(), CONNS, stop.clone()));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let baseline = rt.block_on(baseline).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let during = rt.spawn(poll_status(d.socket.clone(), CONNS, stop.clone()));
    let began = Instant::now();
    ok(
        &d.socket,
        "POST",
        "/big/install",
        Some(&json!({"version": "500m"})),
    );
    let install_time = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = rt.block_on(during).unwrap();
    println!(
        "\ninstall: GET /status latency on {CONNS} closed-loop connections while a 500 MB package (incompressible, zstd layer) installs"
    );
    println!(
        "  install took {:.2} s (fixture {}: {:.1} s)",
        install_time.as_secs_f64(),
        if fixture_time > Duration::from_secs(1) {
            "built"
        } else {
            "cached"
        },
        fixture_time.as_secs_f64()
    );
    for (name, lat) in [("during install", &during), ("baseline (idle)", &baseline)] {
        println!(
            "  {name:<16} {:>7} requests: p50 {:?} p99 {:?} p99.9 {:?} max {:?}",
            lat.len(),
            pct(lat, 0.5),
            pct(lat, 0.99),
            pct(lat, 0.999),
            lat[lat.len() - 1]
        );
    }
    d.stop();
}
