//! What `outpost agent reload` and `outpost agent status` exit with, and what the agent logs:
//! a reload that leaves a configuration unloaded is a failure (HTTP 400, exit 1, the errors
//! printed), an agent without Python makes `status` exit 1, each API request leaves one
//! access line, and a failing check is logged when it starts failing, not on every run.

mod agent_support;

use agent_support::{Root, assert_no_rust_noise};
use rustix::process::Signal;

const GOOD: &str = r#"
from datadog_checks.base import AgentCheck
class Good(AgentCheck):
    def check(self, instance):
        self.gauge("good.up", 1)
"#;

const RAISING: &str = r#"
from datadog_checks.base import AgentCheck
class Raising(AgentCheck):
    def check(self, instance):
        raise RuntimeError("the endpoint is down")
"#;

const EVERY_SECOND: &str = "init_config:\ninstances:\n  - min_collection_interval: 1\n";

#[test]
fn a_reload_that_fails_to_load_a_configuration_exits_1_and_prints_the_errors() {
    let root = Root::new();
    root.check("good", GOOD);
    root.conf("good", EVERY_SECOND);
    root.check("raising", RAISING);
    root.conf("raising", EVERY_SECOND);
    let mut agent = root.start_agent(&[]);

    // A failing check: one line when it starts failing, not one per run.
    agent.wait_until("the raising check failed three times", |a| {
        a.instance("raising")["stats"]["errors"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    let id = agent.instance("raising")["id"].as_str().unwrap().to_owned();
    let log = agent.log();
    let failing: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(failing.len(), 1, "{log}");
    assert!(failing[0].contains("check failing"), "{log}");
    assert!(failing[0].contains("the endpoint is down"), "{log}");
    assert_eq!(failing[0].matches(&id).count(), 1, "{log}");

    // A configuration whose check does not even compile.
    root.check("broken", "this is not python(\n");
    root.conf("broken", EVERY_SECOND);
    let out = root.outpost(&["agent", "reload"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reloaded with 1 load error"), "{stderr}");
    assert!(stderr.contains("broken"), "{stderr}");
    assert_no_rust_noise(&stderr);

    let answer = agent.post("/checks/reload");
    assert_eq!(answer.status, 400, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken"),
        "{body}"
    );
    // The good check was not touched by the failed reloads.
    assert!(agent.instance("good")["error"].is_null());

    // One access line per request, the error code included, no Debug output anywhere.
    let uid = rustix::process::geteuid().as_raw();
    agent.wait_until("the access line of the refused reload", |a| {
        a.log().contains(&format!(
            "POST /checks/reload 400 bad_request uid={uid} pid="
        ))
    });
    let log = agent.log();
    assert!(log.contains("GET /checks 200 - uid="), "{log}");
    for needle in ["Some(", "None,", " { "] {
        assert!(!log.contains(needle), "{needle:?} in the log:\n{log}");
    }

    // Fixed: the reload succeeds again.
    root.remove_conf("broken");
    let out = root.outpost(&["agent", "reload"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
}

#[test]
fn status_exits_1_when_python_is_unavailable() {
    let root = Root::new();
    root.check("good", GOOD);
    root.conf("good", EVERY_SECOND);
    let missing = root.root().join("no-venv");
    let mut agent = root.start_agent_with_venv(&missing, &[]);
    let out = root.outpost(&["agent", "status"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("Python is unavailable:"), "{stdout}");
    let out = root
        .outpost(&["agent", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = agent.log();
    assert_eq!(
        log.matches("Python is unavailable").count(),
        1,
        "said once:\n{log}"
    );
    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
}
