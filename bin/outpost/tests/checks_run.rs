//! `outpost check run`: what real datadog-checks-base checks submit through the embedded
//! runtime, compared with the same checks run in plain Python with the base's stubs.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod checks_support;

use std::process::Command;

use checks_support::{
    AGENT, Fixture, OUTPOST, assert_no_rust_noise, assert_same_submissions, parse_json_output,
    serve_metrics, venv,
};
use serde_json::{Value, json};

const ALL_METHODS: &str = r#"
import json
from datadog_checks.base import AgentCheck
__version__ = "2.3.4"

class AllCheck(AgentCheck):
    __NAMESPACE__ = "all"

    def check(self, instance):
        tags = ["team:a"] + instance.get("tags", [])
        self.gauge("g", 1.5, tags=tags)
        self.gauge("g.host", 2, tags=tags, hostname="other-host")
        self.count("c", 3, tags=tags)
        self.monotonic_count("mc", 10, tags=tags)
        self.monotonic_count("mc.ffv", 11, tags=tags, flush_first_value=True)
        self.rate("r", 4.25, tags=tags)
        self.histogram("h", 7, tags=tags)
        self.historate("hr", 8, tags=tags)
        self.increment("inc", tags=tags)
        self.decrement("dec", tags=tags)
        self.gauge("raw.metric", 5, tags=tags, raw=True)
        self.gauge("nonfinite.nan", float("nan"), tags=tags)
        self.gauge("nonfinite.inf", float("inf"), tags=tags)
        self.gauge("nonfinite.ninf", float("-inf"), tags=tags)
        self.gauge("none.skipped", None, tags=tags)
        self.service_check("ok", AgentCheck.OK, tags=tags)
        self.service_check("warn", AgentCheck.WARNING, tags=tags, hostname="h2", message="slow")
        self.service_check("crit", AgentCheck.CRITICAL, message="down")
        self.event({"timestamp": 1700000000, "event_type": "deploy", "msg_title": "t",
                    "msg_text": "x", "priority": "normal", "alert_type": "info",
                    "aggregation_key": "k", "host": "h3", "tags": tags})
        self.event({"msg_title": "bare", "msg_text": "no tags"})
        self.submit_histogram_bucket("hb", 5, 0.0, 10.0, True, "h4", tags)
        self.submit_histogram_bucket("hb", 2, 10.0, float("inf"), True, "h4", tags, flush_first_value=True)
        self.event_platform_event(json.dumps({"q": 1}), "dbm-samples")
        self.event_platform_event(b'{"bytes": true}', "dbm-metrics")
        self.database_monitoring_query_activity(json.dumps({"a": 2}))
"#;

#[test]
fn every_submission_method_matches_plain_python() {
    let fx = Fixture::new();
    fx.check("allcheck", ALL_METHODS);
    fx.conf(
        "allcheck",
        "init_config:\n  service: checkout\ninstances:\n  - tags: [\"zone:z1\"]\n",
    );
    let (doc, code) = fx.run_json("allcheck", &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["check"], "allcheck");
    assert_eq!(doc["version"], "2.3.4");
    let ours = &doc["instances"][0];
    assert_eq!(ours["error"], Value::Null);
    assert!(ours.get("run").is_none(), "no `run` key without --times");
    let reference = fx.reference("allcheck", 1);
    assert_same_submissions(ours, &reference[0], Some("service:checkout"));

    // Details the spec fixes, checked on our side.
    let metric = |name: &str| {
        ours["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {}", ours["metrics"]))
            .clone()
    };
    assert_eq!(metric("all.g")["type"], "gauge");
    assert_eq!(
        metric("all.g")["tags"],
        json!(["team:a", "zone:z1", "service:checkout"])
    );
    assert_eq!(metric("all.g.host")["hostname"], "other-host");
    assert_eq!(metric("all.mc.ffv")["flush_first_value"], true);
    assert_eq!(metric("all.mc")["type"], "monotonic_count");
    assert_eq!(metric("all.inc")["type"], "counter");
    assert_eq!(metric("all.hr")["type"], "historate");
    assert_eq!(metric("all.r")["type"], "rate");
    assert_eq!(metric("raw.metric")["value"], 5.0);
    assert_eq!(metric("all.nonfinite.nan")["value"], "NaN");
    assert_eq!(metric("all.nonfinite.inf")["value"], "+Inf");
    assert_eq!(metric("all.nonfinite.ninf")["value"], "-Inf");
    assert!(
        ours["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != "all.none.skipped")
    );
    let buckets = ours["histogram_buckets"].as_array().unwrap();
    assert_eq!(buckets[1]["upper_bound"], "+Inf");
    assert_eq!(buckets[1]["flush_first_value"], true);
    for key in [
        "name",
        "value",
        "lower_bound",
        "upper_bound",
        "monotonic",
        "hostname",
        "tags",
        "flush_first_value",
    ] {
        assert!(buckets[0].get(key).is_some(), "bucket key {key}");
    }
    let events = ours["events"].as_array().unwrap();
    assert_eq!(
        events[0],
        json!({"msg_title": "t", "msg_text": "x", "timestamp": 1700000000, "priority": "normal",
               "host": "h3", "alert_type": "info", "aggregation_key": "k",
               "source_type_name": "all", "event_type": "deploy",
               "tags": ["team:a", "zone:z1", "service:checkout"]})
    );
    assert_eq!(
        events[1],
        json!({"msg_title": "bare", "msg_text": "no tags", "source_type_name": "all",
               "tags": ["service:checkout"]}),
        "absent keys are omitted"
    );
    let ep = ours["event_platform_events"].as_array().unwrap();
    assert_eq!(ep.len(), 3);
    assert!(ours["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(ours["metadata"], json!({}));
    assert_eq!(ours["external_tags"], json!([]));
}

const PROMETHEUS: &str = "\
# HELP http_requests_total Total requests.
# TYPE http_requests_total counter
http_requests_total{method=\"get\",code=\"200\"} 1027
http_requests_total{method=\"post\",code=\"200\"} 3
# HELP temperature_celsius Temperature.
# TYPE temperature_celsius gauge
temperature_celsius{room=\"a\"} 21.5
temperature_celsius{room=\"b\"} -3
# HELP request_latency_seconds Latency.
# TYPE request_latency_seconds histogram
request_latency_seconds_bucket{le=\"0.1\"} 5
request_latency_seconds_bucket{le=\"0.5\"} 9
request_latency_seconds_bucket{le=\"+Inf\"} 10
request_latency_seconds_sum 2.5
request_latency_seconds_count 10
# HELP rpc_duration_seconds RPC.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile=\"0.5\"} 0.05
rpc_duration_seconds{quantile=\"0.9\"} 0.08
rpc_duration_seconds_sum 17.5
rpc_duration_seconds_count 250
";

#[test]
fn openmetrics_v2_check_matches_plain_python_with_two_instances() {
    let url = serve_metrics(PROMETHEUS);
    let fx = Fixture::new();
    fx.check(
        "promcheck",
        "from datadog_checks.base import OpenMetricsBaseCheckV2\n__version__ = '0.9.0'\n\n\
         class PromCheck(OpenMetricsBaseCheckV2):\n    __NAMESPACE__ = 'prom'\n",
    );
    fx.conf(
        "promcheck",
        &format!(
            "init_config:\ninstances:\n\
             - openmetrics_endpoint: {url}\n  namespace: prom\n  tags: [\"team:b\"]\n  metrics:\n\
             \x20   - http_requests: requests\n    - temperature_celsius: temperature\n\
             \x20   - request_latency_seconds: latency\n    - rpc_duration_seconds: rpc\n\
             - openmetrics_endpoint: {url}\n  namespace: prom\n  histogram_buckets_as_distributions: true\n  metrics:\n\
             \x20   - request_latency_seconds: latency\n"
        ),
    );
    let (doc, code) = fx.run_json("promcheck", &["--times", "2"]);
    assert_eq!(code, 0, "{doc}");
    let ours = doc["instances"].as_array().unwrap();
    assert_eq!(ours.len(), 4, "two instances, two runs");
    let reference = fx.reference("promcheck", 2);
    for (i, (o, r)) in ours.iter().zip(reference.as_array().unwrap()).enumerate() {
        assert_eq!(o["run"], r["run"], "entry {i}: run order");
        assert_same_submissions(o, r, None);
    }
    // Run order: run 1 of both instances, then run 2.
    let runs: Vec<_> = ours.iter().map(|e| e["run"].as_u64().unwrap()).collect();
    assert_eq!(runs, vec![1, 1, 2, 2]);
    // Two instances, two distinct IDs, named by `namespace`, stable across runs.
    let ids: Vec<&str> = ours
        .iter()
        .map(|e| e["check_id"].as_str().unwrap())
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    assert!(ids[0].starts_with("promcheck:prom:"), "{ids:?}");
    // Renames, counters (monotonic, first value flushed from the second run), summary.
    let names: Vec<&str> = ours[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for n in [
        "prom.requests.count",
        "prom.temperature",
        "prom.latency.bucket",
        "prom.latency.sum",
        "prom.rpc.quantile",
        "prom.rpc.count",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let buckets = ours[1]["histogram_buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[2]["upper_bound"], "+Inf");
    // The same IDs in another process: stable across restarts.
    let (again, _) = fx.run_json("promcheck", &[]);
    assert_eq!(again["instances"][0]["check_id"], ids[0]);
    assert_eq!(again["instances"][1]["check_id"], ids[1]);
}

#[test]
fn warnings_errors_and_tracebacks() {
    let fx = Fixture::new();
    fx.check(
        "flaky",
        "from datadog_checks.base import AgentCheck\n\n\
         class Flaky(AgentCheck):\n    def check(self, instance):\n\
         \x20       self.gauge('flaky.before', 1)\n\
         \x20       self.warning('disk %s is slow', 'sda')\n\
         \x20       if instance.get('fail'):\n            raise RuntimeError('backend unreachable')\n",
    );
    fx.conf("flaky", "instances:\n  - fail: false\n  - fail: true\n");
    let (doc, code) = fx.run_json("flaky", &[]);
    assert_eq!(code, 1, "one instance failed: {doc}");
    let (ok, failed) = (&doc["instances"][0], &doc["instances"][1]);
    assert_eq!(ok["error"], Value::Null);
    assert_eq!(ok["warnings"], json!(["disk sda is slow"]));
    assert_eq!(failed["error"]["message"], "backend unreachable");
    let tb = failed["error"]["traceback"].as_str().unwrap();
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(tb.contains("RuntimeError: backend unreachable"), "{tb}");
    assert!(tb.contains("flaky.py"), "{tb}");
    // Submitted before the exception: still committed, as the agent does.
    assert_eq!(failed["metrics"][0]["name"], "flaky.before");
    let reference = fx.reference("flaky", 1);
    assert_same_submissions(failed, &reference[1], None);
    assert_eq!(reference[1]["error"]["message"], "backend unreachable");

    // The readable output shows the same, without Rust noise.
    let out = fx.agent(&["check", "run", "flaky"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("flaky.before"), "{text}");
    assert!(text.contains("warning: disk sda is slow"), "{text}");
    assert!(text.contains("error: backend unreachable"), "{text}");
    assert!(text.contains("RuntimeError: backend unreachable"), "{text}");
    assert_no_rust_noise(&text);
    assert_no_rust_noise(&String::from_utf8_lossy(&out.stderr));
}

#[test]
fn persistent_cache_survives_runs_and_processes() {
    let fx = Fixture::new();
    fx.check(
        "counter",
        "from datadog_checks.base import AgentCheck\n\n\
         class Counter(AgentCheck):\n    def check(self, instance):\n\
         \x20       n = int(self.read_persistent_cache('n') or 0) + 1\n\
         \x20       self.write_persistent_cache('n', str(n))\n\
         \x20       self.gauge('counter.n', n)\n",
    );
    fx.conf("counter", "instances:\n  - {}\n");
    let value =
        |doc: &Value, i: usize| doc["instances"][i]["metrics"][0]["value"].as_f64().unwrap();
    let (doc, code) = fx.run_json("counter", &["--times", "2"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!((value(&doc, 0), value(&doc, 1)), (1.0, 2.0));
    assert_eq!(doc["instances"][1]["run"], 2);
    let (doc, _) = fx.run_json("counter", &["--times", "1"]);
    assert_eq!(value(&doc, 0), 3.0, "read back by another process");
    assert_eq!(
        doc["instances"][0]["run"], 1,
        "`run` is present with --times"
    );
    let cache_dir = fx.root().join("run/checks-cache");
    let files: Vec<_> = fs_err::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("counter%3A") && files[0].ends_with("_n"),
        "{files:?}"
    );
    assert_eq!(
        fs_err::read_to_string(cache_dir.join(&files[0])).unwrap(),
        "3"
    );
}

#[test]
fn datadog_agent_and_util_functions_answer_from_the_agent() {
    let fx = Fixture::new();
    fx.check(
        "agentapi",
        r#"
import datadog_agent, util, _util
from datadog_checks.base import AgentCheck
from datadog_checks.base.utils.subprocess_output import get_subprocess_output, SubprocessOutputEmptyError

class AgentApi(AgentCheck):
    def check(self, instance):
        h = datadog_agent.headers(self.agentConfig, http_host="example.org")
        u = util.headers(http_host="u.example.org")
        plain = datadog_agent.headers()
        self.set_metadata("hostname", datadog_agent.get_hostname())
        self.set_metadata("version", datadog_agent.get_version())
        self.set_metadata("ua", h["User-Agent"])
        self.set_metadata("host_header", h["Host"])
        self.set_metadata("util_host", u["Host"])
        self.set_metadata("plain_keys", ",".join(sorted(plain)))
        self.set_metadata("content_type", h["Content-Type"] + "|" + h["Accept"])
        self.set_metadata("custom", repr(datadog_agent.get_config("custom.nested")))
        self.set_metadata("meta_default", repr(datadog_agent.get_config("enable_metadata_collection")))
        self.set_metadata("unknown", repr(datadog_agent.get_config("no.such.key")))
        self.set_metadata("host_tags", datadog_agent.get_host_tags())
        out, err, rc = get_subprocess_output(["sh", "-c", "echo out; echo err >&2; exit 3"], self.log)
        self.set_metadata("subprocess", "%s|%s|%d" % (out.strip(), err.strip(), rc))
        try:
            _util.get_subprocess_output(["true"], True)
            self.set_metadata("empty", "no error")
        except _util.SubprocessOutputEmptyError as e:
            self.set_metadata("empty", type(e).__name__)
        out, _, _ = _util.get_subprocess_output(["sh", "-c", "echo $OUTPOST_T"], False, env={"OUTPOST_T": "from-env"})
        self.set_metadata("subprocess_env", out.strip())
        import sys
        self.set_metadata("executable", sys.executable)
        self.set_metadata("prefix", sys.prefix)
        self.set_metadata("utf8_mode", repr(sys.flags.utf8_mode))
        self.set_metadata("load_config", repr(self.load_config("a: 1\nb: [x, 2]\n")))
        start = datadog_agent.get_process_start_time()
        self.set_metadata("start_is_float", repr(isinstance(start, float) and start > 1e9))
        self.set_external_tags([("vm-1", {"vsphere": ["dc:x", 3, "rack:y"]})])
        self.log.warning("visible in the agent log")
"#,
    );
    fx.conf("agentapi", "instances:\n  - {}\n");
    let config = fx.config(
        "agent:\n  hostname: testhost\n  version_reported_to_checks: 7.99.1\n  tags: [\"region:eu\"]\n  custom:\n    nested: 5\n",
    );
    let out = fx
        .agent(&[
            "check",
            "run",
            "agentapi",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 0, "{doc}");
    let md = &doc["instances"][0]["metadata"];
    assert_eq!(md["hostname"], "testhost");
    assert_eq!(md["version.raw"], "7.99.1");
    assert_eq!(md["ua"], "Datadog Agent/7.99.1");
    assert_eq!(md["host_header"], "example.org");
    assert_eq!(md["util_host"], "u.example.org");
    assert_eq!(md["plain_keys"], "Accept,Content-Type,User-Agent");
    assert_eq!(
        md["content_type"],
        "application/x-www-form-urlencoded|text/html, */*"
    );
    assert_eq!(md["custom"], "5");
    assert_eq!(md["meta_default"], "True");
    assert_eq!(md["unknown"], "None");
    assert_eq!(md["host_tags"], r#"{"system":["region:eu"]}"#);
    assert_eq!(md["subprocess"], "out|err|3");
    assert_eq!(md["empty"], "SubprocessOutputEmptyError");
    assert_eq!(md["start_is_float"], "True");
    assert_eq!(md["subprocess_env"], "from-env");
    // sys.executable is the venv's python: AgentCheck.load_config's subprocess works.
    let venv_dir = fs_err::canonicalize(venv()).unwrap();
    assert_eq!(
        md["executable"],
        venv_dir.join("bin/python").display().to_string()
    );
    assert_eq!(md["prefix"], venv_dir.display().to_string());
    assert_eq!(md["load_config"], "{'a': 1, 'b': ['x', 2]}");
    assert_eq!(md["utf8_mode"], "1");
    assert_eq!(
        doc["instances"][0]["external_tags"],
        json!([["vm-1", {"vsphere": ["dc:x", "rack:y"]}]])
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("visible in the agent log") && stderr.contains("check.name=agentapi"),
        "{stderr}"
    );
}

/// A check written for the legacy constructor, reading the agent's settings from
/// `agentConfig`; `datadog_agent.headers(self.agentConfig, ...)` only where the agent runs it
/// (the stubs have no `headers`).
const LEGACY: &str = r#"
from datadog_checks.base import AgentCheck
from datadog_checks.base.agent import AGENT_RUNNING, datadog_agent
__version__ = "0.5.0"

class LegacyCheck(AgentCheck):
    def __init__(self, name, init_config, agentConfig, instances=None):
        super(LegacyCheck, self).__init__(name, init_config, agentConfig, instances)
        self.port = int(agentConfig.get("dogstatsd_port", 8125))

    def check(self, instance):
        tags = ["level:%s" % self.agentConfig["log_level"]] + instance.get("tags", [])
        self.gauge("legacy.port", self.port, tags=tags)
        self.gauge("legacy.metadata", int(self.agentConfig["enable_metadata_collection"]), tags=tags)
        self.count("legacy.instances", len(self.instances), tags=tags)
        self.service_check("legacy.up", AgentCheck.OK, tags=tags)
        self.set_metadata("agent_config_type", type(self.agentConfig).__name__)
        if AGENT_RUNNING:
            h = datadog_agent.headers(self.agentConfig, http_host="legacy.example")
            self.set_metadata("headers", "%s|%s" % (h["User-Agent"], h["Host"]))
            self.set_metadata("hostname", self.agentConfig["hostname"])
"#;

#[test]
fn legacy_constructor_gets_agent_config_and_matches_plain_python() {
    let fx = Fixture::new();
    fx.check("legacy", LEGACY);
    fx.conf(
        "legacy",
        "init_config:
instances:
  - tags: [\"zone:a\"]
  - tags: [\"zone:b\"]
",
    );
    let config = fx.config(
        "agent:\n  hostname: legacyhost\n  version_reported_to_checks: 7.50.0\n  \
         log_level: debug\n  dogstatsd_port: 8200\n",
    );
    let out = fx
        .agent(&[
            "check",
            "run",
            "legacy",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["version"], "0.5.0");
    // What the Go agent passes: the settings of the file over the agent's defaults.
    let reference = fx.reference_legacy(
        "legacy",
        1,
        &json!({"log_level": "debug", "dogstatsd_port": 8200, "enable_metadata_collection": true}),
    );
    let ours = doc["instances"].as_array().unwrap();
    assert_eq!(ours.len(), 2);
    for (o, r) in ours.iter().zip(reference.as_array().unwrap()) {
        assert_eq!(o["error"], Value::Null, "{o}");
        assert_same_submissions(o, r, None);
        assert_eq!(o["metadata"]["agent_config_type"], "dict");
        assert_eq!(
            o["metadata"]["headers"],
            "Datadog Agent/7.50.0|legacy.example"
        );
        assert_eq!(o["metadata"]["hostname"], "legacyhost");
    }
    assert_eq!(ours[0]["metrics"][0]["value"], 8200.0, "{}", ours[0]);
    // One deprecation warning for the check, not one per instance.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("passing `agentConfig` to the constructor is deprecated")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("check.name=legacy"), "{stderr}");
}

#[test]
fn prometheus_style_base_class_with_agent_config_works_through_a_subclass() {
    // The `prometheus` integration's pattern: GenericPrometheusCheck's __init__ takes
    // `agentConfig` positionally; a subclass that keeps that constructor.
    let url = serve_metrics(PROMETHEUS);
    let fx = Fixture::new();
    fx.check(
        "promlegacy",
        "from datadog_checks.base.checks.prometheus import GenericPrometheusCheck

\
         class PromLegacy(GenericPrometheusCheck):
    pass
",
    );
    fx.conf(
        "promlegacy",
        &format!(
            "init_config:
instances:
\
             - prometheus_url: {url}
  namespace: legacyprom
  tags: [\"team:c\"]
  metrics:
\
             \x20   - http_requests_total: requests
    - temperature_celsius: temperature
\
             \x20   - request_latency_seconds: latency
    - rpc_duration_seconds: rpc
"
        ),
    );
    let (doc, code) = fx.run_json("promlegacy", &["--times", "2"]);
    assert_eq!(code, 0, "{doc}");
    let ours = doc["instances"].as_array().unwrap();
    assert_eq!(ours.len(), 2);
    let reference = fx.reference_legacy("promlegacy", 2, &json!({}));
    for (o, r) in ours.iter().zip(reference.as_array().unwrap()) {
        assert_eq!(o["error"], Value::Null, "{o}");
        assert_same_submissions(o, r, None);
    }
    let names: Vec<&str> = ours[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"legacyprom.temperature"), "{names:?}");
    assert!(names.contains(&"legacyprom.requests"), "{names:?}");
}

#[test]
fn wrong_argument_types_raise_type_error_inside_the_check() {
    let fx = Fixture::new();
    fx.check(
        "badargs",
        r#"
import aggregator, datadog_agent, _util
from datadog_checks.base import AgentCheck

class BadArgs(AgentCheck):
    def check(self, instance):
        results = []
        def attempt(label, f, *args, **kwargs):
            try:
                f(*args, **kwargs)
                results.append(label + ": ok")
            except Exception as e:
                results.append("%s: %s: %s" % (label, type(e).__name__, e))
        cid = self.check_id
        attempt("name_int", aggregator.submit_metric, self, cid, 0, 123, 1.0, [], "", False)
        attempt("value_str", aggregator.submit_metric, self, cid, 0, "m", "x", [], "", False)
        attempt("mtype_float", aggregator.submit_metric, self, cid, 0.5, "m", 1.0, [], "", False)
        attempt("tags_int", aggregator.submit_metric, self, cid, 0, "m", 1.0, 5, "", False)
        attempt("too_few", aggregator.submit_metric, self, cid)
        attempt("keywords", aggregator.submit_metric, self, cid, 0, "m", 1.0, [], "", flush_first_value=False)
        attempt("mixed_tags", aggregator.submit_metric, self, cid, 0, "mixed", 1.0, ["a:1", 2, None, b"b:2"], None, False)
        attempt("event_list", aggregator.submit_event, self, cid, ["not", "a", "dict"])
        attempt("event_tags", aggregator.submit_event, self, cid, {"msg_title": "x", "tags": 7})
        attempt("sc_status_str", aggregator.submit_service_check, self, cid, "sc", "OK", [], "", "")
        attempt("bucket_float", aggregator.submit_histogram_bucket, self, cid, "b", 1.5, 0.0, 1.0, 1, "", [])
        attempt("log_level_str", datadog_agent.log, "msg", "INFO")
        attempt("config_int", datadog_agent.get_config, 5)
        attempt("cache_int", datadog_agent.write_persistent_cache, "k", 5)
        attempt("ext_tags", datadog_agent.set_external_tags, "not a list")
        attempt("ext_tuple", datadog_agent.set_external_tags, [["host", {}]])
        attempt("subprocess_str", _util.get_subprocess_output, "echo hi", False)
        attempt("subprocess_empty", _util.get_subprocess_output, [], False)
        attempt("hostname_noargs", datadog_agent.get_hostname, "extra")
        self.event({"msg_title": "results", "msg_text": "\n".join(results)})
"#,
    );
    fx.conf("badargs", "instances:\n  - {}\n");
    let (doc, code) = fx.run_json("badargs", &[]);
    assert_eq!(code, 0, "the check and the process survive: {doc}");
    let inst = &doc["instances"][0];
    let text = inst["events"][0]["msg_text"].as_str().unwrap();
    let line = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{label}: ")))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .to_owned()
    };
    for label in [
        "name_int",
        "value_str",
        "mtype_float",
        "too_few",
        "keywords",
        "sc_status_str",
        "bucket_float",
        "log_level_str",
        "config_int",
        "cache_int",
        "hostname_noargs",
    ] {
        assert!(line(label).contains(": TypeError: "), "{}", line(label));
    }
    assert_eq!(
        line("tags_int"),
        "tags_int: TypeError: tags must be a sequence"
    );
    assert_eq!(
        line("event_list"),
        "event_list: TypeError: event must be a dict"
    );
    assert_eq!(
        line("event_tags"),
        "event_tags: TypeError: tags must be a sequence"
    );
    assert_eq!(line("ext_tags"), "ext_tags: TypeError: tags must be a list");
    assert_eq!(
        line("ext_tuple"),
        "ext_tuple: TypeError: external host tags list must contain only tuples"
    );
    assert_eq!(
        line("subprocess_str"),
        "subprocess_str: TypeError: command args not a list"
    );
    assert_eq!(
        line("subprocess_empty"),
        "subprocess_empty: TypeError: invalid command: empty list"
    );
    // Non-string tags are skipped, a None hostname is "".
    assert_eq!(line("mixed_tags"), "mixed_tags: ok");
    let mixed = inst["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mixed")
        .unwrap();
    assert_eq!(mixed["tags"], json!(["a:1", "b:2"]));
    assert_eq!(mixed["hostname"], "");
}

#[test]
fn readable_table_and_the_outpost_front_door() {
    let fx = Fixture::new();
    fx.check(
        "hello",
        "from datadog_checks.base import AgentCheck\n__version__ = '1.0.0'\n\n\
         class HelloCheck(AgentCheck):\n    __NAMESPACE__ = 'hello'\n    def check(self, instance):\n\
         \x20       tags = ['stage:dev'] + instance.get('tags', [])\n\
         \x20       self.gauge('world', 1.0, tags=tags)\n\
         \x20       self.service_check('can_connect', AgentCheck.OK, tags=tags)\n\
         \x20       self.event({'msg_title': 'hi', 'msg_text': 'hello world', 'tags': tags})\n",
    );
    fx.conf(
        "hello",
        "init_config:\n  service: demo\ninstances:\n  - min_collection_interval: 30\n    tags: [\"team:a\"]\n",
    );
    let out = fx.agent(&["check", "run", "hello"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("hello 1.0.0\n"), "{text}");
    assert!(text.contains("hello.world"), "{text}");
    assert!(text.contains("stage:dev,team:a,service:demo"), "{text}");
    assert!(text.contains("hello.can_connect  OK"), "{text}");

    // `outpost check run` hands over to outpost-agent with the same arguments and result.
    let via_outpost = Command::new(OUTPOST)
        .args(["check", "run", "hello", "--json", "--root"])
        .arg(fx.root())
        .arg("--python-venv")
        .arg(venv())
        .env_remove("OUTPOST_ROOT")
        .output()
        .unwrap();
    let (a, code) = parse_json_output(&via_outpost);
    assert_eq!(code, 0);
    let (b, _) = fx.run_json("hello", &[]);
    assert_eq!(a["instances"][0]["metrics"], b["instances"][0]["metrics"]);
    assert_eq!(a["instances"][0]["check_id"], b["instances"][0]["check_id"]);
    assert_eq!(
        a["instances"][0]["events"],
        json!([{"msg_title": "hi", "msg_text": "hello world", "source_type_name": "hello",
                "tags": ["stage:dev", "team:a", "service:demo"]}])
    );
    // OUTPOST_ROOT works like --root.
    let env_root = Command::new(AGENT)
        .args(["check", "run", "hello", "--json", "--python-venv"])
        .arg(venv())
        .env("OUTPOST_ROOT", fx.root())
        .output()
        .unwrap();
    assert_eq!(parse_json_output(&env_root).1, 0);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["check", "run"],
        vec!["check", "run", "x", "--times", "0"],
        vec!["check", "frobnicate"],
    ] {
        let out = Command::new(AGENT).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_no_rust_noise(&String::from_utf8_lossy(&out.stderr));
    }
}
