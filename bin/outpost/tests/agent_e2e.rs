//! `outpost agent` end to end: the real binary on the test venv with real checks at a 1 s
//! interval, its API read over the real socket, `--output` with rotation, reload through the
//! API, the CLI and SIGHUP, the status verb, graceful shutdown.

mod agent_support;

use agent_support::{Root, assert_no_rust_noise, request, sample};
use rustix::process::Signal;
use serde_json::Value;

const GOOD: &str = r#"
from datadog_checks.base import AgentCheck
__version__ = "1.2.3"

class GoodCheck(AgentCheck):
    def check(self, instance):
        self.gauge("good.value", 42, tags=["env:e2e", "canary"])
        self.monotonic_count("good.total", 7)
        self.service_check("good.can_connect", AgentCheck.OK, tags=["port:80"])
"#;

const RAISING: &str = r#"
from datadog_checks.base import AgentCheck

class RaisingCheck(AgentCheck):
    def check(self, instance):
        self.gauge("raising.before", 1)
        raise Exception("boom from the check")
"#;

const SLOW: &str = r#"
import time
from datadog_checks.base import AgentCheck

class SlowCheck(AgentCheck):
    def check(self, instance):
        time.sleep(1.6)
        self.gauge("slow.done", 1)
"#;

const EVERY_SECOND: &str = "init_config:\ninstances:\n  - min_collection_interval: 1\n";

fn runs(instance: &Value) -> u64 {
    instance["stats"]["runs"].as_u64().unwrap_or(0)
}

#[test]
fn agent_runs_checks_serves_its_api_and_stops_cleanly() {
    let root = Root::new();
    for (name, source) in [("good", GOOD), ("raising", RAISING), ("slow", SLOW)] {
        root.check(name, source);
        root.conf(name, EVERY_SECOND);
    }
    let output = root.root().join("out.jsonl");
    let mut agent = root.start_agent(&[
        "--output",
        output.to_str().unwrap(),
        "--output-max-bytes",
        "2KiB",
    ]);

    // Two rounds of every check (the slow one is late at its 1 s timeout, then overruns).
    agent.wait_until("two rounds", |a| {
        let view = a.get_json("/checks");
        let all = view["instances"].as_array().unwrap();
        all.len() == 3 && all.iter().all(|i| runs(i) >= 2)
    });

    // GET /checks
    let view = agent.get_json("/checks");
    assert_eq!(view["python"]["available"], true);
    assert_eq!(view["runners"], 4);
    let good = agent.instance("good");
    assert!(good["id"].as_str().unwrap().starts_with("good:"));
    assert_eq!(good["version"], "1.2.3");
    assert_eq!(good["source"], "custom");
    assert_eq!(good["interval_s"], 1.0);
    assert_eq!(good["error"], Value::Null);
    assert_eq!(good["metric_count"], 2);
    assert!(good["last_run"].as_f64().unwrap() > 1.6e9);
    assert!(good["duration_ms"].as_f64().unwrap() < 1000.0);
    assert!(good["memory"]["InuseBytes"].is_u64(), "{good}");
    let raising = agent.instance("raising");
    assert_eq!(raising["error"]["message"], "boom from the check");
    assert!(
        raising["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("Traceback (most recent call last)")
    );
    assert_eq!(
        raising["stats"]["errors"], raising["stats"]["runs"],
        "every run failed: {raising}"
    );
    let slow = agent.instance("slow");
    assert!(slow["stats"]["late"].as_u64().unwrap() >= 1, "{slow}");
    assert!(slow["stats"]["overruns"].as_u64().unwrap() >= 1, "{slow}");
    assert_eq!(slow["error"], Value::Null);

    // GET /telemetry
    let t = agent.get("/telemetry");
    assert_eq!(t.status, 200);
    assert_eq!(
        t.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = &t.text();
    assert_eq!(
        sample(text, r#"good_value{env="e2e",tags="canary"}"#),
        Some(42.0)
    );
    assert!(
        text.contains("# TYPE good_total counter\ngood_total 7\n"),
        "{text}"
    );
    assert_eq!(sample(text, r#"good_can_connect{port="80"}"#), Some(0.0));
    assert_eq!(
        sample(text, "raising_before"),
        Some(1.0),
        "committed despite the error"
    );
    assert_eq!(sample(text, "slow_done"), Some(1.0));
    assert!(sample(text, "outpost_agent_runs_total").unwrap() >= 6.0);
    assert!(sample(text, "outpost_agent_runs_late_total").unwrap() >= 1.0);
    assert!(sample(text, "outpost_agent_run_errors_total").unwrap() >= 2.0);
    let good_id = good["id"].as_str().unwrap();
    assert!(
        sample(
            text,
            &format!("rtloader__allocations{{check_id=\"{good_id}\"}}")
        )
        .unwrap()
            > 0.0
    );
    assert!(sample(text, "rtloader__inuse_bytes").unwrap() > 0.0);
    assert!(
        text.contains("outpost_api_requests_total{"),
        "the router counts"
    );
    agent.wait_until("the custom checks are validated", |a| {
        let text = a.get("/telemetry").text();
        ["good", "raising", "slow"].iter().all(|c| {
            text.lines().any(|l| {
                l.starts_with("datadog_agent_check_ready{")
                    && l.contains(&format!("check_name=\"{c}\""))
                    && l.contains("status=\"ready\"")
                    && l.contains("agent_version_major=\"")
                    && l.ends_with(" 1")
            })
        })
    });

    // GET /debug/vars
    let vars = agent.get_json("/debug/vars");
    for key in [
        "Allocations",
        "Frees",
        "AllocatedBytes",
        "FreedBytes",
        "InuseBytes",
        "UntrackedFrees",
    ] {
        assert!(
            vars["rtloader"][key].is_u64(),
            "{key}: {}",
            vars["rtloader"]
        );
    }
    assert!(
        vars["rtloader"]["Checks"][good_id]["Allocations"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(vars["scheduler"]["runs"].as_u64().unwrap() >= 6);
    assert_eq!(vars["scheduler"]["runners"], 4);
    assert_eq!(vars["checks"][good_id]["check"], "good");
    assert!(vars["checks"][good_id]["stats"]["runs"].as_u64().unwrap() >= 2);
    assert_eq!(vars["agent"]["python"]["available"], true);
    assert!(vars["memtrack"]["enabled"].as_bool().unwrap());
    // Block sizes known and pymalloc never short of an arena: the totals are exact.
    assert_eq!(vars["memtrack"]["exact"], true, "{}", vars["memtrack"]);

    // POST /checks/good/run: the `check run --json` document.
    let doc = agent.post("/checks/good/run").json();
    assert_eq!(doc["check"], "good");
    assert_eq!(doc["version"], "1.2.3");
    let entry = &doc["instances"][0];
    assert_eq!(entry["check_id"], good_id);
    assert_eq!(entry["error"], Value::Null);
    assert_eq!(
        entry["metrics"][0],
        serde_json::json!({"name": "good.value", "type": "gauge", "value": 42.0,
                           "tags": ["env:e2e", "canary"], "hostname": "",
                           "flush_first_value": false})
    );
    assert_eq!(entry["metrics"][1]["type"], "monotonic_count");
    assert_eq!(entry["service_checks"][0]["name"], "good.can_connect");
    assert!(entry["duration_ms"].is_number());
    let doc = agent.post("/checks/raising/run").json();
    assert_eq!(
        doc["instances"][0]["error"]["message"],
        "boom from the check"
    );
    let missing = agent.post("/checks/nope/run");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    let hostile = agent.post("/checks/..%2f..%2fetc/run");
    assert!(matches!(hostile.status, 400 | 404), "{hostile:?}");

    // `outpost agent status`, readable and --json.
    let out = root.outpost(&["agent", "status"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Python 3."), "{stdout}");
    assert!(stdout.contains("INSTANCE"), "{stdout}");
    assert!(stdout.contains(good_id), "{stdout}");
    assert!(stdout.contains("boom from the check"), "{stdout}");
    let out = root
        .outpost(&["agent", "status", "--json"])
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["instances"].as_array().unwrap().len(), 3);

    // --output: JSON lines of the check run shapes, with check ID and timestamp, rotated.
    agent.wait_until("the output has rotated", |_| {
        root.root().join("out.jsonl.1").exists()
    });
    let rotated = fs_err::read_to_string(root.root().join("out.jsonl.1")).unwrap();
    assert!(rotated.len() <= 2048, "{}", rotated.len());
    let mut kinds = std::collections::BTreeSet::new();
    for line in rotated.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["timestamp"].as_f64().unwrap() > 1.6e9, "{line}");
        assert!(v["check_id"].is_string(), "{line}");
        let kind = v
            .as_object()
            .unwrap()
            .keys()
            .find(|k| *k != "timestamp" && *k != "check_id")
            .unwrap()
            .clone();
        if kind == "metric" && v["check_id"] == good_id && v["metric"]["name"] == "good.value" {
            assert_eq!(v["metric"]["type"], "gauge");
            assert_eq!(
                v["metric"]["tags"],
                serde_json::json!(["env:e2e", "canary"])
            );
        }
        kinds.insert(kind);
    }
    assert!(
        kinds.contains("metric") && kinds.contains("service_check"),
        "{kinds:?}"
    );

    // SIGTERM: graceful, exit 0, socket removed.
    agent.signal(Signal::TERM);
    let status = agent.wait_exit();
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!root.socket().exists());
    assert!(log.contains("checks stopped"), "{log}");
    assert_no_rust_noise(&log);
    let out = root.outpost(&["agent", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "not reachable any more");
    assert!(String::from_utf8_lossy(&out.stderr).contains("outpost agent"));
}

#[test]
fn reload_through_the_api_the_cli_and_sighup() {
    let root = Root::new();
    let source = r#"
from datadog_checks.base import AgentCheck
class C(AgentCheck):
    def check(self, instance):
        self.gauge(self.name + ".value", instance.get("value", 0))
"#;
    for name in ["alpha", "beta", "gamma"] {
        root.check(name, source);
    }
    root.conf(
        "alpha",
        "instances:\n  - {min_collection_interval: 1, value: 1}\n",
    );
    root.conf(
        "beta",
        "instances:\n  - {min_collection_interval: 1, value: 2}\n",
    );
    let mut agent = root.start_agent(&[]);
    agent.wait_until("both ran", |a| {
        let t = a.get("/telemetry").text();
        sample(&t, "alpha_value") == Some(1.0) && sample(&t, "beta_value") == Some(2.0)
    });
    let old_alpha = agent.instance("alpha")["id"].as_str().unwrap().to_owned();
    let old_beta = agent.instance("beta")["id"].as_str().unwrap().to_owned();

    // Through the API: alpha changed, beta removed, gamma added.
    root.conf(
        "alpha",
        "instances:\n  - {min_collection_interval: 1, value: 10}\n",
    );
    root.remove_conf("beta");
    root.conf(
        "gamma",
        "instances:\n  - {min_collection_interval: 1, value: 3}\n",
    );
    let summary = agent.post("/checks/reload").json();
    let mut removed = vec![old_alpha.clone(), old_beta.clone()];
    removed.sort();
    assert_eq!(summary["removed"], serde_json::json!(removed));
    assert_eq!(summary["added"].as_array().unwrap().len(), 2, "{summary}");
    assert_eq!(summary["unchanged"], 0);
    let new_alpha = agent.instance("alpha")["id"].as_str().unwrap().to_owned();
    assert_ne!(
        new_alpha, old_alpha,
        "a changed instance restarts with a new ID"
    );
    agent.wait_until("the new configuration reports", |a| {
        let t = a.get("/telemetry").text();
        sample(&t, "alpha_value") == Some(10.0)
            && sample(&t, "gamma_value") == Some(3.0)
            && sample(&t, "beta_value").is_none()
    });
    assert!(
        agent.log().contains("caller.uid="),
        "the reload's caller is logged"
    );

    // Through the CLI: nothing changed.
    let out = root.outpost(&["agent", "reload"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("reloaded: 0 added, 0 removed, 2 unchanged"),
        "{stdout}"
    );

    // Through SIGHUP: beta comes back (same configuration as before, same ID as before).
    root.conf(
        "beta",
        "instances:\n  - {min_collection_interval: 1, value: 2}\n",
    );
    agent.signal(Signal::HUP);
    agent.wait_until("beta is back after SIGHUP", |a| {
        let view = a.get_json("/checks");
        view["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == old_beta.as_str())
    });
    agent.wait_until("beta reports again", |a| {
        sample(&a.get("/telemetry").text(), "beta_value") == Some(2.0)
    });
    let vars = agent.get_json("/debug/vars");
    assert_eq!(vars["agent"]["reloads"], 3);

    agent.signal(Signal::INT);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
}

#[test]
fn without_python_the_agent_serves_its_api_and_says_why() {
    let root = Root::new();
    root.check("hello", GOOD);
    root.conf("hello", EVERY_SECOND);
    let missing = root.root().join("no-venv");
    let mut agent = root.start_agent_with_venv(&missing, &[]);
    let view = agent.get_json("/checks");
    assert_eq!(view["python"]["available"], false);
    let why = view["python"]["error"].as_str().unwrap();
    assert!(why.contains("no-venv"), "{why}");
    assert_eq!(view["instances"], serde_json::json!([]));
    assert_eq!(view["load_errors"][0]["check"], "hello");
    let vars = agent.get_json("/debug/vars");
    assert!(
        vars["agent"]["python"]["error"]
            .as_str()
            .unwrap()
            .contains("no-venv")
    );
    let run = agent.post("/checks/hello/run");
    assert_eq!(run.status, 503);
    assert_eq!(run.json()["error"]["code"], "unavailable");
    let out = root.outpost(&["agent", "status"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Python is unavailable:"), "{stdout}");
    assert!(stdout.contains("load errors:"), "{stdout}");
    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
}

#[test]
fn bad_arguments_and_a_socket_in_use_are_refused() {
    let root = Root::new();
    let out = root
        .outpost(&["agent", "--output-max-bytes", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--output-max-bytes"), "{stderr}");
    let out = root
        .outpost(&["agent", "--output", "/nonexistent/dir/out.jsonl"])
        .arg("--python-venv")
        .arg(root.root().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/dir/out.jsonl"), "{stderr}");
    assert_no_rust_noise(&stderr);

    // A second agent on the same root does not steal the socket.
    let missing = root.root().join("no-venv");
    let mut first = root.start_agent_with_venv(&missing, &[]);
    let out = root
        .outpost(&["agent", "--python-venv", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.sock"), "{stderr}");
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(
        request(&root.socket(), "GET", "/checks").is_some(),
        "the first still serves"
    );
    first.signal(Signal::TERM);
    assert_eq!(first.wait_exit().code(), Some(0));
    // Not running: status says how to start it.
    let out = root.outpost(&["agent", "reload"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn legacy_constructors_run_and_constructor_errors_are_the_checks_own() {
    let root = Root::new();
    root.check(
        "legacy",
        r#"
from datadog_checks.base import AgentCheck
import datadog_agent

class LegacyCheck(AgentCheck):
    def __init__(self, name, init_config, agentConfig, instances=None):
        super(LegacyCheck, self).__init__(name, init_config, agentConfig, instances)
        self.port = int(agentConfig["dogstatsd_port"])

    def check(self, instance):
        h = datadog_agent.headers(self.agentConfig, http_host="legacy.example")
        self.gauge("legacy.port", self.port, tags=["host_header:" + h["Host"]])
        self.gauge("legacy.metadata", int(self.agentConfig["enable_metadata_collection"]))
"#,
    );
    root.conf("legacy", EVERY_SECOND);
    root.check(
        "ctorerr",
        r#"
from datadog_checks.base import AgentCheck
from datadog_checks.base.errors import ConfigurationError

class CtorErr(AgentCheck):
    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        raise ConfigurationError("`%s` is an invalid `port`" % self.instance["port"])

    def check(self, instance):
        pass
"#,
    );
    root.conf("ctorerr", "instances:\n  - port: not-a-port\n");
    let config = root.config("agent:\n  dogstatsd_port: 8200\n");
    let mut agent = root.start_agent(&["--config", config.to_str().unwrap()]);
    agent.wait_until("the legacy check reports", |a| {
        let t = a.get("/telemetry").text();
        sample(&t, r#"legacy_port{host_header="legacy.example"}"#) == Some(8200.0)
            && sample(&t, "legacy_metadata") == Some(1.0)
    });
    assert_eq!(agent.instance("legacy")["error"], Value::Null);

    let view = agent.get_json("/checks");
    let error = view["load_errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["check"] == "ctorerr")
        .unwrap_or_else(|| panic!("no load error for ctorerr: {view}"))["error"]
        .clone();
    assert_eq!(
        error["message"],
        "ConfigurationError: `not-a-port` is an invalid `port`"
    );
    let tb = error["traceback"].as_str().unwrap();
    assert_eq!(
        tb.matches("Traceback (most recent call last)").count(),
        1,
        "{tb}"
    );

    // A reload instantiates the legacy check again; the warning stays one per check.
    let summary = agent.post("/checks/reload").json();
    assert!(summary.is_object(), "{summary}");
    agent.wait_until("the reloaded legacy check runs", |a| {
        runs(&a.instance("legacy")) >= 1
    });
    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
    let log = agent.log();
    assert_eq!(
        log.matches("passing `agentConfig` to the constructor is deprecated")
            .count(),
        1,
        "{log}"
    );
    assert_no_rust_noise(&log);
}
