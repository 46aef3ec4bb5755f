//! The agent's status page with 1,000 check instances, over a real loopback TCP listener.
//!
//! The instances are generated in code (a `ChecksView` as `GET /checks` gives it: 50 checks,
//! 20 instances each, every one with 60 runs behind it, memory tracked); the page's routes are
//! the agent's ([`outpost_agent::page::spec`], [`outpost_agent::page::tables`]) on the
//! read-only listener. Measured:
//!
//! * `page/first_load_1k`: `GET /` on a fresh connection, the whole page read (rows built,
//!   compared, rendered and sent);
//! * `page/update_poll_1k`: `GET /api/page/updates?since=...` two seconds of runs later (at
//!   the checks' 15 s interval, 134 instances ran once), as the page polls it;
//! * `page/tables_1k`: building the rows alone.
//!
//! The payload sizes are printed after the timings: the first load, an update with nothing
//! new, the two-second poll above, and an update after which every instance ran once.
//!
//! `cargo bench -p outpost-agent --bench page`; without `--bench` a smoke pass.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss
)] // a benchmark

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use outpost_agent::scheduler::{JobStats, LastRun, RECENT_RUNS, RunKind, RunSummary};
use outpost_agent::{ChecksView, InstanceView, PythonStatus};
use outpost_api::page::{PageSource, TableInput};
use outpost_checks::memtrack::MemoryStats;

const INSTANCES: usize = 1000;
const INTERVAL_S: u64 = 15;
const POLL_S: u64 = 2;

fn duration_of(i: usize, run: u64) -> f64 {
    // 2 to 40 ms, different per instance and run.
    2.0 + ((i as u64 * 7919 + run * 104_729) % 38_000) as f64 / 1000.0
}

fn instance(i: usize, start: SystemTime) -> InstanceView {
    let check = format!("bench_check_{:02}", i / 20);
    let id = format!(
        "{check}:{:016x}",
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    let runs = RECENT_RUNS as u64;
    let last = start + Duration::from_secs(INTERVAL_S * runs);
    let duration = duration_of(i, runs);
    let summary = RunSummary {
        error: None,
        warnings: Vec::new(),
        metric_count: 10 + i % 7,
        service_check_count: 1,
        event_count: 0,
        histogram_bucket_count: 0,
    };
    InstanceView {
        check: check.clone(),
        id: id.clone(),
        version: "1.0.0".into(),
        source: "custom",
        config: PathBuf::from(format!("/opt/outpost/conf.d/{check}.d/conf.yaml")),
        index: i % 20,
        interval_s: INTERVAL_S as f64,
        last_run: Some(outpost_agent::scheduler::unix_seconds(last)),
        duration_ms: Some(duration),
        error: None,
        warnings: Vec::new(),
        metric_count: Some(summary.metric_count),
        disabled: None,
        stats: Some(JobStats {
            id,
            interval: Duration::from_secs(INTERVAL_S),
            timeout: Duration::from_secs(INTERVAL_S),
            runs,
            manual_runs: 0,
            errors: 0,
            warnings: 0,
            overruns: 0,
            late: 0,
            running: false,
            running_for: None,
            next_run_in: None,
            disabled: None,
            total_duration: Duration::from_secs(1),
            total_cpu: Duration::from_millis(500),
            last_run: Some(LastRun {
                kind: RunKind::Scheduled,
                started_at: last,
                duration: Duration::from_secs_f64(duration / 1000.0),
                start_delay: Duration::ZERO,
                cpu_time: Duration::from_secs_f64(duration / 2000.0),
                late: false,
                overrun: false,
                summary,
            }),
            recent_ms: (0..runs).map(|r| duration_of(i, r)).collect(),
        }),
        memory: Some(MemoryStats {
            allocations: 1000,
            frees: 900,
            allocated_bytes: 4 << 20,
            freed_bytes: 3 << 20,
            inuse_bytes: (1 << 20) + i as u64 * 4096,
        }),
    }
}

/// One more run of instance `i`: what changes in `GET /checks` when it ran.
fn ran(v: &mut InstanceView, i: usize) {
    let stats = v.stats.as_mut().unwrap();
    stats.runs += 1;
    let run = stats.runs;
    let duration = duration_of(i, run);
    if stats.recent_ms.len() >= RECENT_RUNS {
        stats.recent_ms.remove(0);
    }
    stats.recent_ms.push(duration);
    v.last_run = v.last_run.map(|t| t + INTERVAL_S as f64);
    v.duration_ms = Some(duration);
    if let Some(m) = v.memory.as_mut() {
        m.inuse_bytes = (1 << 20) + (i as u64 * 4096 + run * 12_288) % (1 << 20);
    }
}

struct Source(Mutex<ChecksView>);

impl PageSource for Source {
    fn tables(&self) -> Vec<TableInput> {
        outpost_agent::page::tables(&self.0.lock().unwrap())
    }
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: agent\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::with_capacity(1 << 20);
    s.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{path}");
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    raw.split_off(at + 4)
}

fn version_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["v"].as_str().unwrap().to_owned()
}

fn main() {
    let start = SystemTime::now() - Duration::from_secs(3600);
    let view = ChecksView {
        python: PythonStatus {
            available: true,
            error: None,
            info: None,
        },
        runners: 4,
        abandoned_runners: 0,
        disabled: 0,
        instances: (0..INSTANCES).map(|i| instance(i, start)).collect(),
        load_errors: Vec::new(),
        validations: Vec::new(),
    };
    let source = Arc::new(Source(Mutex::new(view)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = outpost_api::ReadOnlyServer::builder()
            .mount(outpost_api::page::routes(
                outpost_agent::page::spec(),
                Arc::clone(&source) as Arc<dyn PageSource>,
                Duration::ZERO,
            ))
            .bind(
                "127.0.0.1:0".parse().unwrap(),
                outpost_api::Exposure::Loopback,
            )
            .await
            .unwrap();
        let addr = listener.local_addr();
        tokio::spawn(listener.serve(std::future::pending()));
        addr
    });

    let first = get(addr, "/");
    let html = String::from_utf8(first.clone()).unwrap();
    assert_eq!(html.matches("<tr data-k=").count(), INSTANCES + 1);
    let v0 = version_of(&get(addr, "/api/page"));
    let idle = get(addr, &format!("/api/page/updates?since={v0}"));
    // Two seconds of runs: the instances due in that window ran once.
    let per_poll = INSTANCES * POLL_S as usize / INTERVAL_S as usize + 1;
    {
        let mut view = source.0.lock().unwrap();
        for (i, v) in view.instances.iter_mut().enumerate().take(per_poll) {
            ran(v, i);
        }
    }
    let poll_path = format!("/api/page/updates?since={v0}");
    let poll = get(addr, &poll_path);
    let v1 = version_of(&poll);
    {
        let mut view = source.0.lock().unwrap();
        for (i, v) in view.instances.iter_mut().enumerate() {
            ran(v, i);
        }
    }
    let all_path = format!("/api/page/updates?since={v1}");
    let all = get(addr, &all_path);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("page");
        g.bench_function("first_load_1k", |b| b.iter(|| get(addr, "/").len()));
        g.bench_function("update_poll_1k", |b| b.iter(|| get(addr, &poll_path).len()));
        g.bench_function("tables_1k", |b| b.iter(|| source.tables().len()));
        g.finish();
    }
    c.final_summary();

    let load = fs_err::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nstatus page, {INSTANCES} instances:\n\
         first load (GET /): {} bytes\n\
         update, nothing new: {} bytes\n\
         update after {POLL_S} s ({per_poll} instances ran once, {INTERVAL_S} s interval): {} bytes (target <= 20 KB)\n\
         update after every instance ran once: {} bytes\n\
         load average: {}",
        first.len(),
        idle.len(),
        poll.len(),
        all.len(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
