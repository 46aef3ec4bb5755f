//! The client verbs of the `outpost` command line against a real daemon: output (text and
//! `--json`), the Datadog installer's hidden aliases, error messages and exit statuses
//! (0 success, 1 the operation failed, 2 usage, 3 daemon not reachable).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::process::{Command, Output};

use serde_json::{Value, json};
use support::*;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)))
}

/// No Rust internals in what a user sees.
fn assert_clean(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    for bad in ["panicked", "RUST_BACKTRACE", "Error {", "Os {", "kind:"] {
        assert!(!all.contains(bad), "{bad:?} in output:\n{all}");
    }
}

fn setup() -> (Scratch, Daemon, Vec<Fixture>) {
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixtures: Vec<Fixture> = ["1.0", "2.0"]
        .iter()
        .map(|v| standard(&fx, "pkg", v))
        .collect();
    let d = Daemon::start(&s.root());
    (s, d, fixtures)
}

fn catalog_json(fixtures: &[Fixture]) -> String {
    json!({"packages": fixtures.iter().map(Fixture::layout_entry).collect::<Vec<_>>()}).to_string()
}

#[test]
fn status_prints_a_table_and_the_api_body_with_json() {
    let (_s, d, fixtures) = setup();
    let out = d.cli(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "outpost daemon {}\nno packages installed\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    d.post("/pkg/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2.0"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/promote", None).assert_ok_empty();
    d.post("/pkg/experiment/promote", None)
        .assert_error(409, "invalid_state");

    let out = d.cli(&["status"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1], "PACKAGE  STABLE  EXPERIMENT  AGE  LAST TASK",
        "{text}"
    );
    // The refused second promote did not replace the last task; it finished moments ago.
    let age = lines[2]
        .strip_prefix("pkg      2.0     -           ")
        .and_then(|rest| rest.strip_suffix("promote_experiment done"))
        .unwrap_or_else(|| panic!("{text}"))
        .trim_end();
    assert!(
        age.strip_suffix('s')
            .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n < 60)),
        "AGE {age:?}: {text}"
    );

    // --json, before or after the subcommand, is the API's body.
    for args in [&["status", "--json"][..], &["--json", "status"][..]] {
        let out = d.cli(args);
        assert_eq!(code(&out), 0);
        assert_eq!(json_out(&out), d.status());
        assert!(stdout(&out).ends_with("}\n"));
    }
}

#[test]
fn catalog_set_from_a_file_stdin_or_inline_and_show() {
    let (s, d, fixtures) = setup();
    let text = catalog_json(&fixtures);
    let file = s.path().join("catalog.json");
    fs_err::write(&file, &text).unwrap();

    let out = d.cli(&["catalog", "set", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "catalog set (2 entries)\n");
    let expected = d.get("/catalog").json();
    assert_eq!(expected["packages"].as_array().unwrap().len(), 2);

    d.set_catalog(&[]);
    let out = cli(&d.socket, &["catalog", "set", "-"], Some(text.as_bytes()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(d.get("/catalog").json(), expected);

    d.set_catalog(&[]);
    let out = d.cli(&["catalog", "set", &text, "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        json_out(&out),
        json!({"operation": "set_catalog", "entries": 2, "changed": true})
    );
    assert_eq!(d.get("/catalog").json(), expected);

    // The Datadog installer's spelling.
    d.set_catalog(&[]);
    let out = d.cli(&["set-catalog", &text]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(d.get("/catalog").json(), expected);

    let out = d.cli(&["catalog", "show"]);
    assert_eq!(code(&out), 0);
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].starts_with("PACKAGE  VERSION  PLATFORM  URL"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("pkg      1.0      any       file://"),
        "{shown}"
    );
    let out = d.cli(&["catalog", "show", "--json"]);
    assert_eq!(json_out(&out), expected);
}

#[test]
fn catalog_set_errors_name_what_was_wrong() {
    let (s, d, fixtures) = setup();
    d.set_catalog(&[fixtures[0].layout_entry()]);
    let before = d.get("/catalog").json();

    let out = d.cli(&["catalog", "set", "{not json"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("error setting catalog: invalid catalog JSON in the argument:"),
        "{}",
        stderr(&out)
    );
    let missing = s.path().join("missing.json");
    let out = d.cli(&["catalog", "set", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("error setting catalog:")
            && stderr(&out).contains(missing.to_str().unwrap())
            && stderr(&out).contains("the catalog is a file, `-` for stdin, or the JSON itself"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&[
        "catalog",
        "set",
        r#"{"packages": [{"package": "p", "version": "..", "url": "oci://r.io/p:1"}]}"#,
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out)
            .starts_with("error setting catalog: invalid catalog in the argument: catalog entry 0 (\"p\" \"..\"): invalid version"),
        "{}",
        stderr(&out)
    );
    let out = cli(&d.socket, &["catalog", "set", "-"], Some(b"[1, 2"));
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("invalid catalog JSON in stdin"),
        "{}",
        stderr(&out)
    );
    assert_clean(&out);
    assert_eq!(d.get("/catalog").json(), before);
}

#[test]
fn install_experiment_and_remove_round_trip() {
    let (s, d, fixtures) = setup();
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );

    let out = d.cli(&["install", "pkg", "1.0"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "pkg 1.0 installed as stable\n"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["experiment", "start", "pkg", "2.0"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "experiment pkg 2.0 started\n"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.versions("pkg"), Some(("1.0".into(), "2.0".into())));
    let out = d.cli(&["experiment", "stop", "pkg"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "experiment of pkg stopped\n")
    );
    assert_eq!(d.versions("pkg"), Some(("1.0".into(), String::new())));
    let out = d.cli(&["experiment", "start", "pkg", "2.0"]);
    assert_eq!(code(&out), 0);
    let out = d.cli(&["experiment", "promote", "pkg"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "experiment of pkg promoted to stable\n")
    );
    assert_eq!(d.versions("pkg"), Some(("2.0".into(), String::new())));
    let out = d.cli(&["remove", "pkg", "--json"]);
    assert_eq!(
        (code(&out), json_out(&out)),
        (
            0,
            json!({"package": "pkg", "operation": "remove", "version": "2.0", "changed": true})
        )
    );
    assert_eq!(d.versions("pkg"), None);
    assert!(!s.root().join("packages/pkg").exists());
}

#[test]
fn the_datadog_aliases_do_the_same() {
    let (_s, d, fixtures) = setup();
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code(&d.cli(&["install", "pkg", "1.0", "-q"])), 0);
    let out = d.cli(&["start-experiment", "pkg", "2.0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(d.versions("pkg"), Some(("1.0".into(), "2.0".into())));
    let out = d.cli(&["stop-experiment", "pkg"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(d.versions("pkg"), Some(("1.0".into(), String::new())));
    assert_eq!(code(&d.cli(&["start-experiment", "pkg", "2.0"])), 0);
    let out = d.cli(&["promote-experiment", "pkg"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(d.versions("pkg"), Some(("2.0".into(), String::new())));
    // Hidden from the help, which lists the real verbs.
    let help = stdout(&d.cli(&["--help"]));
    assert!(
        help.contains("experiment") && !help.contains("start-experiment"),
        "{help}"
    );
}

#[test]
fn install_without_a_version_and_with_install_args() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let out_file = s.path().join("args.out");
    let only = package(
        &fx,
        "solo",
        "3.1",
        with_hook(
            standard_files("solo", "3.1"),
            "post-install",
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n",
                out_file.display()
            ),
        ),
    );
    let d = Daemon::start(&s.root());
    d.set_catalog(&[only.layout_entry()]);
    // A value that starts with `-` must be attached with `=`.
    let out = d.cli(&[
        "install",
        "solo",
        "--install-arg=--x",
        "--install-arg",
        "y z",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "solo 3.1 installed as stable\n");
    assert_eq!(fs_err::read_to_string(&out_file).unwrap(), "--x\ny z\n");
}

#[test]
fn failures_exit_1_with_the_daemons_message_prefixed_by_what_was_done() {
    let (_s, d, fixtures) = setup();
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    let cases: [(&[&str], &str); 6] = [
        (
            &["experiment", "start", "pkg", "2.0"],
            "error starting experiment: package pkg is not installed: install a stable version first\n",
        ),
        (
            &["install", "pkg", "9.9"],
            "error installing: could not get package pkg, 9.9 for ",
        ),
        (
            &["experiment", "promote", "pkg"],
            "error promoting experiment: package pkg is not installed\n",
        ),
        (
            &["experiment", "stop", "pkg"],
            "error stopping experiment: package pkg is not installed\n",
        ),
        (
            &["remove", "pkg"],
            "error removing: package pkg is not installed\n",
        ),
        (
            &["install", "Bad", "1"],
            "error installing: invalid package name \"Bad\"",
        ),
    ];
    for (args, message) in cases {
        let out = d.cli(args);
        assert_eq!(code(&out), 1, "{args:?}");
        assert!(
            stderr(&out).starts_with(message),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "{args:?}");
        assert_clean(&out);
    }
    assert_eq!(code(&d.cli(&["install", "pkg", "1.0", "-q"])), 0);
    let out = d.cli(&["experiment", "promote", "pkg", "--json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        json_out(&out),
        json!({"error": {"message": "no experiment to promote", "code": "invalid_state"}})
    );
    assert_eq!(
        stderr(&out),
        "error promoting experiment: no experiment to promote\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new();
    let socket = s.path().join("unused.sock");
    for args in [
        &["install"][..],
        &["experiment", "start", "pkg"][..],
        &["experiment", "frobnicate", "pkg"][..],
        &["no-such-verb"][..],
        &["status", "--no-such-flag"][..],
        &["catalog"][..],
        &["-v", "-q", "status"][..],
    ] {
        let out = cli(&socket, args, None);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("Usage:") || stderr(&out).contains("error:"),
            "{}",
            stderr(&out)
        );
        assert_clean(&out);
    }
}

#[test]
fn an_unreachable_daemon_exits_3_naming_the_socket() {
    let s = Scratch::new();
    let socket = s.path().join("run/outpost.sock");
    for (args, doing) in [
        (&["status"][..], "error getting status"),
        (&["install", "pkg", "1"][..], "error installing"),
        (
            &["experiment", "stop", "pkg"][..],
            "error stopping experiment",
        ),
    ] {
        let out = cli(&socket, args, None);
        assert_eq!(code(&out), 3, "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "{doing}: the outpost daemon is not reachable at {}",
                socket.display()
            )) && err.contains(&format!(
                "hint: start it with `outpost daemon --socket {}`",
                socket.display()
            )),
            "{err}"
        );
        assert_clean(&out);
    }
    // A stale socket (nobody listening) is "not reachable" too.
    fs_err::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let out = cli(&socket, &["status"], None);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("onnection refused"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn root_and_socket_come_from_flags_or_the_environment() {
    let (s, d, _fixtures) = setup();
    let run = |cmd: &mut Command| {
        let c = std::mem::replace(cmd, Command::new(BIN));
        cli_output(c, None)
    };
    // --root finds <root>/run/outpost.sock.
    let mut c = Command::new(BIN);
    c.arg("status").arg("--root").arg(s.root());
    assert_eq!(code(&run(&mut c)), 0);
    // OUTPOST_ROOT and OUTPOST_SOCKET, set after the cleaning of the environment.
    let mut c = Command::new(BIN);
    c.arg("status");
    let mut out = {
        for var in ["OUTPOST_ROOT", "OUTPOST_SOCKET", "OUTPOST_CONFIG"] {
            c.env_remove(var);
        }
        c.env("OUTPOST_ROOT", s.root());
        c.output().unwrap()
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut c = Command::new(BIN);
    c.arg("status")
        .env_remove("OUTPOST_ROOT")
        .env("OUTPOST_SOCKET", &d.socket);
    out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // --socket wins over --root.
    let mut c = Command::new(BIN);
    c.args(["--root", "/nonexistent", "--socket"])
        .arg(&d.socket)
        .arg("status");
    assert_eq!(code(&run(&mut c)), 0);
}

#[test]
fn quiet_installs_print_nothing() {
    let (_s, d, fixtures) = setup();
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    let out = d.cli(&["-q", "install", "pkg", "1.0"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str(), stderr(&out).as_str()),
        (0, "", "")
    );
    let out = d.cli(&["experiment", "start", "pkg", "2.0", "-q"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, ""));
}
