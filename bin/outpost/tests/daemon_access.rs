//! Who may use the daemon: the socket's mode and ACL decide who can connect, the peer's
//! uid (SO_PEERCRED) decides who may change packages. Clients run as another user through the
//! real CLI (`Command::uid`/`gid`; the tests run as root). Every mutation is logged with the
//! caller's uid and pid.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::*;

const NOBODY: u32 = 65534;

/// The CLI at a path another uid can execute: the built binary lives under the checkout's
/// `target/`, and a checkout under a 0700 directory (a `mktemp -d`, `/root`) is not
/// traversable by that uid. The binary is hard-linked into `<scratch>/cli/`, which like the
/// scratch directory is world-traversable; it is copied instead (mode 0755) when the link
/// fails (another file system) or the binary is not executable by others (built under a
/// umask such as 077). It goes away with the scratch directory. For the commands run here the
/// CLI execs nothing and needs no other file of the checkout.
fn reachable_cli(s: &Scratch) -> std::path::PathBuf {
    let dir = s.path().join("cli");
    fs_err::create_dir(&dir).unwrap();
    fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("outpost");
    let others_can_run = fs_err::metadata(BIN).unwrap().permissions().mode() & 0o005 == 0o005;
    if !(others_can_run && fs_err::hard_link(BIN, &bin).is_ok()) {
        fs_err::copy(BIN, &bin).unwrap();
        fs_err::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs the CLI at `cli` (see [`reachable_cli`]) as `uid`/`gid` against `socket`; returns its
/// output and pid.
fn cli_as(
    cli: &std::path::Path,
    uid: u32,
    gid: u32,
    socket: &std::path::Path,
    args: &[&str],
) -> (Output, u32) {
    let mut cmd = Command::new(cli);
    cmd.arg("--socket").arg(socket).args(args).uid(uid).gid(gid);
    for var in [
        "OUTPOST_ROOT",
        "OUTPOST_SOCKET",
        "OUTPOST_CONFIG",
        "OUTPOST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// The count of one request series in `/telemetry`.
fn requests(d: &Daemon, method: &str, route: &str, status: u16) -> u64 {
    let text = d.get("/telemetry").text();
    let series = format!(
        "outpost_api_requests_total{{method=\"{method}\",module=\"localapi\",route=\"{route}\",status=\"{status}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)))
}

#[test]
fn by_default_only_root_can_connect() {
    let s = Scratch::new();
    let cli = reachable_cli(&s);
    let d = Daemon::start(&s.root());
    assert_eq!(
        fs_err::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let (out, _) = cli_as(&cli, NOBODY, NOBODY, &d.socket, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&d.socket.display().to_string()) && err.contains("ermission denied"),
        "{err}"
    );
}

/// When the operator opens the socket to other users (here: a plain chmod), they can read
/// but not change anything: 200 on reads, 403 on every mutation, each refusal logged.
#[test]
fn callers_outside_the_allowed_uids_may_read_but_not_mutate() {
    let s = Scratch::new();
    let cli = reachable_cli(&s);
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    fs_err::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o777)).unwrap();

    let statuses = requests(&d, "GET", "/status", 200);
    let (out, _) = cli_as(&cli, NOBODY, NOBODY, &d.socket, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out)["packages"]["pkg"]["Stable"], "1");
    assert_eq!(requests(&d, "GET", "/status", 200), statuses + 1);
    let (out, _) = cli_as(
        &cli,
        NOBODY,
        NOBODY,
        &d.socket,
        &["catalog", "show", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out)["packages"][0]["package"], "pkg");

    let cases: [(&[&str], &str, &str); 5] = [
        (&["install", "pkg", "1"], "POST", "/{package}/install"),
        (
            &["experiment", "start", "pkg", "1"],
            "POST",
            "/{package}/experiment/start",
        ),
        (
            &["experiment", "stop", "pkg"],
            "POST",
            "/{package}/experiment/stop",
        ),
        (&["remove", "pkg"], "POST", "/{package}/remove"),
        (
            &["catalog", "set", r#"{"packages": []}"#, "--allow-empty"],
            "POST",
            "/catalog",
        ),
    ];
    for (args, method, route) in cases {
        let before = requests(&d, method, route, 403);
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (out, pid) = cli_as(&cli, NOBODY, NOBODY, &d.socket, &with_json);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let body = json_out(&out);
        assert_eq!(body["error"]["code"], "forbidden", "{args:?}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("uid 65534 may not call") && message.contains(route),
            "{message}"
        );
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
        assert_eq!(
            requests(&d, method, route, 403),
            before + 1,
            "{args:?} was not a 403"
        );
        assert!(
            d.log()
                .lines()
                .any(|l| l.contains("mutating request refused")
                    && l.contains("caller.uid=65534")
                    && l.contains(&format!("caller.pid={pid}"))),
            "refusal of {args:?} not logged with uid and pid:\n{}",
            d.log()
        );
    }
    // Nothing changed.
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert_eq!(
        d.get("/catalog").json()["packages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `api.allow_uids` lets that uid connect (the daemon grants it access to the socket with an
/// ACL; other users still cannot) and change packages; the mutation is logged with its uid
/// and pid.
#[test]
fn allow_uids_lets_that_uid_connect_and_mutate() {
    let s = Scratch::new();
    let cli = reachable_cli(&s);
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let config = s.config(&format!("api:\n  allow_uids: [{NOBODY}]\n"));
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let meta = fs_err::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o007, 0, "others must not get access");
    assert!(
        d.log()
            .contains("socket opened to the configured uids and gids")
    );

    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    let (out, pid) = cli_as(&cli, NOBODY, NOBODY, &d.socket, &["install", "pkg", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "pkg 1 installed as stable");
    let (out, _) = cli_as(
        &cli,
        NOBODY,
        NOBODY,
        &d.socket,
        &["experiment", "start", "pkg", "2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.versions("pkg"), Some(("1".into(), "2".into())));
    let logged = d.log();
    assert!(
        logged.lines().any(|l| l.contains("mutating request")
            && l.contains("caller.uid=65534")
            && l.contains(&format!("caller.pid={pid}"))),
        "{logged}"
    );
    assert!(
        logged.lines().any(|l| l.contains("operation started")
            && l.contains("caller.uid=65534")
            && l.contains(&format!("caller.pid={pid}"))
            && l.contains("operation=\"install\"")),
        "{logged}"
    );

    // Another unprivileged uid is still locked out at the socket.
    let (out, _) = cli_as(&cli, 65533, 65533, &d.socket, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// `api.allow_gids` does the same for callers whose primary group is listed.
#[test]
fn allow_gids_lets_members_of_that_group_connect_and_mutate() {
    let s = Scratch::new();
    let cli = reachable_cli(&s);
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let config = s.config("api:\n  allow_gids: [4242]\n");
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    d.set_catalog(&[v1.layout_entry()]);
    let (out, _) = cli_as(&cli, 4000, 4242, &d.socket, &["install", "pkg", "1", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    let (out, _) = cli_as(&cli, 4000, 4000, &d.socket, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// Root's own mutations are logged with uid 0 and the caller's pid too.
#[test]
fn every_mutation_is_logged_with_uid_and_pid() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/remove", None).assert_ok_empty();
    let pid = std::process::id();
    let log = d.log();
    let mutating = log
        .lines()
        .filter(|l| {
            l.contains("mutating request")
                && l.contains("caller.uid=0")
                && l.contains(&format!("caller.pid={pid}"))
        })
        .count();
    assert_eq!(mutating, 3, "catalog, install and remove:\n{log}");
    for op in ["install", "remove"] {
        assert!(
            log.lines().any(|l| l.contains("operation started")
                && l.contains(&format!("operation=\"{op}\""))
                && l.contains("caller.uid=0")
                && l.contains(&format!("caller.pid={pid}"))),
            "{op}:\n{log}"
        );
    }
    assert!(
        log.lines().any(|l| l.contains("catalog replaced")
            && l.contains("caller.uid=0")
            && l.contains(&format!("caller.pid={pid}"))),
        "{log}"
    );
}
