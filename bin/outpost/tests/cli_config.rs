//! The config commands of the real binary against a real daemon: `config-catalog set|show`,
//! `config-experiment start|stop|promote` (with secrets sealed by the CLI), `config show`,
//! and their refusals and exit codes.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use serde_json::{Value, json};
use support::*;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn setup() -> (Scratch, Daemon) {
    let s = Scratch::new();
    let fixture = standard(&s.fixtures(), "demo", "1");
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            env: vec![("OUTPOST_LOG".into(), "debug".into())],
            ..Default::default()
        },
    );
    d.set_catalog(&[fixture.layout_entry()]);
    d.post("/demo/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    (s, d)
}

/// Runs the CLI with `--root` too (`config show` reads the files under it).
fn run(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["--root", d.root.to_str().unwrap()];
    all.extend_from_slice(args);
    d.cli(&all)
}

fn json_out(o: &Output) -> Value {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    serde_json::from_str(&stdout(o)).unwrap()
}

const CATALOG_YAML: &str = "\
c1:
  id: c1
  file_operations:
    - file_op: merge-patch
      file_path: /demo.yaml
      patch:
        log_level: info
    - file_op: merge-patch
      file_path: /conf.d/app.d/conf.yaml
      patch:
        instances: [{port: 80}]
c2:
  id: c2
  file_operations:
    - file_op: delete
      file_path: /conf.d/app.d/conf.yaml
";

#[test]
fn the_config_catalog_is_set_from_yaml_and_shown() {
    let (s, d) = setup();
    let file = s.path().join("config-catalog.yaml");
    fs_err::write(&file, CATALOG_YAML).unwrap();
    let out = run(&d, &["config-catalog", "set", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "config catalog set (2 entries)\n");
    let catalog = d.get("/config_catalog").json();
    assert_eq!(
        catalog["c1"]["file_operations"][1]["patch"]["instances"][0]["port"],
        80
    );

    let out = run(&d, &["config-catalog", "show"]);
    assert_eq!(
        stdout(&out),
        "c1  2 file operations\nc2  1 file operation\n"
    );
    assert_eq!(
        json_out(&run(&d, &["--json", "config-catalog", "show"])),
        catalog
    );

    // Checked before it is sent: a bad entry is named, and the daemon's catalog is kept.
    let bad =
        r#"{"c3": {"id": "c3", "file_operations": [{"file_op": "delete", "file_path": "../x"}]}}"#;
    let out = run(&d, &["config-catalog", "set", bad]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out)
            .starts_with("error setting the config catalog: invalid config catalog in {\"c3\"",),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("config catalog entry \"c3\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.get("/config_catalog").json(), catalog);
    let out = run(
        &d,
        &[
            "config-catalog",
            "set",
            s.path().join("missing.yaml").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));
}

#[test]
fn a_config_experiment_starts_is_shown_promoted_and_stopped() {
    let (s, d) = setup();
    let file = s.path().join("config-catalog.yaml");
    fs_err::write(&file, CATALOG_YAML).unwrap();
    assert_eq!(
        code(&run(&d, &["config-catalog", "set", file.to_str().unwrap()])),
        0
    );

    let out = run(&d, &["config-experiment", "start", "demo", "c1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "demo config c1 started as experiment\n");
    let out = run(&d, &["config", "show", "demo", "experiment"]);
    let text = stdout(&out);
    assert!(text.starts_with("demo experiment config c1 ("), "{text}");
    assert!(text.contains("--- /demo.yaml (mode 0640, "), "{text}");
    assert!(text.contains("log_level: info"), "{text}");
    assert!(text.contains("--- /conf.d/app.d/conf.yaml"), "{text}");
    assert_eq!(
        stdout(&run(&d, &["config", "show", "demo"])),
        "demo: the stable config is empty\n"
    );

    let promoted = json_out(&run(
        &d,
        &["--json", "config-experiment", "promote", "demo"],
    ));
    assert_eq!(
        promoted,
        json!({"package": "demo", "operation": "promote_config_experiment",
               "stable_config_version": "c1", "experiment_config_version": "", "changed": true})
    );
    let shown = json_out(&run(&d, &["--json", "config", "show", "demo", "stable"]));
    assert_eq!(shown["deployment_id"], "c1");
    let paths: Vec<&str> = shown["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/conf.d/app.d/conf.yaml", "/demo.yaml"]);

    assert_eq!(
        code(&run(&d, &["config-experiment", "start", "demo", "c2"])),
        0
    );
    let out = run(&d, &["config-experiment", "stop", "demo"]);
    assert_eq!(stdout(&out), "demo config experiment c2 stopped\n");
    let out = run(&d, &["config-experiment", "stop", "demo"]);
    assert_eq!(stdout(&out), "demo has no config experiment\n");
    assert_eq!(
        stdout(&run(&d, &["config", "show", "demo", "experiment"])),
        "demo: no config experiment\n"
    );
}

#[test]
fn secrets_given_to_the_cli_are_sealed_and_land_only_in_the_file() {
    let (s, d) = setup();
    let ops = s.path().join("ops.json");
    fs_err::write(
        &ops,
        json!({"deployment_id": "s1", "file_operations": [
            {"file_op": "merge-patch", "file_path": "/demo.yaml",
             "patch": {"api_key": "SEC[api]", "token": "SEC[token]"}}
        ]})
        .to_string(),
    )
    .unwrap();
    let token_file = s.path().join("token");
    fs_err::write(&token_file, "tok-9c1e-from-file\n").unwrap();
    let api = "api-77d2-on-the-command-line";
    let out = run(
        &d,
        &[
            "config-experiment",
            "start",
            "demo",
            "--file",
            ops.to_str().unwrap(),
            "--secret",
            &format!("api={api}"),
            "--secret-file",
            &format!("token={}", token_file.display()),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = d.root.join("config/demo/experiment/demo.yaml");
    let text = fs_err::read_to_string(&file).unwrap();
    assert!(
        text.contains(api) && text.contains("tok-9c1e-from-file"),
        "{text}"
    );
    assert!(
        !text.contains("tok-9c1e-from-file\n\n"),
        "the trailing newline is dropped"
    );
    assert_eq!(
        fs_err::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let log = d.log();
    assert!(log.contains("config experiment started"), "{log}");
    for secret in ["77d2", "9c1e"] {
        assert!(!log.contains(secret), "a secret is in the daemon log");
        assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    }

    // A placeholder without its secret is refused by the daemon, by key.
    let text = fs_err::read_to_string(&ops)
        .unwrap()
        .replace("\"s1\"", "\"s2\"");
    fs_err::write(&ops, text).unwrap();
    let out = run(
        &d,
        &[
            "config-experiment",
            "start",
            "demo",
            "--file",
            ops.to_str().unwrap(),
            "--secret",
            "api=x",
        ],
    );
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error starting config experiment: secret \"token\" is used by a placeholder SEC[token] but was not provided\n"
    );
}

#[test]
fn refusals_and_exit_codes() {
    let (s, d) = setup();
    // Neither an id nor a file, or both: a usage error.
    assert_eq!(code(&run(&d, &["config-experiment", "start", "demo"])), 2);
    assert_eq!(
        code(&run(
            &d,
            &["config-experiment", "start", "demo", "c1", "--file", "x"]
        )),
        2
    );
    assert_eq!(code(&run(&d, &["config", "show", "demo", "sideways"])), 2);
    // Bad secrets and operations are refused before anything is sent.
    let out = run(
        &d,
        &[
            "config-experiment",
            "start",
            "demo",
            "c1",
            "--secret",
            "novalue",
        ],
    );
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error starting config experiment: --secret takes KEY=..., with a non-empty KEY\n"
    );
    let ops = s.path().join("ops.yaml");
    fs_err::write(
        &ops,
        "deployment_id: x\nfile_operations:\n  - file_op: copy\n    file_path: /a.yaml\n",
    )
    .unwrap();
    let out = run(
        &d,
        &[
            "config-experiment",
            "start",
            "demo",
            "--file",
            ops.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("`destination_path` is required"),
        "{}",
        stderr(&out)
    );
    // The daemon's refusals: exit 1 with its message, and the --json error body.
    let out = run(&d, &["config-experiment", "start", "demo", "nope"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error starting config experiment: config \"nope\" is not in the config catalog\n"
    );
    let out = run(&d, &["--json", "config-experiment", "promote", "demo"]);
    assert_eq!(code(&out), 1);
    let body: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(body["error"]["code"], "invalid_state");
    let out = run(&d, &["config", "show", "ghost"]);
    assert_eq!(
        (code(&out), stderr(&out)),
        (
            1,
            "error showing config: ghost is not installed\n".to_owned()
        )
    );
    assert_eq!(
        d.status()["remote_config_state"][0]["experiment_config_version"],
        ""
    );
    // No daemon: exit 3.
    let gone = s.path().join("nowhere.sock");
    let out = cli(&gone, &["config-experiment", "stop", "demo"], None);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}
