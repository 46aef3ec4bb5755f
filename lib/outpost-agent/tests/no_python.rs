//! An agent whose Python cannot start still serves its API and says why; once the venv
//! appears, a reload starts Python and the checks. (Its own process: the interpreter starts
//! once per process, and here it must start late.)

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_agent::{Agent, AgentError, AgentOptions, RunFormat};
use outpost_checks::{CheckError, RunReport};
use outpost_types::config::AgentConfig;
use serde_json::{Value, json};

fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

struct PlainFormat;

impl RunFormat for PlainFormat {
    fn run_entry(&self, r: &RunReport) -> Value {
        json!({"check_id": r.check_id.as_str(), "error": r.error, "metrics": r.submissions.metrics})
    }

    fn failed_entry(&self, check_id: &str, error: &CheckError) -> Value {
        json!({"check_id": check_id, "error": error})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_python_the_agent_reports_why_and_recovers_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, checks) = (dir.path().join("conf.d"), dir.path().join("checks.d"));
    fs_err::create_dir_all(&conf).unwrap();
    fs_err::create_dir_all(&checks).unwrap();
    fs_err::write(
        checks.join("np_hello.py"),
        "from datadog_checks.base import AgentCheck\n\
         class H(AgentCheck):\n    def check(self, instance):\n        self.gauge('np_hello.up', 1)\n",
    )
    .unwrap();
    fs_err::write(conf.join("np_hello.yaml"), "instances:\n  - {}\n").unwrap();
    let missing_venv = dir.path().join("venv");
    let options = AgentOptions::new(
        dir.path(),
        &conf,
        &checks,
        &missing_venv,
        AgentConfig::default(),
        Arc::new(PlainFormat),
    )
    .unwrap();
    let agent = Agent::start(options).await.unwrap();

    let view = agent.checks_view();
    assert!(!view.python.available);
    let why = view.python.error.clone().unwrap();
    assert!(why.contains(&missing_venv.display().to_string()), "{why}");
    assert!(view.instances.is_empty());
    let not_loaded = &view.load_errors[0];
    assert_eq!(not_loaded.check.as_deref(), Some("np_hello"));
    assert!(
        not_loaded.error.message.contains("Python is unavailable"),
        "{not_loaded:?}"
    );
    let e = agent.run_check("np_hello").await.unwrap_err();
    assert!(matches!(e, AgentError::PythonUnavailable { .. }), "{e}");
    assert_eq!(e.code().http_status(), 503);
    let vars = agent.debug_vars();
    assert_eq!(vars["python"]["available"], false);
    assert!(vars["python"]["error"].as_str().unwrap().contains("venv"));
    let text = outpost_agent::telemetry::render(&agent, &outpost_api::Telemetry::new());
    assert!(
        text.contains("\noutpost_agent_python_available 0\n"),
        "{text}"
    );
    assert!(text.contains("\noutpost_agent_load_errors 1\n"), "{text}");

    // The venv appears: a reload starts Python and loads the check.
    fs_err::os::unix::fs::symlink(venv(), &missing_venv).unwrap();
    let summary = agent.reload().await.unwrap();
    assert_eq!(summary.added.len(), 1, "{summary:?}");
    assert!(summary.errors.is_empty(), "{summary:?}");
    assert!(agent.python_status().available);
    let doc = agent.run_check("np_hello").await.unwrap();
    assert_eq!(doc["instances"][0]["metrics"][0]["name"], "np_hello.up");
    agent.shutdown().await.unwrap();
}
