//! Soak of the real agent for `OUTPOST_SOAK_SECONDS` (default 60 s in CI;
//! `scripts/soak` runs the long form, 10 minutes by default).
//!
//! * The agent with 200 instances of mixed checks (an OpenMetrics scrape of a local
//!   exposition, a trivial check, one that allocates and frees, one that raises every third
//!   run).
//! * The daemon: `soak_daemon.rs`.
//!
//! After a warm-up (a quarter of the duration, at most 60 s) the process is sampled
//! (`/proc/<pid>/status` VmRSS and Threads, `/proc/<pid>/fd`), then again at the end.
//! Asserted: resident memory growth after warm-up <= 5 %, open fds and threads flat, no run
//! late (past its timeout) nor abandoned. The test prints a `SOAK` line with
//! its figures, which `scripts/soak` collects.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

mod agent_support;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use agent_support::{Root, assert_no_rust_noise};
use outpost_testkit::loadgen::ProcessSample;
use serde_json::{Value, json};

/// The soak's duration: `OUTPOST_SOAK_SECONDS`, else 60 s.
fn duration() -> Duration {
    let secs = std::env::var("OUTPOST_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs.max(8))
}

fn warm_up(total: Duration) -> Duration {
    (total / 4).min(Duration::from_secs(60))
}

/// The soak criteria: RSS growth after warm-up <= 5 %, fds and threads flat.
fn assert_flat(what: &str, warm: ProcessSample, end: ProcessSample) {
    #[allow(clippy::cast_precision_loss)]
    let growth = (end.rss as f64 - warm.rss as f64) / warm.rss as f64 * 100.0;
    println!("SOAK {what}: after warm-up {warm}; at end {end}; rss growth {growth:+.2} %");
    assert!(
        growth <= 5.0,
        "{what}: RSS grew {growth:.2} % after warm-up"
    );
    assert!(end.fds <= warm.fds + 2, "{what}: fds {warm} -> {end}");
    assert!(
        end.threads <= warm.threads,
        "{what}: threads {warm} -> {end}"
    );
}

const EXPOSITION: &str = "# HELP soak_requests_total Requests.\n# TYPE soak_requests_total counter\n\
soak_requests_total{code=\"200\"} 1027\nsoak_requests_total{code=\"500\"} 3\n\
# HELP soak_temperature Temperature.\n# TYPE soak_temperature gauge\nsoak_temperature 21.5\n";

/// Serves [`EXPOSITION`] on 127.0.0.1 until the process ends; returns its URL.
fn serve_exposition() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut request = Vec::new();
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{EXPOSITION}",
                EXPOSITION.len()
            );
            // A client that hung up is not the test's concern.
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}/metrics")
}

const SCRAPE: &str = "from datadog_checks.base import OpenMetricsBaseCheckV2\n\
class Scrape(OpenMetricsBaseCheckV2):\n    __NAMESPACE__ = 'soak'\n";

const TRIVIAL: &str = "from datadog_checks.base import AgentCheck\n\
class Trivial(AgentCheck):\n    def check(self, instance):\n        self.gauge('soak.trivial', 1)\n";

const ALLOCATES: &str = r#"
from datadog_checks.base import AgentCheck
class Allocates(AgentCheck):
    def check(self, instance):
        blocks = [bytearray(4096) for _ in range(256)]
        self.gauge('soak.allocated', sum(len(b) for b in blocks))
        del blocks
"#;

const RAISES: &str = r#"
from datadog_checks.base import AgentCheck
class Raises(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs = 0
    def check(self, instance):
        self.runs += 1
        if self.runs % 3 == 0:
            raise RuntimeError('every third run')
        self.gauge('soak.raises', self.runs)
"#;

/// Instances of each of the four checks.
const EACH: usize = 50;
/// Their interval, seconds.
const INTERVAL: u64 = 5;

fn sum_stat(view: &Value, key: &str) -> u64 {
    view["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["stats"][key].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn the_agent_with_200_mixed_instances_stays_flat() {
    let total = duration();
    let url = serve_exposition();
    let root = Root::new();
    for (name, source) in [
        ("scrape", SCRAPE),
        ("trivial", TRIVIAL),
        ("allocates", ALLOCATES),
        ("raises", RAISES),
    ] {
        root.check(name, source);
        // Distinct instances (`n`), so that each has an ID of its own.
        let instances: String = (0..EACH)
            .map(|n| {
                if name == "scrape" {
                    format!(
                        "  - {{min_collection_interval: {INTERVAL}, n: {n}, openmetrics_endpoint: '{url}', metrics: ['.*']}}\n"
                    )
                } else {
                    format!("  - {{min_collection_interval: {INTERVAL}, n: {n}}}\n")
                }
            })
            .collect();
        root.conf(name, &format!("instances:\n{instances}"));
    }
    let agent = root.start_agent(&[]);
    let pid = agent.child.id();
    let started = Instant::now();
    agent.wait_until("every instance ran", |a| {
        let view = a.get_json("/checks");
        let all = view["instances"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        all.len() == 4 * EACH && all.iter().all(|i| i["stats"]["runs"].as_u64() >= Some(1))
    });
    let warm_end = started + warm_up(total);
    std::thread::sleep(warm_end.saturating_duration_since(Instant::now()));
    let warm = ProcessSample::of(pid).unwrap();
    let end = started + total;
    // Read /checks once a second meanwhile, as a monitoring client would.
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
        let _ = agent.get_json("/checks");
    }
    let last = ProcessSample::of(pid).unwrap();
    let view = agent.get_json("/checks");
    let (runs, late, errors) = (
        sum_stat(&view, "runs"),
        sum_stat(&view, "late"),
        sum_stat(&view, "errors"),
    );
    println!(
        "SOAK agent: {:.0} s, {runs} runs, {errors} errors, {late} late, abandoned runners {}",
        started.elapsed().as_secs_f64(),
        view["abandoned_runners"]
    );
    assert_eq!(view["load_errors"], json!([]), "{}", view["load_errors"]);
    assert_flat("agent", warm, last);
    assert_eq!(late, 0, "no run later than the scheduler's bound");
    assert_eq!(view["abandoned_runners"], 0);
    assert!(errors > 0, "the raising check raised");
    assert!(runs >= (4 * EACH) as u64 * 2, "{runs} runs");
    assert_no_rust_noise(&agent.log());
}
