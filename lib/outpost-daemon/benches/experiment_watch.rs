//! The experiment watch of the real daemon (`outpost daemon`, release build, its own process),
//! measured from outside (`docs/experiment-safety.md`):
//!
//! * **rollback latency** (criterion, `rollback_latency`): from the end of the failing health
//!   run to the experiment gone from `/status`. The health command writes the wall-clock time
//!   as its last act and exits 1 (`failures: 1`, `grace: 0`, so the first run decides); the
//!   bench polls `/status` every millisecond until `experiment` is empty. The target is
//!   100 ms beyond the interval at most.
//! * **watch CPU** (printed before criterion runs): 100 packages, each with an experiment whose
//!   health command (`/bin/true`) runs every second; the daemon's own CPU time (utime + stime
//!   from `/proc/<pid>/stat`, exited threads included, its reaped children apart) over a
//!   20-second window, as a share of one core, with the health runs made in the window (from
//!   `outpost_daemon_health_runs_total`: about 2,000 expected) and the daemon's CPU per
//!   run. The target is 2 % at most. `watch_cpu_bare`
//!   is the same with the bare name `true` as the command, which the daemon resolves on the
//!   health command's `PATH` (a bare name left to the standard library means fork and exec).
//!
//! `cargo bench -p outpost-daemon --bench experiment_watch`. The `outpost` binary is built
//! with `cargo build --release -p outpost --bin outpost` unless `OUTPOST_BIN` names one.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, SamplingMode};
use outpost_api::ApiClient;
use outpost_fetch::pack::{PackOptions, pack};
use outpost_types::wire::{Empty, StatusResponse};
use outpost_types::{PackageName, Version};
use serde_json::{Value, json};

/// Packages watched for the CPU figure.
const WATCHED: usize = 100;
/// How long the CPU is measured.
const CPU_WINDOW: Duration = Duration::from_secs(20);

struct DaemonProc {
    child: Child,
    client: ApiClient,
    _dir: tempfile::TempDir,
    fixtures: PathBuf,
}

impl DaemonProc {
    fn start(bin: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let socket = dir.path().join("outpost.sock");
        let fixtures = dir.path().join("fixtures");
        fs_err::create_dir_all(&fixtures).unwrap();
        let child = Command::new(bin)
            .args(["daemon", "--root"])
            .arg(&root)
            .arg("--socket")
            .arg(&socket)
            .env_remove("OUTPOST_CONFIG")
            .env("OUTPOST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Self {
            child,
            client: ApiClient::new(socket),
            _dir: dir,
            fixtures,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout of `name` `version` with `files` (path, contents, mode).
fn layout(dir: &Path, name: &str, version: &str, files: &[(&str, String, u32)]) -> Value {
    let src = dir.join(format!("src-{name}-{version}"));
    for (path, data, mode) in files {
        let p = src.join(path);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(&p, data).unwrap();
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let out = dir.join(format!("layout-{name}-{version}"));
    pack(
        &src,
        &PackageName::new(name).unwrap(),
        &Version::new(version).unwrap(),
        &PackOptions::default(),
        &out,
    )
    .unwrap();
    json!({"package": name, "version": version, "url": format!("file://{}", out.display())})
}

fn app(name: &str, version: &str) -> (&'static str, String, u32) {
    (
        "bin/app",
        format!("#!/bin/sh\necho {name} {version}\n"),
        0o755,
    )
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// utime + stime of a process and of its reaped children, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After the command name: state is field 3; utime 14, stime 15, cutime 16, cstime 17.
    let at = |n: usize| fields[n - 3];
    (at(14) + at(15), at(16) + at(17))
}

/// `/proc` reports CPU times in USER_HZ ticks, 100 per second in Linux's ABI on every
/// architecture.
const TICKS_PER_SECOND: f64 = 100.0;

fn watch_cpu(bin: &Path, rt: &tokio::runtime::Runtime, label: &str, command: &str) {
    let d = DaemonProc::start(bin);
    let mut entries = Vec::new();
    for i in 0..WATCHED {
        let name = format!("p{i:03}");
        for v in ["1", "2"] {
            entries.push(layout(&d.fixtures, &name, v, &[app(&name, v)]));
        }
    }
    rt.block_on(async {
        let _: Empty = d
            .client
            .post("/catalog", Some(&json!({ "packages": entries })))
            .await
            .unwrap();
        for i in 0..WATCHED {
            let name = format!("p{i:03}");
            let _: Empty = d
                .client
                .post(&format!("/{name}/install"), Some(&json!({"version": "1"})))
                .await
                .unwrap();
            let body = json!({
                "version": "2",
                "health": {"command": [command], "interval": "1s"},
                "max_duration": "1h",
            });
            let _: Empty = d
                .client
                .post(&format!("/{name}/experiment/start"), Some(&body))
                .await
                .unwrap();
        }
    });
    // Let the start-up work (GC after each operation) settle, then measure.
    std::thread::sleep(Duration::from_secs(3));
    let runs0 = health_runs(&d);
    let (own0, children0) = cpu_ticks(d.pid());
    let t0 = Instant::now();
    std::thread::sleep(CPU_WINDOW);
    let (own1, children1) = cpu_ticks(d.pid());
    let runs = health_runs(&d) - runs0;
    let wall = t0.elapsed().as_secs_f64();
    let hz = TICKS_PER_SECOND;
    let own = (own1 - own0) as f64 / hz;
    let children = (children1 - children0) as f64 / hz;
    let status: StatusResponse = rt.block_on(d.client.get("/status")).unwrap();
    let watching = status
        .remote_config_state
        .iter()
        .filter(|p| {
            p.experiment_watch
                .as_ref()
                .is_some_and(|w| w.last_check.is_some())
        })
        .count();
    println!(
        "{label}: {WATCHED} experiments ({command}) ({watching} with health runs), 1 s interval, {wall:.1} s, {runs:.0} health runs: daemon {:.2} % of a core ({own:.2} s CPU, {:.0} us per run), health commands {:.2} % ({children:.2} s)",
        own / wall * 100.0,
        own / runs.max(1.0) * 1e6,
        children / wall * 100.0,
    );
}

/// Health runs so far, from the daemon's `outpost_daemon_health_runs_total` series: the
/// window must hold one run per watch and second, or the CPU figure means nothing.
fn health_runs(d: &DaemonProc) -> f64 {
    let response = outpost_testkit::client::send_blocking(
        d.client.socket_path(),
        &outpost_testkit::client::Req::new("GET", "/telemetry"),
    )
    .unwrap();
    response
        .text()
        .lines()
        .filter(|l| l.starts_with("outpost_daemon_health_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One rollback: starts experiment `version` whose health command fails at once, and returns
/// the time from the end of that run to the experiment gone from `/status`.
fn one_rollback(
    d: &DaemonProc,
    rt: &tokio::runtime::Runtime,
    stable: &Value,
    version: u32,
    stamp: &Path,
) -> Duration {
    let v = version.to_string();
    let script = format!(
        "#!/bin/sh\necho unhealthy\ndate +%s%N > {}\nexit 1\n",
        stamp.display()
    );
    let exp = layout(
        &d.fixtures,
        "pkg",
        &v,
        &[app("pkg", &v), ("outpost/health", script, 0o755)],
    );
    let _ = fs_err::remove_file(stamp);
    rt.block_on(async {
        let _: Empty = d
            .client
            .post(
                "/catalog",
                Some(&json!({ "packages": [stable.clone(), exp] })),
            )
            .await
            .unwrap();
        let body = json!({"version": v, "health": {"interval": "100ms", "failures": 1}});
        let _: Empty = d
            .client
            .post("/pkg/experiment/start", Some(&body))
            .await
            .unwrap();
        loop {
            let status: StatusResponse = d.client.get("/status").await.unwrap();
            if status.packages["pkg"].experiment.is_empty() {
                let gone = now_ns();
                let end: u128 = fs_err::read_to_string(stamp)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                return Duration::from_nanos(gone.saturating_sub(end) as u64);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

fn main() {
    let bin = outpost_binary();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("experiment watch benchmark; binary {}", bin.display());
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if wanted("watch_cpu") {
        watch_cpu(&bin, &rt, "watch_cpu", "/bin/true");
    }
    if wanted("watch_cpu_bare") {
        watch_cpu(&bin, &rt, "watch_cpu_bare", "true");
    }

    let d = DaemonProc::start(&bin);
    let stable = layout(&d.fixtures, "pkg", "1", &[app("pkg", "1")]);
    rt.block_on(async {
        let _: Empty = d
            .client
            .post("/catalog", Some(&json!({ "packages": [stable.clone()] })))
            .await
            .unwrap();
        let _: Empty = d
            .client
            .post("/pkg/install", Some(&json!({"version": "1"})))
            .await
            .unwrap();
    });
    let stamp = d.fixtures.join("health-ended");
    let next = RefCell::new(2u32);
    let samples = RefCell::new(Vec::new());
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(50))
        .measurement_time(Duration::from_millis(400))
        .configure_from_args();
    {
        let mut group = c.benchmark_group("experiment_watch");
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("rollback_latency", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let v = *next.borrow();
                    *next.borrow_mut() += 1;
                    let latency = one_rollback(&d, &rt, &stable, v, &stamp);
                    samples.borrow_mut().push(latency);
                    total += latency;
                }
                total
            });
        });
        group.finish();
    }
    c.final_summary();
    let mut all = samples.into_inner();
    all.sort();
    if !all.is_empty() {
        let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
        println!(
            "rollback_latency: {} rollbacks: median {:.1} ms, p95 {:.1} ms, max {:.1} ms (from the end of the failing run to /status without the experiment)",
            all.len(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.95).as_secs_f64() * 1e3,
            all[all.len() - 1].as_secs_f64() * 1e3,
        );
    }
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
