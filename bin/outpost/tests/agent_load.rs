//! Load on the real agent's API while 200 check instances run: 64 clients for
//! `OUTPOST_LOAD_SECONDS` (default 15 s in CI; `scripts/soak` runs the 60 s form) reading
//! `/checks`, `/telemetry` and `/debug/vars` and running one check now.
//!
//! Printed: throughput, p50 / p99 per route, answers by status code, the agent's RSS,
//! threads and open fds before and after. Asserted: every answer is a 200 and none is lost,
//! `/checks` still shows the 201 instances all running and no abandoned runner, fds back to
//! their baseline (small tolerance), threads flat (the runner pool does not grow), RSS
//! bounded.

mod agent_support;

use std::time::Duration;

use agent_support::{Root, assert_no_rust_noise};
use outpost_testkit::loadgen::{Call, MixedOptions, ProcessSample, run_mixed_blocking};

const INSTANCES: usize = 200;
const CLIENTS: usize = 64;

const TRIVIAL: &str = r#"
from datadog_checks.base import AgentCheck
class Trivial(AgentCheck):
    def check(self, instance):
        self.gauge("load.trivial", instance.get("n", 0))
"#;

/// The load's duration: `OUTPOST_LOAD_SECONDS`, else 15 s.
fn duration() -> Duration {
    let secs = std::env::var("OUTPOST_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(15);
    Duration::from_secs(secs.max(1))
}

fn plan(c: usize, n: u64) -> Call {
    match (c as u64 + n) % 8 {
        0..=3 => Call::get("/checks"),
        4 | 5 => Call::get("/telemetry"),
        6 => Call::get("/debug/vars"),
        _ => Call::post("POST /checks/single/run", "/checks/single/run".into(), None),
    }
}

#[test]
fn the_agent_api_under_load_with_200_instances_answers_and_stays_flat() {
    let root = Root::new();
    root.check("trivial", TRIVIAL);
    root.check("single", TRIVIAL);
    let instances: String = (0..INSTANCES)
        .map(|n| format!("  - {{min_collection_interval: 1, n: {n}}}\n"))
        .collect();
    root.conf("trivial", &format!("instances:\n{instances}"));
    root.conf("single", "instances:\n  - {min_collection_interval: 1}\n");
    let agent = root.start_agent(&[]);
    agent.wait_until("every instance ran", |a| {
        let view = a.get_json("/checks");
        let all = view["instances"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        all.len() == INSTANCES + 1 && all.iter().all(|i| i["stats"]["runs"].as_u64() >= Some(1))
    });
    let pid = agent.child.id();
    let before = ProcessSample::of(pid).unwrap();
    let report = run_mixed_blocking(
        &agent.socket,
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
    println!("agent before: {before}\nagent after:  {after_load}");

    let codes = report.by_status();
    let unexpected: Vec<_> = codes.iter().filter(|(c, _)| **c != 200).collect();
    assert!(unexpected.is_empty(), "unexpected codes: {unexpected:?}");
    assert_eq!(
        report.transport_errors, 0,
        "requests lost with their connection"
    );
    assert!(report.answered() > 0);

    let view = agent.get_json("/checks");
    assert_eq!(
        view["instances"].as_array().map(Vec::len),
        Some(INSTANCES + 1)
    );
    assert_eq!(
        view["abandoned_runners"], 0,
        "{}",
        view["abandoned_runners"]
    );
    assert!(
        view["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|i| i["error"].is_null()),
        "a trivial run failed"
    );

    let latest = std::cell::Cell::new(after_load);
    agent.wait_until("the agent's fds back to their baseline", |_| {
        latest.set(ProcessSample::of(pid).unwrap());
        latest.get().fds <= before.fds + 4
    });
    let settled = latest.get();
    println!("agent settled: {settled}");
    assert_no_rust_noise(&agent.log());
    assert!(
        settled.threads <= before.threads + 2,
        "threads grew: {before} -> {settled}"
    );
    let bound = (before.rss * 2).max(before.rss + 128 * 1024 * 1024);
    assert!(
        settled.rss <= bound,
        "RSS {} above {bound} (before {})",
        settled.rss,
        before.rss
    );
}
