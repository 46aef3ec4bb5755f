//! The scheduler under load, with real Python checks through the runtime:
//!
//! * **Soak** (the target): 1,000 instances of a trivial check (one gauge) at a 1 s interval
//!   on 4 runners, through the whole agent (scheduler, runner threads, sinks), measured over a
//!   60 s window after every instance has run once:
//!   - the share of scheduled runs that started within 100 ms of their due time (the
//!     scheduler's start-delay histogram, start measured on the runner thread);
//!   - the agent's own CPU beyond the checks' work: process CPU time
//!     (`CLOCK_PROCESS_CPUTIME_ID`) over the window minus the CPU time the runner threads
//!     spent inside `run()` (`CLOCK_THREAD_CPUTIME_ID` around each run, summed by the
//!     scheduler), as a share of one core.
//! * Criterion groups: committing one trivial run to the series store, and a run-now round
//!   trip of a no-op Rust job through the scheduler (dispatch to a runner thread and back).
//!
//! `cargo bench -p outpost-agent --bench scheduler`. Without `--bench` (`cargo test
//! --benches`) it runs a 3 s soak with 50 instances and one criterion pass, as a smoke test.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a benchmark

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use outpost_agent::scheduler::{Job, JobReport, NoObserver, RunSummary};
use outpost_agent::{Agent, AgentOptions, Scheduler, SchedulerConfig, SeriesStore};
use outpost_checks::{Metric, MetricType, Runtime, RuntimeConfig, Submissions};
use outpost_types::config::AgentConfig;

mod common;
use common::{NoFormat, venv};

const TRIVIAL: &str = r#"
from datadog_checks.base import AgentCheck

class TrivialCheck(AgentCheck):
    def check(self, instance):
        self.gauge("trivial.value", 1, tags=["instance:%d" % instance["i"]])
"#;

fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time per thread name (`comm`), from `/proc/self/task/*/stat`.
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let mut out = std::collections::BTreeMap::new();
    for task in fs_err::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = fs_err::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let cpu: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        *out.entry(name).or_insert(0.0) += cpu / ticks;
    }
    out
}

fn loadavg() -> String {
    fs_err::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The soak: returns the figures as text.
fn soak(instances: usize, window: Duration) -> String {
    let root = tempfile::tempdir().unwrap().keep();
    let (conf, checks) = (root.join("conf.d"), root.join("checks.d"));
    fs_err::create_dir_all(&conf).unwrap();
    fs_err::create_dir_all(&checks).unwrap();
    fs_err::write(checks.join("trivial.py"), TRIVIAL).unwrap();
    let mut yaml = String::from("instances:\n");
    for i in 0..instances {
        yaml.push_str(&format!("  - {{min_collection_interval: 1, i: {i}}}\n"));
    }
    fs_err::write(conf.join("trivial.yaml"), yaml).unwrap();
    let runtime =
        Runtime::start(RuntimeConfig::new(venv(), root.join("run")).with_checks_dir(&checks))
            .unwrap();

    // As in `outpost agent`: two workers for the API and the scheduling loop.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut options = AgentOptions::new(
            &root,
            &conf,
            &checks,
            venv(),
            AgentConfig::default(),
            Arc::new(NoFormat),
        )
        .unwrap();
        options.runtime = Some(runtime);
        let agent = Agent::start(options).await.unwrap();
        assert_eq!(agent.scheduler_stats().jobs, instances);
        // Warm up: every instance has run at least once (first runs import lazily).
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.scheduler().jobs().iter().any(|j| j.runs == 0) {
            assert!(Instant::now() < deadline, "instances did not all start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let load_before = loadavg();
        let s0 = agent.scheduler_stats();
        let threads0 = cpu_by_thread();
        let (t0, cpu0) = (Instant::now(), process_cpu());
        tokio::time::sleep(window).await;
        let (t1, cpu1) = (Instant::now(), process_cpu());
        let threads1 = cpu_by_thread();
        let s1 = agent.scheduler_stats();
        let load_after = loadavg();

        let wall = (t1 - t0).as_secs_f64();
        let runs = s1.runs - s0.runs;
        let started = s1.start_delay.total() - s0.start_delay.total();
        let within = s1.start_delay.at_most(100) - s0.start_delay.at_most(100);
        let within_10 = s1.start_delay.at_most(10) - s0.start_delay.at_most(10);
        let run_cpu = (s1.run_cpu - s0.run_cpu).as_secs_f64();
        let proc_cpu = (cpu1 - cpu0).as_secs_f64();
        let agent_cpu = proc_cpu - run_cpu;
        let errors = s1.errors - s0.errors;
        let late = s1.late - s0.late;
        let overruns = s1.overruns - s0.overruns;
        let mut counts = String::new();
        for (i, (a, b)) in s1.start_delay.counts.iter().zip(&s0.start_delay.counts).enumerate() {
            let bound = s1
                .start_delay
                .bounds_ms
                .get(i)
                .map_or("+Inf".to_owned(), |b| format!("{b}ms"));
            counts.push_str(&format!(" <={bound}:{}", a - b));
        }
        let mut threads = String::new();
        for (name, cpu) in &threads1 {
            let delta = cpu - threads0.get(name).copied().unwrap_or(0.0);
            if delta > 0.0 {
                threads.push_str(&format!(" {name}: {delta:.2} s;"));
            }
        }
        agent.shutdown().await.unwrap();
        #[allow(clippy::cast_precision_loss)]
        let report = format!(
            "soak: {instances} instances x 1 s interval, 4 runners, {wall:.1} s window\n\
             load average before/after: {load_before} / {load_after}\n\
             runs: {runs} ({:.1}/s, expected {instances}/s), errors {errors}, late {late}, overruns {overruns}\n\
             start delay: {within}/{started} = {:.3}% within 100 ms (target >= 99%), {:.3}% within 10 ms\n\
             delay histogram (per bucket):{counts}\n\
             process CPU {proc_cpu:.3} s, inside runs {run_cpu:.3} s ({:.1} us/run), \
             agent's own {agent_cpu:.3} s = {:.2}% of a core (target <= 5%), {:.1} us/run\n\
             CPU by thread (/proc, 10 ms ticks):{threads}\n",
            runs as f64 / wall,
            100.0 * within as f64 / started.max(1) as f64,
            100.0 * within_10 as f64 / started.max(1) as f64,
            1e6 * run_cpu / runs.max(1) as f64,
            100.0 * agent_cpu / wall,
            1e6 * agent_cpu / runs.max(1) as f64,
        );
        report
    })
}

/// A job that does nothing, for the scheduler's own cost.
struct Noop(String);

struct NoopReport;

impl JobReport for NoopReport {
    fn summary(&self) -> RunSummary {
        RunSummary::default()
    }
}

impl Job for Noop {
    type Report = NoopReport;
    fn id(&self) -> &str {
        &self.0
    }
    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }
    fn run(&self) -> NoopReport {
        NoopReport
    }
    fn cancel(&self) {}
}

fn trivial_submissions() -> Submissions {
    Submissions {
        metrics: vec![Metric {
            name: "trivial.value".into(),
            metric_type: MetricType::Gauge,
            value: 1.0,
            tags: vec!["instance:42".into()],
            hostname: String::new(),
            flush_first_value: false,
        }],
        ..Submissions::default()
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let store = SeriesStore::new();
        let subs = trivial_submissions();
        let mut g = c.benchmark_group("sinks");
        g.bench_function("commit_one_gauge", |b| {
            b.iter(|| store.commit("trivial:0123456789abcdef", &subs))
        });
        g.finish();
    }
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let scheduler = rt.block_on(async {
            let s = Scheduler::start(
                SchedulerConfig {
                    runners: 4,
                    timeout: None,
                    spread: true,
                    dedicated_thread: true,
                },
                Arc::new(NoObserver),
            )
            .unwrap();
            s.add(Arc::new(Noop("noop:1".into()))).await.unwrap();
            s
        });
        let mut g = c.benchmark_group("scheduler");
        g.bench_function("run_now_noop_round_trip", |b| {
            b.iter(|| rt.block_on(scheduler.run_now("noop:1")).unwrap())
        });
        g.finish();
        rt.block_on(scheduler.shutdown(Duration::from_secs(1)))
            .unwrap();
    }
    c.final_summary();

    let window = std::env::var("OUTPOST_BENCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs);
    let report = if full {
        soak(1000, window)
    } else {
        soak(50, Duration::from_secs(3))
    };
    println!("\n{report}");
}
