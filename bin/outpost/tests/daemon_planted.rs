//! The real daemon against links and modes planted in its root: a root or `run/` that others
//! could write to (or that another uid owns) stops it at start, a directory made unsafe while
//! it runs refuses the next change, and symbolic links at the socket path, at `tmp/` or in
//! place of a version directory are never followed.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use fs_err::os::unix::fs::symlink;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::json;
use support::*;

fn chmod(path: &Path, mode: u32) {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A root whose `run/` exists, as a previous daemon left it.
fn prepared_root(s: &Scratch) -> std::path::PathBuf {
    let root = s.root();
    fs_err::create_dir_all(root.join("run")).unwrap();
    chmod(&root, 0o755);
    chmod(&root.join("run"), 0o755);
    root
}

fn assert_refused_at_start(root: &Path, expected: &str) {
    let mut d = Daemon::spawn(root, DaemonOptions::default());
    let status = d.wait_exit();
    assert!(!status.success(), "the daemon started: {}", d.log());
    let log = d.log();
    assert!(
        log.contains(expected),
        "{expected:?} not in the log:\n{log}"
    );
    assert!(
        fs_err::symlink_metadata(root.join("run/outpost.sock")).is_err(),
        "no socket was bound"
    );
}

#[test]
fn a_root_or_run_others_could_write_to_stops_the_daemon_at_start() {
    for (dir, mode) in [("", 0o777), ("", 0o775), ("run", 0o757), ("run", 0o1777)] {
        let s = Scratch::new();
        let root = prepared_root(&s);
        let path = if dir.is_empty() {
            root.clone()
        } else {
            root.join(dir)
        };
        chmod(&path, mode);
        assert_refused_at_start(
            &root,
            &format!(
                "{} is writable by group or others (mode {mode:o}); refusing to use it",
                path.display()
            ),
        );
        // Fixed by the operator, the same root starts.
        chmod(&path, 0o755);
        let d = Daemon::start(&root);
        assert_eq!(d.status()["packages"], json!({}));
    }
}

#[test]
fn a_root_or_run_owned_by_another_uid_stops_the_daemon_at_start() {
    for dir in ["", "run", "packages", "tmp"] {
        let s = Scratch::new();
        let root = prepared_root(&s);
        let path = if dir.is_empty() {
            root.clone()
        } else {
            fs_err::create_dir_all(root.join(dir)).unwrap();
            root.join(dir)
        };
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert_refused_at_start(
            &root,
            &format!("{} is owned by uid 65534, not by uid 0", path.display()),
        );
    }
}

#[test]
fn a_directory_made_unsafe_while_running_refuses_the_next_change() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let packages = s.root().join("packages");
    chmod(&packages, 0o777);
    let message = d
        .post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_error(500, "filesystem");
    assert!(
        message.contains(&format!(
            "{} is writable by group or others (mode 777)",
            packages.display()
        )),
        "{message}"
    );
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_error(500, "filesystem");
    d.post("/pkg/remove", None).assert_error(500, "filesystem");
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert!(!version_exists(&s.root(), "pkg", "2"));
    assert!(
        d.log()
            .contains("refusing to use a repository directory others could write to")
    );
    chmod(&packages, 0o755);
    d.post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
    assert_invariants(&s.root(), "pkg", &|v| standard_files("pkg", v));
}

#[test]
fn a_symlink_at_the_socket_path_is_never_followed_or_removed() {
    let s = Scratch::new();
    let root = prepared_root(&s);
    let target = s.path().join("precious");
    fs_err::write(&target, "keep me").unwrap();
    let socket = root.join("run/outpost.sock");
    symlink(&target, &socket).unwrap();
    let mut d = Daemon::spawn(&root, DaemonOptions::default());
    let status = d.wait_exit();
    assert!(!status.success(), "the daemon started: {}", d.log());
    assert!(
        d.log().contains(&socket.display().to_string()),
        "the log names the socket path:\n{}",
        d.log()
    );
    assert_eq!(fs_err::read_to_string(&target).unwrap(), "keep me");
    assert_eq!(fs_err::read_link(&socket).unwrap(), target);
    // A link to a directory: nothing is bound inside it either.
    let dir = s.path().join("elsewhere");
    fs_err::create_dir(&dir).unwrap();
    fs_err::remove_file(&socket).unwrap();
    symlink(&dir, &socket).unwrap();
    let mut d = Daemon::spawn(&root, DaemonOptions::default());
    assert!(!d.wait_exit().success());
    assert!(fs_err::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn a_symlinked_tmp_is_never_followed_and_gc_leaves_its_target_alone() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let precious = s.path().join("precious");
    fs_err::create_dir(&precious).unwrap();
    fs_err::write(precious.join("keep"), "data").unwrap();
    let tmp = s.root().join("tmp");
    fs_err::remove_dir(&tmp).unwrap();
    symlink(&precious, &tmp).unwrap();

    let runs = d.gc_runs();
    let message = d
        .post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_error(500, "filesystem");
    assert!(
        message.contains(&format!("{} is not a directory", tmp.display())),
        "{message}"
    );
    // A GC pass runs after every operation; it fails rather than follow the link.
    wait_for("a failed GC pass", || {
        let vars = d.debug_vars();
        (vars["daemon"]["gc"]["runs"].as_u64().unwrap() > runs
            && vars["daemon"]["gc"]["failures"].as_u64().unwrap() > 0)
            .then_some(())
    });
    assert_eq!(
        fs_err::read_dir(&precious)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        ["keep"]
    );
    assert_eq!(
        fs_err::read_to_string(precious.join("keep")).unwrap(),
        "data"
    );
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));

    // The operator puts a real tmp/ back; the daemon carries on.
    fs_err::remove_file(&tmp).unwrap();
    fs_err::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o755);
    d.post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
}

#[test]
fn version_directories_replaced_by_symlinks_are_never_followed() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    let pkg_dir = s.root().join("packages/pkg");
    let outside = s.path().join("outside");
    fs_err::create_dir(&outside).unwrap();

    // The experiment's directory becomes a link to a copy outside the root.
    fs_err::rename(pkg_dir.join("2"), outside.join("2")).unwrap();
    symlink(outside.join("2"), pkg_dir.join("2")).unwrap();
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    let message = d
        .post("/pkg/experiment/promote", None)
        .assert_error(409, "invalid_state");
    assert_eq!(message, "no experiment to promote");
    assert_eq!(
        link_target(&s.root(), "pkg", "stable").as_deref(),
        Some("1")
    );

    // The stable version's directory too: the package reads as not installed.
    fs_err::rename(pkg_dir.join("1"), outside.join("1")).unwrap();
    symlink(outside.join("1"), pkg_dir.join("1")).unwrap();
    assert_eq!(d.versions("pkg"), None);

    // Installing again puts a real tree in place; GC removes the links, never their targets.
    let runs = d.gc_runs();
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.wait_gc_runs(runs, 1);
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert!(
        fs_err::symlink_metadata(pkg_dir.join("1"))
            .unwrap()
            .is_dir()
    );
    assert!(fs_err::symlink_metadata(pkg_dir.join("2")).is_err());
    for v in ["1", "2"] {
        assert_complete(&outside.join(v), &standard_files("pkg", v));
    }
    assert_invariants(&s.root(), "pkg", &|v| standard_files("pkg", v));
}
