//! Fleet convergence end to end: the real daemon polls a real registry (Debian's
//! `docker-registry`, behind a recording proxy that counts every request) for documents pushed
//! and signed by the real CLI and by the real `minisign` tool.
// Fixture code outside `#[test]` functions unwraps too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_testkit::{FaultProxy, Registry};
use serde_json::{Value, json};
use support::*;

const DOC_TYPE: &str = "application/vnd.outpost.fleet.v1+json";
const SIG_TYPE: &str = "application/vnd.outpost.fleet.signature.v1+minisign";

/// A registry behind a recording proxy, keys, fixtures, and a daemon polling the proxy.
struct Env {
    s: Scratch,
    reg: Registry,
    proxy: FaultProxy,
    key: Key,
    config: PathBuf,
}

/// A minisign key pair made by the `minisign` tool, without a password.
struct Key {
    public: PathBuf,
    secret: PathBuf,
}

fn minisign(args: &[&str]) -> std::process::Output {
    let out = Command::new("minisign")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run minisign (install the minisign package)");
    assert!(
        out.status.success(),
        "minisign {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn keypair(dir: &Path, name: &str) -> Key {
    let public = dir.join(format!("{name}.pub"));
    let secret = dir.join(format!("{name}.key"));
    minisign(&[
        "-G",
        "-W",
        "-f",
        "-p",
        public.to_str().unwrap(),
        "-s",
        secret.to_str().unwrap(),
    ]);
    Key { public, secret }
}

impl Env {
    fn new(extra_fleet: &str) -> Self {
        let s = Scratch::new();
        let reg = Registry::start();
        let proxy = FaultProxy::start(reg.addr(), Vec::new());
        let key = keypair(&s.fixtures(), "fleet");
        let yaml = format!(
            "registry:\n  insecure_hosts: [\"{}\", \"{}\"]\n  stall_timeout: 5s\n\
             fleet:\n  source: oci://{}/fleet/doc:prod\n  poll_interval: 150ms\n  \
             trusted_keys: [\"{}\"]\n  host_id: host-a\n  labels: {{role: web}}\n{extra_fleet}",
            reg.host(),
            proxy.host(),
            proxy.host(),
            key.public.display()
        );
        let config = s.config(&yaml);
        Self {
            s,
            reg,
            proxy,
            key,
            config,
        }
    }

    fn daemon(&self) -> Daemon {
        Daemon::start_with(
            &self.s.root(),
            DaemonOptions {
                config: Some(self.config.clone()),
                ..DaemonOptions::default()
            },
        )
    }

    fn target(&self) -> String {
        format!("oci://{}/fleet/doc:prod", self.reg.host())
    }

    /// Writes a document and returns its path.
    fn doc(&self, name: &str, doc: &Value) -> PathBuf {
        let p = self.s.fixtures().join(format!("{name}.json"));
        fs_err::write(&p, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        p
    }

    /// `outpost fleet push` with `args` after the document and target.
    fn push(&self, doc: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(["fleet", "push"])
            .arg(doc)
            .args(["--to", &self.target()])
            .args(args);
        cli_output(cmd, None)
    }

    fn push_signed(&self, doc: &Path) {
        let out = self.push(doc, &["--sign-key", self.key.secret.to_str().unwrap()]);
        assert!(out.status.success(), "fleet push: {}", stderr(&out));
    }

    /// Pushes raw blobs, bypassing the CLI's validation (for documents it would refuse).
    fn push_raw(&self, doc: &[u8], sig: Option<&[u8]>) {
        let mut blobs: Vec<(&str, &[u8])> = vec![(DOC_TYPE, doc)];
        if let Some(s) = sig {
            blobs.push((SIG_TYPE, s));
        }
        let settings = outpost_fetch::RegistrySettings {
            insecure_hosts: vec![self.reg.host()],
            ..Default::default()
        };
        let target = outpost_types::source::OciReference::parse(&format!(
            "{}/fleet/doc:prod",
            self.reg.host()
        ))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(outpost_oci::push_artifact(
            &settings,
            &target,
            DOC_TYPE,
            &blobs,
            &outpost_fetch::Cancel::new(),
        ))
        .unwrap();
    }
}

fn document(generation: u64, catalog: &[Value], packages: Value) -> Value {
    json!({
        "generation": generation,
        "expires": "2099-01-01T00:00:00Z",
        "catalog": {"packages": catalog},
        "packages": packages,
    })
}

fn fleet(d: &Daemon) -> Value {
    d.status()["fleet"].clone()
}

/// Waits until the fleet status satisfies `check`.
fn wait_fleet(d: &Daemon, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, || {
        let f = fleet(d);
        check(&f).then_some(f)
    })
}

fn telemetry(d: &Daemon) -> String {
    d.get("/telemetry").text()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn polls(d: &Daemon) -> f64 {
    metric(&telemetry(d), "outpost_fleet_polls_total").unwrap_or(0.0)
}

#[test]
fn converges_counts_one_head_per_unchanged_poll_and_guards_managed_packages() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let web1 = standard(&fx, "web", "1.0.0");
    let web2 = standard(&fx, "web", "2.0.0");
    let local = standard(&fx, "local", "1.0");
    let d = env.daemon();
    // Local packages stay local.
    d.set_catalog(&[local.layout_entry()]);
    d.post("/local/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();

    let gen1 = env.doc(
        "gen1",
        &document(
            1,
            &[web1.layout_entry(), web2.layout_entry()],
            json!({"web": {"stable": "1.0.0"}}),
        ),
    );
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    assert_eq!(
        metric(&telemetry(&d), "outpost_fleet_applied_timestamp_seconds"),
        None,
        "no applied time before a generation is reached"
    );
    let before_push = unix_now();
    env.push_signed(&gen1);
    let f = wait_fleet(&d, "generation 1 applied and converged", |f| {
        f["applied_generation"] == 1 && f["converged"] == true
    });
    let applied_at = metric(&telemetry(&d), "outpost_fleet_applied_timestamp_seconds").unwrap();
    assert!(
        before_push < applied_at && applied_at <= unix_now(),
        "{before_push} < {applied_at}"
    );
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));
    assert_eq!(f["last_error"], Value::Null, "{f}");
    assert_eq!(f["unsigned"], false);
    assert_eq!(f["managed"], json!(["web"]));
    assert!(f["applied_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        f["source"],
        format!("oci://{}/fleet/doc:prod", env.proxy.host())
    );
    let text = telemetry(&d);
    assert_eq!(
        metric(&text, "outpost_fleet_generation"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "outpost_fleet_converged"),
        Some(1.0),
        "{text}"
    );
    // The daemon's catalog took the document's entries and kept the local one.
    let catalog = d.get("/catalog").json();
    assert_eq!(
        catalog["packages"].as_array().unwrap().len(),
        3,
        "{catalog}"
    );

    // Unchanged polls: one HEAD of the manifest each, never a blob or a manifest GET.
    let before = env.proxy.requests().len();
    let p0 = polls(&d);
    wait_for("three more polls", || (polls(&d) >= p0 + 3.0).then_some(()));
    let p1 = polls(&d);
    let seen = env.proxy.requests()[before..].to_vec();
    assert!(
        seen.iter()
            .all(|r| r.method == "HEAD" && r.path == "/v2/fleet/doc/manifests/prod"),
        "{seen:?}"
    );
    // A poll in flight at either end of the window may fall on one side of it only.
    let polled = (p1 - p0) as usize;
    assert!(
        seen.len() + 1 >= polled && seen.len() <= polled + 2,
        "{} requests for {polled} polls: {seen:?}",
        seen.len()
    );

    // Managed: local changes are refused unless forced; the local package is not concerned.
    d.post("/web/install", Some(&json!({"version": "2.0.0"})))
        .assert_error(409, "managed_by_fleet");
    d.post("/web/remove", None)
        .assert_error(409, "managed_by_fleet");
    d.post("/web/experiment/stop", None)
        .assert_error(409, "managed_by_fleet");
    d.post("/local/remove", None).assert_ok_empty();
    d.post("/web/experiment/stop", Some(&json!({"force": true})))
        .assert_ok_empty();
    assert!(d.log().contains("local override"), "{}", d.log());

    // The catalog: a local catalog may change other packages' entries, and carry the managed
    // ones exactly as the daemon holds them; adding, removing or changing one is refused.
    let held = d.get("/catalog").json()["packages"]
        .as_array()
        .unwrap()
        .clone();
    let managed_entries: Vec<Value> = held
        .iter()
        .filter(|e| e["package"] == "web")
        .cloned()
        .collect();
    let mut other = local.layout_entry();
    other["version"] = json!("1.1");
    let mut with_other = managed_entries.clone();
    with_other.push(other.clone());
    d.post("/catalog", Some(&json!({"packages": with_other})))
        .assert_ok_empty();
    let refused = |packages: Vec<Value>, change: &str| {
        let message = d
            .post("/catalog", Some(&json!({"packages": packages})))
            .assert_error(409, "managed_by_fleet");
        assert!(
            message.contains(&format!("the catalog {change} the entries of web")),
            "{message}"
        );
    };
    refused(vec![other.clone()], "removes");
    let mut web3 = web2.layout_entry();
    web3["version"] = json!("3.0.0");
    let mut added = with_other.clone();
    added.push(web3);
    refused(added, "adds");
    let mut changed = with_other.clone();
    changed[0]["url"] = json!(format!("file://{}/elsewhere", fx.display()));
    refused(changed, "changes");
    // Refused means unchanged.
    let names = |entries: &[Value]| -> Vec<(String, String, String)> {
        entries
            .iter()
            .map(|e| {
                let f = |k: &str| e[k].as_str().unwrap().to_owned();
                (f("package"), f("version"), f("url"))
            })
            .collect()
    };
    let now = d.get("/catalog").json()["packages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(names(&now), names(&with_other));
    // Forced: taken, and logged as an override naming the operation.
    d.post(
        "/catalog",
        Some(&json!({"packages": [other.clone()], "force": true})),
    )
    .assert_ok_empty();
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("local override") && l.contains("set_catalog")),
        "{}",
        d.log()
    );
    d.post(
        "/catalog",
        Some(&json!({"packages": with_other, "force": true})),
    )
    .assert_ok_empty();

    // Config experiments of a managed package follow the same rule; the config catalog,
    // which names no package, is not concerned.
    d.post(
        "/config_catalog",
        Some(&json!({"c1": {"id": "c1", "file_operations": []}})),
    )
    .assert_ok_empty();
    let config = json!({"operations": {"deployment_id": "cfg1", "file_operations": [
        {"file_op": "merge-patch", "file_path": "/web.yaml", "patch": {"level": "debug"}}]}});
    d.post("/web/config_experiment/start", Some(&config))
        .assert_error(409, "managed_by_fleet");
    let mut forced = config.clone();
    forced["force"] = json!(true);
    d.post("/web/config_experiment/start", Some(&forced))
        .assert_ok_empty();
    d.post("/web/config_experiment/promote", None)
        .assert_error(409, "managed_by_fleet");
    d.post("/web/config_experiment/stop", Some(&json!({})))
        .assert_error(409, "managed_by_fleet");
    d.post("/web/config_experiment/stop", Some(&json!({"force": true})))
        .assert_ok_empty();
    // An unmanaged package gets its own answer (it was removed above), not the fleet's.
    d.post("/local/config_experiment/start", Some(&config))
        .assert_error(409, "invalid_state");

    // Generation 2: an experiment for every web host; converged is recomputed for it.
    let gen2 = env.doc(
        "gen2",
        &document(
            2,
            &[web1.layout_entry(), web2.layout_entry()],
            json!({"web": {"stable": "1.0.0", "experiment": {
                "version": "2.0.0", "percent": 100, "selector": {"role": "web"},
                "max_duration": "1h"}}}),
        ),
    );
    env.push_signed(&gen2);
    wait_fleet(&d, "generation 2 applied and converged", |f| {
        f["applied_generation"] == 2 && f["converged"] == true
    });
    // A new generation reached: a new applied time; unchanged polls leave it.
    let applied_at2 = metric(&telemetry(&d), "outpost_fleet_applied_timestamp_seconds").unwrap();
    assert!(applied_at2 > applied_at, "{applied_at2} > {applied_at}");
    let p0 = polls(&d);
    wait_for("two more polls", || (polls(&d) >= p0 + 2.0).then_some(()));
    assert_eq!(
        metric(&telemetry(&d), "outpost_fleet_applied_timestamp_seconds"),
        Some(applied_at2)
    );
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), "2.0.0".into())));
    assert_eq!(
        metric(&telemetry(&d), "outpost_fleet_generation"),
        Some(2.0)
    );

    // Generation 3 names a version whose source is gone: not converged, and said so.
    let mut broken = web2.layout_entry();
    broken["version"] = json!("3.0.0");
    broken["url"] = json!(format!("file://{}/missing-layout", fx.display()));
    let gen3 = env.doc(
        "gen3",
        &document(
            3,
            &[web1.layout_entry(), broken],
            json!({"web": {"stable": "3.0.0"}}),
        ),
    );
    env.push_signed(&gen3);
    let f = wait_fleet(&d, "generation 3 applied, not converged", |f| {
        f["applied_generation"] == 3 && f["last_error_reason"] == "apply"
    });
    assert_eq!(f["converged"], false, "{f}");
    let text = telemetry(&d);
    assert_eq!(
        metric(&text, "outpost_fleet_converged"),
        Some(0.0),
        "{text}"
    );
    assert!(
        metric(&text, "outpost_fleet_poll_errors_total{reason=\"apply\"}").unwrap() >= 1.0,
        "{text}"
    );
    // The plan stopped the experiment the document no longer names; stable stays.
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));

    // `outpost fleet status` prints it.
    let out = d.cli(&["--json", "fleet", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["applied_generation"], 3);
    let out = d.cli(&["fleet", "status"]);
    assert!(
        stdout(&out).contains("converged:          no"),
        "{}",
        stdout(&out)
    );
    // Plain `outpost status` carries the fleet line and the error, cut to one line.
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("outpost daemon "), "{text}");
    assert!(
        lines[1].starts_with(&format!(
            "fleet: oci://{}/fleet/doc:prod, generation 3, converged: no, last poll ",
            env.proxy.host()
        )) && lines[1].ends_with(" ago"),
        "{text}"
    );
    assert!(lines[2].starts_with("fleet error (apply): "), "{text}");
    assert!(!text.contains("WARNING"), "{text}");

    // The state survives a restart: the same digest is not fetched again.
    drop(d);
    let state: Value =
        serde_json::from_slice(&fs_err::read(env.s.root().join("fleet-state.json")).unwrap())
            .unwrap();
    assert_eq!(state["applied_generation"], 3);
    let before = env.proxy.requests().len();
    let d = env.daemon();
    wait_fleet(&d, "a poll after the restart", |f| {
        f["last_poll_at"].is_string()
    });
    let f = fleet(&d);
    assert_eq!(f["applied_generation"], 3, "{f}");
    assert!(
        env.proxy.requests()[before..]
            .iter()
            .all(|r| !r.path.contains("/blobs/")),
        "no blob after a restart on the same digest"
    );
}

#[test]
fn refused_documents_change_nothing_and_minisign_interoperates() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let web1 = standard(&fx, "web", "1.0.0");
    let catalog = [web1.layout_entry()];
    let d = env.daemon();

    // A document signed by the minisign tool itself, pushed with its signature.
    let gen2 = env.doc(
        "gen2",
        &document(2, &catalog, json!({"web": {"stable": "1.0.0"}})),
    );
    minisign(&[
        "-S",
        "-m",
        gen2.to_str().unwrap(),
        "-s",
        env.key.secret.to_str().unwrap(),
    ]);
    let sig = gen2.with_extension("json.minisig");
    let out = env.push(&gen2, &["--signature", sig.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_fleet(&d, "the minisign-signed generation 2", |f| {
        f["applied_generation"] == 2 && f["converged"] == true
    });
    let applied_digest = fleet(&d)["applied_digest"].clone();

    let expect_refusal = |reason: &str| {
        let f = wait_fleet(&d, reason, |f| f["last_error_reason"] == reason);
        assert_eq!(f["applied_generation"], 2, "{reason}: {f}");
        assert_eq!(f["applied_digest"], applied_digest, "{reason}: {f}");
        assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));
        let text = telemetry(&d);
        let series = format!("outpost_fleet_poll_errors_total{{reason=\"{reason}\"}}");
        assert!(metric(&text, &series).unwrap() >= 1.0, "{series}: {text}");
        assert!(d.log().contains(reason), "the refusal is logged: {reason}");
    };

    // Tampered: the bytes of generation 3 under the signature of generation 2.
    let gen3 =
        serde_json::to_vec(&document(3, &catalog, json!({"web": {"stable": "1.0.0"}}))).unwrap();
    env.push_raw(&gen3, Some(&fs_err::read(&sig).unwrap()));
    expect_refusal("bad_signature");

    // Signed by a key the host does not trust.
    let other = keypair(&fx, "other");
    let gen4 = env.doc(
        "gen4",
        &document(4, &catalog, json!({"web": {"stable": "1.0.0"}})),
    );
    let out = env.push(&gen4, &["--sign-key", other.secret.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect_refusal("untrusted_key");

    // An older generation, validly signed.
    let gen1 = env.doc(
        "gen1",
        &document(1, &catalog, json!({"web": {"stable": "1.0.0"}})),
    );
    env.push_signed(&gen1);
    expect_refusal("stale_generation");

    // Expired.
    let mut expired = document(5, &catalog, json!({"web": {"stable": "1.0.0"}}));
    expired["expires"] = json!("2020-01-01T00:00:00Z");
    env.push_signed(&env.doc("expired", &expired));
    expect_refusal("expired");

    // Unsigned, where unsigned documents are not allowed.
    let out = env.push(&gen4, &["--unsigned"]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect_refusal("unsigned");

    // A version missing from the document's catalog: the CLI refuses to push it...
    let missing = env.doc(
        "missing",
        &document(6, &catalog, json!({"web": {"stable": "9.9.9"}})),
    );
    let out = env.push(&missing, &["--sign-key", env.key.secret.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("9.9.9"), "{}", stderr(&out));
    // ... and the daemon refuses it signed and pushed by other means.
    minisign(&[
        "-S",
        "-m",
        missing.to_str().unwrap(),
        "-s",
        env.key.secret.to_str().unwrap(),
    ]);
    env.push_raw(
        &fs_err::read(&missing).unwrap(),
        Some(&fs_err::read(missing.with_extension("json.minisig")).unwrap()),
    );
    expect_refusal("malformed");

    // A signature made by outpost verifies with `minisign -V`; `fleet verify` accepts it.
    let gen7 = env.doc(
        "gen7",
        &document(7, &catalog, json!({"web": {"stable": "1.0.0"}})),
    );
    env.push_signed(&gen7);
    let saved = fx.join("saved");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&env.config)
        .args(["--json", "fleet", "verify", &env.target(), "--key"])
        .arg(&env.key.public)
        .arg("--save")
        .arg(&saved);
    let out = cli_output(cmd, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["generation"], 7);
    minisign(&[
        "-V",
        "-m",
        saved.join("document.json").to_str().unwrap(),
        "-p",
        env.key.public.to_str().unwrap(),
    ]);
    assert_eq!(
        fs_err::read(saved.join("document.json")).unwrap(),
        fs_err::read(&gen7).unwrap()
    );
    // `fleet verify` with the wrong key refuses, naming the reason.
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&env.config)
        .args(["fleet", "verify", &env.target(), "--key"])
        .arg(&other.public);
    let out = cli_output(cmd, None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("untrusted_key"), "{}", stderr(&out));
    wait_fleet(&d, "generation 7", |f| f["applied_generation"] == 7);
}

#[test]
fn unsigned_documents_are_accepted_only_when_allowed_and_said_loudly() {
    let env = Env::new("  allow_unsigned: true\n");
    let web1 = standard(&env.s.fixtures(), "web", "1.0.0");
    let d = env.daemon();
    let gen1 = env.doc(
        "gen1",
        &document(
            1,
            &[web1.layout_entry()],
            json!({"web": {"stable": "1.0.0"}}),
        ),
    );
    let out = env.push(&gen1, &["--unsigned"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f = wait_fleet(&d, "the unsigned generation 1", |f| {
        f["applied_generation"] == 1 && f["converged"] == true
    });
    assert_eq!(f["unsigned"], true, "{f}");
    assert_eq!(f["allow_unsigned"], true, "{f}");
    assert!(d.log().contains("UNSIGNED"), "{}", d.log());
    let out = d.cli(&["fleet", "status"]);
    assert!(stdout(&out).contains("UNSIGNED"), "{}", stdout(&out));
    let out = d.cli(&["status"]);
    let text = stdout(&out);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains("generation 1, converged: yes"),
        "{text}"
    );
    assert!(
        text.contains(
            "WARNING: fleet.allow_unsigned is on: unsigned documents are accepted; the applied \
             document is UNSIGNED"
        ),
        "{text}"
    );
    // A signature that is present is still checked.
    let other = keypair(&env.s.fixtures(), "other");
    let gen2 = env.doc(
        "gen2",
        &document(
            2,
            &[web1.layout_entry()],
            json!({"web": {"stable": "1.0.0"}}),
        ),
    );
    let out = env.push(&gen2, &["--sign-key", other.secret.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f = wait_fleet(&d, "the untrusted generation 2 refused", |f| {
        f["last_error_reason"] == "untrusted_key"
    });
    assert_eq!(f["applied_generation"], 1);
}

#[test]
fn registry_down_keeps_the_state_and_recovers() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let web1 = standard(&fx, "web", "1.0.0");
    let web2 = standard(&fx, "web", "2.0.0");
    let catalog = [web1.layout_entry(), web2.layout_entry()];
    let d = env.daemon();
    env.push_signed(&env.doc(
        "gen1",
        &document(1, &catalog, json!({"web": {"stable": "1.0.0"}})),
    ));
    wait_fleet(&d, "generation 1", |f| {
        f["applied_generation"] == 1 && f["converged"] == true
    });
    env.proxy.set_down(true);
    env.push_signed(&env.doc(
        "gen2",
        &document(2, &catalog, json!({"web": {"stable": "2.0.0"}})),
    ));
    let f = wait_fleet(&d, "the registry error", |f| {
        f["last_error_reason"] == "registry"
    });
    assert_eq!(f["applied_generation"], 1, "{f}");
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));
    assert!(
        metric(
            &telemetry(&d),
            "outpost_fleet_poll_errors_total{reason=\"registry\"}"
        )
        .unwrap()
            >= 1.0
    );
    env.proxy.set_down(false);
    let f = wait_fleet(&d, "recovery with generation 2", |f| {
        f["applied_generation"] == 2 && f["converged"] == true
    });
    assert_eq!(f["last_error"], Value::Null, "{f}");
    assert_eq!(d.versions("web"), Some(("2.0.0".into(), String::new())));
}

#[test]
fn a_rolled_back_experiment_is_not_restarted_under_the_same_generation() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let web1 = standard(&fx, "web", "1.0.0");
    let mut files = standard_files("web", "2.0.0");
    files.push((
        "outpost/health".into(),
        b"#!/bin/sh\necho unhealthy\nexit 1\n".to_vec(),
        0o755,
    ));
    let web2 = package(&fx, "web", "2.0.0", files);
    let catalog = [web1.layout_entry(), web2.layout_entry()];
    let d = env.daemon();
    let experiment = json!({"web": {"stable": "1.0.0", "experiment": {
        "version": "2.0.0", "percent": 100,
        "health": {"command": ["outpost/health"], "interval": "100ms", "failures": 1}}}});
    env.push_signed(&env.doc("gen1", &document(1, &catalog, experiment.clone())));
    let f = wait_fleet(&d, "the experiment rolled back and not restarted", |f| {
        f["applied_generation"] == 1 && f["skipped"]["web"] == "rolled_back"
    });
    assert_eq!(f["converged"], true, "{f}");
    let history = d.get("/web/experiment/history").json();
    let watches = history["watches"].as_array().unwrap();
    assert_eq!(watches.len(), 1, "started once: {history}");
    assert_eq!(watches[0]["outcome"], "health_check_failed");
    // More polls: still not restarted.
    let p0 = polls(&d);
    wait_for("three more polls", || (polls(&d) >= p0 + 3.0).then_some(()));
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));
    let state: Value =
        serde_json::from_slice(&fs_err::read(env.s.root().join("fleet-state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["rolled_back"],
        json!([{"generation": 1, "package": "web", "version": "2.0.0"}])
    );
    // A new generation is a new decision: the experiment starts again.
    env.push_signed(&env.doc("gen2", &document(2, &catalog, experiment)));
    wait_for("the experiment started again", || {
        let h = d.get("/web/experiment/history").json();
        (h["watches"].as_array().unwrap().len() >= 2
            || d.versions("web") == Some(("1.0.0".into(), "2.0.0".into())))
        .then_some(())
    });
}

#[test]
fn cohort_membership_follows_the_selector_and_the_hosts_bucket() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let web1 = standard(&fx, "web", "1.0.0");
    let web2 = standard(&fx, "web", "2.0.0");
    let catalog = [web1.layout_entry(), web2.layout_entry()];
    let d = env.daemon();
    // host-a joins web 2.0.0's cohort at (bucket + 1) hundredths of a percent.
    let bucket = outpost_fleet::bucket("host-a", "web", "2.0.0");
    let percent = |bp: u16| f64::from(bp) / 100.0;
    let exp = |generation: u64, selector: Value, bp: u16| {
        document(
            generation,
            &catalog,
            json!({"web": {"stable": "1.0.0", "experiment": {
                "version": "2.0.0", "percent": percent(bp), "selector": selector}}}),
        )
    };
    env.push_signed(&env.doc("gen1", &exp(1, json!({"role": "db"}), 10_000)));
    let f = wait_fleet(&d, "a selector that does not match", |f| {
        f["applied_generation"] == 1 && f["converged"] == true
    });
    assert_eq!(f["skipped"]["web"], "selector_mismatch", "{f}");
    env.push_signed(&env.doc("gen2", &exp(2, json!({"role": "web"}), bucket)));
    let f = wait_fleet(&d, "just outside the percent", |f| {
        f["applied_generation"] == 2 && f["converged"] == true
    });
    assert_eq!(f["skipped"]["web"], "outside_percent", "{f}");
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));
    // Raising the percent by a hundredth takes this host in.
    env.push_signed(&env.doc("gen3", &exp(3, json!({"role": "web"}), bucket + 1)));
    let f = wait_fleet(&d, "just inside the percent", |f| {
        f["applied_generation"] == 3 && f["converged"] == true
    });
    assert_eq!(f["skipped"], json!({}), "{f}");
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), "2.0.0".into())));
}

#[test]
fn an_experiment_kept_by_a_new_generation_and_rolled_back_under_it_stays_stopped() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let flag = fx.join("unhealthy");
    let web1 = standard(&fx, "web", "1.0.0");
    let mut files = standard_files("web", "2.0.0");
    files.push((
        "outpost/health".into(),
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo unhealthy; exit 1; fi\nexit 0\n",
            flag.display()
        )
        .into_bytes(),
        0o755,
    ));
    let web2 = package(&fx, "web", "2.0.0", files);
    let catalog = [web1.layout_entry(), web2.layout_entry()];
    let d = env.daemon();
    let experiment = |percent: f64| {
        json!({"web": {"stable": "1.0.0", "experiment": {
            "version": "2.0.0", "percent": percent,
            "health": {"command": ["outpost/health"], "interval": "100ms", "failures": 1}}}})
    };
    // Generation 1 takes host-a in (just above its bucket); generation 2 raises the percent
    // and keeps the experiment running from generation 1.
    let bucket = outpost_fleet::bucket("host-a", "web", "2.0.0");
    let just_in = f64::from(bucket + 1) / 100.0;
    env.push_signed(&env.doc("gen1", &document(1, &catalog, experiment(just_in))));
    wait_fleet(&d, "generation 1 with the experiment running", |f| {
        f["applied_generation"] == 1 && f["converged"] == true
    });
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), "2.0.0".into())));
    env.push_signed(&env.doc("gen2", &document(2, &catalog, experiment(100.0))));
    wait_fleet(&d, "generation 2 with the experiment running", |f| {
        f["applied_generation"] == 2 && f["converged"] == true
    });
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), "2.0.0".into())));
    // The experiment turns unhealthy under generation 2: rolled back, and not restarted.
    fs_err::write(&flag, b"").unwrap();
    let f = wait_fleet(&d, "the roll-back noted under generation 2", |f| {
        f["skipped"]["web"] == "rolled_back"
    });
    assert_eq!(f["applied_generation"], 2);
    let p0 = polls(&d);
    wait_for("three more polls", || (polls(&d) >= p0 + 3.0).then_some(()));
    assert_eq!(d.versions("web"), Some(("1.0.0".into(), String::new())));
    let state: Value =
        serde_json::from_slice(&fs_err::read(env.s.root().join("fleet-state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["rolled_back"],
        json!([{"generation": 2, "package": "web", "version": "2.0.0"}])
    );
}

#[test]
fn push_with_a_password_protected_minisign_key() {
    let env = Env::new("");
    let fx = env.s.fixtures();
    let web1 = standard(&fx, "web", "1.0.0");
    let (public, secret) = (fx.join("locked.pub"), fx.join("locked.key"));
    // Without a terminal, minisign reads the password (twice) from its standard input.
    let mut child = Command::new("minisign")
        .args(["-G", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("minisign -G");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"s3cret\ns3cret\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = env.doc(
        "gen1",
        &document(
            1,
            &[web1.layout_entry()],
            json!({"web": {"stable": "1.0.0"}}),
        ),
    );
    let out = env.push(&doc, &["--sign-key", secret.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--password-file"), "{}", stderr(&out));
    let password = fx.join("password");
    fs_err::write(&password, "s3cret\n").unwrap();
    let out = env.push(
        &doc,
        &[
            "--sign-key",
            secret.to_str().unwrap(),
            "--password-file",
            password.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&env.config)
        .args(["fleet", "verify", &env.target(), "--key"])
        .arg(&public);
    let out = cli_output(cmd, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid: generation 1"),
        "{}",
        stdout(&out)
    );
}
