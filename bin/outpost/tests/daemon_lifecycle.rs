//! The daemon's life: start-up (live and stale sockets, socket mode, cleanup of a crash's
//! leftovers), graceful shutdown on SIGTERM and SIGINT (also in the middle of an install),
//! what survives a restart (catalog, last tasks), SIGKILL and aborts at the repository's
//! failure points in the middle of operations, and garbage collection.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

use outpost_testkit::noise;
use rustix::process::Signal;
use serde_json::json;
use support::*;

#[test]
fn the_socket_is_created_with_mode_0700() {
    let s = Scratch::new();
    let d = Daemon::start(&s.root());
    let meta = fs_err::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(d.log().contains("daemon accepting requests"), "{}", d.log());
}

#[test]
fn a_second_daemon_refuses_to_start_and_the_first_keeps_serving() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let first = Daemon::start(&s.root());
    first.set_catalog(&[v1.layout_entry()]);

    // Same root (and so the same socket).
    let out = cli_output(
        {
            let mut c = std::process::Command::new(BIN);
            c.arg("daemon").arg("--root").arg(s.root());
            c
        },
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("another outpost daemon is running on")
            && err.contains(&first.socket.display().to_string()),
        "{err}"
    );

    // Another root, same socket.
    let out = cli_output(
        {
            let mut c = std::process::Command::new(BIN);
            c.arg("daemon")
                .arg("--root")
                .arg(s.path().join("other-root"))
                .arg("--socket")
                .arg(&first.socket);
            c
        },
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("another outpost daemon is listening on")
            && err.contains(&first.socket.display().to_string()),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );

    // The first one is unharmed: same socket file, still answering, state intact.
    assert!(
        fs_err::symlink_metadata(&first.socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    first
        .post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    assert_eq!(first.get("/catalog").json()["packages"][0]["version"], "1");
}

#[test]
fn a_stale_socket_is_replaced() {
    let s = Scratch::new();
    let socket = s.root().join("run/outpost.sock");
    fs_err::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket nobody listens on any more, as a crash leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let d = Daemon::start(&s.root());
    assert_eq!(d.get("/status").status, 200);
    assert!(d.log().contains("removing a stale socket"), "{}", d.log());
}

#[test]
fn a_file_at_the_socket_path_is_never_removed() {
    let s = Scratch::new();
    let socket = s.path().join("not-a-socket");
    fs_err::write(&socket, "precious").unwrap();
    let mut d = Daemon::spawn(
        &s.root(),
        DaemonOptions {
            socket: Some(socket.clone()),
            ..Default::default()
        },
    );
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(d.log().contains("is not a socket"), "{}", d.log());
    assert_eq!(fs_err::read_to_string(&socket).unwrap(), "precious");
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly_and_remove_the_socket() {
    for signal in [Signal::TERM, Signal::INT] {
        let s = Scratch::new();
        let mut d = Daemon::start(&s.root());
        d.signal(signal);
        let status = d.wait_exit();
        assert!(status.success(), "{signal:?}: {status}\n{}", d.log());
        assert!(!d.socket.exists(), "{signal:?}: the socket is left");
        assert!(d.log().contains("daemon stopped"), "{}", d.log());
    }
}

/// A SIGTERM that arrives as soon as the socket accepts (a service manager stopping the
/// daemon while it starts) is handled like any other: clean exit 0, socket removed.
#[test]
fn sigterm_during_start_up_is_graceful() {
    for _ in 0..10 {
        let s = Scratch::new();
        let mut d = Daemon::spawn(&s.root(), DaemonOptions::default());
        // Spin rather than poll: the signal must come as close to the bind as possible.
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon never bound"
            );
            std::thread::yield_now();
        }
        d.signal(Signal::TERM);
        let status = d.wait_exit();
        assert!(status.success(), "{status}\n{}", d.log());
        assert!(!d.socket.exists());
    }
}

#[test]
fn the_catalog_and_last_tasks_survive_a_restart() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let mut d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    let catalog = d.get("/catalog").json();
    let task = d.task("pkg").unwrap();
    assert_eq!(
        (&task["operation"], &task["state"]),
        (&json!("stop_experiment"), &json!("DONE"))
    );
    d.stop();

    let d = Daemon::start(&s.root());
    assert_eq!(d.get("/catalog").json(), catalog);
    assert_eq!(d.task("pkg").unwrap(), task, "the last task is persisted");
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    // And the restored catalog is used.
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
}

/// Starts an install whose tarball arrives through a named pipe, feeds it `first` bytes, and
/// waits until `/status` shows the task running with progress. Returns the thread that posted
/// the install (its answer), and the pipe writer, still open.
fn install_through_pipe(
    d: &Daemon,
    fixture: &Fixture,
    pipe: &std::path::Path,
    first: usize,
) -> (
    std::thread::JoinHandle<std::io::Result<Response>>,
    fs_err::File,
) {
    let socket = d.socket.clone();
    let version = fixture.version.clone();
    let name = fixture.name.clone();
    let client = std::thread::spawn(move || {
        let body = serde_json::to_vec(&json!({"version": version})).unwrap();
        try_request(
            &socket,
            &request(
                "POST",
                &format!("/{name}/install"),
                &[("Content-Type", "application/json")],
                Some(&body),
            ),
        )
    });
    // Opening the write end waits for the daemon to open the read end.
    let mut writer = fs_err::OpenOptions::new().write(true).open(pipe).unwrap();
    let data = fs_err::read(&fixture.layer_blob).unwrap();
    writer.write_all(&data[..first]).unwrap();
    wait_for("the install to report progress", || {
        d.task(&fixture.name)
            .as_ref()
            .and_then(running_progress)
            .filter(|(_, done)| *done > 0)
    });
    (client, writer)
}

fn big_fixture(dir: &std::path::Path, name: &str, version: &str) -> Fixture {
    let mut files = standard_files(name, version);
    files.push(("payload".into(), noise(3 << 20, 7), 0o644));
    package_as(
        dir,
        name,
        version,
        files,
        outpost_fetch::pack::PackFormat::Gzip,
    )
}

#[test]
fn sigkill_during_an_install_leaves_the_old_state_and_an_error_task() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = big_fixture(&fx, "pkg", "2");
    let (pipe_entry, pipe) = fifo_entry(&fx, &v2);
    let mut d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), pipe_entry]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();

    let (client, writer) = install_through_pipe(&d, &v2, &pipe, 2 << 20);
    let running = d.task("pkg").unwrap();
    assert_eq!(running["operation"], "install");
    assert_eq!(running["version"], "2");
    assert!(running["progress"]["bytes_total"].as_u64().is_some());
    assert!(
        !tmp_entries(&s.root()).is_empty(),
        "the install stages in tmp/"
    );
    d.kill();
    drop(writer);
    assert!(
        client.join().unwrap().is_err(),
        "the client saw the daemon die"
    );

    // Restart: the same root as a crash left it.
    let d = Daemon::start(&s.root());
    let task = d.task("pkg").unwrap();
    assert_eq!(task["id"], running["id"]);
    assert_eq!(task["state"], "ERROR");
    assert_eq!(task["error"]["code"], "internal");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{task}"
    );
    assert!(task.get("progress").is_none());
    wait_tmp_clean(&s.root());
    let contents = |v: &str| {
        if v == "2" {
            v2.files.clone()
        } else {
            standard_files("pkg", v)
        }
    };
    assert_eq!(
        assert_invariants(&s.root(), "pkg", &contents),
        ("1".into(), None)
    );
    assert!(!version_exists(&s.root(), "pkg", "2"));

    // The next operation succeeds: the same version from a regular tarball.
    d.set_catalog(&[v1.layout_entry(), v2.tarball_entry(&fx)]);
    d.post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    assert_eq!(
        assert_invariants(&s.root(), "pkg", &contents),
        ("2".into(), None)
    );
}

#[test]
fn sigterm_during_an_install_lets_it_finish_then_exits_cleanly() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v2 = big_fixture(&fx, "pkg", "2");
    let (pipe_entry, pipe) = fifo_entry(&fx, &v2);
    let mut d = Daemon::start(&s.root());
    d.set_catalog(&[pipe_entry]);
    let (client, mut writer) = install_through_pipe(&d, &v2, &pipe, 2 << 20);

    d.signal(Signal::TERM);
    // It stops accepting new connections at once...
    wait_for("the listener to close", || {
        try_request(&d.socket, &request("GET", "/status", &[], None))
            .is_err()
            .then_some(())
    });
    assert!(d.is_running(), "it must wait for the install");
    // ...and finishes the install in flight once the rest of the package arrives.
    let data = fs_err::read(&v2.layer_blob).unwrap();
    writer.write_all(&data[2 << 20..]).unwrap();
    drop(writer);
    let answer = client.join().unwrap().unwrap();
    answer.assert_ok_empty();
    let status = d.wait_exit();
    assert!(status.success(), "{status}\n{}", d.log());
    assert!(!d.socket.exists());

    let d = Daemon::start(&s.root());
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
    assert_eq!(d.task("pkg").unwrap()["state"], "DONE");
    assert_complete(&s.root().join("packages/pkg/2"), &v2.files);
}

#[test]
fn sigterm_during_an_install_that_fails_rolls_back_then_exits_cleanly() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = big_fixture(&fx, "pkg", "2");
    let (pipe_entry, pipe) = fifo_entry(&fx, &v2);
    let mut d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), pipe_entry]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let (client, writer) = install_through_pipe(&d, &v2, &pipe, 2 << 20);
    d.signal(Signal::TERM);
    wait_for("the listener to close", || {
        try_request(&d.socket, &request("GET", "/status", &[], None))
            .is_err()
            .then_some(())
    });
    // The source ends early: the install fails and rolls back.
    drop(writer);
    let answer = client.join().unwrap().unwrap();
    answer.assert_error(502, "integrity");
    assert!(d.wait_exit().success(), "{}", d.log());

    let d = Daemon::start(&s.root());
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    let task = d.task("pkg").unwrap();
    assert_eq!(
        (task["state"].as_str(), task["error"]["code"].as_str()),
        (Some("ERROR"), Some("integrity"))
    );
    wait_tmp_clean(&s.root());
}

/// Crashes the daemon (abort, as at a power cut) at each step of a promote, restarts it, and
/// checks the invariants and that the next operations succeed.
#[test]
fn a_crash_at_any_step_of_a_promote_is_recovered_at_restart() {
    let points = [
        "repo.link.symlink",
        "repo.link.symlink.done",
        "repo.link.rename",
        "repo.link.rename.done",
        "repo.link.fsync",
        "repo.link.fsync.done",
        "repo.link.unlink",
        "repo.link.unlink.done",
        "repo.link.fsync#2",
        "repo.link.fsync.done#2",
    ];
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixtures: Vec<Fixture> = ["1", "2", "3"]
        .iter()
        .map(|v| standard(&fx, "pkg", v))
        .collect();
    let entries: Vec<_> = fixtures.iter().map(Fixture::layout_entry).collect();
    let contents = |v: &str| standard_files("pkg", v);
    let mut outcomes = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let root = s.path().join(format!("root-{i}"));
        let mut d = Daemon::start(&root);
        d.set_catalog(&entries);
        d.post("/pkg/install", Some(&json!({"version": "1"})))
            .assert_ok_empty();
        d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
            .assert_ok_empty();
        d.stop();

        let mut d = Daemon::start_with(
            &root,
            DaemonOptions {
                env: vec![("OUTPOST_FAILPOINT".into(), (*point).into())],
                ..Default::default()
            },
        );
        let crashed = try_request(
            &d.socket,
            &request("POST", "/pkg/experiment/promote", &[], None),
        );
        assert!(crashed.is_err(), "{point}: the daemon answered {crashed:?}");
        let status = d.wait_exit();
        assert!(!status.success(), "{point}: {status}");
        assert!(
            d.log().contains(&format!(
                "failure point {}",
                point.split('#').next().unwrap()
            )),
            "{point}: {}",
            d.log()
        );

        let d = Daemon::start(&root);
        d.wait_gc_runs(0, 1);
        let (stable, experiment) = assert_invariants(&root, "pkg", &contents);
        // Either the old state or the new one; never something else.
        match (stable.as_str(), experiment.as_deref()) {
            ("1", Some("2")) | ("2", None) => {}
            other => panic!("{point}: unexpected state {other:?}"),
        }
        assert_eq!(
            d.versions("pkg"),
            Some((stable.clone(), experiment.clone().unwrap_or_default())),
            "{point}: status agrees with the disk"
        );
        let task = d.task("pkg").unwrap();
        assert_eq!(task["operation"], "promote_experiment", "{point}");
        assert_eq!(task["state"], "ERROR", "{point}");
        wait_tmp_clean(&root);
        // The next operations succeed from either state.
        if experiment.is_some() {
            d.post("/pkg/experiment/promote", None).assert_ok_empty();
        }
        d.post("/pkg/experiment/start", Some(&json!({"version": "3"})))
            .assert_ok_empty();
        d.post("/pkg/experiment/promote", None).assert_ok_empty();
        assert_eq!(
            assert_invariants(&root, "pkg", &contents),
            ("3".into(), None),
            "{point}"
        );
        outcomes.push((stable, experiment));
    }
    // The points before the stable link moved keep the old state, those after give the new.
    assert_eq!(outcomes[0], ("1".into(), Some("2".into())));
    assert_eq!(outcomes[points.len() - 1], ("2".into(), None));
}

/// The same for an install over an older stable: the staged tree is synced, renamed into
/// place, then the link switches.
#[test]
fn a_crash_during_an_install_is_recovered_at_restart() {
    let points = [
        "repo.version.sync",
        "repo.version.rename",
        "repo.version.rename.done",
        "repo.version.fsync.done",
        "repo.link.rename",
        "repo.link.rename.done",
        "repo.link.fsync.done",
    ];
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let contents = |v: &str| standard_files("pkg", v);
    for (i, point) in points.iter().enumerate() {
        let root = s.path().join(format!("root-{i}"));
        let mut d = Daemon::start(&root);
        d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
        d.post("/pkg/install", Some(&json!({"version": "1"})))
            .assert_ok_empty();
        d.stop();
        let mut d = Daemon::start_with(
            &root,
            DaemonOptions {
                env: vec![("OUTPOST_FAILPOINT".into(), (*point).into())],
                ..Default::default()
            },
        );
        let body = serde_json::to_vec(&json!({"version": "2"})).unwrap();
        let crashed = try_request(
            &d.socket,
            &request(
                "POST",
                "/pkg/install",
                &[("Content-Type", "application/json")],
                Some(&body),
            ),
        );
        assert!(crashed.is_err(), "{point}: answered {crashed:?}");
        assert!(!d.wait_exit().success());

        let d = Daemon::start(&root);
        d.wait_gc_runs(0, 1);
        let (stable, experiment) = assert_invariants(&root, "pkg", &contents);
        assert!(stable == "1" || stable == "2", "{point}: {stable}");
        assert_eq!(experiment, None);
        assert_eq!(d.task("pkg").unwrap()["state"], "ERROR", "{point}");
        wait_tmp_clean(&root);
        d.post("/pkg/install", Some(&json!({"version": "2"})))
            .assert_ok_empty();
        assert_eq!(
            assert_invariants(&root, "pkg", &contents),
            ("2".into(), None),
            "{point}"
        );
    }
}

#[test]
fn staging_leftovers_of_a_crash_are_removed_at_start() {
    let s = Scratch::new();
    let root = s.root();
    let leftover = root.join("tmp/install-3f9a/usr/lib");
    fs_err::create_dir_all(&leftover).unwrap();
    fs_err::write(leftover.join("partial.so"), noise(1024, 1)).unwrap();
    fs_err::write(root.join("tmp/removed-pkg-1a2b"), "x").unwrap();
    let d = Daemon::start(&root);
    wait_tmp_clean(&root);
    assert!(d.gc_runs() >= 1);
    assert!(d.log().contains("removed staging leftovers"), "{}", d.log());
}

/// GC runs after each operation (after the answer) and keeps versions locked by a live
/// process; once the lock's process is gone, the next collection removes the version.
#[test]
fn gc_after_each_operation_respects_locks() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixtures: Vec<Fixture> = ["1", "2", "3"]
        .iter()
        .map(|v| standard(&fx, "pkg", v))
        .collect();
    let d = Daemon::start(&s.root());
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    let root = s.root();
    let runs = d.wait_gc_runs(0, 1);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let runs = d.wait_gc_runs(runs, 1);

    // A live process (a child we control) uses version 1.
    let mut user = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let lock_dir = root.join("run/locks/pkg/1");
    fs_err::create_dir_all(&lock_dir).unwrap();
    fs_err::write(lock_dir.join(user.id().to_string()), "").unwrap();
    d.post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    let runs = d.wait_gc_runs(runs, 1);
    assert!(
        version_exists(&root, "pkg", "1"),
        "a locked version was collected"
    );
    assert_eq!(
        d.debug_vars()["daemon"]["gc"]["last"]["kept_locked"],
        json!(["pkg 1"])
    );

    // Unlocked, unreferenced versions go after the next operation.
    d.post("/pkg/experiment/start", Some(&json!({"version": "3"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    let runs = d.wait_gc_runs(runs, 2);
    assert!(
        !version_exists(&root, "pkg", "3"),
        "the stopped experiment stays"
    );
    assert!(version_exists(&root, "pkg", "1"));

    user.kill().unwrap();
    user.wait().unwrap();
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    d.wait_gc_runs(runs, 1);
    assert!(
        !version_exists(&root, "pkg", "1"),
        "a dead process's lock still counts"
    );
    assert!(
        !lock_dir.exists(),
        "the dead lock and its directory are cleaned"
    );
    assert_invariants(&root, "pkg", &|v| standard_files("pkg", v));
}

/// With `packages.gc_interval` small, collections happen on the timer with no operation at
/// all: an unreferenced version appears and goes; a locked one stays until its process dies.
#[test]
fn gc_runs_on_the_timer() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let config = s.config("packages:\n  gc_interval: 150ms\n");
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    d.set_catalog(&[v1.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let root = s.root();
    let runs = d.wait_gc_runs(0, 2);

    // Unreferenced version directories, one of them in use by a live process.
    let mut user = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    for v in ["0.8", "0.9"] {
        fs_err::create_dir_all(root.join("packages/pkg").join(v).join("bin")).unwrap();
    }
    let lock_dir = root.join("run/locks/pkg/0.8");
    fs_err::create_dir_all(&lock_dir).unwrap();
    fs_err::write(lock_dir.join(user.id().to_string()), "").unwrap();

    let runs = d.wait_gc_runs(runs, 3);
    assert!(
        !version_exists(&root, "pkg", "0.9"),
        "the timer did not collect"
    );
    assert!(
        version_exists(&root, "pkg", "0.8"),
        "a locked version was collected"
    );
    assert!(version_exists(&root, "pkg", "1"), "stable was collected");

    user.kill().unwrap();
    user.wait().unwrap();
    d.wait_gc_runs(runs, 2);
    assert!(!version_exists(&root, "pkg", "0.8"));
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    // No operation ran meanwhile: the last task is still the install.
    assert_eq!(d.task("pkg").unwrap()["operation"], "install");
}

/// `packages.gc_interval: 0` turns the timer off (it used to panic the timer task); GC still
/// follows each operation.
#[test]
fn a_zero_gc_interval_turns_the_timer_off() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let config = s.config("packages:\n  gc_interval: 0\n");
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    let runs = d.wait_gc_runs(0, 1);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    d.wait_gc_runs(runs, 2);
    assert!(!version_exists(&s.root(), "pkg", "1"));
    let log = d.log();
    assert!(log.contains("no periodic garbage collection"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
