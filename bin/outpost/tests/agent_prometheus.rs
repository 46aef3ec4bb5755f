//! `outpost agent --listen`: the real Prometheus server (Debian's `/usr/bin/prometheus`)
//! scrapes the agent's `GET /metrics` (it asks for OpenMetrics) while two real checks run,
//! and its query API must give back what the checks submitted.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::Root;
use outpost_testkit::client::{Req, send_blocking};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";

const ALPHA: &str = r#"
from datadog_checks.base import AgentCheck

class AlphaCheck(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = 0

    def check(self, instance):
        self.requests += 10
        self.gauge("alpha.temperature", 21.5, tags=["room:lab", "env:e2e"])
        self.monotonic_count("alpha.requests", self.requests)
        self.submit_histogram_bucket("alpha.latency", 3, 0, 0.1, True, None, tags=["op:get"])
        self.submit_histogram_bucket("alpha.latency", 5, 0.1, 1.0, True, None, tags=["op:get"])
"#;

const BETA: &str = r#"
from datadog_checks.base import AgentCheck

class BetaCheck(AgentCheck):
    def check(self, instance):
        self.gauge("beta.up", 1, tags=["team:core", "canary"])
"#;

const EVERY_SECOND: &str = "init_config:\ninstances:\n  - min_collection_interval: 1\n";

/// A free loopback port (bound then released; the server that takes it binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Prometheus server; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let config = dir.join("prometheus.yml");
        fs_err::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: outpost\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs_err::File::create(&log).unwrap().into_file())
            .spawn()
            .unwrap();
        let p = Self { child, addr, log };
        p.wait_until("Prometheus is ready", || {
            send_blocking(p.addr, &Req::new("GET", "/-/ready"))
                .is_ok_and(|r| r.status == 200)
                .then_some(())
        });
        p
    }

    fn log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `f` every 100 ms until it gives a value; fails after 60 s with Prometheus's log.
    fn wait_until<T>(&self, what: &str, f: impl Fn() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; Prometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The instant vector of `query`: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let r = send_blocking(self.addr, &Req::new("GET", &path)).unwrap();
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of the one series `query` selects, once there is one.
    fn value(&self, query: &str) -> f64 {
        self.wait_until(query, || match self.query(query).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn start(root: &Root) -> (agent_support::AgentProcess, SocketAddr) {
    for (name, source) in [("alpha", ALPHA), ("beta", BETA)] {
        root.check(name, source);
        root.conf(name, EVERY_SECOND);
    }
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = root.start_agent(&["--listen", &listen.to_string()]);
    (agent, listen)
}

#[test]
fn prometheus_scrapes_the_checks_gauges_counters_and_histograms() {
    let root = Root::new();
    let (agent, listen) = start(&root);
    let prometheus = Prometheus::start(root.root(), listen);

    // Two successful scrapes of the agent.
    prometheus.wait_until("two scrapes", || {
        let up = prometheus.query("count_over_time(up{job=\"outpost\"}[1m])");
        matches!(up.as_slice(), [(_, n)] if *n >= 2.0).then_some(())
    });
    let up = prometheus.value("up{job=\"outpost\"}");
    assert!(
        (up - 1.0).abs() < f64::EPSILON,
        "the scrape fails; agent log:\n{}",
        agent.log()
    );

    // A check's gauge, with its tags as labels.
    let t = prometheus.value("alpha_temperature{room=\"lab\",env=\"e2e\"}");
    assert!((t - 21.5).abs() < 1e-9, "{t}");

    // A counter (monotonic_count, +10 per run at a 1 s interval): a multiple of 10, and a
    // positive rate once two scrapes saw it grow.
    let total = prometheus.value("alpha_requests_total");
    assert!(total >= 10.0 && (total % 10.0).abs() < 1e-9, "{total}");
    let rate = prometheus.wait_until("the counter grows", || {
        let r = prometheus.value("rate(alpha_requests_total[10s])");
        (r > 0.0).then_some(r)
    });
    assert!(rate <= 30.0, "+10 a second cannot be {rate}/s");

    // A histogram's buckets, cumulative, with their tags.
    let le = |b: &str| prometheus.value(&format!("alpha_latency_bucket{{op=\"get\",le=\"{b}\"}}"));
    assert!((le("0.1") - 3.0).abs() < 1e-9);
    assert!((le("1") - 8.0).abs() < 1e-9);
    assert!((le("+Inf") - 8.0).abs() < 1e-9);

    // The agent's own: run durations as a histogram, runs, readiness.
    let runs = prometheus.value(
        "sum(outpost_agent_check_run_duration_seconds_bucket{check_name=\"alpha\",le=\"+Inf\"})",
    );
    assert!(runs >= 1.0, "{runs}");
    let runs_total = prometheus.value("sum(outpost_agent_check_runs_total{check_name=\"beta\"})");
    assert!(runs_total >= 1.0, "{runs_total}");
    let errors =
        prometheus.value("sum(outpost_agent_check_run_errors_total{check_name=\"alpha\"})");
    assert!(errors.abs() < f64::EPSILON, "{errors}");
    drop(prometheus);
    agent_support::assert_no_rust_noise(&agent.log());
    drop(agent);
}

#[test]
fn tags_are_labels_and_a_removed_checks_series_go_away() {
    let root = Root::new();
    let (agent, listen) = start(&root);
    let prometheus = Prometheus::start(root.root(), listen);

    let beta = prometheus.wait_until("beta is scraped", || {
        let r = prometheus.query("beta_up");
        (r.len() == 1).then(|| r[0].0.clone())
    });
    assert_eq!(beta["team"], "core", "{beta}");
    assert_eq!(beta["tags"], "canary", "{beta}");
    assert_eq!(beta["job"], "outpost", "{beta}");

    // The agent's own endpoint, in both formats.
    let text = send_blocking(listen, &Req::new("GET", "/metrics")).unwrap();
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        text.text()
            .contains("beta_up{tags=\"canary\",team=\"core\"} 1\n")
    );
    let om = send_blocking(
        listen,
        &Req::new("GET", "/metrics").header("accept", "application/openmetrics-text"),
    )
    .unwrap();
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.text().ends_with("# EOF\n"));
    // Read-only: the reload is refused on TCP.
    let refused = send_blocking(listen, &Req::new("POST", "/checks/reload")).unwrap();
    assert_eq!(refused.status, 405);

    root.remove_conf("beta");
    let summary = agent.post("/checks/reload");
    assert_eq!(summary.status, 200, "{}", summary.text());
    // Gone from the endpoint, then (stale after the next scrape) from Prometheus.
    let scraped = send_blocking(listen, &Req::new("GET", "/metrics")).unwrap();
    assert!(!scraped.text().contains("beta_up"), "{}", scraped.text());
    prometheus.wait_until("beta_up goes stale", || {
        prometheus.query("beta_up").is_empty().then_some(())
    });
    // The agent's own series of the removed instance go too.
    prometheus.wait_until("beta's run series go stale", || {
        prometheus
            .query("outpost_agent_check_runs_total{check_name=\"beta\"}")
            .is_empty()
            .then_some(())
    });
    // The other check's series stay.
    assert_eq!(prometheus.query("alpha_temperature").len(), 1);
    drop(prometheus);
    drop(agent);
}

#[test]
fn a_remote_address_needs_allow_remote_and_a_bad_one_is_a_usage_error() {
    let root = Root::new();
    let no_venv = root.root().join("no-venv");
    let port = free_port();
    // From the command line and from the file: refused at start-up, naming the key.
    for (args, config) in [
        (vec!["--listen".to_owned(), format!("0.0.0.0:{port}")], ""),
        (Vec::new(), "agent: {listen: \"0.0.0.0:1\"}\n"),
    ] {
        root.config(config);
        let out = root
            .outpost(&["agent", "--python-venv", no_venv.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} {config}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("allow_remote"), "{stderr}");
        agent_support::assert_no_rust_noise(&stderr);
        assert!(
            TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "nothing was left listening"
        );
    }
    let out = root
        .outpost(&["agent", "--listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
