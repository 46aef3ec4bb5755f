//! Operations under concurrency (status never waits, mutations are served in turn and never
//! refused, a client that goes away does not leave a half state) and lifecycle hooks.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use outpost_testkit::noise;
use serde_json::{Value, json};
use support::*;

fn post_in_thread(
    d: &Daemon,
    path: &str,
    body: Option<Value>,
) -> std::thread::JoinHandle<Response> {
    let socket = d.socket.clone();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let headers: &[(&str, &str)] = if bytes.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        send(&socket, &request("POST", &path, headers, bytes.as_deref()))
    })
}

fn gzip_fixture(dir: &std::path::Path, name: &str, version: &str) -> Fixture {
    let mut files = standard_files(name, version);
    files.push(("payload".into(), noise(3 << 20, 11), 0o644));
    package_as(
        dir,
        name,
        version,
        files,
        outpost_fetch::pack::PackFormat::Gzip,
    )
}

/// Holds an install open on a named pipe until the returned writer is fed or dropped.
fn blocked_install(
    d: &Daemon,
    fixture: &Fixture,
    pipe: &std::path::Path,
) -> (std::thread::JoinHandle<Response>, fs_err::File, Vec<u8>) {
    let client = post_in_thread(
        d,
        &format!("/{}/install", fixture.name),
        Some(json!({"version": fixture.version})),
    );
    let mut writer = fs_err::OpenOptions::new().write(true).open(pipe).unwrap();
    let data = fs_err::read(&fixture.layer_blob).unwrap();
    writer.write_all(&data[..2 << 20]).unwrap();
    wait_for("the install to run", || {
        d.task(&fixture.name)
            .as_ref()
            .and_then(running_progress)
            .filter(|(_, n)| *n > 0)
    });
    (client, writer, data[2 << 20..].to_vec())
}

/// While an install is stuck waiting for its source, `/status`, `/catalog`, `/debug/vars` and
/// `/telemetry` keep answering, and show it running.
#[test]
fn reads_never_wait_for_a_running_operation() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let slow = gzip_fixture(&fx, "slow", "1");
    let (entry, pipe) = fifo_entry(&fx, &slow);
    let d = Daemon::start(&s.root());
    d.set_catalog(&[entry]);
    let (client, mut writer, rest) = blocked_install(&d, &slow, &pipe);
    for _ in 0..50 {
        let task = d.task("slow").unwrap();
        assert_eq!(task["state"], "RUNNING");
        assert!(d.get("/catalog").status == 200);
        assert!(d.get("/telemetry").status == 200);
        assert_eq!(
            d.debug_vars()["status"]["remote_config_state"][0]["task"]["state"],
            "RUNNING"
        );
    }
    writer.write_all(&rest).unwrap();
    drop(writer);
    client.join().unwrap().assert_ok_empty();
    assert_eq!(d.versions("slow"), Some(("1".into(), String::new())));
}

/// Two mutations sent at once: the second waits for the first (it is not started, not
/// refused) and is served when the first finishes.
#[test]
fn concurrent_mutations_are_served_in_turn() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let slow = gzip_fixture(&fx, "slow", "1");
    let other = standard(&fx, "other", "1");
    let (entry, pipe) = fifo_entry(&fx, &slow);
    let d = Daemon::start(&s.root());
    d.set_catalog(&[entry, other.layout_entry()]);
    let (first, mut writer, rest) = blocked_install(&d, &slow, &pipe);

    let second = post_in_thread(&d, "/other/install", Some(json!({"version": "1"})));
    let third = post_in_thread(&d, "/slow/experiment/stop", None);
    wait_for("two mutations to queue", || {
        (d.debug_vars()["daemon"]["operations_waiting"] == 2).then_some(())
    });
    // Queued, not started: no task for `other` yet, and the first is still running.
    assert_eq!(d.task("other"), None);
    assert_eq!(d.task("slow").unwrap()["state"], "RUNNING");

    writer.write_all(&rest).unwrap();
    drop(writer);
    first.join().unwrap().assert_ok_empty();
    second.join().unwrap().assert_ok_empty();
    third.join().unwrap().assert_ok_empty();
    assert_eq!(d.debug_vars()["daemon"]["operations_waiting"], 0);
    assert_eq!(d.versions("slow"), Some(("1".into(), String::new())));
    assert_eq!(d.versions("other"), Some(("1".into(), String::new())));
    assert_eq!(d.task("slow").unwrap()["operation"], "stop_experiment");
}

/// Clients hammer `/status` while others install, start, stop and promote experiments of
/// three packages; every answer is well formed and consistent, every mutation is served, and
/// the final state is the one the last operations asked for.
#[test]
fn status_stays_consistent_while_operations_run() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let names = ["alpha", "beta", "gamma"];
    let versions = ["1", "2", "3", "4"];
    let mut entries = Vec::new();
    for n in names {
        for v in versions {
            entries.push(standard(&fx, n, v).layout_entry());
        }
    }
    let d = Daemon::start(&s.root());
    d.set_catalog(&entries);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let socket = d.socket.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) || seen == 0 {
                    let r = send(&socket, &request("GET", "/status", &[], None));
                    assert_eq!(r.status, 200);
                    r.assert_json_convention();
                    let v = r.json();
                    for (name, state) in v["packages"].as_object().unwrap() {
                        let stable = state["Stable"].as_str().unwrap();
                        let exp = state["Experiment"].as_str().unwrap();
                        assert!(versions.contains(&stable), "{name}: stable {stable:?}");
                        assert!(exp.is_empty() || versions.contains(&exp), "{name}: {exp:?}");
                        assert_ne!(stable, exp, "{name}: experiment equals stable");
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    let writers: Vec<_> = names
        .iter()
        .map(|name| {
            let socket = d.socket.clone();
            let name = (*name).to_owned();
            std::thread::spawn(move || {
                let post = |path: String, body: Option<Value>| {
                    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
                    let headers: &[(&str, &str)] = if bytes.is_some() {
                        &[("Content-Type", "application/json")]
                    } else {
                        &[]
                    };
                    let r = send(&socket, &request("POST", &path, headers, bytes.as_deref()));
                    r.assert_ok_empty();
                };
                post(format!("/{name}/install"), Some(json!({"version": "1"})));
                post(
                    format!("/{name}/experiment/start"),
                    Some(json!({"version": "2"})),
                );
                post(format!("/{name}/experiment/promote"), None);
                post(
                    format!("/{name}/experiment/start"),
                    Some(json!({"version": "3"})),
                );
                post(format!("/{name}/experiment/stop"), None);
                post(format!("/{name}/install"), Some(json!({"version": "4"})));
                post(
                    format!("/{name}/experiment/start"),
                    Some(json!({"version": "3"})),
                );
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    for name in names {
        assert_eq!(d.versions(name), Some(("4".into(), "3".into())), "{name}");
        assert_eq!(d.task(name).unwrap()["state"], "DONE");
        assert_invariants(&s.root(), name, &|v| standard_files(name, v));
    }
}

/// A client that hangs up in the middle of an install does not stop it half-way: the install
/// completes and is recorded.
#[test]
fn a_client_that_disconnects_does_not_leave_a_half_state() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let slow = gzip_fixture(&fx, "slow", "1");
    let (entry, pipe) = fifo_entry(&fx, &slow);
    let d = Daemon::start(&s.root());
    d.set_catalog(&[entry]);
    // Send the request by hand and hang up once it runs.
    let mut stream = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let body = br#"{"version": "1"}"#;
    stream
        .write_all(
            &request(
                "POST",
                "/slow/install",
                &[("Content-Type", "application/json")],
                Some(body),
            )
            .to_bytes(),
        )
        .unwrap();
    let mut writer = fs_err::OpenOptions::new().write(true).open(&pipe).unwrap();
    let data = fs_err::read(&slow.layer_blob).unwrap();
    writer.write_all(&data[..2 << 20]).unwrap();
    wait_for("the install to run", || {
        d.task("slow").as_ref().and_then(running_progress)
    });
    drop(stream);
    writer.write_all(&data[2 << 20..]).unwrap();
    drop(writer);
    wait_for("the install to finish", || {
        (d.task("slow").unwrap()["state"] == "DONE").then_some(())
    });
    assert_eq!(d.versions("slow"), Some(("1".into(), String::new())));
    assert_complete(&s.root().join("packages/slow/1"), &slow.files);
}

/// A post-install hook that fails after the switch: the new version is stable, and the answer
/// and the task say so, with the hook's exit code and last stderr lines, under `hook_failed`.
#[test]
fn a_failing_post_install_hook_says_what_is_now_true() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = package(
        &fx,
        "pkg",
        "2",
        with_hook(
            standard_files("pkg", "2"),
            "post-install",
            "#!/bin/sh\necho 'reading config' >&2\necho 'missing api_key' >&2\nexit 3\n",
        ),
    );
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let message = d
        .post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_error(500, "hook_failed");
    assert_eq!(
        message,
        "2 is now stable, but its post-install hook failed (exit 3): reading config; \
         missing api_key"
    );
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
    let task = d.task("pkg").unwrap();
    assert_eq!(
        (task["state"].as_str(), task["error"]["code"].as_str()),
        (Some("ERROR"), Some("hook_failed"))
    );
    assert_eq!(task["error"]["message"].as_str(), Some(message.as_str()));
}

#[test]
fn a_failing_post_experiment_start_hook_rolls_the_experiment_back() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let bad = package(
        &fx,
        "pkg",
        "2",
        with_hook(
            standard_files("pkg", "2"),
            "post-experiment-start",
            "#!/bin/sh\necho \"cannot start $OUTPOST_PACKAGE $OUTPOST_VERSION\" >&2\nexit 3\n",
        ),
    );
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), bad.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let runs = d.gc_runs();
    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_error(500, "hook_failed");
    assert_eq!(
        message,
        "experiment 2 was rolled back: its post-experiment-start hook failed (exit 3): cannot \
         start pkg 2"
    );
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert_eq!(link_target(&s.root(), "pkg", "experiment"), None);
    let task = d.task("pkg").unwrap();
    assert_eq!(
        (task["state"].as_str(), task["error"]["code"].as_str()),
        (Some("ERROR"), Some("hook_failed"))
    );
    // The hook's output reached the daemon log.
    assert!(d.log().contains("cannot start pkg 2"), "{}", d.log());
    // The rolled-back version is collected.
    d.wait_gc_runs(runs, 1);
    assert!(!version_exists(&s.root(), "pkg", "2"));
    assert_invariants(&s.root(), "pkg", &|v| standard_files("pkg", v));
}

#[test]
fn hooks_get_their_environment_and_post_install_gets_install_args() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let out = s.path().join("hooks.out");
    let script = format!(
        "#!/bin/sh\n{{ echo \"event=$OUTPOST_EVENT pkg=$OUTPOST_PACKAGE version=$OUTPOST_VERSION path=$OUTPOST_PATH cwd=$(pwd) home=${{HOME:-unset}}\"; for a in \"$@\"; do echo \"arg=$a\"; done; }} >> {}\n",
        out.display()
    );
    let files = |v: &str| {
        let mut f = standard_files("pkg", v);
        for event in [
            "post-install",
            "post-experiment-start",
            "pre-experiment-stop",
            "post-promote",
            "pre-remove",
        ] {
            f = with_hook(f, event, &script);
        }
        f
    };
    let fixtures: Vec<Fixture> = ["1", "2", "3"]
        .iter()
        .map(|v| package(&fx, "pkg", v, files(v)))
        .collect();
    let d = Daemon::start(&s.root());
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    let dir = |v: &str| s.root().join("packages/pkg").join(v).display().to_string();

    d.post(
        "/pkg/install",
        Some(&json!({"version": "1", "install_args": ["--flag", "two words"]})),
    )
    .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/promote", None).assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "3"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    d.post("/pkg/remove", None).assert_ok_empty();
    let got = fs_err::read_to_string(&out).unwrap();
    let line = |event: &str, v: &str| {
        format!(
            "event={event} pkg=pkg version={v} path={} cwd={} home=unset",
            dir(v),
            dir(v)
        )
    };
    let expected = [
        line("post-install", "1"),
        "arg=--flag".into(),
        "arg=two words".into(),
        line("post-experiment-start", "2"),
        line("post-promote", "2"),
        line("post-experiment-start", "3"),
        line("pre-experiment-stop", "3"),
        line("pre-remove", "2"),
    ]
    .join("\n");
    assert_eq!(got.trim_end(), expected);
}

/// A failing pre-experiment-stop hook refuses the stop: the experiment keeps running.
#[test]
fn a_failing_pre_experiment_stop_hook_keeps_the_experiment() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = package(
        &fx,
        "pkg",
        "2",
        with_hook(
            standard_files("pkg", "2"),
            "pre-experiment-stop",
            "#!/bin/sh\nexit 1\n",
        ),
    );
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    let message = d
        .post("/pkg/experiment/stop", None)
        .assert_error(500, "hook_failed");
    assert_eq!(message, "pre-experiment-stop hook of pkg 2 failed (exit 1)");
    assert_eq!(d.versions("pkg"), Some(("1".into(), "2".into())));
    // Promote still works.
    d.post("/pkg/experiment/promote", None).assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
}
