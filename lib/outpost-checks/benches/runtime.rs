//! Benchmarks of the check runtime, each comparison measured back to back in one run:
//!
//! * `submit_metric/builtin` vs `submit_metric/stub`: `aggregator.submit_metric` called from a
//!   Python loop, against the builtin module and against datadog-checks-base's stub
//!   aggregator, in the same interpreter (time per call, Python loop included).
//! * `hello_run/runtime` vs `hello_run/plain_python`: one run of the hello check through the
//!   runtime (run, warnings, commit) vs the same run in plain Python with the stubs (run,
//!   warnings, stub reset), in a child `python` kept alive between samples.
//! * `memtrack/{alloc,json}_{on,off,fwd}` (thread CPU time of the runs): an allocation-heavy
//!   check (a pure loop of dict/list/str creation, the worst case: nothing but allocations)
//!   and a check that parses a 0.5 MB JSON status document and submits from it, each in
//!   three child processes of this benchmark: memory tracking on, off, and hooks that only
//!   forward (the floor of any `PyMem_SetAllocator` wrapper). After criterion, series of
//!   interleaved rounds give the medians of the per-round ratios to "off" and their spread
//!   (`OUTPOST_BENCH_SERIES`, default 5 series, each in fresh children, of
//!   `OUTPOST_BENCH_ROUNDS`, default 40, rounds; `OUTPOST_BENCH_CPU=n` pins the children to
//!   CPU n). `OUTPOST_BENCH_ONLY=memtrack` runs this comparison alone.
//! * Peak RSS (`VmHWM`) of a child that starts the runtime and runs a simple check once, vs
//!   `python -c "import datadog_checks.base"`; printed after the criterion groups.
//!
//! The ratios asked for are printed at the end, computed from the mean time per iteration
//! of the samples criterion took in this run, and from interleaved rounds.

#![allow(clippy::unwrap_used)] // a benchmark

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use criterion::Criterion;
use outpost_checks::{CheckInstance, Runtime, RuntimeConfig, conf_d};
use pyo3::prelude::*;

fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

/// Mean time per iteration of each benchmark, accumulated over its samples.
static MEANS: Mutex<Vec<(&'static str, u128, u64)>> = Mutex::new(Vec::new());

fn record(name: &'static str, elapsed: Duration, iters: u64) {
    let mut m = MEANS.lock().unwrap();
    match m.iter_mut().find(|(n, _, _)| *n == name) {
        Some(e) => {
            e.1 += elapsed.as_nanos();
            e.2 += iters;
        }
        None => m.push((name, elapsed.as_nanos(), iters)),
    }
}

fn mean_ns(name: &str) -> f64 {
    let m = MEANS.lock().unwrap();
    let (_, ns, iters) = m.iter().find(|(n, _, _)| *n == name).unwrap();
    *ns as f64 / *iters as f64
}

const HELLO: &str = r#"
from datadog_checks.base import AgentCheck
__version__ = "1.0.0"

class HelloCheck(AgentCheck):
    __NAMESPACE__ = "hello"
    def check(self, instance):
        tags = ["stage:dev"] + instance.get("tags", [])
        self.gauge("world", 1.0, tags=tags)
        self.count("requests", 3, tags=tags)
        self.monotonic_count("total", 10, tags=tags)
        self.service_check("can_connect", AgentCheck.OK, tags=tags)
        self.event({"msg_title": "hi", "msg_text": "hello world", "tags": tags})
"#;
const HELLO_CONF: &str = "init_config:\n  service: demo\ninstances:\n  - min_collection_interval: 30\n    tags: [\"team:a\"]\n";

const LOOP: &str = r#"
import time
import aggregator as builtin_aggregator
from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator as stub_aggregator

LOOP = {"n": 0, "ns": 0, "target": "builtin"}

class LoopCheck(AgentCheck):
    def check(self, instance):
        stub = LOOP["target"] == "stub"
        submit = stub_aggregator.submit_metric if stub else builtin_aggregator.submit_metric
        tags = ["env_name:bench", "role:db", "zone:z1"]
        cid = self.check_id
        n = LOOP["n"]
        t0 = time.perf_counter_ns()
        for _ in range(n):
            submit(self, cid, 0, "bench.metric", 1.0, tags, "", False)
        LOOP["ns"] = time.perf_counter_ns() - t0
        if stub:
            stub_aggregator.reset()
"#;

/// The memory-tracking workloads, shared with the agent's benchmark.
const ALLOC: &str = include_str!("checks/alloc.py");
const JSONCHECK: &str = include_str!("checks/jsoncheck.py");

const SIMPLE: &str = r#"
from datadog_checks.base import AgentCheck

class SimpleCheck(AgentCheck):
    def check(self, instance):
        self.gauge("simple.up", 1, tags=["team:a"])
"#;

/// A temporary root with the bench checks and their configurations.
fn tree() -> PathBuf {
    let root = tempfile::tempdir().unwrap().keep();
    for (name, src, conf) in [
        ("hello", HELLO, HELLO_CONF),
        ("bench_loop", LOOP, "instances:\n  - {}\n"),
        ("alloc", ALLOC, "instances:\n  - {}\n"),
        ("jsoncheck", JSONCHECK, "instances:\n  - {}\n"),
        ("simple", SIMPLE, "instances:\n  - {}\n"),
    ] {
        fs_err::create_dir_all(root.join("checks.d")).unwrap();
        fs_err::create_dir_all(root.join("conf.d")).unwrap();
        fs_err::write(root.join(format!("checks.d/{name}.py")), src).unwrap();
        fs_err::write(root.join(format!("conf.d/{name}.yaml")), conf).unwrap();
    }
    root
}

fn start(root: &Path, memtrack: bool) -> Runtime {
    let agent = outpost_types::config::AgentConfig {
        memtrack_enabled: memtrack,
        ..Default::default()
    };
    Runtime::start(
        RuntimeConfig::new(venv(), root.join("run"))
            .with_checks_dir(root.join("checks.d"))
            .with_agent_config(agent),
    )
    .unwrap()
}

fn instance(rt: &Runtime, root: &Path, name: &str) -> CheckInstance {
    let files = conf_d::find(&root.join("conf.d"), name).unwrap();
    let loaded = rt.load_check(name, &files[0]).unwrap();
    loaded.instances.into_iter().next().unwrap().unwrap()
}

/// Runs the loop check with `n` calls against `target`, in chunks that bound the memory
/// the collector holds between commits. Returns the time spent in the Python loops.
fn submit_loop(inst: &CheckInstance, target: &str, n: u64) -> Duration {
    const CHUNK: u64 = 200_000;
    let mut total = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let this = left.min(CHUNK);
        Python::attach(|py| {
            let state = py.import("bench_loop").unwrap().getattr("LOOP").unwrap();
            state.set_item("n", this).unwrap();
            state.set_item("target", target).unwrap();
        });
        let report = inst.run();
        assert!(report.error.is_none(), "{:?}", report.error);
        if target == "builtin" {
            assert_eq!(report.submissions.metrics.len() as u64, this);
        }
        let ns: u64 = Python::attach(|py| {
            py.import("bench_loop")
                .unwrap()
                .getattr("LOOP")
                .unwrap()
                .get_item("ns")
                .unwrap()
                .extract()
                .unwrap()
        });
        total += Duration::from_nanos(ns);
        left -= this;
    }
    total
}

/// A long-lived child answering "how long do N runs take" on a line protocol.
struct Timer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Timer {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "child did not start");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn time(&mut self, iters: u64) -> Duration {
        writeln!(self.stdin, "{iters}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        Duration::from_nanos(line.trim().parse().unwrap())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Closing stdin ends the child's loop; wait for it so no process is left behind.
        let _ = writeln!(self.stdin);
        let _ = self.child.wait();
    }
}

/// The hello check in plain Python with the stubs, timed per batch of runs.
const PLAIN_HELLO: &str = r#"
import sys, time, yaml
sys.path.append(sys.argv[1])
from datadog_checks.base.stubs import aggregator
from hello import HelloCheck
cfg = yaml.safe_load(open(sys.argv[2]))
check = HelloCheck("hello", cfg.get("init_config") or {}, cfg["instances"])
check.check_id = "hello:1234567890abcdef"
for _ in range(200):
    assert check.run() == ""
    check.get_warnings()
    aggregator.reset()
print("ready", flush=True)
for line in sys.stdin:
    if not line.strip():
        break
    n = int(line)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        check.run()
        check.get_warnings()
        aggregator.reset()
    print(time.perf_counter_ns() - t0, flush=True)
"#;

/// Child mode: a runtime with memtrack on or off serving timed runs of the alloc check.
/// CPU time of the calling thread: unlike wall time, not inflated when other processes
/// take the CPU away.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Child mode: a runtime with memtrack on or off serving timed runs of `check` (one request
/// per line: a number of runs; answered with the thread CPU nanoseconds they took).
fn child_memtrack(root: &Path, mode: &str, check: &str) {
    if let Some(cpu) = std::env::var("OUTPOST_BENCH_CPU")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).unwrap();
    }
    let on = mode == "on";
    let rt = start(root, on);
    assert_eq!(rt.memory().enabled, on);
    if mode == "fwd" {
        Python::attach(outpost_checks::memtrack::install_forwarding_only);
    }
    let inst = instance(&rt, root, check);
    for _ in 0..20 {
        assert!(inst.run().error.is_none());
    }
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let Ok(n) = line.trim().parse::<u64>() else {
            break;
        };
        // Every batch starts from the same collector state (untimed), so that a batch does
        // not take a full collection that its neighbour did not.
        Python::attach(|py| py.import("gc")?.call_method0("collect").map(drop)).unwrap();
        let t0 = thread_cpu();
        for _ in 0..n {
            inst.run();
        }
        println!("{}", (thread_cpu() - t0).as_nanos());
    }
}

/// Child mode: peak RSS after starting the runtime and running the simple check once.
fn child_rss(root: &Path, memtrack: bool) {
    let rt = start(root, memtrack);
    let inst = instance(&rt, root, "simple");
    let report = inst.run();
    assert!(report.error.is_none());
    println!("{}", vm_hwm_kib());
}

fn vm_hwm_kib() -> u64 {
    let status = fs_err::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Median over `rounds` of time(a) / time(b), each side doing `iters` per round.
fn interleaved(
    rounds: usize,
    mut a: impl FnMut(u64) -> Duration,
    mut b: impl FnMut(u64) -> Duration,
    iters: u64,
) -> f64 {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| a(iters).as_secs_f64() / b(iters).as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

fn self_child(mode: &str, root: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("OUTPOST_BENCH_CHILD", mode)
        .env("OUTPOST_BENCH_ROOT", root);
    cmd
}

fn main() {
    if let Ok(mode) = std::env::var("OUTPOST_BENCH_CHILD") {
        let root = PathBuf::from(std::env::var_os("OUTPOST_BENCH_ROOT").unwrap());
        match mode.as_str() {
            m if m.starts_with("memtrack-") => {
                let (check, side) = m["memtrack-".len()..].split_once('-').unwrap();
                child_memtrack(&root, side, check)
            }
            "rss" => child_rss(&root, true),
            "rss-no-memtrack" => child_rss(&root, false),
            other => panic!("unknown child mode {other}"),
        }
        return;
    }
    let root = tree();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
        .configure_from_args();
    // `OUTPOST_BENCH_ONLY=memtrack`: the memory-tracking comparison alone.
    if std::env::var("OUTPOST_BENCH_ONLY").is_ok_and(|v| v == "memtrack") {
        memtrack_bench(&mut c, &root);
        c.final_summary();
        return;
    }
    let rt = start(&root, true);
    // 1. submit_metric from a Python loop.
    let looper = instance(&rt, &root, "bench_loop");
    {
        let mut g = c.benchmark_group("submit_metric");
        g.bench_function("builtin", |b| {
            b.iter_custom(|iters| {
                let d = submit_loop(&looper, "builtin", iters);
                record("submit_metric/builtin", d, iters);
                d
            })
        });
        g.bench_function("stub", |b| {
            b.iter_custom(|iters| {
                let d = submit_loop(&looper, "stub", iters);
                record("submit_metric/stub", d, iters);
                d
            })
        });
        g.finish();
    }

    // 2. One run of the hello check.
    let hello = instance(&rt, &root, "hello");
    let mut plain = {
        let script = root.join("plain_hello.py");
        fs_err::write(&script, PLAIN_HELLO).unwrap();
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(&script)
            .arg(root.join("checks.d"))
            .arg(root.join("conf.d/hello.yaml"));
        Timer::spawn(cmd)
    };
    {
        let mut g = c.benchmark_group("hello_run");
        g.bench_function("runtime", |b| {
            b.iter_custom(|iters| {
                let t0 = std::time::Instant::now();
                for _ in 0..iters {
                    let r = hello.run();
                    debug_assert!(r.error.is_none());
                    std::hint::black_box(r);
                }
                let d = t0.elapsed();
                record("hello_run/runtime", d, iters);
                d
            })
        });
        g.bench_function("plain_python", |b| {
            b.iter_custom(|iters| {
                let d = plain.time(iters);
                record("hello_run/plain_python", d, iters);
                d
            })
        });
        g.finish();
    }

    // 3. Memory tracking: see `memtrack_bench`.
    memtrack_bench(&mut c, &root);
    c.final_summary();

    // The same comparisons again, interleaved in short alternating rounds so that a change
    // of machine load hits both sides alike; the median of the per-round ratios is printed.
    let submit_ratio = interleaved(
        15,
        |n| submit_loop(&looper, "stub", n),
        |n| submit_loop(&looper, "builtin", n),
        20_000,
    );
    let hello_ratio = interleaved(
        15,
        |n| {
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(hello.run());
            }
            t0.elapsed()
        },
        |n| plain.time(n),
        2_000,
    );
    drop(plain);

    // 4. Peak RSS.
    let rss_of = |mode: &str| -> u64 {
        let out = self_child(mode, &root).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let runtime_kib = rss_of("rss");
    let runtime_no_memtrack_kib = rss_of("rss-no-memtrack");
    let python_kib: u64 = {
        let out = Command::new(venv().join("bin/python"))
            .args([
                "-c",
                "import datadog_checks.base\nfor l in open('/proc/self/status'):\n    \
                 l.startswith('VmHWM:') and print(l.split()[1])",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };

    let submit_builtin = mean_ns("submit_metric/builtin");
    let submit_stub = mean_ns("submit_metric/stub");
    let hello_rt = mean_ns("hello_run/runtime");
    let hello_py = mean_ns("hello_run/plain_python");
    println!();
    println!("== ratios (mean time per iteration over this run's samples) ==");
    println!(
        "submit_metric: builtin {:.0} ns/call ({:.2} M calls/s), stub {:.0} ns/call; builtin is {:.2}x faster (target >= 3x, >= 1 M calls/s)",
        submit_builtin,
        1e3 / submit_builtin,
        submit_stub,
        submit_stub / submit_builtin
    );
    println!(
        "hello run: runtime {:.1} us, plain Python with stubs {:.1} us; ratio {:.3} (target <= 1.1)",
        hello_rt / 1e3,
        hello_py / 1e3,
        hello_rt / hello_py
    );
    println!(
        "interleaved medians: stub/builtin submit_metric {:.2}x; hello runtime/plain {:.3}",
        submit_ratio, hello_ratio,
    );
    println!(
        "peak RSS: runtime + simple check run {:.1} MiB, python -c 'import datadog_checks.base' {:.1} MiB; difference {:.1} MiB (target <= 15 MiB)",
        runtime_kib as f64 / 1024.0,
        python_kib as f64 / 1024.0,
        (runtime_kib as f64 - python_kib as f64) / 1024.0
    );
    println!(
        "peak RSS without memory tracking: {:.1} MiB (the tracking tables cost {:.1} MiB)",
        runtime_no_memtrack_kib as f64 / 1024.0,
        (runtime_kib as f64 - runtime_no_memtrack_kib as f64) / 1024.0
    );
}

/// The workloads of the memory-tracking comparison: (label, check, runs per measurement:
/// about 0.1 s, short enough for a change of machine load to hit the three sides alike).
const MEMTRACK_WORKLOADS: [(&str, &str, u64); 2] =
    [("alloc", "alloc", 3), ("json", "jsoncheck", 20)];
/// The three sides, each a child runtime: tracking installed, nothing installed, and hooks
/// that only forward (the floor of any `PyMem_SetAllocator` wrapper).
const MEMTRACK_SIDES: [&str; 3] = ["on", "off", "fwd"];

/// Spawns the three sides of one workload (`on`, `off`, `fwd`, in that order), with one
/// string hash seed for the three: a seed decides how dictionaries collide, and so moves a
/// process's speed by a few percent; sides compared with one seed differ only by the hooks.
fn memtrack_sides(root: &Path, check: &str, seed: usize) -> Vec<Timer> {
    MEMTRACK_SIDES
        .iter()
        .map(|side| {
            let mut cmd = self_child(&format!("memtrack-{check}-{side}"), root);
            cmd.env("PYTHONHASHSEED", (seed + 1).to_string());
            Timer::spawn(cmd)
        })
        .collect()
}

/// A number from the environment, or `default`.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Memory tracking on vs off (and forward-only vs off), in child runtimes timing runs with
/// the thread CPU clock. Criterion times each side; then, for each workload, several series
/// of interleaved rounds (the three sides one after the other, in an order that rotates
/// every round) give per-round ratios to "off": the median over every round is the figure,
/// the spread of the series' medians says how much the machine moved it. Each series runs
/// in freshly started children, so that what one process happens to get (its heap layout,
/// the CPU it lands on) is not counted as the tracker's in every series.
///
/// Knobs: `OUTPOST_BENCH_SERIES` (default 5), `OUTPOST_BENCH_ROUNDS` (rounds per series,
/// default 40), `OUTPOST_BENCH_CPU` (pin every child to that CPU: the three sides then share
/// one core's caches and never migrate).
fn memtrack_bench(c: &mut Criterion, root: &Path) {
    let mut timers: Vec<(&str, Vec<Timer>)> = MEMTRACK_WORKLOADS
        .iter()
        .map(|(label, check, _)| (*label, memtrack_sides(root, check, 0)))
        .collect();
    {
        let mut g = c.benchmark_group("memtrack");
        for (label, sides) in &mut timers {
            for (side, timer) in MEMTRACK_SIDES.iter().zip(sides.iter_mut()) {
                let name = format!("{label}_{side}");
                g.bench_function(&name, |b| b.iter_custom(|iters| timer.time(iters)));
            }
        }
        g.finish();
    }
    let series: usize = env_number("OUTPOST_BENCH_SERIES", 5);
    let rounds: usize = env_number("OUTPOST_BENCH_ROUNDS", 40);
    let load = || {
        fs_err::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!();
    println!(
        "== memory tracking, interleaved: {series} series x {rounds} rounds per side, fresh children per series, CPU {} (load average before: {}) ==",
        std::env::var("OUTPOST_BENCH_CPU").unwrap_or_else(|_| "not pinned".into()),
        load()
    );
    for ((label, check, runs), (_, first)) in MEMTRACK_WORKLOADS.iter().zip(&mut timers) {
        // Per round: side k ("on", "fwd") over "off", and "on" over "fwd".
        let (mut on_all, mut fwd_all, mut beyond_all) = (Vec::new(), Vec::new(), Vec::new());
        let (mut on_medians, mut fwd_medians) = (Vec::new(), Vec::new());
        let mut per_run = [0f64; 3];
        let mut sides = std::mem::take(first);
        for s in 0..series {
            if s > 0 {
                sides = memtrack_sides(root, check, s);
            }
            let (mut on_r, mut fwd_r) = (Vec::new(), Vec::new());
            for r in 0..rounds {
                let mut t = [0f64; 3];
                for k in 0..3 {
                    let side = (k + r + s) % 3;
                    t[side] = sides[side].time(*runs).as_secs_f64();
                }
                for (acc, v) in per_run.iter_mut().zip(t) {
                    *acc += v / *runs as f64;
                }
                on_r.push(t[0] / t[1]);
                fwd_r.push(t[2] / t[1]);
                beyond_all.push(t[0] / t[2]);
            }
            on_medians.push(median(&mut on_r.clone()));
            fwd_medians.push(median(&mut fwd_r.clone()));
            on_all.extend(on_r);
            fwd_all.extend(fwd_r);
        }
        drop(sides);
        let n = (series * rounds) as f64;
        let pct = |x: f64| (x - 1.0) * 100.0;
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{:+.1}% .. {:+.1}%", pct(lo), pct(hi))
        };
        // Median and interquartile range of the per-round ratios.
        let summary = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
            format!(
                "median {:+.1}% (quartiles {:+.1}% .. {:+.1}%)",
                pct(q(0.5)),
                pct(q(0.25)),
                pct(q(0.75))
            )
        };
        println!(
            "{label}: per run on {:.2} ms, off {:.2} ms, forward-only {:.2} ms (thread CPU, means)",
            per_run[0] / n * 1e3,
            per_run[1] / n * 1e3,
            per_run[2] / n * 1e3,
        );
        println!(
            "{label}: tracking on vs off: {}, series medians {}; target <= 5%",
            summary(&mut on_all),
            spread(&on_medians),
        );
        println!(
            "{label}: forward-only vs off: {}, series medians {}",
            summary(&mut fwd_all),
            spread(&fwd_medians),
        );
        println!(
            "{label}: tracking on vs forward-only (the tracker beyond the forward): {}",
            summary(&mut beyond_all),
        );
    }
    println!("load average after: {}", load());
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
