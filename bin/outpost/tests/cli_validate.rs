//! `outpost check validate` says the same kind of thing for a check file that does not exist
//! and for a check name that resolves to nothing: `not_ready`, with one `no ...` message.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");

fn validate(root: &std::path::Path, target: &str, json: bool) -> Output {
    let venv = std::env::var("OUTPOST_TEST_VENV").unwrap_or_else(|_| "/work/main/.venv".into());
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "validate", target, "--python-venv", &venv])
        .arg("--root")
        .arg(root)
        .env_remove("OUTPOST_CONFIG");
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("outpost runs")
}

#[test]
fn a_missing_file_and_an_unknown_check_are_both_not_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let file = root.join("nowhere/foo.py");
    let out = validate(root, file.to_str().expect("utf-8"), false);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("foo: not_ready\n  - no check file {}\n", file.display())
    );
    let out = validate(root, "nosuchcheck", false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("nosuchcheck: not_ready\n  - no module "),
        "{text}"
    );

    let out = validate(root, file.to_str().expect("utf-8"), true);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["status"], "not_ready");
    assert_eq!(doc["metric"]["value"], 0.0);
}
