//! Checks that fail on the Python side in every way we can think of (raising in `__init__`,
//! wrong types to the builtins, `sys.exit()`, `KeyboardInterrupt`, unbounded recursion,
//! `run()` returning garbage, a syntax error) are reported and never take the agent down:
//! a good check keeps running next to them.

mod agent_support;

use agent_support::{Root, assert_no_rust_noise};
use rustix::process::Signal;
use serde_json::Value;

const EVERY_SECOND: &str = "init_config:\ninstances:\n  - min_collection_interval: 1\n";

const CHECKS: &[(&str, &str)] = &[
    (
        "steady",
        r#"
from datadog_checks.base import AgentCheck
class Steady(AgentCheck):
    def check(self, instance):
        self.gauge("steady.up", 1)
"#,
    ),
    (
        "init_raises",
        r#"
from datadog_checks.base import AgentCheck
class InitRaises(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        raise RuntimeError("cannot even start")
    def check(self, instance):
        pass
"#,
    ),
    (
        "wrong_types",
        r#"
import aggregator
import datadog_agent
from datadog_checks.base import AgentCheck
class WrongTypes(AgentCheck):
    def check(self, instance):
        self.gauge("wrong_types.before", 1, tags=["ok:1", 42, None, b"bytes"])
        datadog_agent.set_check_metadata(self.check_id, 12, object())
        aggregator.submit_metric(self, self.check_id, "not a type", "wrong_types.m", 1.0, [], "")
"#,
    ),
    (
        "exits",
        r#"
import sys
from datadog_checks.base import AgentCheck
class Exits(AgentCheck):
    def check(self, instance):
        sys.exit(3)
"#,
    ),
    (
        "interrupts",
        r#"
from datadog_checks.base import AgentCheck
class Interrupts(AgentCheck):
    def check(self, instance):
        raise KeyboardInterrupt()
"#,
    ),
    (
        "recurses",
        r#"
from datadog_checks.base import AgentCheck
def down(n):
    return down(n + 1)
class Recurses(AgentCheck):
    def check(self, instance):
        down(0)
"#,
    ),
    (
        "garbage_run",
        r#"
from datadog_checks.base import AgentCheck
class GarbageRun(AgentCheck):
    def run(self):
        return 12
    def check(self, instance):
        pass
"#,
    ),
    (
        "syntax",
        "from datadog_checks.base import AgentCheck\nclass Broken(AgentCheck:\n    pass\n",
    ),
];

fn runs(i: &Value) -> u64 {
    i["stats"]["runs"].as_u64().unwrap_or(0)
}

#[test]
fn failing_checks_are_reported_and_the_agent_keeps_going() {
    let root = Root::new();
    for (name, source) in CHECKS {
        root.check(name, source);
        root.conf(name, EVERY_SECOND);
    }
    let mut agent = root.start_agent(&[]);
    let running = [
        "steady",
        "wrong_types",
        "exits",
        "interrupts",
        "recurses",
        "garbage_run",
    ];
    agent.wait_until("every loadable check ran three times", |a| {
        let view = a.get_json("/checks");
        running.iter().all(|c| {
            view["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["check"] == *c && runs(i) >= 3)
        })
    });
    let error = |check: &str| -> String {
        let i = agent.instance(check);
        assert!(runs(&i) >= 3, "{i}");
        assert_eq!(i["stats"]["errors"], i["stats"]["runs"], "{i}");
        i["error"]["message"].as_str().unwrap().to_owned()
    };
    assert!(error("wrong_types").contains("is not an instance of 'str'"));
    let wrong = agent.instance("wrong_types");
    assert!(
        wrong["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("TypeError"),
        "{wrong}"
    );
    let exits = error("exits");
    assert!(exits.contains("SystemExit"), "{exits}");
    assert!(error("interrupts").contains("KeyboardInterrupt"));
    assert!(error("recurses").contains("maximum recursion depth"));
    assert!(error("garbage_run").contains("instead of a str"));
    let steady = agent.instance("steady");
    assert_eq!(steady["error"], Value::Null);
    assert_eq!(steady["stats"]["errors"], 0);

    let view = agent.get_json("/checks");
    let load_error = |check: &str| -> Value {
        view["load_errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["check"] == check)
            .cloned()
            .unwrap_or_else(|| panic!("no load error for {check}: {view}"))
    };
    let init = load_error("init_raises");
    assert!(
        init["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot even start")
    );
    assert!(
        init["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("RuntimeError")
    );
    assert_eq!(init["index"], 0);
    let syntax = load_error("syntax");
    assert!(
        syntax["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("SyntaxError")
    );

    // What the wrong-types check sent before failing is kept (the base decodes the bytes
    // tag; the int and None tags are skipped).
    let text = agent.get("/telemetry").text();
    assert!(
        text.contains("\nwrong_types_before{ok=\"1\",tags=\"bytes\"} 1\n"),
        "{text}"
    );
    let doc = agent.post("/checks/init_raises/run").json();
    assert!(
        doc["instances"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot even start"),
        "{doc}"
    );

    // Still alive and scheduling after all that.
    let before = runs(&agent.instance("steady"));
    agent.wait_until("the steady check runs on", |a| {
        runs(&a.instance("steady")) > before
    });
    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
    assert_no_rust_noise(&agent.log());
}
