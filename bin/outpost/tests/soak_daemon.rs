//! Soak of the real daemon for `OUTPOST_SOAK_SECONDS` (default 60 s in CI; `scripts/soak`
//! runs the long form, 10 minutes by default): a `GET /status` every 10 ms plus an install /
//! experiment cycle every 10 s (the agent's soak is `soak_agent.rs`).
//!
//! After a warm-up (a quarter of the duration, at most 60 s) the daemon is sampled
//! (`/proc/<pid>/status` VmRSS and Threads, `/proc/<pid>/fd`), then again at the end, once
//! the load has stopped and the daemon has settled (see [`settled`]).
//! Asserted: resident memory growth after warm-up <= 5 %, open fds and threads flat, every
//! request answered 200, every operation successful, the repository's invariants at the end.
//! The test prints a `SOAK` line with its figures, which `scripts/soak` collects.

use std::time::{Duration, Instant};

use outpost_testkit::client::{Req, send_blocking};
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

/// The daemon's end sample, once it has settled: tokio keeps an idle blocking-pool thread
/// for 10 s, so a thread started for the last operation or a late `/status` is still there
/// when the load stops, and whether the warm-up sample caught one such thread is a matter of
/// timing. A leaked thread or fd never goes away; a pool thread retires within its keep-alive.
/// So the daemon is sampled every 250 ms for up to 15 s after the load stops, and the first
/// sample within the criteria (else the last one) is the end sample.
fn settled(pid: u32, warm: &ProcessSample) -> ProcessSample {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sample = ProcessSample::of(pid).expect("the daemon is running");
        if (sample.threads <= warm.threads && sample.fds <= warm.fds + 2)
            || Instant::now() >= deadline
        {
            return sample;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

mod support;

#[test]
fn the_daemon_under_steady_requests_and_install_cycles_stays_flat() {
    let total = duration();
    let s = support::Scratch::new();
    let fx = s.fixtures();
    let catalog: Vec<Value> = ["1", "2", "3"]
        .iter()
        .map(|v| support::standard(&fx, "pkg", v).layout_entry())
        .collect();
    let d = support::Daemon::start(&s.root());
    d.set_catalog(&catalog);
    let pid = d.pid();
    let cycle: [(&str, Option<Value>); 5] = [
        ("/pkg/install", Some(json!({"version": "1"}))),
        ("/pkg/experiment/start", Some(json!({"version": "2"}))),
        ("/pkg/experiment/promote", None),
        ("/pkg/experiment/start", Some(json!({"version": "3"}))),
        ("/pkg/experiment/stop", None),
    ];
    let status = Req::new("GET", "/status");
    let started = Instant::now();
    let warm_end = started + warm_up(total);
    let end = started + total;
    let mut warm = None;
    let (mut requests, mut ops, mut step) = (0u64, 0u64, 0usize);
    let mut next_op = started;
    let mut tick = started;
    while Instant::now() < end {
        if warm.is_none() && Instant::now() >= warm_end {
            warm = Some(ProcessSample::of(pid).unwrap());
        }
        if Instant::now() >= next_op {
            let (path, body) = &cycle[step % cycle.len()];
            d.post(path, body.as_ref()).assert_ok_empty();
            step += 1;
            ops += 1;
            next_op += Duration::from_secs(10);
        }
        let r = send_blocking(&d.socket, &status).unwrap();
        assert_eq!(r.status, 200);
        requests += 1;
        tick += Duration::from_millis(10);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
    }
    println!(
        "SOAK daemon: {:.0} s, {requests} requests, {ops} operations",
        started.elapsed().as_secs_f64()
    );
    let warm = warm.unwrap();
    let last = settled(pid, &warm);
    assert_flat("daemon", warm, last);
    support::assert_invariants(&s.root(), "pkg", &|v| support::standard_files("pkg", v));
}
