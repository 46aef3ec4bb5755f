//! Config experiments through the real daemon and its socket: the config catalog, start /
//! stop / promote by catalog id and inline, rollback of a failing start, conflicts, hostile
//! input, package rules, serialisation with package operations, a crash in the middle of a
//! config switch, and secrets sealed by PyNaCl that land in the file and nowhere else.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::*;

/// A daemon with package `demo` 1 installed (default config rules).
fn installed(s: &Scratch) -> Daemon {
    installed_with(s, standard_files("demo", "1"), DaemonOptions::default())
}

fn installed_with(s: &Scratch, files: Files, options: DaemonOptions) -> Daemon {
    let fixture = package(&s.fixtures(), "demo", "1", files);
    let d = Daemon::start_with(&s.root(), options);
    d.set_catalog(&[fixture.layout_entry()]);
    d.post("/demo/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d
}

/// `(stable_config_version, experiment_config_version)` of a package in `/status`.
fn config_versions(d: &Daemon, package: &str) -> (String, String) {
    let entry = d
        .package_state(package)
        .unwrap_or_else(|| panic!("{package} not in /status: {}", d.status()));
    (
        entry["stable_config_version"].as_str().unwrap().to_owned(),
        entry["experiment_config_version"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

fn pair(stable: &str, experiment: &str) -> (String, String) {
    (stable.to_owned(), experiment.to_owned())
}

/// A file of the package's config through its `stable` or `experiment` link.
fn config_file(d: &Daemon, link: &str, rel: &str) -> Option<String> {
    fs_err::read_to_string(d.root.join("config/demo").join(link).join(rel)).ok()
}

fn mode_of(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o777
}

fn start(d: &Daemon, body: &Value) -> Response {
    d.post("/demo/config_experiment/start", Some(body))
}

fn inline(id: &str, ops: Value) -> Value {
    json!({"operations": {"deployment_id": id, "file_operations": ops}})
}

fn merge(path: &str, patch: Value) -> Value {
    json!({"file_op": "merge-patch", "file_path": path, "patch": patch})
}

fn catalog() -> Value {
    json!({
        "c1": {"id": "c1", "file_operations": [
            merge("/demo.yaml", json!({"log_level": "info", "port": 8125})),
            merge("/conf.d/redis.d/conf.yaml", json!({"instances": [{"host": "localhost"}]})),
        ]},
        "c2": {"id": "c2", "file_operations": [
            merge("/demo.yaml", json!({"log_level": "debug"})),
            {"file_op": "delete-all", "file_path": "/conf.d"},
        ]},
    })
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

// ---- catalog --------------------------------------------------------------------------------

#[test]
fn the_config_catalog_is_replaced_validated_and_persisted() {
    let s = Scratch::new();
    let mut d = Daemon::start(&s.root());
    assert_eq!(d.get("/config_catalog").json(), json!({}));
    d.post("/config_catalog", Some(&catalog()))
        .assert_ok_empty();
    assert_eq!(d.get("/config_catalog").json(), catalog());

    // A bad entry is named, and the catalog is left as it was.
    let mut bad = catalog();
    bad["zz"] = json!({"id": "zz", "file_operations": [
        {"file_op": "delete", "file_path": "/../etc/passwd"}
    ]});
    let message = d
        .post("/config_catalog", Some(&bad))
        .assert_error(400, "bad_request");
    assert!(message.contains("config catalog entry \"zz\""), "{message}");
    assert!(
        message.contains("`..` would leave the config root"),
        "{message}"
    );
    let mismatch = json!({"a": {"id": "b", "file_operations": []}});
    let message = d
        .post("/config_catalog", Some(&mismatch))
        .assert_error(400, "bad_request");
    assert!(message.contains("\"a\""), "{message}");
    let unknown =
        json!({"a": {"id": "a", "file_operations": [{"file_op": "jq", "file_path": "/a.yaml"}]}});
    d.post("/config_catalog", Some(&unknown))
        .assert_error(400, "bad_request");
    d.post("/config_catalog", Some(&json!(["c1"])))
        .assert_error(400, "bad_request");
    d.post("/config_catalog", None)
        .assert_error(400, "bad_request");
    assert_eq!(d.get("/config_catalog").json(), catalog());

    d.stop();
    let d = Daemon::start(&s.root());
    assert_eq!(d.get("/config_catalog").json(), catalog());
    // Replacing replaces: the old entries are gone.
    d.post("/config_catalog", Some(&json!({})))
        .assert_ok_empty();
    assert_eq!(d.get("/config_catalog").json(), json!({}));
}

// ---- start / promote / stop -----------------------------------------------------------------

#[test]
fn a_config_experiment_by_catalog_id_starts_promotes_and_stops() {
    let s = Scratch::new();
    let d = installed(&s);
    assert_eq!(config_versions(&d, "demo"), pair("", ""));
    d.post("/config_catalog", Some(&catalog()))
        .assert_ok_empty();

    start(&d, &json!({"version": "c1"})).assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("", "c1"));
    let task = d.task("demo").unwrap();
    assert_eq!(
        (&task["operation"], &task["version"], &task["state"]),
        (
            &json!("start_config_experiment"),
            &json!("c1"),
            &json!("DONE")
        )
    );
    let text = config_file(&d, "experiment", "demo.yaml").unwrap();
    assert_eq!(yaml(&text), json!({"log_level": "info", "port": 8125}));
    let redis = d
        .root
        .join("config/demo/experiment/conf.d/redis.d/conf.yaml");
    assert_eq!(mode_of(&redis), 0o640);
    // The package's versions are untouched.
    assert_eq!(d.versions("demo"), Some(("1".into(), String::new())));

    d.post("/demo/config_experiment/promote", Some(&json!({})))
        .assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("c1", ""));
    assert_eq!(
        d.task("demo").unwrap()["operation"],
        "promote_config_experiment"
    );
    assert!(config_file(&d, "stable", "demo.yaml").is_some());

    // c2 builds on the stable config: it changes one key and deletes conf.d.
    start(&d, &json!({"version": "c2"})).assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("c1", "c2"));
    let text = config_file(&d, "experiment", "demo.yaml").unwrap();
    assert_eq!(yaml(&text), json!({"log_level": "debug", "port": 8125}));
    assert!(!d.root.join("config/demo/experiment/conf.d").exists());
    assert!(
        d.root
            .join("config/demo/stable/conf.d/redis.d/conf.yaml")
            .is_file()
    );

    d.post("/demo/config_experiment/stop", Some(&json!({})))
        .assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("c1", ""));
    assert_eq!(
        d.task("demo").unwrap()["operation"],
        "stop_config_experiment"
    );
    // Stopping again is a no-op; the unreferenced c2 is collected.
    d.post("/demo/config_experiment/stop", None)
        .assert_ok_empty();
    wait_for("c2 to be collected", || {
        (!d.root.join("config/demo/c2").exists()).then_some(())
    });
    assert!(d.root.join("config/demo/c1").is_dir());
}

#[test]
fn an_inline_config_experiment_replaces_a_running_one() {
    let s = Scratch::new();
    let d = installed(&s);
    start(
        &d,
        &inline("first", json!([merge("/a.yaml", json!({"a": 1}))])),
    )
    .assert_ok_empty();
    start(
        &d,
        &inline(
            "second",
            json!([
                merge("/b.yaml", json!({"b": 2})),
                {"file_op": "patch", "file_path": "/b.yaml", "patch": [
                    {"op": "add", "path": "/list", "value": [1, 2]}
                ]},
                {"file_op": "copy", "file_path": "/b.yaml", "destination_path": "/conf.d/b.yaml"},
                {"file_op": "move", "file_path": "/b.yaml", "destination_path": "/c.yaml"},
            ]),
        ),
    )
    .assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("", "second"));
    // Built on the (empty) stable config, not on the replaced experiment.
    assert!(config_file(&d, "experiment", "a.yaml").is_none());
    assert!(config_file(&d, "experiment", "b.yaml").is_none());
    assert_eq!(
        yaml(&config_file(&d, "experiment", "c.yaml").unwrap()),
        json!({"b": 2, "list": [1, 2]})
    );
    assert!(config_file(&d, "experiment", "conf.d/b.yaml").is_some());
    // Starting the running one again does nothing, and records nothing new.
    let before = d.task("demo").unwrap();
    start(&d, &inline("second", json!([]))).assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("", "second"));
    assert_eq!(d.task("demo").unwrap()["operation"], before["operation"]);
    assert!(config_file(&d, "experiment", "c.yaml").is_some());
}

// ---- rollback and conflicts -----------------------------------------------------------------

#[test]
fn a_failing_start_leaves_the_stable_config_and_the_running_experiment_as_they_were() {
    let s = Scratch::new();
    let d = installed(&s);
    start(
        &d,
        &inline("good", json!([merge("/a.yaml", json!({"v": "stable"}))])),
    )
    .assert_ok_empty();
    d.post("/demo/config_experiment/promote", None)
        .assert_ok_empty();
    start(
        &d,
        &inline("running", json!([merge("/a.yaml", json!({"v": "exp"}))])),
    )
    .assert_ok_empty();
    let task = d.task("demo").unwrap();

    let cases = [
        // Fails at the second operation, after the first was applied in staging.
        json!([merge("/a.yaml", json!({"v": "bad"})),
               {"file_op": "copy", "file_path": "/missing.yaml", "destination_path": "/b.yaml"}]),
        json!([{"file_op": "patch", "file_path": "/a.yaml", "patch": [
            {"op": "test", "path": "/v", "value": "nope"}]}]),
        json!([merge("/a.yaml", json!({"v": "bad"})),
               {"file_op": "delete", "file_path": "/a.yaml"},
               {"file_op": "move", "file_path": "/a.yaml", "destination_path": "/c.yaml"}]),
    ];
    for ops in cases {
        let message = start(&d, &inline("broken", ops.clone())).assert_error(400, "bad_request");
        assert!(message.starts_with("file operation "), "{ops}: {message}");
        assert_eq!(
            config_versions(&d, "demo"),
            pair("good", "running"),
            "{ops}"
        );
        assert_eq!(
            yaml(&config_file(&d, "stable", "a.yaml").unwrap()),
            json!({"v": "stable"})
        );
        assert_eq!(
            yaml(&config_file(&d, "experiment", "a.yaml").unwrap()),
            json!({"v": "exp"})
        );
        assert!(!d.root.join("config/demo/broken").exists());
        // A refusal does not replace the last task.
        assert_eq!(d.task("demo").unwrap(), task);
    }
    wait_for("tmp/ to be empty", || {
        fs_err::read_dir(d.root.join("tmp"))
            .unwrap()
            .next()
            .is_none()
            .then_some(())
    });
}

#[test]
fn conflicts_are_refused() {
    let s = Scratch::new();
    let d = installed(&s);
    d.post("/demo/config_experiment/promote", None)
        .assert_error(409, "invalid_state");
    start(&d, &inline("c1", json!([]))).assert_ok_empty();
    d.post("/demo/config_experiment/promote", None)
        .assert_ok_empty();
    let message = start(&d, &inline("c1", json!([]))).assert_error(409, "invalid_state");
    assert!(
        message.contains("c1 is already the stable config"),
        "{message}"
    );
    let message = d
        .post("/demo/config_experiment/promote", None)
        .assert_error(409, "invalid_state");
    assert_eq!(message, "no config experiment to promote");

    // A package that is not installed: nothing is done and no task appears.
    let message = d
        .post(
            "/ghost/config_experiment/start",
            Some(&inline("x", json!([]))),
        )
        .assert_error(409, "invalid_state");
    assert!(
        message.contains("package ghost is not installed"),
        "{message}"
    );
    d.post("/ghost/config_experiment/stop", None)
        .assert_error(404, "not_installed");
    d.post("/ghost/config_experiment/promote", None)
        .assert_error(404, "not_installed");
    assert!(d.task("ghost").is_none());
    assert!(!d.root.join("config/ghost").exists());
}

// ---- hostile input --------------------------------------------------------------------------

#[test]
fn hostile_starts_are_refused_and_change_nothing() {
    let s = Scratch::new();
    let d = installed(&s);
    d.post("/config_catalog", Some(&catalog()))
        .assert_ok_empty();
    let outside = s.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    fs_err::write(outside.join("x.yaml"), "keep: 1\n").unwrap();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            inline(
                "e1",
                json!([merge("/../../outside/x.yaml", json!({"k": 1}))]),
            ),
            400,
            "bad_request",
            "`..` would leave the config root",
        ),
        (
            inline("e2", json!([merge("//etc/x.yaml", json!({"k": 1}))])),
            400,
            "bad_request",
            "escapes the config root",
        ),
        (
            inline("e3", json!([merge("/etc/passwd", json!({"k": 1}))])),
            400,
            "bad_request",
            "/etc/passwd is not an allowed config file of package demo",
        ),
        (
            inline(
                "e4",
                json!([{"file_op": "copy", "file_path": "/a.yaml", "destination_path": "/bin/app"}]),
            ),
            400,
            "bad_request",
            "/bin/app is not an allowed config file",
        ),
        (
            inline("e5", json!([{"file_op": "jq", "file_path": "/a.yaml"}])),
            400,
            "bad_request",
            "unknown variant",
        ),
        (
            inline("../x", json!([])),
            400,
            "bad_request",
            "invalid deployment id",
        ),
        (inline("stable", json!([])), 400, "bad_request", "reserved"),
        (
            json!({"version": "c1", "operations": {"deployment_id": "c1", "file_operations": []}}),
            400,
            "bad_request",
            "not both",
        ),
        (json!({}), 400, "bad_request", "a config is required"),
        (
            json!({"version": ""}),
            400,
            "bad_request",
            "a config is required",
        ),
        (
            json!({"version": "nope"}),
            422,
            "package_not_found",
            "config \"nope\" is not in the config catalog",
        ),
        (
            json!({"version": 7}),
            400,
            "bad_request",
            "invalid request body",
        ),
        (
            json!({"operations": {"deployment_id": "x", "file_operations": [], "extra": 1}}),
            400,
            "bad_request",
            "unknown field",
        ),
        (
            inline("e6", json!([merge("/SEC[k].yaml", json!({}))])),
            400,
            "bad_request",
            "placeholder SEC[k] in file_path",
        ),
    ];
    for (body, status, code, expected) in cases {
        let message = start(&d, &body).assert_error(status, code);
        assert!(message.contains(expected), "{body}: {message}");
    }
    d.post("/demo/config_experiment/start", Some(&json!(["c1"])))
        .assert_error(400, "bad_request");
    d.post("/demo/config_experiment/start", None)
        .assert_error(400, "bad_request");
    d.post(
        "/Bad..Name/config_experiment/start",
        Some(&json!({"version": "c1"})),
    )
    .assert_error(400, "bad_request");
    for route in ["stop", "promote"] {
        let path = format!("/demo/config_experiment/{route}");
        d.post(&path, Some(&json!([])))
            .assert_error(400, "bad_request");
        d.post(&path, Some(&json!({"expected_state": {"stabel": "1"}})))
            .assert_error(400, "bad_request");
        d.post(&path, Some(&json!({"expected_state": ["1"]})))
            .assert_error(400, "bad_request");
        d.post(&format!("/UPPER/config_experiment/{route}"), None)
            .assert_error(400, "bad_request");
        assert_eq!(d.get(&path).status, 405);
    }
    assert_eq!(config_versions(&d, "demo"), pair("", ""));
    assert_eq!(
        fs_err::read_to_string(outside.join("x.yaml")).unwrap(),
        "keep: 1\n"
    );
    assert!(!d.root.join("config").exists(), "nothing was created");
    assert_eq!(d.task("demo").unwrap()["operation"], "install");
}

#[test]
fn a_symlink_planted_in_the_stable_config_is_refused() {
    let s = Scratch::new();
    let d = installed(&s);
    start(
        &d,
        &inline("c1", json!([merge("/a.yaml", json!({"a": 1}))])),
    )
    .assert_ok_empty();
    d.post("/demo/config_experiment/promote", None)
        .assert_ok_empty();
    let outside = s.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    fs_err::os::unix::fs::symlink(&outside, d.root.join("config/demo/c1/conf.d")).unwrap();
    let message = start(
        &d,
        &inline("c2", json!([merge("/conf.d/x.yaml", json!({"k": 1}))])),
    )
    .assert_error(400, "bad_request");
    assert!(message.contains("/conf.d is a symbolic link"), "{message}");
    assert_eq!(config_versions(&d, "demo"), pair("c1", ""));
    assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
}

// ---- package rules --------------------------------------------------------------------------

#[test]
fn a_package_declares_its_config_files_and_modes() {
    let s = Scratch::new();
    let mut files = standard_files("demo", "1");
    files.push((
        "outpost/config-files".into(),
        b"# demo's config\n/demo.json 0600\n/conf.d/*.d/*.yaml 0644\n".to_vec(),
        0o644,
    ));
    let d = installed_with(&s, files, DaemonOptions::default());
    start(
        &d,
        &inline(
            "c1",
            json!([
                merge("/demo.json", json!({"a": {"b": true}})),
                merge("/conf.d/x.d/conf.yaml", json!({"k": "v"})),
            ]),
        ),
    )
    .assert_ok_empty();
    let json_text = config_file(&d, "experiment", "demo.json").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        json!({"a": {"b": true}})
    );
    let dir = d.root.join("config/demo/experiment");
    assert_eq!(mode_of(&dir.join("demo.json")), 0o600);
    assert_eq!(mode_of(&dir.join("conf.d/x.d/conf.yaml")), 0o644);
    // The defaults no longer apply.
    let message = start(&d, &inline("c2", json!([merge("/demo.yaml", json!({}))])))
        .assert_error(400, "bad_request");
    assert!(
        message.contains("/demo.yaml is not an allowed config file"),
        "{message}"
    );
}

// ---- serialisation and crashes --------------------------------------------------------------

#[test]
fn a_config_start_waits_for_a_running_package_operation() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let slow = package_as(
        &fx,
        "slow",
        "1",
        {
            let mut f = standard_files("slow", "1");
            f.push(("payload".into(), outpost_testkit::noise(3 << 20, 5), 0o644));
            f
        },
        outpost_fetch::pack::PackFormat::Gzip,
    );
    let demo = standard(&fx, "demo", "1");
    let (entry, pipe) = fifo_entry(&fx, &slow);
    let d = Daemon::start(&s.root());
    d.set_catalog(&[entry, demo.layout_entry()]);
    d.post("/demo/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();

    let socket = d.socket.clone();
    let install = std::thread::spawn(move || {
        let body = serde_json::to_vec(&json!({"version": "1"})).unwrap();
        send(
            &socket,
            &request(
                "POST",
                "/slow/install",
                &[("Content-Type", "application/json")],
                Some(&body),
            ),
        )
    });
    let mut writer = fs_err::OpenOptions::new().write(true).open(&pipe).unwrap();
    let data = fs_err::read(&slow.layer_blob).unwrap();
    writer.write_all(&data[..1 << 20]).unwrap();
    wait_for("the install to run", || {
        (d.task("slow").is_some_and(|t| t["state"] == "RUNNING")).then_some(())
    });
    let socket = d.socket.clone();
    let config = std::thread::spawn(move || {
        let body =
            serde_json::to_vec(&inline("c1", json!([merge("/a.yaml", json!({"a": 1}))]))).unwrap();
        send(
            &socket,
            &request(
                "POST",
                "/demo/config_experiment/start",
                &[("Content-Type", "application/json")],
                Some(&body),
            ),
        )
    });
    wait_for("the config start to queue", || {
        (d.debug_vars()["daemon"]["operations_waiting"] == 1).then_some(())
    });
    assert_eq!(config_versions(&d, "demo"), pair("", ""));
    assert_eq!(d.task("demo").unwrap()["operation"], "install");
    writer.write_all(&data[1 << 20..]).unwrap();
    drop(writer);
    install.join().unwrap().assert_ok_empty();
    config.join().unwrap().assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("", "c1"));
}

/// The daemon aborts in the middle of a config switch; the next daemon reads the old or the
/// new config state, never a half one, and the start can be retried.
#[test]
fn a_crash_during_a_config_switch_leaves_the_old_or_the_new_config() {
    for (point, after) in [
        ("repo.version.rename", pair("c1", "")),
        ("repo.version.rename.done", pair("c1", "")),
        ("repo.link.rename", pair("c1", "")),
        ("repo.link.rename.done", pair("c1", "c2")),
    ] {
        let s = Scratch::new();
        let mut d = installed(&s);
        start(
            &d,
            &inline("c1", json!([merge("/a.yaml", json!({"v": 1}))])),
        )
        .assert_ok_empty();
        d.post("/demo/config_experiment/promote", None)
            .assert_ok_empty();
        d.stop();
        // The crash is armed for the config switch: the daemon's first hit of the point.
        let mut d = Daemon::start_with(
            &s.root(),
            DaemonOptions {
                env: vec![("OUTPOST_FAILPOINT".into(), point.into())],
                ..Default::default()
            },
        );
        let body =
            serde_json::to_vec(&inline("c2", json!([merge("/a.yaml", json!({"v": 2}))]))).unwrap();
        let answered = try_request(
            &d.socket,
            &request(
                "POST",
                "/demo/config_experiment/start",
                &[("Content-Type", "application/json")],
                Some(&body),
            ),
        );
        assert!(
            answered.is_err() || answered.unwrap().status != 200,
            "{point}"
        );
        let status = d.wait_exit();
        assert!(!status.success(), "{point}: {status:?}");
        let d = Daemon::start(&s.root());
        assert_eq!(config_versions(&d, "demo"), after, "{point}");
        assert_eq!(
            yaml(&config_file(&d, "stable", "a.yaml").unwrap()),
            json!({"v": 1})
        );
        start(
            &d,
            &inline("c2", json!([merge("/a.yaml", json!({"v": 2}))])),
        )
        .assert_ok_empty();
        assert_eq!(
            config_versions(&d, "demo"),
            pair("c1", "c2"),
            "{point}: retry"
        );
        assert_eq!(
            yaml(&config_file(&d, "experiment", "a.yaml").unwrap()),
            json!({"v": 2})
        );
        wait_for("tmp/ to be empty", || {
            fs_err::read_dir(d.root.join("tmp"))
                .unwrap()
                .next()
                .is_none()
                .then_some(())
        });
    }
}

// ---- secrets --------------------------------------------------------------------------------

fn python() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
        .join("bin/python")
}

/// Seals `plaintext` to the base64 public key `public` with PyNaCl's `SealedBox`.
fn seal_with_pynacl(public: &str, plaintext: &str) -> String {
    const SEAL: &str = r#"
import sys, base64
from nacl.public import PublicKey, SealedBox
pub, msg = sys.stdin.read().split()
print(base64.b64encode(SealedBox(PublicKey(base64.b64decode(pub))).encrypt(base64.b64decode(msg))).decode())
"#;
    let msg = {
        // Standard base64 of the plaintext, so any byte survives the trip through stdin.
        let out = Command::new(python())
            .args([
                "-c",
                "import sys,base64;print(base64.b64encode(sys.stdin.buffer.read()).decode())",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (set OUTPOST_TEST_VENV)", python().display()));
        let mut child = out;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plaintext.as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let mut child = Command::new(python())
        .args(["-c", SEAL])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{public} {}", msg.trim()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A fresh key pair made by PyNaCl: its public half, base64.
fn pynacl_other_public_key() -> String {
    let out = Command::new(python())
        .args(["-c", "import base64;from nacl.public import PrivateKey;print(base64.b64encode(bytes(PrivateKey.generate().public_key)).decode())"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn secrets_sealed_by_pynacl_land_in_the_file_and_nowhere_else() {
    let s = Scratch::new();
    let verbose = DaemonOptions {
        env: vec![("OUTPOST_LOG".into(), "trace".into())],
        ..Default::default()
    };
    let d = installed_with(&s, standard_files("demo", "1"), verbose);
    let public = d.status()["secrets_pub_key"].as_str().unwrap().to_owned();
    let api_key = "sk-live-4f9a\"quoted\"-Z3cr3t";
    let password = "hunter2-p@ss: {not yaml}";
    let sealed_api = seal_with_pynacl(&public, api_key);
    let sealed_pw = seal_with_pynacl(&public, password);
    let mut responses = Vec::new();

    let body = json!({
        "operations": {"deployment_id": "with-secrets", "file_operations": [
            merge("/demo.yaml", json!({"api_key": "SEC[api_key]", "site": "example"})),
            {"file_op": "patch", "file_path": "/conf.d/db.d/conf.yaml", "patch": [
                {"op": "add", "path": "/password", "value": "SEC[password]"},
                {"op": "add", "path": "/dsn", "value": "postgres://app:SEC[password]@db"},
            ]},
            merge("/public.yaml", json!({"debug": true})),
        ]},
        "encrypted_secrets": {"api_key": sealed_api, "password": sealed_pw},
    });
    let r = start(&d, &body);
    responses.push(r.text());
    r.assert_ok_empty();
    let dir = d.root.join("config/demo/experiment");
    let main = yaml(&config_file(&d, "experiment", "demo.yaml").unwrap());
    assert_eq!(main, json!({"api_key": api_key, "site": "example"}));
    let db = yaml(&config_file(&d, "experiment", "conf.d/db.d/conf.yaml").unwrap());
    assert_eq!(
        db,
        json!({"password": password, "dsn": format!("postgres://app:{password}@db")})
    );
    assert_eq!(mode_of(&dir.join("demo.yaml")), 0o600);
    assert_eq!(mode_of(&dir.join("conf.d/db.d/conf.yaml")), 0o600);
    assert_eq!(mode_of(&dir.join("public.yaml")), 0o640);

    // Refusals: a box sealed to another key, a tampered box, a missing secret, not base64.
    let other = seal_with_pynacl(&pynacl_other_public_key(), api_key);
    let mut tampered = sealed_api.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let refusals = [
        (json!({"api_key": other}), "api_key"),
        (json!({"api_key": tampered}), "api_key"),
        (
            json!({"api_key": sealed_api, "password": "not base64!"}),
            "password",
        ),
        (json!({"password": sealed_pw}), "SEC[api_key]"),
    ];
    for (secrets, named) in refusals {
        let body = json!({
            "operations": {"deployment_id": "refused", "file_operations": [
                merge("/demo.yaml", json!({"api_key": "SEC[api_key]"})),
            ]},
            "encrypted_secrets": secrets,
        });
        let r = start(&d, &body);
        responses.push(r.text());
        let message = r.assert_error(400, "bad_request");
        assert!(message.contains(named), "{secrets}: {message}");
        assert!(!d.root.join("config/demo/refused").exists());
    }
    assert_eq!(config_versions(&d, "demo"), pair("", "with-secrets"));

    // Promote, then read everything the daemon says: status, catalog, debug vars, tasks.
    d.post("/demo/config_experiment/promote", None)
        .assert_ok_empty();
    for path in [
        "/status",
        "/config_catalog",
        "/debug/vars",
        "/catalog",
        "/telemetry",
    ] {
        responses.push(d.get(path).text());
    }
    responses.push(stdout(&d.cli(&["status", "--json"])));
    let log = d.log();
    assert!(
        log.contains("config experiment started"),
        "the log is verbose: {log}"
    );
    for secret in [api_key, password, "hunter2", "4f9a"] {
        assert!(!log.contains(secret), "a secret is in the daemon log");
        for r in &responses {
            assert!(!r.contains(secret), "a secret is in a response: {r}");
        }
    }
    // Only the files hold them.
    assert!(
        config_file(&d, "stable", "demo.yaml")
            .unwrap()
            .contains("4f9a")
    );
}

// ---- expected state -------------------------------------------------------------------------

/// Each config route honours every field of `expected_state`: a mismatch does nothing,
/// answers 409 and records an `INVALID_STATE` task with both states; a match proceeds.
#[test]
fn config_operations_act_only_on_the_state_the_caller_saw() {
    let s = Scratch::new();
    let d = installed(&s);
    start(
        &d,
        &inline("c1", json!([merge("/a.yaml", json!({"v": 1}))])),
    )
    .assert_ok_empty();
    d.post("/demo/config_experiment/promote", None)
        .assert_ok_empty();
    start(
        &d,
        &inline("c2", json!([merge("/a.yaml", json!({"v": 2}))])),
    )
    .assert_ok_empty();
    let host =
        json!({"stable": "1", "experiment": "", "stable_config": "c1", "experiment_config": "c2"});
    let routes = [
        ("start", "start_config_experiment"),
        ("stop", "stop_config_experiment"),
        ("promote", "promote_config_experiment"),
    ];
    for (route, operation) in routes {
        for (field, wrong) in [
            ("stable", "9"),
            ("experiment", "2"),
            ("stable_config", ""),
            ("experiment_config", "other"),
        ] {
            let mut expected = host.clone();
            expected[field] = json!(wrong);
            let mut body = if route == "start" {
                inline("c3", json!([merge("/a.yaml", json!({"v": 3}))]))
            } else {
                json!({})
            };
            body["expected_state"] = expected;
            let message = d
                .post(&format!("/demo/config_experiment/{route}"), Some(&body))
                .assert_error(409, "invalid_state");
            assert!(
                message.contains(&format!("{field}: {wrong:?}")),
                "{message}"
            );
            assert!(message.contains("stable_config: \"c1\""), "{message}");
            assert_eq!(
                config_versions(&d, "demo"),
                pair("c1", "c2"),
                "{route} {field}"
            );
            assert!(!d.root.join("config/demo/c3").exists());
            let task = d.task("demo").unwrap();
            assert_eq!(
                (&task["state"], &task["operation"]),
                (&json!("INVALID_STATE"), &json!(operation)),
                "{task}"
            );
        }
    }
    // A typo in the guard is a 400, never an unguarded start.
    let mut body = inline("c3", json!([]));
    body["expected_state"] = json!({"stable_confg": "c1"});
    d.post("/demo/config_experiment/start", Some(&body))
        .assert_error(400, "bad_request");
    // Matching states proceed.
    let mut body = inline("c3", json!([merge("/a.yaml", json!({"v": 3}))]));
    body["expected_state"] = host.clone();
    start(&d, &body).assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("c1", "c3"));
    let guard = json!({"expected_state": {"stable_config": "c1", "experiment_config": "c3"}});
    d.post("/demo/config_experiment/promote", Some(&guard))
        .assert_ok_empty();
    assert_eq!(config_versions(&d, "demo"), pair("c3", ""));
}

/// A `config` directory replaced by a link out of the root: config operations are refused
/// (nothing is written through it) and `/status` still answers.
#[test]
fn a_planted_config_link_is_refused_and_status_still_answers() {
    let s = Scratch::new();
    let d = installed(&s);
    let outside = s.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    fs_err::os::unix::fs::symlink(&outside, d.root.join("config")).unwrap();
    let message = start(
        &d,
        &inline("c1", json!([merge("/a.yaml", json!({"a": 1}))])),
    )
    .assert_error(500, "filesystem");
    assert!(message.contains("is not a directory"), "{message}");
    assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(config_versions(&d, "demo"), pair("", ""));
    assert_eq!(d.versions("demo"), Some(("1".into(), String::new())));
}

// ---- hooks ----------------------------------------------------------------------------------

/// The stable version's hooks run around config switches with the deployment id as their
/// argument; a failing `post-config-experiment-start` stops the config experiment again, a
/// failing `pre-config-experiment-stop` cancels the stop.
#[test]
fn config_hooks_run_around_the_switches() {
    let s = Scratch::new();
    let trace = s.path().join("hooks.log");
    let script = format!(
        "#!/bin/sh\necho \"$OUTPOST_EVENT $1 $OUTPOST_VERSION\" >> {}\n[ \"$1\" != refused ] || exit 3\n",
        trace.display()
    );
    let mut files = standard_files("demo", "1");
    for event in [
        "post-config-experiment-start",
        "pre-config-experiment-stop",
        "post-config-promote",
    ] {
        files = with_hook(files, event, &script);
    }
    let d = installed_with(&s, files, DaemonOptions::default());
    start(
        &d,
        &inline("c1", json!([merge("/a.yaml", json!({"v": 1}))])),
    )
    .assert_ok_empty();
    d.post("/demo/config_experiment/stop", None)
        .assert_ok_empty();
    start(
        &d,
        &inline("c2", json!([merge("/a.yaml", json!({"v": 2}))])),
    )
    .assert_ok_empty();
    d.post("/demo/config_experiment/promote", None)
        .assert_ok_empty();
    assert_eq!(
        fs_err::read_to_string(&trace).unwrap(),
        "post-config-experiment-start c1 1\npre-config-experiment-stop c1 1\n\
         post-config-experiment-start c2 1\npost-config-promote c2 1\n"
    );
    let message = start(
        &d,
        &inline("refused", json!([merge("/a.yaml", json!({"v": 3}))])),
    )
    .assert_error(500, "hook_failed");
    assert!(
        message.starts_with("config experiment refused was rolled back:"),
        "{message}"
    );
    assert_eq!(config_versions(&d, "demo"), pair("c2", ""));
    assert_eq!(d.task("demo").unwrap()["state"], "ERROR");
}
