//! Load on the real daemon: 64 clients over its socket for `OUTPOST_LOAD_SECONDS` (default
//! 15 s in CI; `scripts/soak` runs the 60 s form), `GET /status` mixed with install /
//! experiment start / promote / start / stop cycles on 8 packages.
//!
//! Printed: throughput, p50 / p99 per route, answers by status code, the daemon's RSS,
//! threads and open fds before and after. Asserted: no 5xx and no code other than 200 and
//! 409 (another operation holds the package, or the package is not in the state the
//! operation needs), no request lost with its connection, the state on disk equals
//! `/status`, fds back to their baseline (small tolerance) and RSS bounded.

mod support;

use std::time::Duration;

use outpost_testkit::loadgen::{Call, MixedOptions, ProcessSample, run_mixed_blocking};
use serde_json::json;
use support::{Daemon, Scratch, link_target, standard, wait_for};

const PACKAGES: usize = 8;
const CLIENTS: usize = 64;

/// The load's duration: `OUTPOST_LOAD_SECONDS`, else 15 s.
fn duration() -> Duration {
    let secs = std::env::var("OUTPOST_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(15);
    Duration::from_secs(secs.max(1))
}

/// Client `c`'s `n`-th request: three `/status` reads, then the next step of a cycle on one
/// of the packages (clients share packages, so operations collide).
fn plan(c: usize, n: u64) -> Call {
    if n % 4 != 3 {
        return Call::get("/status");
    }
    let op = usize::try_from(n / 4).unwrap_or(0);
    let pkg = format!("pkg{}", (c + op) % PACKAGES);
    match (c / PACKAGES + op / PACKAGES) % 5 {
        0 => Call::post(
            "POST /{pkg}/install",
            format!("/{pkg}/install"),
            Some(json!({"version": "1"})),
        ),
        1 => Call::post(
            "POST /{pkg}/experiment/start",
            format!("/{pkg}/experiment/start"),
            Some(json!({"version": "2"})),
        ),
        2 => Call::post(
            "POST /{pkg}/experiment/promote",
            format!("/{pkg}/experiment/promote"),
            None,
        ),
        3 => Call::post(
            "POST /{pkg}/experiment/start",
            format!("/{pkg}/experiment/start"),
            Some(json!({"version": "3"})),
        ),
        _ => Call::post(
            "POST /{pkg}/experiment/stop",
            format!("/{pkg}/experiment/stop"),
            None,
        ),
    }
}

#[test]
fn the_daemon_under_mixed_load_answers_only_expected_codes_and_stays_consistent() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let mut catalog = Vec::new();
    for p in 0..PACKAGES {
        for v in ["1", "2", "3"] {
            catalog.push(standard(&fx, &format!("pkg{p}"), v).layout_entry());
        }
    }
    let d = Daemon::start(&s.root());
    d.set_catalog(&catalog);
    // Warm-up: every package installed once, so the baseline includes a working daemon.
    for p in 0..PACKAGES {
        d.post(&format!("/pkg{p}/install"), Some(&json!({"version": "1"})))
            .assert_ok_empty();
    }
    let pid = d.pid();
    let before = ProcessSample::of(pid).unwrap();
    let report = run_mixed_blocking(
        &d.socket,
        MixedOptions {
            clients: CLIENTS,
            duration: duration(),
        },
        2,
        plan,
    )
    .unwrap();
    let after_load = ProcessSample::of(pid).unwrap();
    println!("{}", report.table());
    println!("daemon before: {before}\ndaemon after:  {after_load}");

    let codes = report.by_status();
    let unexpected: Vec<_> = codes
        .iter()
        .filter(|(c, _)| !matches!(**c, 200 | 409))
        .collect();
    assert!(unexpected.is_empty(), "unexpected codes: {unexpected:?}");
    assert_eq!(
        report.transport_errors, 0,
        "requests lost with their connection"
    );
    assert!(codes.get(&200).copied().unwrap_or(0) > 0);
    let ops: usize = report
        .routes
        .iter()
        .filter(|(name, _)| name.starts_with("POST"))
        .map(|(_, r)| r.by_status.get(&200).copied().unwrap_or(0))
        .sum();
    assert!(ops > 0, "some operations went through");

    // Every answer was received, so every operation is over: disk and /status agree.
    let status = d.status();
    for p in 0..PACKAGES {
        let name = format!("pkg{p}");
        let entry = &status["packages"][&name];
        let stable = entry["Stable"].as_str().unwrap_or_default();
        let experiment = entry["Experiment"].as_str().unwrap_or_default();
        assert_eq!(
            link_target(&s.root(), &name, "stable").unwrap_or_default(),
            stable,
            "stable of {name}"
        );
        assert_eq!(
            link_target(&s.root(), &name, "experiment")
                .filter(|e| e != stable)
                .unwrap_or_default(),
            experiment,
            "experiment of {name}"
        );
    }

    // The clients' connections are closed: the fds go back to their baseline.
    let settled = wait_for("the daemon's fds back to their baseline", || {
        ProcessSample::of(pid)
            .ok()
            .filter(|a| a.fds <= before.fds + 4)
    });
    println!("daemon settled: {settled}");
    let bound = (before.rss * 3).max(before.rss + 96 * 1024 * 1024);
    assert!(
        settled.rss <= bound,
        "RSS {} above {bound} (before {})",
        settled.rss,
        before.rss
    );
}
