//! `outpost check validate` and `outpost version`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod checks_support;

use std::process::Command;

use checks_support::{AGENT, Fixture, OUTPOST, assert_no_rust_noise, parse_json_output, venv};
use serde_json::json;

const READY: &str = "from datadog_checks.base import AgentCheck\n\n\
    class Ready(AgentCheck):\n    def check(self, instance):\n        self.gauge('ready.up', 1)\n";

#[test]
fn ready_check_by_name_and_by_file() {
    let fx = Fixture::new();
    let file = fx.check("goodcheck", READY);
    let config = fx.config("agent:\n  version_reported_to_checks: 7.52.1\n");
    let out = fx
        .agent(&[
            "check",
            "validate",
            "goodcheck",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["status"], "ready");
    assert_eq!(doc["check"], "goodcheck");
    assert_eq!(doc["messages"], json!([]));
    assert_eq!(doc["file"], file.display().to_string());
    assert_eq!(doc["metric"]["name"], "datadog.agent.check_ready");
    assert_eq!(doc["metric"]["value"], 1.0);
    assert_eq!(
        doc["metric"]["tags"],
        json!([
            "status:ready",
            "check_name:goodcheck",
            "agent_version_major:7",
            "agent_version_minor:52",
            "agent_version_patch:1"
        ])
    );

    let out = fx
        .agent(&["check", "validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("goodcheck: ready\n"), "{text}");
}

#[test]
fn removed_modules_and_syntax_errors_are_not_ready() {
    let fx = Fixture::new();
    let old = fx.check(
        "oldcheck",
        "import imp\nimport asynchat\nfrom datadog_checks.base import AgentCheck\n\
         try:\n    import urlparse\nexcept ImportError:\n    urlparse = None\n\n\
         class Old(AgentCheck):\n    def check(self, instance):\n        import smtpd\n\
         \x20       from distutils.version import LooseVersion\n        import urllib2\n",
    );
    let out = fx
        .agent(&["check", "validate", old.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "not_ready");
    assert_eq!(doc["metric"]["value"], 0.0);
    let messages: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for (module, line) in [
        ("'imp'", 1),
        ("'asynchat'", 2),
        ("'smtpd'", 11),
        ("'distutils.version'", 12),
        ("'urllib2'", 13),
    ] {
        let found = messages
            .iter()
            .find(|m| m.contains(module))
            .unwrap_or_else(|| panic!("{module} in {messages:?}"));
        assert!(found.contains(&format!("oldcheck.py:{line}:")), "{found}");
    }
    assert!(
        messages.iter().any(|m| m.contains("Python 2 module")),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("urlparse")),
        "guarded imports are fallbacks: {messages:?}"
    );

    let syntax = fx.check("syntaxcheck", "def check(:\n    pass\n");
    let out = fx
        .agent(&["check", "validate", syntax.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("syntaxcheck: not_ready\n"), "{text}");
    assert!(text.contains("syntaxcheck.py:1: SyntaxError"), "{text}");
    assert_no_rust_noise(&text);

    let two = fx.check(
        "twocheck",
        "from datadog_checks.base import AgentCheck\nclass A(AgentCheck):\n    pass\nclass B(AgentCheck):\n    pass\n",
    );
    let (doc, _) = parse_json_output(
        &fx.agent(&["check", "validate", two.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(doc["status"], "not_ready");
    assert!(
        doc["messages"][0]
            .as_str()
            .unwrap()
            .contains("2 check classes"),
        "{doc}"
    );

    let (doc, _) = parse_json_output(
        &fx.agent(&["check", "validate", "nosuchcheck", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(doc["status"], "not_ready");
    assert!(
        doc["messages"][0].as_str().unwrap().contains("no module"),
        "{doc}"
    );
}

#[test]
fn validation_times_out_as_unknown() {
    let fx = Fixture::new();
    let hang = fx.check("hangcheck", "while True:\n    pass\n");
    let config = fx.config("agent:\n  python3_linter_timeout: 1\n");
    let out = fx
        .agent(&[
            "check",
            "validate",
            hang.to_str().unwrap(),
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "unknown");
    assert!(
        doc["messages"][0].as_str().unwrap().contains("timed out"),
        "{doc}"
    );
    assert_eq!(doc["metric"]["tags"][0], "status:unknown");
}

#[test]
fn version_reports_outpost_and_the_embedded_python() {
    let fx = Fixture::new();
    let config = fx.config(&format!("agent:\n  python_venv: {}\n", venv().display()));
    let out = Command::new(AGENT)
        .args(["version", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (doc, code) = parse_json_output(&out);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let python = &doc["python"];
    assert!(
        python["version"].as_str().unwrap().starts_with("3."),
        "{doc}"
    );
    assert!(python["base_prefix"].as_str().unwrap().starts_with('/'));
    assert_eq!(python["checks_base_version"], "38.5.0");
    assert!(
        python["library"].as_str().unwrap().contains("libpython3"),
        "{doc}"
    );
    assert_eq!(doc["venv_error"], serde_json::Value::Null);

    // Without a usable venv the interpreter is still described, and the venv problem named.
    let out = Command::new(OUTPOST)
        .args(["version", "--root"])
        .arg(fx.root().join("empty-root"))
        .env_remove("OUTPOST_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("outpost {}\nPython 3.", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("prefix:"), "{text}");
    assert!(
        text.contains("venv:       unusable:") && text.contains("does not exist"),
        "{text}"
    );
    assert_no_rust_noise(&text);
}
