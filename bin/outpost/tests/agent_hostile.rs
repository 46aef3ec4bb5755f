//! Checks that try to take the agent's process down with them, run by the real `outpost agent`
//! with the real datadog-checks-base: `os._exit()`, `os.fork()` whose child falls back into
//! the agent, a recursion limit raised past what a thread's stack holds, and memory allocated
//! without bound past `agent.check_memory_limit`. Each is reported as the check's error (an
//! instance over the memory limit is disabled after that run, its memory given back), and a
//! steady check keeps running beside them.

#![allow(clippy::unwrap_used)]

mod agent_support;

use agent_support::{Root, assert_no_rust_noise, sample};
use rustix::process::Signal;
use serde_json::Value;

const EVERY_SECOND: &str = "init_config:\ninstances:\n  - min_collection_interval: 1\n";

const MIB: u64 = 1 << 20;
/// `agent.check_memory_limit` of the test.
const LIMIT: u64 = 64 * MIB;

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
        "hard_exit",
        r#"
import os
from datadog_checks.base import AgentCheck
class HardExit(AgentCheck):
    def check(self, instance):
        os._exit(3)
"#,
    ),
    (
        "posix_exit",
        r#"
import posix
from datadog_checks.base import AgentCheck
class PosixExit(AgentCheck):
    def check(self, instance):
        posix._exit(4)
"#,
    ),
    (
        "forks",
        r#"
import os, time
from datadog_checks.base import AgentCheck

def reap(pid):
    # Never hang the run: a child still there after 20 s is killed and reported as -1.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1

class Forks(AgentCheck):
    def check(self, instance):
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            # The child falls off the end of the check, back into the agent's code.
            return
        self.gauge("forks.returned", reap(pid))
        pid = os.fork()
        if pid == 0:
            # A child that ends itself the usual way keeps its status.
            os._exit(5)
        self.gauge("forks.exited", reap(pid))
        self.gauge("forks.same_parent", int(os.getpid() == parent))
"#,
    ),
    (
        "recurses_deep",
        r#"
import sys
from datadog_checks.base import AgentCheck

class Node:
    # Recursion through C (repr), which costs machine stack at every level.
    def __repr__(self):
        return repr(Node())

class RecursesDeep(AgentCheck):
    def check(self, instance):
        sys.setrecursionlimit(1000000)
        self.gauge("recurses_deep.limit", sys.getrecursionlimit())
        repr(Node())
"#,
    ),
    (
        "hoards",
        r#"
from datadog_checks.base import AgentCheck
class Hoards(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept = []
    def check(self, instance):
        # Kept across runs: without a limit this grows until the machine runs out.
        while True:
            self.kept.append(bytearray(1 << 20))
"#,
    ),
    (
        "hoards_small",
        r#"
from datadog_checks.base import AgentCheck
class HoardsSmall(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept = []
    def check(self, instance):
        while True:
            self.kept.append([object() for _ in range(1000)])
"#,
    ),
    (
        "churns",
        r#"
from datadog_checks.base import AgentCheck
class Churns(AgentCheck):
    def check(self, instance):
        # 48 MiB at a time, freed at once: under the limit, so never refused.
        for _ in range(4):
            block = [bytearray(1 << 20) for _ in range(48)]
            del block
        self.gauge("churns.done", 1)
"#,
    ),
];

fn runs(i: &Value) -> u64 {
    i["stats"]["runs"].as_u64().unwrap_or(0)
}

#[test]
fn hostile_checks_are_stopped_and_reported_and_the_agent_keeps_going() {
    let root = Root::new();
    root.config(&format!(
        "agent:\n  check_memory_limit: {}MiB\n",
        LIMIT / MIB
    ));
    for (name, source) in CHECKS {
        root.check(name, source);
        root.conf(name, EVERY_SECOND);
    }
    let mut agent = root.start_agent(&[]);
    agent.wait_until("every check ran three times, or was disabled", |a| {
        let view = a.get_json("/checks");
        CHECKS.iter().all(|(c, _)| {
            view["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["check"] == *c && (runs(i) >= 3 || !i["disabled"].is_null()))
        })
    });
    let error = |check: &str| -> String {
        let i = agent.instance(check);
        assert_eq!(i["stats"]["errors"], i["stats"]["runs"], "{i}");
        i["error"]["message"].as_str().unwrap().to_owned()
    };

    // os._exit and posix._exit are refused inside the agent.
    let hard = error("hard_exit");
    assert!(hard.contains("os._exit(3) was refused"), "{hard}");
    let traceback = agent.instance("hard_exit")["error"]["traceback"].to_string();
    assert!(traceback.contains("ProcessExitRefused"), "{traceback}");
    assert!(error("posix_exit").contains("os._exit(4) was refused"));

    // The forked child that fell back into the agent exited with the documented status
    // (once per run, and only the child: the agent is still the same process); a child
    // that calls os._exit itself keeps its own status.
    let text = agent.get("/telemetry").text();
    let forks = agent.instance("forks");
    assert_eq!(forks["error"], Value::Null, "{forks}");
    assert_eq!(
        sample(&text, "forks_returned"),
        Some(f64::from(outpost_checks::guards::FORKED_CHILD_EXIT)),
        "{text}"
    );
    assert_eq!(sample(&text, "forks_exited"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "forks_same_parent"), Some(1.0), "{text}");
    let log = agent.log();
    assert!(
        log.contains("the child exits with status 70"),
        "the child says why it exits:\n{log}"
    );
    assert_eq!(
        log.matches("Python check runtime started").count(),
        1,
        "no second agent: {log}"
    );

    // The recursion limit a check asks for is capped, and deep recursion through C code is
    // a RecursionError, not a stack overflow.
    assert!(error("recurses_deep").contains("maximum recursion depth exceeded"));
    assert_eq!(
        sample(&text, "recurses_deep_limit"),
        Some(f64::from(outpost_checks::guards::RECURSION_LIMIT_CAP)),
        "{text}"
    );

    // Unbounded allocation, in large blocks or small objects, is stopped at the limit, and
    // the instance is disabled after that one run.
    for check in ["hoards", "hoards_small"] {
        let message = error(check);
        assert!(
            message.starts_with("memory limit exceeded: the check kept about"),
            "{message}"
        );
        assert!(
            message.contains(&format!("agent.check_memory_limit ({LIMIT} bytes)")),
            "{message}"
        );
        assert!(message.contains("MemoryError"), "{message}");
        let i = agent.instance(check);
        assert_eq!(i["stats"]["runs"], 1, "{i}");
        let disabled = &i["disabled"];
        assert_eq!(disabled["reason"], "memory_limit", "{i}");
        assert_eq!(disabled["limit_bytes"], LIMIT, "{i}");
        let reached = disabled["inuse_bytes"].as_u64().unwrap();
        assert!(
            (LIMIT / 2..=LIMIT + 8 * MIB).contains(&reached),
            "{check} reached {reached} bytes, the limit is {LIMIT}"
        );
    }
    // What they kept on `self` went with their Python objects.
    agent.wait_until("the hoarders' memory is given back", |a| {
        ["hoards", "hoards_small"].iter().all(|c| {
            a.instance(c)["memory"]["InuseBytes"]
                .as_u64()
                .is_some_and(|b| b < LIMIT / 4)
        })
    });
    let log = agent.log();
    assert_eq!(
        log.matches("a check went over agent.check_memory_limit")
            .count(),
        2,
        "once per instance:\n{log}"
    );
    // A check that uses a lot but frees it is left alone.
    let churns = agent.instance("churns");
    assert_eq!(churns["stats"]["errors"], 0, "{churns}");
    assert_eq!(sample(&text, "churns_done"), Some(1.0), "{text}");

    // Still alive and scheduling after all that.
    let steady = agent.instance("steady");
    assert_eq!(steady["stats"]["errors"], 0, "{steady}");
    let before = runs(&steady);
    agent.wait_until("the steady check runs on", |a| {
        runs(&a.instance("steady")) > before
    });
    agent.signal(Signal::TERM);
    assert_eq!(agent.wait_exit().code(), Some(0), "{}", agent.log());
    assert_no_rust_noise(&agent.log());
}
