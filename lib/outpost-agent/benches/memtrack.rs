//! Memory tracking on vs off, at the agent level: the two workloads of `outpost-checks`'
//! benchmark (an allocation-heavy check: 20,000 small dicts with lists and strings, indexed;
//! and a JSON-parsing one: a 0.5 MB status document parsed and submitted from) run through
//! the whole agent (`run-now`: the scheduler hands the run to a runner thread, the sinks
//! commit it), in pairs of child processes of this benchmark, one started with
//! `memtrack_enabled: true`, one with `false` (the interpreter starts once per process).
//!
//! Each child answers "N" on stdin with the wall time of N runs and the runner threads' CPU
//! time inside them. Criterion times both sides back to back; then, per workload, series of
//! alternating rounds, each series in a fresh pair of children sharing one string hash seed
//! (`OUTPOST_BENCH_SERIES`, default 6, of `OUTPOST_BENCH_ROUNDS`, default 10, rounds), give
//! the median of the per-round on/off ratios, which a change of machine load affects less.
//!
//! `cargo bench -p outpost-agent --bench memtrack`; without `--bench` a smoke pass.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a benchmark

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use outpost_agent::{Agent, AgentOptions};
use outpost_checks::{Runtime, RuntimeConfig};
use outpost_types::config::AgentConfig;

mod common;
use common::{NoFormat, venv};

/// The workloads (shared with `outpost-checks`' benchmark) and the runs per round.
const WORKLOADS: [(&str, &str, u64); 2] = [
    (
        "alloc",
        include_str!("../../outpost-checks/benches/checks/alloc.py"),
        20,
    ),
    (
        "jsoncheck",
        include_str!("../../outpost-checks/benches/checks/jsoncheck.py"),
        100,
    ),
];

/// Child mode: an agent with memory tracking `on` or not, timing run-now of `check`.
fn child(root: &Path, on: bool, check: &str) {
    let agent_config = AgentConfig {
        memtrack_enabled: on,
        ..AgentConfig::default()
    };
    let runtime = Runtime::start(
        RuntimeConfig::new(venv(), root.join(if on { "run-on" } else { "run-off" }))
            .with_checks_dir(root.join("checks.d"))
            .with_agent_config(agent_config.clone()),
    )
    .unwrap();
    assert_eq!(runtime.memory().enabled, on);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut options = AgentOptions::new(
            root,
            root.join("conf.d"),
            root.join("checks.d"),
            venv(),
            agent_config,
            Arc::new(NoFormat),
        )
        .unwrap();
        options.runtime = Some(runtime);
        let agent = Agent::start(options).await.unwrap();
        for _ in 0..20 {
            let doc = agent.run_check(check).await.unwrap();
            assert_eq!(doc["instances"].as_array().unwrap().len(), 1);
        }
        println!("ready");
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(n) = line.unwrap().trim().parse::<u64>() else {
                break;
            };
            let cpu0 = agent.scheduler_stats().run_cpu;
            let t0 = Instant::now();
            for _ in 0..n {
                agent.run_check(check).await.unwrap();
            }
            let wall = t0.elapsed();
            let cpu = agent.scheduler_stats().run_cpu - cpu0;
            println!("{} {}", wall.as_nanos(), cpu.as_nanos());
        }
        agent.shutdown().await.unwrap();
    });
}

/// A long-lived child answering "how long do N runs take".
struct Timer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Timer {
    /// A child with tracking `mode` ("on" or "off") running `check`, with the string hash
    /// seed `seed` (a seed decides how dictionaries collide, and so moves a process's speed
    /// by a few percent: the two sides of a series share one).
    fn spawn(root: &Path, mode: &str, check: &str, seed: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("OUTPOST_BENCH_CHILD", mode)
            .env("OUTPOST_BENCH_CHECK", check)
            .env("OUTPOST_BENCH_ROOT", root)
            .env("PYTHONHASHSEED", (seed + 1).to_string())
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

    /// (wall, CPU inside runs) of `n` runs.
    fn time(&mut self, n: u64) -> (Duration, Duration) {
        writeln!(self.stdin, "{n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace().map(|p| p.parse::<u64>().unwrap());
        (
            Duration::from_nanos(parts.next().unwrap()),
            Duration::from_nanos(parts.next().unwrap()),
        )
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // An empty line ends the child's loop; wait so no process is left behind.
        let _ = writeln!(self.stdin);
        let _ = self.child.wait();
    }
}

/// A number from the environment, or `default`.
fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(mode) = std::env::var("OUTPOST_BENCH_CHILD") {
        let root = PathBuf::from(std::env::var_os("OUTPOST_BENCH_ROOT").unwrap());
        let check = std::env::var("OUTPOST_BENCH_CHECK").unwrap();
        child(&root, mode == "on", &check);
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs_err::create_dir_all(root.join("conf.d")).unwrap();
    fs_err::create_dir_all(root.join("checks.d")).unwrap();
    for (name, source, _) in WORKLOADS {
        fs_err::write(root.join(format!("checks.d/{name}.py")), source).unwrap();
        // A day's interval: the check runs when asked to (its first scheduled run is hours
        // away unless its spread offset is unlucky; a scheduled run would only delay one
        // sample).
        fs_err::write(
            root.join(format!("conf.d/{name}.yaml")),
            "instances:\n  - {min_collection_interval: 86400}\n",
        )
        .unwrap();
    }
    let series = if full {
        env_number("OUTPOST_BENCH_SERIES", 6)
    } else {
        1
    };
    let rounds = if full {
        env_number("OUTPOST_BENCH_ROUNDS", 10)
    } else {
        2
    };
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
        .configure_from_args();
    let mut report = Vec::new();
    for (check, _, runs) in WORKLOADS {
        let per_round = if full { runs } else { 2 };
        let mut on = Timer::spawn(root, "on", check, 0);
        let mut off = Timer::spawn(root, "off", check, 0);
        let (mut sums_on, mut sums_off) = ((0u128, 0u64), (0u128, 0u64));
        {
            let mut g = c.benchmark_group(format!("memtrack_agent_{check}"));
            for (side, timer, sums) in [
                ("on", &mut on, &mut sums_on),
                ("off", &mut off, &mut sums_off),
            ] {
                g.bench_function(side, |b| {
                    b.iter_custom(|iters| {
                        let (wall, _) = timer.time(iters);
                        sums.0 += wall.as_nanos();
                        sums.1 += iters;
                        wall
                    })
                });
            }
            g.finish();
        }
        let (mut wall_ratios, mut cpu_ratios, mut series_cpu) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut totals = [Duration::ZERO; 4];
        for s in 0..series {
            if s > 0 {
                on = Timer::spawn(root, "on", check, s);
                off = Timer::spawn(root, "off", check, s);
            }
            let mut cpu = Vec::new();
            for round in 0..rounds {
                // Alternate which side goes first.
                let (a, b) = if (round + s) % 2 == 0 {
                    let a = on.time(per_round);
                    (a, off.time(per_round))
                } else {
                    let b = off.time(per_round);
                    (on.time(per_round), b)
                };
                wall_ratios.push(a.0.as_secs_f64() / b.0.as_secs_f64());
                cpu.push(a.1.as_secs_f64() / b.1.as_secs_f64());
                for (t, d) in totals.iter_mut().zip([a.0, b.0, a.1, b.1]) {
                    *t += d;
                }
            }
            series_cpu.push(median(&mut cpu.clone()));
            cpu_ratios.extend(cpu);
        }
        drop((on, off));
        let n = (series * rounds) as f64 * per_round as f64;
        let mean = |(ns, iters): (u128, u64)| ns as f64 / iters.max(1) as f64 / 1e6;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
        let pct = |x: f64| (x - 1.0) * 100.0;
        let lo = series_cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = series_cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        report.push(format!(
            "{check} through the agent (run-now):\n\
             criterion means: on {:.2} ms, off {:.2} ms per run: {:+.1}%\n\
             interleaved ({series} series x {rounds} rounds x {per_round} runs): wall on {:.2} ms, \
             off {:.2} ms; CPU in runs on {:.2} ms, off {:.2} ms\n\
             median per-round overhead: wall {:+.1}%, CPU in runs {:+.1}% (series medians \
             {:+.1}% .. {:+.1}%; target <= 5%)",
            mean(sums_on),
            mean(sums_off),
            pct(mean(sums_on) / mean(sums_off)),
            ms(totals[0]),
            ms(totals[1]),
            ms(totals[2]),
            ms(totals[3]),
            pct(median(&mut wall_ratios)),
            pct(median(&mut cpu_ratios)),
            pct(lo),
            pct(hi),
        ));
    }
    c.final_summary();
    let load = fs_err::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nmemory tracking on vs off:");
    for r in report {
        println!("{r}");
    }
    println!(
        "load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
