//! `outpost fleet report --prometheus URL`: three real daemons, each with its own root and
//! metrics listener, scraped by a real Prometheus (file-based discovery); one runs only a
//! stable version, one an experiment, one rolled an experiment back by its health watch. The
//! report (table and JSON) must count them as they are; an unreachable server or a bad URL
//! is a clear error.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use outpost_testkit::{Prometheus, ScrapeTarget};
use serde_json::{Value, json};
use support::*;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn with_health(dir: &Path, version: &str, script: &str) -> Fixture {
    let mut files = standard_files("pkg", version);
    files.push(("outpost/health".into(), script.as_bytes().to_vec(), 0o755));
    package(dir, "pkg", version, files)
}

fn report(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["fleet", "report"]).args(args);
    cli_output(cmd, None)
}

#[test]
fn the_report_counts_hosts_versions_and_rollbacks() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\nexit 0\n");
    let v3 = with_health(&fx, "3", "#!/bin/sh\necho broken\nexit 1\n");
    let catalog = [v1.layout_entry(), v2.layout_entry(), v3.layout_entry()];
    let mut daemons = Vec::new();
    let mut targets = Vec::new();
    for host in ["stable", "trying", "rolled-back"] {
        let addr = free_addr();
        let d = Daemon::start_with(
            &s.path().join(host),
            DaemonOptions {
                args: vec!["--listen".into(), addr.to_string()],
                env: vec![("OUTPOST_EXPERIMENT_MIN_DURATION".into(), "100ms".into())],
                ..Default::default()
            },
        );
        d.set_catalog(&catalog);
        d.post("/pkg/install", Some(&json!({"version": "1"})))
            .assert_ok_empty();
        targets.push(ScrapeTarget::new(addr).label("host", host));
        daemons.push(d);
    }
    daemons[1]
        .post(
            "/pkg/experiment/start",
            Some(&json!({"version": "2", "health": {"interval": "1h"}})),
        )
        .assert_ok_empty();
    let rolled = &daemons[2];
    rolled
        .post(
            "/pkg/experiment/start",
            Some(&json!({"version": "3", "health": {"interval": "100ms", "failures": 2}})),
        )
        .assert_ok_empty();
    wait_for("the watch to roll 3 back", || {
        let task = rolled.task("pkg")?;
        (task["operation"] == "auto_stop_experiment" && task["state"] == "ERROR").then_some(())
    });

    let prometheus = Prometheus::start(
        &s.path().join("prometheus"),
        Duration::from_millis(500),
        &targets,
    )
    .unwrap();
    prometheus
        .wait_until("every daemon scraped after the rollback", Duration::from_secs(60), |p| {
            let info = p.query("count(outpost_package_info)").unwrap();
            let rolled = p
                .query("sum(outpost_daemon_experiment_watches_total{outcome=\"health_check_failed\"})")
                .unwrap();
            (info.first().map(|s| s.1) == Some(3.0) && rolled.first().map(|s| s.1) == Some(1.0))
                .then_some(())
        })
        .unwrap();

    let out = report(&["--prometheus", &prometheus.url(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["prometheus"], format!("{}/", prometheus.url()));
    assert_eq!(r["hosts"], 3, "{r}");
    assert_eq!(
        r["packages"],
        json!([
            {"package": "pkg", "stable": "1", "experiment": "", "hosts": 2},
            {"package": "pkg", "stable": "1", "experiment": "2", "hosts": 1},
        ]),
        "{r}"
    );
    assert_eq!(
        r["rolled_back"],
        json!([{"package": "pkg", "hosts": 1}]),
        "{r}"
    );
    // No fleet document was applied by any of them.
    assert_eq!(r["generations"], json!([]), "{r}");
    assert_eq!(r["poll_errors"], json!([]), "{r}");

    // The selector narrows every figure.
    let out = report(&[
        "--prometheus",
        &prometheus.url(),
        "--selector",
        "host=~\"stable|trying\"",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["hosts"], 2, "{r}");
    assert_eq!(r["rolled_back"], json!([]), "{r}");

    let out = report(&["--prometheus", &prometheus.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_eq!(
        table,
        format!(
            "3 hosts reporting to {}/\n\
             generation: none applied\n\
             \n\
             PACKAGE  STABLE  EXPERIMENT  HOSTS  ROLLED BACK\n\
             pkg      1       -           2      1\n\
             pkg      1       2           1\n",
            prometheus.url()
        )
    );

    // A query the server refuses is named with its reason.
    let out = report(&["--prometheus", &prometheus.url(), "--selector", "host=="]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Prometheus refused the query"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_server_or_a_bad_url_is_a_clear_error() {
    let addr = free_addr();
    let out = report(&["--prometheus", &format!("http://{addr}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("cannot reach Prometheus at http://{addr}/")),
        "{}",
        stderr(&out)
    );
    let out = report(&["--prometheus", &format!("http://{addr}"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("\"error\""), "{}", stdout(&out));
    for bad in ["localhost:9090", "ftp://h/"] {
        let out = report(&["--prometheus", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&out).contains("invalid --prometheus URL"),
            "{}",
            stderr(&out)
        );
    }
}
