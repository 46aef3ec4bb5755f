//! A check that goes over `agent.check_memory_limit`, run by the real `outpost agent` with the
//! real datadog-checks-base: its run is stopped, its instance disabled after that first run
//! (not scheduled again, its memory given back, logged once), the API, the CLI and the
//! telemetry say so and why, a well-behaved check beside it keeps its schedule, and it comes
//! back with `outpost agent enable`, a reload that changes its configuration, or a reload that
//! reads a new limit (an unchanged reload leaves it disabled).

#![allow(clippy::unwrap_used)]

mod agent_support;

use std::net::SocketAddr;

use agent_support::{Root, assert_no_rust_noise, sample};
use outpost_testkit::client::{Req, send_blocking};
use rustix::process::Signal;
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// `agent.check_memory_limit` of the test.
const LIMIT: u64 = 32 * MIB;

/// Keeps `hog_mib` MiB on `self` each run (what it kept before is dropped first).
const HOG: &str = r#"
from datadog_checks.base import AgentCheck
class Hog(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept = []
    def check(self, instance):
        self.kept = []
        for _ in range(instance["hog_mib"]):
            self.kept.append(bytearray(1 << 20))
        self.gauge("hog.kept_mib", len(self.kept))
"#;

const STEADY: &str = r#"
from datadog_checks.base import AgentCheck
class Steady(AgentCheck):
    def check(self, instance):
        self.gauge("steady.up", 1)
"#;

fn hog_conf(mib: u64) -> String {
    format!("init_config:\ninstances:\n  - min_collection_interval: 1\n    hog_mib: {mib}\n")
}

fn runs(i: &Value) -> u64 {
    i["stats"]["runs"].as_u64().unwrap_or(0)
}

/// What the hog keeps: over the limit of the test, under the one it raises to.
const HOG_MIB: u64 = 48;

const BREACH: &str = "a check went over agent.check_memory_limit";

#[test]
fn a_check_over_its_memory_limit_is_disabled_until_enabled_or_changed() {
    let root = Root::new();
    root.config(&format!(
        "agent:\n  check_memory_limit: {}MiB\n",
        LIMIT / MIB
    ));
    root.check("hog", HOG);
    root.conf("hog", &hog_conf(HOG_MIB));
    root.check("steady", STEADY);
    root.conf(
        "steady",
        "init_config:\ninstances:\n  - min_collection_interval: 1\n",
    );
    let listen: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut agent = root.start_agent(&["--listen", &listen.to_string()]);
    // Its statistics say so first, then the log.
    agent.wait_until("the hog is disabled", |a| {
        !a.instance("hog")["disabled"].is_null() && a.log().contains(BREACH)
    });

    // Disabled after its first run, with why, how much and when.
    let hog = agent.instance("hog");
    let id = hog["id"].as_str().unwrap().to_owned();
    assert_eq!(runs(&hog), 1, "{hog}");
    assert_eq!(hog["stats"]["errors"], 1, "{hog}");
    assert_eq!(hog["stats"]["next_run_in_ms"], Value::Null, "{hog}");
    let disabled = hog["disabled"].clone();
    assert_eq!(disabled["reason"], "memory_limit", "{hog}");
    assert_eq!(disabled["limit_bytes"], LIMIT, "{hog}");
    let reached = disabled["inuse_bytes"].as_u64().unwrap();
    assert!(
        (LIMIT / 2..=LIMIT + 8 * MIB).contains(&reached),
        "reached {reached}"
    );
    let at = disabled["at"].as_f64().unwrap();
    let message = disabled["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("agent.check_memory_limit ({LIMIT} bytes)")),
        "{message}"
    );
    assert!(
        message.contains(&format!("outpost agent enable {id}")),
        "{message}"
    );
    let error = hog["error"]["message"].as_str().unwrap();
    assert!(error.starts_with("memory limit exceeded"), "{error}");

    // What it kept on `self` went with its Python object (what stays is the estimate's
    // residue and what the run left in shared caches, such as the traceback's source lines).
    agent.wait_until("the hog's memory is given back", |a| {
        a.instance("hog")["memory"]["InuseBytes"]
            .as_u64()
            .is_some_and(|b| b < LIMIT / 4)
    });

    // Not run again, while the steady check keeps its schedule and nothing is late.
    let steady_before = runs(&agent.instance("steady"));
    agent.wait_until("the steady check ran three more times", |a| {
        runs(&a.instance("steady")) >= steady_before + 3
    });
    let hog = agent.instance("hog");
    assert_eq!(runs(&hog), 1, "{hog}");
    let steady = agent.instance("steady");
    assert_eq!(steady["stats"]["errors"], 0, "{steady}");
    assert_eq!(steady["disabled"], Value::Null, "{steady}");
    let vars = agent.get_json("/debug/vars");
    let scheduler = &vars["scheduler"];
    assert_eq!(scheduler["jobs"], 1, "{scheduler}");
    assert_eq!(scheduler["disabled"], 1, "{scheduler}");
    assert_eq!(scheduler["late"], 0, "{scheduler}");
    assert_eq!(scheduler["queued"], 0, "{scheduler}");
    assert_eq!(agent.get_json("/checks")["disabled"], 1);

    // The telemetry: the disabled gauges, and the run error in the existing series.
    let text = agent.get("/telemetry").text();
    assert_eq!(
        sample(&text, "outpost_agent_check_instances_disabled"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "outpost_agent_check_instances"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            &format!(
                "outpost_agent_check_disabled{{check_name=\"hog\",check_id=\"{id}\",reason=\"memory_limit\"}}"
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "outpost_agent_check_run_errors_total{{check_name=\"hog\",check_id=\"{id}\"}}"
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "outpost_agent_run_errors_total").unwrap() >= 1.0);

    // The CLI's table.
    let out = root.outpost(&["agent", "status"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.trim_end().ends_with("disabled"), "{table}");
    assert!(
        table.contains(&format!("disabled: {id}: {message}")),
        "{table}"
    );

    // The status page's row: the state, and why in its error cell.
    let page = send_blocking(listen, &Req::new("GET", "/")).unwrap();
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains(">disabled<"), "{html}");
    assert!(
        html.contains("disabled: its run went over agent.check_memory_limit"),
        "{html}"
    );

    // Said once in the log, at error level; the failure log does not repeat it.
    let log = agent.log();
    assert_eq!(log.matches(BREACH).count(), 1, "{log}");
    let line = log.lines().find(|l| l.contains(BREACH)).unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&format!("limit_bytes={LIMIT}")), "{line}");
    assert!(!log.contains("check failing"), "{log}");

    // Run now does not run it: its entry says it is disabled and how to enable it.
    let r = agent.post("/checks/hog/run");
    assert_eq!(r.status, 200, "{}", r.text());
    let entry = r.json()["instances"][0].to_string();
    assert!(entry.contains(&id), "{entry}");
    assert!(
        entry.contains("disabled: its run went over agent.check_memory_limit"),
        "{entry}"
    );
    assert_eq!(runs(&agent.instance("hog")), 1);

    // A reload that changes nothing leaves it disabled.
    let r = agent.post("/checks/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["unchanged"], 2);
    let hog = agent.instance("hog");
    assert!(!hog["disabled"].is_null(), "{hog}");
    assert_eq!(runs(&hog), 1, "{hog}");

    // Enabling what is not disabled, or nothing, says so.
    let out = root
        .outpost(&["agent", "enable", "steady"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("was not disabled"),
        "{out:?}"
    );
    let out = root.outpost(&["agent", "enable", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no check named 'nope'"),
        "{out:?}"
    );

    // `outpost agent enable` schedules it again: it runs, goes over again, and is disabled
    // again (a later time, a second line in the log).
    let out = root.outpost(&["agent", "enable", &id]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains(&format!("+ {id}")), "{printed}");
    agent.wait_until("the hog is disabled again", |a| {
        a.instance("hog")["disabled"]["at"]
            .as_f64()
            .is_some_and(|t| t > at)
    });
    assert_eq!(runs(&agent.instance("hog")), 1);
    agent.wait_until("the second breach is logged", |a| {
        a.log().matches(BREACH).count() == 2
    });

    // Its file changed but was not reloaded yet: enabling it is refused, and says why.
    root.conf("hog", &hog_conf(4));
    let out = root.outpost(&["agent", "enable", "hog"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{id}: its configuration changed since the last reload"
        )),
        "{stderr}"
    );
    assert!(!agent.instance("hog")["disabled"].is_null());

    // A reload that changes its configuration schedules the new instance, enabled.
    let out = root.outpost(&["agent", "reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains(&format!("- {id}")), "{printed}");
    agent.wait_until("the changed hog ran twice", |a| {
        let i = a.instance("hog");
        i["id"] != id.as_str() && runs(&i) >= 2
    });
    let hog = agent.instance("hog");
    assert_eq!(hog["disabled"], Value::Null, "{hog}");
    assert_eq!(hog["stats"]["errors"], 0, "{hog}");
    let view = agent.get_json("/checks");
    assert_eq!(view["disabled"], 0);
    assert_eq!(view["instances"].as_array().unwrap().len(), 2, "{view}");
    let text = agent.get("/telemetry").text();
    assert_eq!(
        sample(&text, "outpost_agent_check_instances_disabled"),
        Some(0.0)
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("outpost_agent_") && l.contains(&id)),
        "the old instance's series are gone:\n{text}"
    );
    assert_eq!(sample(&text, "hog_kept_mib"), Some(4.0), "{text}");

    // A reload that reads a new agent.check_memory_limit enables what the old one disabled.
    root.conf("hog", &hog_conf(HOG_MIB));
    let r = agent.post("/checks/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    agent.wait_until("the hog is disabled once more", |a| {
        let i = a.instance("hog");
        i["id"] == id.as_str() && !i["disabled"].is_null()
    });
    root.config(&format!(
        "agent:\n  check_memory_limit: {}MiB\n",
        2 * LIMIT / MIB
    ));
    let out = root.outpost(&["agent", "reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains(&format!("+ {id}")), "{printed}");
    agent.wait_until("the hog ran twice under the new limit", |a| {
        runs(&a.instance("hog")) >= 2
    });
    let hog = agent.instance("hog");
    assert_eq!(hog["disabled"], Value::Null, "{hog}");
    assert_eq!(hog["stats"]["errors"], 0, "{hog}");
    assert_eq!(agent.get_json("/checks")["disabled"], 0);
    let text = agent.get("/telemetry").text();
    assert_eq!(
        sample(&text, "hog_kept_mib"),
        Some(HOG_MIB as f64),
        "{text}"
    );
    assert!(
        agent.log().contains("agent.check_memory_limit changed"),
        "{}",
        agent.log()
    );

    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
    assert_no_rust_noise(&agent.log());
}
