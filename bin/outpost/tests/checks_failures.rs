//! `outpost check run` when things go wrong: load errors, bad configuration, Python missing.
//! Every case is a clear message, exit status 1, and never a Rust panic or backtrace.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod checks_support;

use std::process::Command;

use checks_support::{AGENT, Fixture, assert_no_rust_noise, parse_json_output, venv};
use serde_json::{Value, json};

/// The load error of `check` in the API's error shape plus the traceback: (message,
/// traceback, code).
fn assert_load_error(doc: &Value, check: &str) -> (String, String, String) {
    assert_eq!(doc["check"], check, "{doc}");
    assert_eq!(doc["instances"], json!([]), "{doc}");
    let obj = doc.as_object().unwrap();
    assert_eq!(obj.len(), 3, "exactly check, error, instances: {doc}");
    (
        doc["error"]["message"].as_str().unwrap().to_owned(),
        doc["error"]["traceback"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        doc["error"]["code"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn import_error_reports_the_traceback() {
    let fx = Fixture::new();
    fx.check(
        "broken",
        "import json\nimport nonexistent_dependency_xyz\nfrom datadog_checks.base import AgentCheck\n",
    );
    fx.conf("broken", "instances:\n  - {}\n");
    let (doc, code) = fx.run_json("broken", &[]);
    assert_eq!(code, 1);
    let (message, traceback, error_code) = assert_load_error(&doc, "broken");
    assert_eq!(error_code, "check_error", "{doc}");
    assert!(
        message.contains("unable to import module 'broken'")
            && message.contains("No module named 'nonexistent_dependency_xyz'"),
        "{message}"
    );
    assert!(
        traceback.starts_with("Traceback (most recent call last):"),
        "{traceback}"
    );
    assert!(traceback.contains("broken.py\", line 2"), "{traceback}");

    let out = fx.agent(&["check", "run", "broken"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nonexistent_dependency_xyz"), "{stderr}");
    assert!(
        stderr.contains("Traceback (most recent call last):"),
        "{stderr}"
    );
    assert_no_rust_noise(&stderr);
}

#[test]
fn module_without_a_check_class() {
    let fx = Fixture::new();
    fx.check(
        "noclass",
        "from datadog_checks.base import AgentCheck\n\nclass Helper(object):\n    pass\n",
    );
    fx.conf("noclass", "instances:\n  - {}\n");
    let (doc, code) = fx.run_json("noclass", &[]);
    assert_eq!(code, 1);
    let (message, _, error_code) = assert_load_error(&doc, "noclass");
    assert_eq!(error_code, "bad_request", "{doc}");
    assert_eq!(
        message,
        "unable to find a subclass of the base check in module 'noclass'"
    );
}

#[test]
fn intermediate_base_classes_are_skipped() {
    // The loader takes the leaf subclass, whatever the attribute order.
    let fx = Fixture::new();
    fx.check(
        "layered",
        "from datadog_checks.base import AgentCheck\n\n\
         class AAABase(AgentCheck):\n    def check(self, instance):\n        self.gauge('layered.base', 1)\n\n\
         class ZLeaf(AAABase):\n    def check(self, instance):\n        self.gauge('layered.leaf', 1)\n",
    );
    fx.conf("layered", "instances:\n  - {}\n");
    let (doc, code) = fx.run_json("layered", &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["version"], "unversioned");
    assert_eq!(doc["instances"][0]["metrics"][0]["name"], "layered.leaf");
}

#[test]
fn invalid_yaml_names_the_file_and_line() {
    let fx = Fixture::new();
    fx.check(
        "yamlbad",
        "from datadog_checks.base import AgentCheck\nclass C(AgentCheck):\n    def check(self, i):\n        pass\n",
    );
    let conf = fx.conf(
        "yamlbad",
        "init_config:\ninstances:\n  - host: a\n    ports: [1, 2\n  - host: b\n",
    );
    let (doc, code) = fx.run_json("yamlbad", &[]);
    assert_eq!(code, 1);
    let (message, _, error_code) = assert_load_error(&doc, "yamlbad");
    assert_eq!(error_code, "bad_request", "{doc}");
    assert!(message.contains(&conf.display().to_string()), "{message}");
    assert!(
        message.contains("at line 4") || message.contains("at line 5"),
        "{message}"
    );

    // Well-formed YAML of the wrong shape is named too.
    fx.conf("yamlbad", "init_config: {}\ninstances: {host: a}\n");
    let (doc, _) = fx.run_json("yamlbad", &[]);
    let (message, _, error_code) = assert_load_error(&doc, "yamlbad");
    assert_eq!(error_code, "bad_request", "{doc}");
    assert!(
        message.contains("`instances` must be a list of mappings"),
        "{message}"
    );
}

#[test]
fn missing_configuration_and_bad_names() {
    let fx = Fixture::new();
    let (doc, code) = fx.run_json("absent", &[]);
    assert_eq!(code, 1);
    let (message, _, error_code) = assert_load_error(&doc, "absent");
    assert_eq!(error_code, "not_found", "{doc}");
    assert!(
        message.contains("no configuration for check 'absent'"),
        "{message}"
    );

    let (doc, code) = fx.run_json("../etc", &[]);
    assert_eq!(code, 1);
    let (message, _, error_code) = assert_load_error(&doc, "../etc");
    assert_eq!(error_code, "bad_request", "{doc}");
    assert!(message.contains("invalid check name"), "{message}");
}

#[test]
fn instance_init_failure_is_reported_per_instance() {
    let fx = Fixture::new();
    fx.check(
        "picky",
        "from datadog_checks.base import AgentCheck\nfrom datadog_checks.base.errors import ConfigurationError\n\n\
         class Picky(AgentCheck):\n    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n\
         \x20       if 'url' not in self.instance:\n            raise ConfigurationError('url is required')\n\
         \x20   def check(self, instance):\n        self.gauge('picky.up', 1)\n",
    );
    fx.conf("picky", "instances:\n  - url: http://a\n  - {}\n");
    let (doc, code) = fx.run_json("picky", &[]);
    assert_eq!(code, 1);
    let instances = doc["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(instances[0]["error"], Value::Null);
    assert_eq!(instances[0]["metrics"][0]["name"], "picky.up");
    let err = &instances[1]["error"];
    assert!(
        err["message"].as_str().unwrap().contains("url is required"),
        "{err}"
    );
    assert!(
        err["traceback"]
            .as_str()
            .unwrap()
            .contains("ConfigurationError")
    );
    assert!(
        instances[1]["check_id"]
            .as_str()
            .unwrap()
            .starts_with("picky:")
    );
}

#[test]
fn constructor_errors_are_the_checks_own_once() {
    let fx = Fixture::new();
    fx.check(
        "ctorerr",
        r#"
from datadog_checks.base import AgentCheck
from datadog_checks.base.errors import ConfigurationError

class CtorErr(AgentCheck):
    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        port = self.instance["port"]
        if not str(port).isdigit():
            raise ConfigurationError("`%s` is an invalid `port`" % port)

    def check(self, instance):
        self.gauge("ctorerr.up", 1)
"#,
    );
    fx.conf(
        "ctorerr",
        "instances:
  - port: not-a-port
  - port: 8080
",
    );
    let (doc, code) = fx.run_json("ctorerr", &[]);
    assert_eq!(code, 1, "{doc}");
    let instances = doc["instances"].as_array().unwrap();
    let err = &instances[0]["error"];
    assert_eq!(
        err["message"], "ConfigurationError: `not-a-port` is an invalid `port`",
        "the check's own exception, not the retry's: {err}"
    );
    let tb = err["traceback"].as_str().unwrap();
    assert_eq!(
        tb.matches("Traceback (most recent call last)").count(),
        1,
        "{tb}"
    );
    assert!(
        tb.trim_end()
            .ends_with("ConfigurationError: `not-a-port` is an invalid `port`"),
        "{tb}"
    );
    assert_eq!(
        err.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["code", "message", "traceback"],
        "the shape of a run error: the API's, plus the traceback"
    );
    assert_eq!(err["code"], "check_error");
    assert_eq!(instances[1]["error"], Value::Null);
    assert_eq!(instances[1]["metrics"][0]["name"], "ctorerr.up");

    // The readable form leads with the check's exception too, once.
    let out = fx.agent(&["check", "run", "ctorerr"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_no_rust_noise(&stdout);
    assert!(
        stdout.contains("\n  error: ConfigurationError: `not-a-port` is an invalid `port`\n"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("Traceback (most recent call last)").count(),
        1,
        "{stdout}"
    );

    // A legacy constructor that fails for its own reason shows that reason, not the
    // TypeError of the call without `agentConfig`.
    fx.check(
        "promnons",
        "from datadog_checks.base.checks.prometheus import GenericPrometheusCheck

\
         class PromNoNamespace(GenericPrometheusCheck):
    pass
",
    );
    fx.conf(
        "promnons",
        "instances:
  - prometheus_url: http://127.0.0.1:1/metrics
",
    );
    let (doc, code) = fx.run_json("promnons", &[]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(
        doc["instances"][0]["error"]["message"],
        "CheckException: You have to define a namespace for each prometheus check"
    );
}

#[test]
fn python_that_cannot_start_is_a_clear_message() {
    let fx = Fixture::new();
    fx.check(
        "hello",
        "from datadog_checks.base import AgentCheck\nclass C(AgentCheck):\n    def check(self, i):\n        pass\n",
    );
    fx.conf("hello", "instances:\n  - {}\n");
    let run = |venv: &std::path::Path| {
        Command::new(AGENT)
            .args(["check", "run", "hello", "--json", "--root"])
            .arg(fx.root())
            .arg("--python-venv")
            .arg(venv)
            .env_remove("OUTPOST_ROOT")
            .output()
            .unwrap()
    };

    // No venv at all.
    let (doc, code) = parse_json_output(&run(&fx.root().join("no-venv")));
    assert_eq!(code, 1);
    let (message, _, error_code) = assert_load_error(&doc, "hello");
    assert_eq!(error_code, "unavailable", "{doc}");
    assert!(message.starts_with("Python is unavailable: "), "{message}");
    assert!(message.contains("does not exist"), "{message}");

    // A directory that is not a venv.
    let (doc, _) = parse_json_output(&run(&fx.checks_dir()));
    let (message, _, error_code) = assert_load_error(&doc, "hello");
    assert_eq!(error_code, "unavailable", "{doc}");
    assert!(
        message.contains("is not a Python virtual environment"),
        "{message}"
    );

    // A venv for another Python.
    let other = fx.root().join("py27");
    fs_err::create_dir_all(other.join("bin")).unwrap();
    fs_err::write(other.join("bin/python"), "").unwrap();
    fs_err::write(
        other.join("pyvenv.cfg"),
        "home = /usr/bin\nversion = 2.7.18\n",
    )
    .unwrap();
    let (doc, _) = parse_json_output(&run(&other));
    let (message, _, error_code) = assert_load_error(&doc, "hello");
    assert_eq!(error_code, "unavailable", "{doc}");
    assert!(message.contains("is for Python 2.7.18"), "{message}");

    // A real venv of the right Python, without datadog-checks-base.
    let bare = fx.root().join("bare-venv");
    // The interpreter the test venv was made with (`executable` in its pyvenv.cfg).
    let cfg = fs_err::read_to_string(venv().join("pyvenv.cfg")).unwrap();
    let python = cfg
        .lines()
        .find_map(|l| l.strip_prefix("executable = "))
        .unwrap_or("/usr/bin/python3")
        .to_owned();
    let made = Command::new(&python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = run(&bare);
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 1);
    let (message, traceback, error_code) = assert_load_error(&doc, "hello");
    assert_eq!(error_code, "unavailable", "{doc}");
    assert!(
        message.contains("datadog-checks-base cannot be imported")
            && message.contains("No module named 'datadog_checks'"),
        "{message}"
    );
    assert!(
        traceback.contains("No module named 'datadog_checks'"),
        "{traceback}"
    );

    // The readable form says the same on stderr.
    let out = Command::new(AGENT)
        .args(["check", "run", "hello", "--root"])
        .arg(fx.root())
        .arg("--python-venv")
        .arg(fx.root().join("no-venv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Python is unavailable"), "{stderr}");
    assert_no_rust_noise(&stderr);
}

#[test]
fn invalid_config_file_is_reported() {
    let fx = Fixture::new();
    let config = fx.config("agent: [not, a, mapping]\n");
    let out = fx
        .agent(&[
            "check",
            "run",
            "hello",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 1);
    let (message, _, error_code) = assert_load_error(&doc, "hello");
    assert_eq!(error_code, "invalid_input", "{doc}");
    assert!(message.contains("outpost.yaml"), "{message}");
}
