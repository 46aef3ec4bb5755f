//! `outpost daemon --listen` / `telemetry.listen`: the daemon's read-only TCP listener. The
//! real daemon is scraped over TCP after an install, an experiment promoted by a request and
//! one rolled back by its health watch; every series must be there with its value, in both
//! formats. The listener refuses every method but GET/HEAD and a non-loopback address
//! without `telemetry.allow_remote`. The fleet series show a poller that cannot reach its
//! registry. A real Prometheus (Debian's) scrapes it through
//! file-based service discovery and its query API gives the same values back.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use outpost_testkit::client::{Req, Response, send_blocking};
use outpost_testkit::{Prometheus, ScrapeTarget};
use serde_json::json;
use support::*;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn tcp(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Req::new(method, path).header("Host", &addr.to_string());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    send_blocking(addr, &req).unwrap()
}

fn scrape(addr: SocketAddr) -> String {
    let r = tcp(addr, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// The value of the sample whose line starts with `series ` (labels as rendered: sorted).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

fn with_health(dir: &Path, version: &str, script: &str) -> Fixture {
    let mut files = standard_files("pkg", version);
    files.push(("outpost/health".into(), script.as_bytes().to_vec(), 0o755));
    package(dir, "pkg", version, files)
}

fn daemon_listening(root: &Path, addr: SocketAddr) -> Daemon {
    Daemon::start_with(
        root,
        DaemonOptions {
            args: vec!["--listen".into(), addr.to_string()],
            env: vec![("OUTPOST_EXPERIMENT_MIN_DURATION".into(), "100ms".into())],
            ..Default::default()
        },
    )
}

/// Installs 1, runs experiment 2 and promotes it, then runs experiment 3 whose health
/// command fails until the watch rolls it back: `pkg` ends with stable 2, no experiment.
fn install_promote_rollback(s: &Scratch, d: &Daemon, before_promote: impl FnOnce()) {
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\nexit 0\n");
    let v3 = with_health(&fx, "3", "#!/bin/sh\necho broken\nexit 1\n");
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry(), v3.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "1h"}})),
    )
    .assert_ok_empty();
    before_promote();
    d.post("/pkg/experiment/promote", None).assert_ok_empty();
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "3", "health": {"interval": "100ms", "failures": 2}})),
    )
    .assert_ok_empty();
    wait_for("the health watch to roll 3 back", || {
        let task = d.task("pkg")?;
        (task["operation"] == "auto_stop_experiment" && task["state"] == "ERROR").then_some(())
    });
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
}

#[test]
fn metrics_over_tcp_show_packages_operations_and_watch_outcomes() {
    let s = Scratch::new();
    let addr = free_addr();
    let d = daemon_listening(&s.root(), addr);
    let idle = scrape(addr);
    assert!(
        sample(&idle, "outpost_daemon_start_time_seconds").is_some(),
        "{idle}"
    );
    assert_eq!(
        sample(&idle, "outpost_daemon_packages_installed"),
        Some(0.0)
    );
    assert!(!idle.contains("outpost_package_info"), "{idle}");

    install_promote_rollback(&s, &d, || {
        let during = scrape(addr);
        assert_eq!(
            sample(
                &during,
                "outpost_package_info{experiment=\"2\",package=\"pkg\",stable=\"1\"}"
            ),
            Some(1.0),
            "{during}"
        );
    });
    let text = scrape(addr);
    for (series, value) in [
        (
            "outpost_package_info{experiment=\"\",package=\"pkg\",stable=\"2\"}",
            1.0,
        ),
        (
            "outpost_daemon_operations_total{operation=\"install\",result=\"ok\"}",
            1.0,
        ),
        (
            "outpost_daemon_operations_total{operation=\"start_experiment\",result=\"ok\"}",
            2.0,
        ),
        (
            "outpost_daemon_operations_total{operation=\"promote_experiment\",result=\"ok\"}",
            1.0,
        ),
        (
            "outpost_daemon_operations_total{operation=\"auto_stop_experiment\",result=\"health_check_failed\"}",
            1.0,
        ),
        (
            "outpost_daemon_experiment_watches_total{outcome=\"promoted\",package=\"pkg\"}",
            1.0,
        ),
        (
            "outpost_daemon_experiment_watches_total{outcome=\"health_check_failed\",package=\"pkg\"}",
            1.0,
        ),
        (
            "outpost_daemon_health_runs_total{package=\"pkg\",result=\"fail\",target=\"package\"}",
            2.0,
        ),
        ("outpost_daemon_catalog_entries", 3.0),
        ("outpost_daemon_packages_installed", 1.0),
        ("outpost_daemon_operations_waiting", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // One info series per package: the versions it left are gone.
    assert_eq!(text.matches("outpost_package_info{").count(), 1, "{text}");
    assert!(text.contains("# TYPE outpost_package_info gauge"), "{text}");
    assert!(
        text.contains("# TYPE outpost_daemon_operation_duration_seconds histogram"),
        "{text}"
    );
    // The listener's own requests are counted in the same registry.
    assert!(
        text.contains("outpost_api_requests_total{method=\"GET\",module=\"metrics\""),
        "{text}"
    );

    // OpenMetrics when asked, as Prometheus does.
    let om = tcp(
        addr,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = om.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE outpost_daemon_experiment_watches counter"),
        "{om}"
    );
    assert!(
        om.contains("outpost_package_info{experiment=\"\",package=\"pkg\",stable=\"2\"} 1"),
        "{om}"
    );
}

#[test]
fn the_listener_only_reads() {
    let s = Scratch::new();
    let addr = free_addr();
    let d = daemon_listening(&s.root(), addr);
    let head = tcp(addr, "HEAD", "/metrics", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for (method, path) in [
        ("POST", "/metrics"),
        ("PUT", "/metrics"),
        ("DELETE", "/metrics"),
        ("POST", "/catalog"),
        ("POST", "/pkg/install"),
    ] {
        let r = tcp(addr, method, path, &[]);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
        assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    }
    // None of the socket's routes is reachable, reads included.
    for path in ["/status", "/catalog", "/debug/vars", "/telemetry"] {
        let r = tcp(addr, "GET", path, &[]);
        assert_eq!(r.status, 404, "GET {path}: {}", r.text());
    }
    // The catalog is untouched: nothing reached the daemon's operations.
    let catalog = d.get("/catalog").json();
    assert_eq!(catalog["packages"], json!([]), "{catalog}");
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let s = Scratch::new();
    let port = free_addr().port();
    // By the command line.
    let mut d = Daemon::spawn(
        &s.root(),
        DaemonOptions {
            args: vec!["--listen".into(), format!("0.0.0.0:{port}")],
            ..Default::default()
        },
    );
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains(&format!("0.0.0.0:{port}")) && log.contains("allow_remote"),
        "{log}"
    );
    assert!(!s.root().join("run/outpost.sock").exists());

    // By the configuration file; then allowed with allow_remote.
    let config = s.config(&format!("telemetry:\n  listen: \"0.0.0.0:{port}\"\n"));
    let mut d = Daemon::spawn(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    assert_eq!(d.wait_exit().code(), Some(1), "{}", d.log());
    let config = s.config(&format!(
        "telemetry:\n  listen: \"0.0.0.0:{port}\"\n  allow_remote: true\n"
    ));
    let _d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let text = scrape(SocketAddr::from(([127, 0, 0, 1], port)));
    assert!(text.contains("outpost_daemon_start_time_seconds"), "{text}");
}

#[test]
fn prometheus_scrapes_the_daemon() {
    let s = Scratch::new();
    let addr = free_addr();
    // telemetry.listen from the configuration file this time.
    let config = s.config(&format!("telemetry:\n  listen: \"{addr}\"\n"));
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            env: vec![("OUTPOST_EXPERIMENT_MIN_DURATION".into(), "100ms".into())],
            ..Default::default()
        },
    );
    install_promote_rollback(&s, &d, || {});
    let prometheus = Prometheus::start(
        &s.path().join("prometheus"),
        Duration::from_millis(500),
        &[ScrapeTarget::new(addr).label("host", "h1")],
    )
    .unwrap();
    let wait = Duration::from_secs(60);
    let one = |query: &str| {
        prometheus
            .wait_until(query, wait, |p| match p.query(query).unwrap().as_slice() {
                [(labels, v)] => Some((labels.clone(), *v)),
                _ => None,
            })
            .unwrap()
    };
    let (labels, up) = one("up{job=\"outpost\"}");
    assert_eq!(up, 1.0);
    assert_eq!(labels["host"], "h1");
    let (labels, v) = one("outpost_package_info");
    assert_eq!(v, 1.0);
    assert_eq!(
        (
            labels["package"].as_str(),
            labels["stable"].as_str(),
            labels.get("experiment")
        ),
        ("pkg", "2", None),
        "an empty label is no label in Prometheus: {labels:?}"
    );
    let (_, rolled_back) =
        one("sum(outpost_daemon_experiment_watches_total{outcome=\"health_check_failed\"})");
    assert_eq!(rolled_back, 1.0);
    let (_, installs) = one("outpost_daemon_operations_total{operation=\"install\",result=\"ok\"}");
    assert_eq!(installs, 1.0);
}

#[test]
fn the_fleet_series_show_a_poller_that_cannot_reach_its_registry() {
    let s = Scratch::new();
    let addr = free_addr();
    // A registry address nobody listens on.
    let registry = free_addr();
    let config = s.config(&format!(
        "registry:\n  insecure_hosts: [\"{registry}\"]\n\
         telemetry:\n  listen: \"{addr}\"\n\
         fleet:\n  source: \"oci://{registry}/fleet/doc:prod\"\n  poll_interval: 200ms\n  \
         allow_unsigned: true\n  host_id: h1\n"
    ));
    let _d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let text = wait_for("a failed poll in /metrics", || {
        let text = scrape(addr);
        sample(
            &text,
            "outpost_fleet_poll_errors_total{reason=\"registry\"}",
        )
        .is_some_and(|v| v >= 1.0)
        .then_some(text)
    });
    assert_eq!(
        sample(&text, "outpost_fleet_converged"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "outpost_fleet_polls_total").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // Every reason is there from the start; no generation before the first document.
    assert_eq!(
        sample(
            &text,
            "outpost_fleet_poll_errors_total{reason=\"bad_signature\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("outpost_fleet_generation "), "{text}");
}
