//! Shared fixtures of the `checks_*` tests: a root with `conf.d/` and `checks.d/` in a temp
//! dir, the real `outpost-agent` (and `outpost`) binaries, the test venv with the real
//! datadog-checks-base, and a reference runner that runs the same check in plain Python with
//! the base's stub aggregator, for comparison.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it; tests unwrap

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

/// The venv with datadog-checks-base[deps] 38.5.0.
pub(crate) fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

pub(crate) const AGENT: &str = env!("CARGO_BIN_EXE_outpost-agent");
pub(crate) const OUTPOST: &str = env!("CARGO_BIN_EXE_outpost");

/// A root directory with `conf.d/` and `checks.d/`.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("conf.d")).unwrap();
        fs_err::create_dir_all(dir.path().join("checks.d")).unwrap();
        Self { dir }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn checks_dir(&self) -> PathBuf {
        self.root().join("checks.d")
    }

    /// Writes `checks.d/<name>.py`.
    pub(crate) fn check(&self, name: &str, source: &str) -> PathBuf {
        let p = self.checks_dir().join(format!("{name}.py"));
        fs_err::write(&p, source).unwrap();
        p
    }

    /// Writes `conf.d/<name>.d/conf.yaml`.
    pub(crate) fn conf(&self, name: &str, yaml: &str) -> PathBuf {
        let d = self.root().join(format!("conf.d/{name}.d"));
        fs_err::create_dir_all(&d).unwrap();
        let p = d.join("conf.yaml");
        fs_err::write(&p, yaml).unwrap();
        p
    }

    /// Writes `outpost.yaml` in the root and returns its path.
    pub(crate) fn config(&self, yaml: &str) -> PathBuf {
        let p = self.root().join("outpost.yaml");
        fs_err::write(&p, yaml).unwrap();
        p
    }

    /// `outpost-agent <args> --root <root> --python-venv <venv>` for check commands.
    pub(crate) fn agent(&self, args: &[&str]) -> Command {
        let mut c = Command::new(AGENT);
        c.args(args)
            .arg("--root")
            .arg(self.root())
            .arg("--python-venv")
            .arg(venv())
            .env_remove("OUTPOST_ROOT")
            .env_remove("OUTPOST_CONFIG")
            .env_remove("OUTPOST_LOG");
        c
    }

    /// Runs `check run NAME --json <extra>` and returns (document, exit code).
    pub(crate) fn run_json(&self, name: &str, extra: &[&str]) -> (Value, i32) {
        let mut args = vec!["check", "run", name, "--json"];
        args.extend_from_slice(extra);
        let out = self.agent(&args).output().unwrap();
        parse_json_output(&out)
    }

    /// Runs the reference: the same check in plain Python with the stub aggregator.
    pub(crate) fn reference(&self, name: &str, times: u32) -> Value {
        self.reference_with(name, times, None)
    }

    /// Runs the reference for a check with a legacy constructor, instantiated the old way
    /// with `agent_config` as its `agentConfig`: `cls(name, init_config, agentConfig,
    /// [instance])`.
    pub(crate) fn reference_legacy(&self, name: &str, times: u32, agent_config: &Value) -> Value {
        self.reference_with(name, times, Some(agent_config))
    }

    fn reference_with(&self, name: &str, times: u32, agent_config: Option<&Value>) -> Value {
        let script = self.root().join("reference.py");
        fs_err::write(&script, REFERENCE).unwrap();
        let conf = self.root().join(format!("conf.d/{name}.d/conf.yaml"));
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(&script)
            .arg(self.checks_dir())
            .arg(&conf)
            .arg(name)
            .arg(times.to_string());
        if let Some(agent_config) = agent_config {
            cmd.arg(agent_config.to_string());
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Parses stdout as JSON, checking stderr has no Rust panic or backtrace.
pub(crate) fn parse_json_output(out: &Output) -> (Value, i32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_rust_noise(&stderr);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (doc, out.status.code().unwrap_or(-1))
}

/// Users never see a panic, a Rust backtrace or a `Debug` dump.
pub(crate) fn assert_no_rust_noise(text: &str) {
    for bad in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "Os {",
        "Error {",
        "kind:",
    ] {
        assert!(!text.contains(bad), "{bad:?} in output:\n{text}");
    }
}

/// The reference runner: loads the check like the loader (leaf AgentCheck subclass of the
/// module in the checks dir), instantiates each instance of the YAML file, runs them
/// `times` times with the stubs, and prints, per run, what the stub aggregator recorded.
/// With a fifth argument (a JSON object), checks are instantiated the legacy way, with it as
/// their `agentConfig`.
const REFERENCE: &str = r#"
import importlib, json, math, sys
import yaml
from datadog_checks.base.stubs import aggregator, datadog_agent
from datadog_checks.checks import AgentCheck

checks_dir, conf_path, name, times = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
agent_config = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
sys.path.append(checks_dir)
module = importlib.import_module(name)
cls = None
for attr in sorted(dir(module)):
    v = getattr(module, attr)
    if isinstance(v, type) and issubclass(v, AgentCheck) and v is not AgentCheck and not v.__subclasses__():
        cls = v
        break
cfg = yaml.safe_load(open(conf_path))
init = cfg.get('init_config') or {}
checks = []
for i, inst in enumerate(cfg['instances']):
    c = cls(name, init, [inst]) if agent_config is None else cls(name, init, agent_config, [inst])
    c.check_id = '%s:ref%d' % (name, i)
    checks.append(c)

REV = {v: k for k, v in aggregator.METRIC_ENUM_MAP.items()}
EVENT_KEYS = ['msg_title', 'msg_text', 'timestamp', 'priority', 'host', 'alert_type',
              'aggregation_key', 'source_type_name', 'event_type', 'tags']

def num(v):
    if isinstance(v, float):
        if math.isnan(v):
            return 'NaN'
        if math.isinf(v):
            return '+Inf' if v > 0 else '-Inf'
    return v

def text(v):
    return v.decode() if isinstance(v, bytes) else v

out = []
for run in range(1, times + 1):
    for c in checks:
        aggregator.reset()
        err = c.run()
        warnings = c.get_warnings()
        metrics = [
            {'name': m.name, 'type': REV[m.type], 'value': num(m.value), 'tags': list(m.tags),
             'hostname': m.hostname, 'flush_first_value': bool(m.flush_first_value)}
            for stubs in aggregator._metrics.values() for m in stubs
        ]
        scs = [
            {'name': s.name, 'status': s.status, 'tags': list(s.tags), 'hostname': s.hostname,
             'message': s.message}
            for stubs in aggregator._service_checks.values() for s in stubs
        ]
        events = []
        for e in aggregator.events:
            events.append({k: (list(e[k]) if k == 'tags' else e[k]) for k in EVENT_KEYS if k in e})
        buckets = [
            {'name': b.name, 'value': b.value, 'lower_bound': num(float(b.lower_bound)),
             'upper_bound': num(float(b.upper_bound)), 'monotonic': bool(b.monotonic),
             'hostname': b.hostname, 'tags': list(b.tags), 'flush_first_value': bool(b.flush_first_value)}
            for stubs in aggregator._histogram_buckets.values() for b in stubs
        ]
        ep = [
            {'event_type': t, 'raw_event': text(raw)}
            for t, raws in aggregator._event_platform_events.items() for raw in raws
        ]
        out.append({'run': run, 'error': json.loads(err)[0] if err else None, 'warnings': warnings,
                    'metrics': metrics, 'service_checks': scs, 'events': events,
                    'histogram_buckets': buckets, 'event_platform_events': ep})
print(json.dumps(out))
"#;

/// Sorts a list of JSON objects by their text, for order-insensitive comparison.
pub(crate) fn sorted(list: &Value) -> Vec<Value> {
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|v| v.to_string());
    items
}

/// Removes `tag` from the tags of every item (metrics, service checks, events, buckets),
/// asserting it was the last tag of each: the documented `service:` difference.
pub(crate) fn strip_last_tag(list: &Value, tag: &str) -> Value {
    let items = list
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let shown = item.to_string();
            let mut item = item.clone();
            let tags = item["tags"].as_array_mut().unwrap();
            assert_eq!(tags.last(), Some(&json!(tag)), "{shown}");
            tags.pop();
            item
        })
        .collect();
    Value::Array(items)
}

/// Asserts that outpost's instance entry and the reference run submitted the same things.
/// `service` is the service tag outpost appends (absent in the stub output).
pub(crate) fn assert_same_submissions(ours: &Value, reference: &Value, service: Option<&str>) {
    for key in [
        "metrics",
        "service_checks",
        "events",
        "histogram_buckets",
        "event_platform_events",
    ] {
        let mut mine = ours[key].clone();
        if let (Some(tag), true) = (service, key != "event_platform_events") {
            mine = strip_last_tag(&mine, tag);
        }
        if key == "events" {
            // An event without tags gets `tags: [service]` from the agent; stripped it is [].
            for e in mine.as_array_mut().unwrap() {
                if e.get("tags") == Some(&json!([])) {
                    e.as_object_mut().unwrap().remove("tags");
                }
            }
        }
        assert_eq!(
            sorted(&mine),
            sorted(&reference[key]),
            "{key} differ\nours: {}\nreference: {}",
            ours[key],
            reference[key]
        );
    }
}

/// Serves `body` as a Prometheus exposition on 127.0.0.1 until the process ends. Returns
/// the URL.
pub(crate) fn serve_metrics(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut request = Vec::new();
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            // A client that hung up is not the test's concern.
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}/metrics")
}
