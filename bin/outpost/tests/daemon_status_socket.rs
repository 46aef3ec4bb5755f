//! The read-only status socket `<root>/run/status.sock`: mode 0666, `GET /status` only, with
//! the daemon's version and the free disk space and nothing else; `outpost status --brief`
//! reads it, also as an unprivileged user; a planted file at its path is refused and left
//! alone, a stale socket replaced.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

const NOBODY: u32 = 65534;

fn status_socket(root: &Path) -> PathBuf {
    root.join("run/status.sock")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

/// A copy of the binary in a directory every uid may traverse (the checkout may not be).
fn binary_for_others(dir: &Path) -> PathBuf {
    let bin = dir.join("outpost");
    fs_err::copy(BIN, &bin).unwrap();
    fs_err::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs the real binary as `nobody` (the tests run as root).
fn as_nobody(bin: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME");
    cli_output(cmd, None)
}

fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bavail * st.f_frsize
}

#[test]
fn serves_the_version_and_free_space_only() {
    let s = Scratch::new();
    let root = s.root();
    let d = Daemon::start(&root);
    let sock = status_socket(&root);
    let meta = fs_err::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o666);

    let resp = send(&sock, &request("GET", "/status", &[], None));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    let obj = body.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["available_disk_space", "installer_version"]);
    assert_eq!(body["installer_version"], d.status()["version"]);
    let reported = body["available_disk_space"].as_u64().unwrap();
    let now = free_bytes(&root);
    // The same filesystem, read moments apart: within 64 MiB of each other.
    assert!(reported.abs_diff(now) < 64 << 20, "{reported} vs {now}");
    assert!(reported > 0);

    // Nothing else is routed: the main socket's routes are 404 here, other methods 405.
    for path in [
        "/catalog",
        "/demo/install",
        "/telemetry",
        "/debug/vars",
        "/",
        "/status/x",
    ] {
        let resp = send(&sock, &request("GET", path, &[], None));
        resp.assert_error(404, "not_found");
    }
    let resp = send(
        &sock,
        &request(
            "POST",
            "/demo/install",
            &[("Content-Type", "application/json")],
            Some(b"{}"),
        ),
    );
    resp.assert_error(404, "not_found");
    for method in ["POST", "PUT", "DELETE"] {
        let resp = send(
            &sock,
            &request(
                method,
                "/status",
                &[("Content-Type", "application/json")],
                Some(b"{}"),
            ),
        );
        resp.assert_error(405, "method_not_allowed");
    }
    // The main socket's conventions hold: a body declared over the limit is refused before it
    // is read, as on the main socket.
    let big = vec![b' '; 2 << 20];
    let raw = request(
        "POST",
        "/status",
        &[("Content-Type", "application/json")],
        Some(&big),
    )
    .to_bytes();
    let on_status = send_raw(&sock, &raw);
    let on_main = send_raw(&d.socket, &raw);
    assert_eq!(on_status.status, on_main.status);
    assert_eq!(
        on_status.json()["error"]["code"],
        on_main.json()["error"]["code"]
    );
}

#[test]
fn status_brief_works_for_an_unprivileged_user() {
    let s = Scratch::new();
    let root = s.root();
    let d = Daemon::start(&root);
    let bin = binary_for_others(s.path());
    let home = s.path().join("home");
    fs_err::create_dir(&home).unwrap();
    let root_arg = root.to_str().unwrap();

    // nobody cannot use the main socket...
    let out = as_nobody(&bin, &home, &["--root", root_arg, "status"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );

    // ...but can ask the status socket.
    let out = as_nobody(
        &bin,
        &home,
        &["--root", root_arg, "status", "--brief", "--json"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(doc["installer_version"], d.status()["version"]);
    assert!(doc["available_disk_space"].as_u64().unwrap() > 0);

    let out = as_nobody(&bin, &home, &["--root", root_arg, "status", "--brief"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let version = d.status()["version"].as_str().unwrap().to_owned();
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("outpost daemon {version} is up; ")) && text.contains(" free "),
        "{text}"
    );

    // --brief takes no package and no --wide.
    let out = d.cli(&["status", "--brief", "demo"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn status_brief_without_a_daemon_says_so() {
    let s = Scratch::new();
    let root = s.root();
    fs_err::create_dir_all(root.join("run")).unwrap();
    let out = cli(
        &root.join("run/outpost.sock"),
        &["--root", root.to_str().unwrap(), "status", "--brief"],
        None,
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not reachable") && err.contains(&status_socket(&root).display().to_string()),
        "{err}"
    );
}

#[test]
fn a_planted_file_is_refused_and_a_stale_socket_replaced() {
    let s = Scratch::new();
    let root = s.root();
    let run = root.join("run");
    fs_err::create_dir_all(&run).unwrap();
    let sock = status_socket(&root);

    // A symlink planted at the path: the daemon refuses to start and touches neither the link
    // nor its target.
    let target = s.path().join("target");
    fs_err::write(&target, "keep").unwrap();
    fs_err::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    fs_err::os::unix::fs::symlink(&target, &sock).unwrap();
    let mut d = Daemon::spawn(&root, DaemonOptions::default());
    let status = d.wait_exit();
    assert!(!status.success());
    let log = d.log();
    assert!(
        log.contains(&sock.display().to_string()) && log.contains("not a socket"),
        "{log}"
    );
    assert!(fs_err::symlink_metadata(&sock).unwrap().is_symlink());
    assert_eq!(
        fs_err::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(fs_err::read_to_string(&target).unwrap(), "keep");
    fs_err::remove_file(&sock).unwrap();

    // A stale socket (nobody listening, as a crash leaves it): replaced, mode 0666.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let d = Daemon::start(&root);
    assert_eq!(
        fs_err::symlink_metadata(&sock)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o666
    );
    assert_eq!(
        send(&sock, &request("GET", "/status", &[], None)).status,
        200
    );
    // No temporary socket is left beside it.
    let mut names: Vec<String> = fs_err::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    drop(d);
}
