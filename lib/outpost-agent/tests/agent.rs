//! The agent in-process with real Python checks on the test venv's datadog-checks-base, its
//! API served on a real socket: memory attribution in `/debug/vars`, reload semantics and
//! series lifetime, run-now, validation of custom checks.
//!
//! One interpreter per process: every agent here shares one runtime (given through
//! `AgentOptions::runtime`); each test has its own conf.d and its own check names.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use outpost_agent::{Agent, AgentOptions, RunFormat};
use outpost_checks::{CheckError, RunReport, Runtime, RuntimeConfig};
use outpost_types::config::AgentConfig;
use serde_json::{Value, json};

fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

struct Shared {
    runtime: Runtime,
    checks_dir: PathBuf,
}

/// The process's runtime; custom checks of every test live in one checks dir.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let checks_dir = root.join("checks.d");
        fs_err::create_dir_all(&checks_dir).unwrap();
        let runtime = Runtime::start(
            RuntimeConfig::new(venv(), root.join("run")).with_checks_dir(&checks_dir),
        )
        .expect("the runtime starts with the test venv");
        Shared {
            runtime,
            checks_dir,
        }
    })
}

/// The submissions of a run, flat, as the lib's tests need them.
struct PlainFormat;

impl RunFormat for PlainFormat {
    fn run_entry(&self, r: &RunReport) -> Value {
        json!({
            "check_id": r.check_id.as_str(),
            "error": r.error,
            "warnings": r.warnings,
            "metrics": r.submissions.metrics,
            "service_checks": r.submissions.service_checks,
        })
    }

    fn failed_entry(&self, check_id: &str, error: &CheckError) -> Value {
        json!({"check_id": check_id, "error": error})
    }
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("conf.d")).unwrap();
        Self { dir }
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    /// Writes check `name` (shared checks dir) and its configuration.
    fn check(&self, name: &str, source: &str, conf: &str) {
        fs_err::write(shared().checks_dir.join(format!("{name}.py")), source).unwrap();
        self.conf(name, conf);
    }

    fn conf(&self, name: &str, conf: &str) {
        fs_err::write(self.conf_dir().join(format!("{name}.yaml")), conf).unwrap();
    }

    fn options(&self) -> AgentOptions {
        let mut o = AgentOptions::new(
            self.dir.path(),
            self.conf_dir(),
            &shared().checks_dir,
            venv(),
            AgentConfig::default(),
            Arc::new(PlainFormat),
        )
        .unwrap();
        o.runtime = Some(shared().runtime.clone());
        o
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    /// Starts an agent and serves its API on `<root>/run/agent.sock`.
    async fn start(&self) -> (Agent, tokio::sync::oneshot::Sender<()>) {
        let agent = Agent::start(self.options()).await.unwrap();
        let api = outpost_agent::api::build_api(
            &agent,
            outpost_api::AccessPolicy::from_config(&Default::default()),
        )
        .unwrap();
        let server = outpost_api::Server::new(api)
            .bind_unix(self.socket())
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        (agent, stop)
    }
}

/// `GET path` over the socket, the body as text (blocking; call from a blocking thread, so
/// that the exchange does not run on the test's runtime and its clock).
fn http_get(socket: &Path, path: &str) -> (u16, String) {
    let r = outpost_testkit::client::send_blocking(
        socket,
        &outpost_testkit::client::Req::new("GET", path).header("Host", "agent"),
    )
    .unwrap();
    (r.status, r.text())
}

async fn get_json(socket: &Path, path: &str) -> Value {
    let (socket, path) = (socket.to_owned(), path.to_owned());
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&socket, &path))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn get_text(socket: &Path, path: &str) -> String {
    let (socket, path) = (socket.to_owned(), path.to_owned());
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&socket, &path))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `cond` every 20 ms until it holds or 20 s passed.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn inuse(vars: &Value, id: &str) -> u64 {
    vars["rtloader"]["Checks"][id]["InuseBytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no memory for {id} in {}", vars["rtloader"]))
}

fn allocated(vars: &Value, id: &str) -> u64 {
    vars["rtloader"]["Checks"][id]["AllocatedBytes"]
        .as_u64()
        .unwrap()
}

const MB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_attributed_in_debug_vars_and_freed_memory_returns_to_baseline() {
    let env = Env::new();
    env.check(
        "mem_hog",
        r#"
from datadog_checks.base import AgentCheck
class HogCheck(AgentCheck):
    def check(self, instance):
        if not hasattr(self, "kept"):
            self.kept = bytearray(50 * 1024 * 1024)
        self.gauge("mem_hog.kept", len(self.kept))
"#,
        "instances:\n  - min_collection_interval: 3600\n",
    );
    env.check(
        "mem_churn",
        r#"
from datadog_checks.base import AgentCheck
class ChurnCheck(AgentCheck):
    def check(self, instance):
        data = bytearray(50 * 1024 * 1024)
        self.gauge("mem_churn.size", len(data))
        del data
"#,
        "instances:\n  - min_collection_interval: 3600\n",
    );
    let (agent, _stop) = env.start().await;
    let id = |name: &str| {
        agent
            .checks_view()
            .instances
            .iter()
            .find(|i| i.check == name)
            .unwrap()
            .id
            .clone()
    };
    let (hog, churn) = (id("mem_hog"), id("mem_churn"));
    agent.run_check("mem_hog").await.unwrap();
    agent.run_check("mem_churn").await.unwrap();
    let first = get_json(&env.socket(), "/debug/vars").await;
    assert!(first["memtrack"]["enabled"].as_bool().unwrap());
    let kept = inuse(&first, &hog);
    assert!(kept >= 50 * MB, "the hog keeps 50 MiB: {kept}");
    // The 50 MiB buffer is counted exactly (a block that large is always sampled, with a
    // weight of its size); the check's other objects are an estimate from sampling one block
    // per 256 KiB on average, hence the room above it.
    assert!(kept < 62 * MB, "and not much more: {kept}");
    let baseline = inuse(&first, &churn);
    let churned = allocated(&first, &churn);
    assert!(churned >= 50 * MB, "{churned}");
    assert!(
        baseline < 5 * MB,
        "the churn check keeps little: {baseline}"
    );

    for _ in 0..3 {
        agent.run_check("mem_hog").await.unwrap();
        agent.run_check("mem_churn").await.unwrap();
    }
    let after = get_json(&env.socket(), "/debug/vars").await;
    assert!(
        allocated(&after, &churn) >= churned + 150 * MB,
        "three more runs allocated 50 MiB each"
    );
    let churn_now = inuse(&after, &churn);
    assert!(
        churn_now.abs_diff(baseline) < MB,
        "back to its baseline: {baseline} then {churn_now}"
    );
    let hog_now = inuse(&after, &hog);
    assert!(
        hog_now.abs_diff(kept) < MB,
        "the kept block is still charged to the hog, once: {kept} then {hog_now}"
    );
    // The same numbers per check in /checks and as telemetry.
    let view = get_json(&env.socket(), "/checks").await;
    let hog_entry = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == hog.as_str())
        .unwrap();
    assert!(hog_entry["memory"]["InuseBytes"].as_u64().unwrap() >= 50 * MB);
    let text = get_text(&env.socket(), "/telemetry").await;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("rtloader__inuse_bytes{{check_id=\"{hog}\"}}")))
        .unwrap_or_else(|| panic!("no per-check series for {hog}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= (50 * MB) as f64, "{line}");
    assert!(text.contains("\n# TYPE rtloader__allocations counter\nrtloader__allocations "));
    assert!(text.contains("# TYPE rtloader__inuse_bytes gauge"));
    assert!(text.contains("rtloader__untracked_frees "));
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_starts_stops_and_restarts_changed_instances() {
    let env = Env::new();
    let source = |name: &str| {
        format!(
            r#"
from datadog_checks.base import AgentCheck
class C(AgentCheck):
    def check(self, instance):
        self.gauge("{name}.up", instance.get("value", 1), tags=["which:" + instance.get("which", "-")])
"#
        )
    };
    env.check(
        "rl_keep",
        &source("rl_keep"),
        "instances:\n  - {which: k}\n",
    );
    env.check(
        "rl_gone",
        &source("rl_gone"),
        "instances:\n  - {which: g}\n",
    );
    env.check(
        "rl_change",
        &source("rl_change"),
        "instances:\n  - {which: c, value: 1}\n",
    );
    let (agent, _stop) = env.start().await;
    let ids = |agent: &Agent| -> Vec<String> {
        agent
            .checks_view()
            .instances
            .iter()
            .map(|i| i.id.clone())
            .collect()
    };
    let before = ids(&agent);
    assert_eq!(before.len(), 3, "{before:?}");
    for name in ["rl_keep", "rl_gone", "rl_change"] {
        agent.run_check(name).await.unwrap();
    }
    let text = get_text(&env.socket(), "/telemetry").await;
    assert!(text.contains("rl_gone_up{which=\"g\"} 1"), "{text}");
    assert!(text.contains("rl_change_up{which=\"c\"} 1"), "{text}");
    let keep_runs = agent
        .scheduler()
        .jobs()
        .into_iter()
        .find(|j| j.id.starts_with("rl_keep:"))
        .unwrap()
        .runs;

    fs_err::remove_file(env.conf_dir().join("rl_gone.yaml")).unwrap();
    env.conf("rl_change", "instances:\n  - {which: c, value: 2}\n");
    env.check("rl_new", &source("rl_new"), "instances:\n  - {which: n}\n");
    let summary = agent.reload().await.unwrap();
    let old_change = before.iter().find(|i| i.starts_with("rl_change:")).unwrap();
    let old_gone = before.iter().find(|i| i.starts_with("rl_gone:")).unwrap();
    let mut removed = vec![old_change.clone(), old_gone.clone()];
    removed.sort();
    assert_eq!(summary.removed, removed);
    assert_eq!(summary.unchanged, 1, "rl_keep untouched");
    assert_eq!(summary.added.len(), 2, "{summary:?}");
    assert!(summary.added.iter().any(|i| i.starts_with("rl_new:")));
    let new_change = summary
        .added
        .iter()
        .find(|i| i.starts_with("rl_change:"))
        .unwrap();
    assert_ne!(new_change, old_change, "a changed instance has a new ID");
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    // The kept instance was not restarted: its statistics carried on.
    let keep = agent
        .scheduler()
        .jobs()
        .into_iter()
        .find(|j| j.id.starts_with("rl_keep:"))
        .unwrap();
    assert!(keep.runs >= keep_runs);
    // The removed instances' series are gone; the changed one reports anew.
    eventually("the removed series disappear", async || {
        let text = get_text(&env.socket(), "/telemetry").await;
        !text.contains("rl_gone_up") && !text.contains("rl_change_up{which=\"c\"} 1")
    })
    .await;
    agent.run_check("rl_change").await.unwrap();
    let text = get_text(&env.socket(), "/telemetry").await;
    assert!(text.contains("rl_change_up{which=\"c\"} 2"), "{text}");
    assert!(matches!(
        agent.run_check("rl_gone").await,
        Err(outpost_agent::AgentError::UnknownCheck { .. })
    ));
    // A reload with nothing changed changes nothing.
    let again = agent.reload().await.unwrap();
    assert_eq!(
        (again.added.len(), again.removed.len(), again.unchanged),
        (0, 0, 3)
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_errors_run_now_documents_and_validation() {
    let env = Env::new();
    env.check(
        "le_mixed",
        r#"
from datadog_checks.base import AgentCheck
class Mixed(AgentCheck):
    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        if self.instance.get("broken"):
            raise ValueError("this instance is broken")
    def check(self, instance):
        self.gauge("le_mixed.ok", 1)
"#,
        "instances:\n  - {broken: true}\n  - {port: 1}\n",
    );
    env.check(
        "le_syntax",
        "from datadog_checks.base import AgentCheck\nclass X(AgentCheck:\n    pass\n",
        "instances:\n  - {}\n",
    );
    env.check(
        "le_legacy",
        r#"
import imp
from datadog_checks.base import AgentCheck
class Legacy(AgentCheck):
    def check(self, instance):
        pass
"#,
        "instances:\n  - {}\n",
    );
    env.conf("le_badyaml", "instances: [\n");
    let (agent, _stop) = env.start().await;
    let view = agent.checks_view();
    let errors = &view.load_errors;
    let mixed = errors
        .iter()
        .find(|e| e.check.as_deref() == Some("le_mixed"))
        .unwrap();
    assert_eq!(mixed.index, Some(0));
    assert!(
        mixed.error.message.contains("this instance is broken"),
        "{mixed:?}"
    );
    assert!(mixed.error.traceback.contains("ValueError"), "{mixed:?}");
    let syntax = errors
        .iter()
        .find(|e| e.check.as_deref() == Some("le_syntax"))
        .unwrap();
    assert_eq!(syntax.index, None, "the whole check failed");
    assert!(syntax.error.message.contains("le_syntax"), "{syntax:?}");
    let yaml = errors
        .iter()
        .find(|e| e.check.as_deref() == Some("le_badyaml"))
        .unwrap();
    assert!(yaml.error.message.contains("le_badyaml.yaml"), "{yaml:?}");
    assert_eq!(
        view.instances
            .iter()
            .filter(|i| i.check == "le_mixed")
            .count(),
        1,
        "the good instance runs"
    );

    // Run-now documents: the failed instance is listed in its place.
    let doc = agent.run_check("le_mixed").await.unwrap();
    assert_eq!(doc["check"], "le_mixed");
    let instances = doc["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert!(
        instances[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken")
    );
    assert_eq!(instances[1]["error"], Value::Null);
    assert_eq!(instances[1]["metrics"][0]["name"], "le_mixed.ok");
    let doc = agent.run_check("le_syntax").await.unwrap();
    assert_eq!(doc["instances"], json!([]));
    assert!(
        doc["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("SyntaxError")
    );
    assert!(matches!(
        agent.run_check("le_nothing").await,
        Err(outpost_agent::AgentError::UnknownCheck { .. })
    ));

    // Custom checks are validated once, in the background, and exported.
    eventually("both loadable custom checks are validated", async || {
        agent.validations().len() >= 2
    })
    .await;
    let validations = agent.validations();
    let legacy = validations
        .iter()
        .find(|v| v.check == "le_legacy")
        .unwrap_or_else(|| panic!("{validations:?} {:?}", agent.checks_view().load_errors));
    assert_eq!(legacy.status.as_str(), "not_ready");
    assert!(
        legacy.messages.iter().any(|m| m.contains("imp")),
        "{legacy:?}"
    );
    let text = get_text(&env.socket(), "/telemetry").await;
    let ready: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("datadog_agent_check_ready{"))
        .collect();
    assert!(
        ready.iter().any(|l| l.contains("check_name=\"le_legacy\"")
            && l.contains("status=\"not_ready\"")
            && l.contains("agent_version_major=")
            && l.ends_with(" 0")),
        "{ready:?}"
    );
    assert!(
        ready.iter().any(|l| l.contains("check_name=\"le_mixed\"")
            && l.contains("status=\"ready\"")
            && l.ends_with(" 1")),
        "{ready:?}"
    );
    // Not validated twice on reload.
    agent.reload().await.unwrap();
    assert_eq!(agent.validations().len(), validations.len());
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_conf_dir_is_reported_and_a_reload_picks_it_up() {
    let env = Env::new();
    fs_err::remove_dir(env.conf_dir()).unwrap();
    let (agent, _stop) = env.start().await;
    let view = get_json(&env.socket(), "/checks").await;
    assert_eq!(view["instances"], json!([]));
    let error = &view["load_errors"][0];
    assert_eq!(error["config"], env.conf_dir().display().to_string());
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&env.conf_dir().display().to_string()),
        "{error}"
    );
    // Still missing: the reload fails and says why; nothing changes.
    let e = agent.reload().await.unwrap_err();
    assert!(
        matches!(e, outpost_agent::AgentError::ConfDir { .. }),
        "{e}"
    );
    fs_err::create_dir_all(env.conf_dir()).unwrap();
    env.check(
        "md_late",
        "from datadog_checks.base import AgentCheck\nclass L(AgentCheck):\n    def check(self, i):\n        self.gauge('md_late.up', 1)\n",
        "instances:\n  - {}\n",
    );
    let summary = agent.reload().await.unwrap();
    assert_eq!(summary.added.len(), 1, "{summary:?}");
    assert!(agent.checks_view().load_errors.is_empty());
    agent.shutdown().await.unwrap();
}
