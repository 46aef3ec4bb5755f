//! What the client commands say they did: with `--json`, one JSON document on stdout for every
//! outcome (success and failure alike, the API's error shape); no-ops say so;
//! `pack` refuses an empty directory and an `--out` in a missing parent; the daemon's socket is
//! looked for where a user without `--root` expects it, and a socket the user may not use is
//! reported as such.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::*;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

/// The one JSON document on stdout (compact: stdout is not a terminal).
fn json_doc(o: &Output) -> Value {
    let text = stdout(o);
    assert_eq!(text.lines().count(), 1, "not one compact document: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}{}", stderr(o)))
}

fn setup() -> (Scratch, Daemon) {
    let s = Scratch::new();
    let fx = s.fixtures();
    let entries: Vec<Value> = ["1.0", "2.0"]
        .iter()
        .map(|v| standard(&fx, "demo", v).layout_entry())
        .collect();
    let d = Daemon::start(&s.root());
    d.set_catalog(&entries);
    (s, d)
}

#[test]
fn mutations_print_what_they_did_and_no_ops_say_so() {
    let (_s, d) = setup();
    let out = d.cli(&["install", "demo", "1.0", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        json_doc(&out),
        json!({"package": "demo", "operation": "install", "version": "1.0", "changed": true})
    );

    // Installing the current stable again: said (the daemon makes it a no-op).
    let out = d.cli(&["install", "demo", "1.0"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "demo 1.0 is already stable\n")
    );
    let out = d.cli(&["install", "demo", "1.0", "--json"]);
    assert_eq!(
        json_doc(&out),
        json!({"package": "demo", "operation": "install", "version": "1.0", "changed": false})
    );

    // Stopping an experiment that is not there.
    let out = d.cli(&["experiment", "stop", "demo"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "demo has no experiment: nothing to stop\n"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["stop-experiment", "demo", "--json"]);
    assert_eq!(
        json_doc(&out),
        json!({"package": "demo", "operation": "stop_experiment", "version": null,
               "changed": false})
    );
    assert_eq!(d.versions("demo"), Some(("1.0".into(), String::new())));

    let out = d.cli(&["experiment", "start", "demo", "2.0", "--json"]);
    assert_eq!(
        json_doc(&out),
        json!({"package": "demo", "operation": "start_experiment", "version": "2.0",
               "changed": true})
    );
    let out = d.cli(&["experiment", "stop", "demo", "--json"]);
    assert_eq!(
        json_doc(&out),
        json!({"package": "demo", "operation": "stop_experiment", "version": "2.0",
               "changed": true})
    );
    assert_eq!(d.versions("demo"), Some(("1.0".into(), String::new())));
    let out = d.cli(&["remove", "demo", "--json"]);
    assert_eq!(
        json_doc(&out),
        json!({"package": "demo", "operation": "remove", "version": "1.0", "changed": true})
    );
    let out = d.cli(&[
        "catalog",
        "set",
        "--allow-empty",
        r#"{"packages": []}"#,
        "--json",
    ]);
    assert_eq!(
        json_doc(&out),
        json!({"operation": "set_catalog", "entries": 0, "changed": true})
    );
}

#[test]
fn every_failure_prints_one_error_document() {
    let (s, d) = setup();
    // The API refused: its own body.
    let out = d.cli(&["experiment", "promote", "demo", "--json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json_doc(&out)["error"]["code"], "not_installed");

    // Refused before sending.
    let out = d.cli(&["catalog", "set", r#"{"pakages": []}"#, "--json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        json_doc(&out),
        json!({"error": {"code": "invalid_input", "message":
            "invalid catalog in the argument: unknown field \"pakages\", did you mean \"packages\"?"}})
    );
    let missing = s.path().join("missing.json");
    let out = d.cli(&["catalog", "set", missing.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json_doc(&out)["error"]["code"], "invalid_input");

    // Nobody listening.
    let nowhere = s.path().join("nowhere.sock");
    let out = cli(&nowhere, &["status", "--json"], None);
    assert_eq!(code(&out), 3);
    let doc = json_doc(&out);
    assert_eq!(doc["error"]["code"], "not_reachable");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&nowhere.display().to_string())
            && message.contains(&format!("outpost daemon --socket {}", nowhere.display())),
        "{message}"
    );

    // pack: an empty directory, a missing parent for --out.
    let empty = s.path().join("empty");
    fs_err::create_dir(&empty).unwrap();
    let out = cli(
        &nowhere,
        &[
            "pack",
            empty.to_str().unwrap(),
            "--name",
            "demo",
            "--version",
            "1",
            "--out",
            s.path().join("layout").to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(code(&out), 1);
    assert_eq!(
        json_doc(&out)["error"]["message"],
        format!(
            "directory {} is empty: there is nothing to pack",
            empty.display()
        )
    );
    fs_err::write(empty.join("file"), "x").unwrap();
    let out_path = s.path().join("no/such/layout");
    let out = cli(
        &nowhere,
        &[
            "pack",
            empty.to_str().unwrap(),
            "--name",
            "demo",
            "--version",
            "1",
            "--out",
            out_path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        format!(
            "error packing: cannot write --out {}: its parent directory {} does not exist\n",
            out_path.display(),
            s.path().join("no/such").display()
        )
    );
}

const NOBODY: u32 = 65534;

/// A copy of the binary in a directory every uid may traverse (the checkout may not be).
fn binary_for_others(dir: &Path) -> PathBuf {
    let bin = dir.join("outpost");
    fs_err::copy(BIN, &bin).unwrap();
    fs_err::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn as_nobody(bin: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME");
    cli_output(cmd, None)
}

#[test]
fn a_user_without_root_tries_the_system_socket_and_is_told_about_permissions() {
    let (s, d) = setup();
    let bin = binary_for_others(s.path());
    let home = s.path().join("home");
    fs_err::create_dir(&home).unwrap();

    // No daemon under the user's data directory: both places are named.
    let out = as_nobody(&bin, &home, &["status"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    let user_socket = home.join(".local/share/outpost/run/outpost.sock");
    assert!(
        err.contains(&user_socket.display().to_string())
            && err.contains("also tried /opt/outpost/run/outpost.sock"),
        "{err}"
    );

    // The daemon's socket is root's only: permission denied says so, not "start it".
    let socket = d.socket.to_str().unwrap();
    let out = as_nobody(&bin, &home, &["--socket", socket, "status"]);
    assert_eq!(code(&out), 3);
    assert_eq!(
        stderr(&out),
        format!(
            "error getting status: permission denied while connecting to the outpost daemon at \
             {socket}\nhint: ask an administrator to add your uid ({NOBODY}) to api.allow_uids, \
             or a group of yours to api.allow_gids, in the configuration, or run the command \
             as root (`sudo outpost <command> --socket {socket}`)\n"
        )
    );
    let out = as_nobody(&bin, &home, &["--socket", socket, "status", "--json"]);
    assert_eq!(json_doc(&out)["error"]["code"], "permission_denied");
}
