//! Safe experiments end to end (`docs/experiment-safety.md`): the real daemon watches an
//! experiment with the health command of packages built here (passing, failing, hanging,
//! flapping, or turning bad after a number of runs), and stops it, lets it expire, or
//! promotes it; the watch survives a SIGKILL with its deadline; a racing promote leaves one
//! outcome; malformed policies are refused.
//!
//! Intervals are 100 ms and deadlines a few hundred ms (the daemon's floor on `max_duration`
//! is lowered with `OUTPOST_EXPERIMENT_MIN_DURATION`); nothing sleeps for a fixed time: each
//! test polls `/status` until the outcome, and timing claims are checked on the timestamps the
//! daemon records.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::path::Path;

use outpost_types::wire::parse_rfc3339;
use serde_json::{Value, json};
use support::*;

/// A daemon whose shortest `max_duration` is 100 ms.
fn fast_daemon(root: &Path) -> Daemon {
    Daemon::start_with(root, fast_options())
}

fn fast_options() -> DaemonOptions {
    DaemonOptions {
        env: vec![("OUTPOST_EXPERIMENT_MIN_DURATION".into(), "100ms".into())],
        ..Default::default()
    }
}

/// Version `version` of `pkg` shipping `script` as its `outpost/health`.
fn with_health(dir: &Path, version: &str, script: &str) -> Fixture {
    let mut files = standard_files("pkg", version);
    files.push(("outpost/health".into(), script.as_bytes().to_vec(), 0o755));
    package(dir, "pkg", version, files)
}

/// A script that passes its first `passes` runs and fails after, counting in `counter`.
fn turns_bad_after(counter: &Path, passes: u32) -> String {
    format!(
        "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {c}\necho \"run $n of $OUTPOST_EXPERIMENT_VERSION beside $OUTPOST_STABLE_VERSION\"\n[ $n -le {passes} ]\n",
        c = counter.display()
    )
}

/// Starts a daemon with `pkg` 1 installed and `fixtures` in the catalog.
fn installed(root: &Path, fixtures: &[&Fixture], stable: &Fixture) -> Daemon {
    let d = fast_daemon(root);
    let mut entries: Vec<Value> = fixtures.iter().map(|f| f.layout_entry()).collect();
    entries.push(stable.layout_entry());
    d.set_catalog(&entries);
    d.post("/pkg/install", Some(&json!({"version": stable.version})))
        .assert_ok_empty();
    d
}

/// The `experiment_watch` of `pkg` in `/status`.
fn watch(d: &Daemon) -> Option<Value> {
    d.package_state("pkg")
        .and_then(|p| p.get("experiment_watch").cloned())
}

/// Waits until `pkg` has no experiment and its last task is finished; returns the task.
fn wait_experiment_gone(d: &Daemon) -> Value {
    wait_for("the experiment to end", || {
        let task = d.task("pkg")?;
        let (_, experiment) = d.versions("pkg")?;
        (experiment.is_empty() && task["state"] != "RUNNING").then_some(task)
    })
}

fn history(d: &Daemon) -> Vec<Value> {
    let r = d.get("/pkg/experiment/history");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["package"], "pkg");
    v["watches"].as_array().unwrap().clone()
}

fn ms(v: &Value) -> u64 {
    parse_rfc3339(v.as_str().unwrap()).unwrap()
}

/// `/status` agrees with the links on disk.
fn assert_status_is_disk(d: &Daemon, root: &Path) {
    let (stable, experiment) = d.versions("pkg").unwrap();
    assert_eq!(Some(stable), link_target(root, "pkg", "stable"));
    assert_eq!(
        (!experiment.is_empty()).then_some(experiment),
        link_target(root, "pkg", "experiment")
    );
    for entry in fs_err::read_dir(root.join("packages/pkg")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains('@'), "temporary link left behind: {name}");
    }
}

#[test]
fn consecutive_failures_roll_back_with_the_output_in_the_task() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let counter = s.path().join("runs");
    let v2 = with_health(&fx, "2", &turns_bad_after(&counter, 2));
    let d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms", "failures": 3}})),
    )
    .assert_ok_empty();
    let w = watch(&d).expect("a watch while the experiment runs");
    assert_eq!(w["version"], "2");
    // The default deadline: one hour after the start.
    assert_eq!(ms(&w["deadline"]) - ms(&w["started_at"]), 3_600_000);
    assert_eq!(w["auto_promote_at"], Value::Null);
    let task = wait_experiment_gone(&d);
    assert_eq!(task["state"], "ERROR", "{task}");
    assert_eq!(task["operation"], "auto_stop_experiment", "{task}");
    assert_eq!(task["error"]["code"], "health_check_failed", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failed 3 time(s) in a row") && message.contains("run 5 of 2 beside 1"),
        "{message}"
    );
    // Exactly two passes and three failures ran: the watch acted on the third failure.
    assert_eq!(fs_err::read_to_string(&counter).unwrap().trim(), "5");
    assert_eq!(watch(&d), None);
    assert_eq!(link_target(&s.root(), "pkg", "experiment"), None);
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    let past = history(&d);
    assert_eq!(past.len(), 1, "{past:?}");
    assert_eq!(past[0]["outcome"], "health_check_failed");
    assert_eq!(past[0]["version"], "2");
    assert_eq!(past[0]["stable_version"], "1");
    let checks = past[0]["checks"].as_array().unwrap();
    let oks: Vec<bool> = checks.iter().map(|c| c["ok"].as_bool().unwrap()).collect();
    assert_eq!(oks, [true, true, false, false, false]);
    assert_eq!(checks[4]["exit_code"], 1);
    assert!(checks[4]["output_tail"].as_str().unwrap().contains("run 5"));
    // Runs start an interval apart (the first at the start, no grace). The times recorded
    // are the runs' ends, so two neighbours may be closer by the difference of their lengths
    // (a few ms on a loaded machine); the span of the five is four intervals, less one run.
    let times: Vec<u64> = checks.iter().map(|c| ms(&c["at"])).collect();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 75, "runs too close: {times:?}");
    }
    assert!(times[4] - times[0] >= 370, "runs too close: {times:?}");
}

#[test]
fn a_hanging_health_command_times_out_and_rolls_back() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\necho stuck\nexec sleep 30\n");
    let d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms", "timeout": "150ms", "failures": 2}})),
    )
    .assert_ok_empty();
    let task = wait_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "health_check_failed", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("timed out") && message.contains("stuck"),
        "{message}"
    );
    let past = history(&d);
    let checks = past[0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert!(
        checks
            .iter()
            .all(|c| c["exit_code"].is_null() && c["ok"] == false)
    );
}

#[test]
fn a_flapping_health_command_rolls_back_though_it_never_fails_twice_in_a_row() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let counter = s.path().join("runs");
    let script = format!(
        "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {c}\n[ $((n % 2)) -eq 1 ]\n",
        c = counter.display()
    );
    let v2 = with_health(&fx, "2", &script);
    let d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms", "failures": 3}, "auto_promote_after": "10s"})),
    )
    .assert_ok_empty();
    let task = wait_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "health_check_failed", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flapping"),
        "{task}"
    );
    // pass, fail, pass, fail, pass: the fourth change is on the fifth run.
    assert_eq!(fs_err::read_to_string(&counter).unwrap().trim(), "5");
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
}

#[test]
fn an_experiment_expires_at_its_deadline() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\necho fine\n");
    let d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms"}, "max_duration": 0.5})),
    )
    .assert_ok_empty();
    let w = watch(&d).unwrap();
    let deadline = ms(&w["deadline"]);
    assert_eq!(deadline - ms(&w["started_at"]), 500);
    let task = wait_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("deadline") && message.contains("fine"),
        "{message}"
    );
    let past = history(&d);
    assert_eq!(past[0]["outcome"], "experiment_expired");
    let ended = ms(&past[0]["ended_at"]);
    assert!(ended >= deadline, "stopped before its deadline");
    assert!(
        past[0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );
}

#[test]
fn auto_promote_after_a_clean_period_and_the_request_beats_the_catalog() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    // The package's own file and the catalog's command both fail; the request's passes.
    let mut files = standard_files("pkg", "2");
    files.push((
        "outpost/health".into(),
        b"#!/bin/sh\nexit 1\n".to_vec(),
        0o755,
    ));
    files.push(("bin/ok".into(), b"#!/bin/sh\necho ok\n".to_vec(), 0o755));
    let v2 = package(&fx, "pkg", "2", files);
    let d = fast_daemon(&s.root());
    let mut entry = v2.layout_entry();
    entry["health"] = json!({"command": ["/bin/false"], "interval": "100ms", "failures": 1});
    d.set_catalog(&[v1.layout_entry(), entry]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"command": ["bin/ok"]}, "auto_promote_after": "300ms"})),
    )
    .assert_ok_empty();
    let w = watch(&d).unwrap();
    let started = ms(&w["started_at"]);
    assert_eq!(ms(&w["auto_promote_at"]) - started, 300);
    let task = wait_for("the automatic promote", || {
        d.task("pkg")
            .filter(|t| t["state"] == "DONE" && t["operation"] != "start_experiment")
    });
    assert_eq!(task["operation"], "auto_promote_experiment", "{task}");
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
    assert_status_is_disk(&d, &s.root());
    let past = history(&d);
    assert_eq!(past[0]["outcome"], "auto_promoted");
    assert!(ms(&past[0]["ended_at"]) >= started + 300);
    // The catalog's interval applied (the request did not give one), with the request's command.
    let checks = past[0]["checks"].as_array().unwrap();
    assert!(
        !checks.is_empty() && checks.iter().all(|c| c["output_tail"] == "ok\n"),
        "{checks:?}"
    );
}

#[test]
fn nothing_runs_during_the_grace_period() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\necho broken\nexit 2\n");
    let d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms", "failures": 1, "grace": "600ms"}})),
    )
    .assert_ok_empty();
    let w = watch(&d).unwrap();
    assert_eq!(w["last_check"], Value::Null);
    assert_eq!(w["consecutive_failures"], 0);
    let task = wait_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "health_check_failed");
    let past = history(&d);
    let started = ms(&past[0]["started_at"]);
    let checks = past[0]["checks"].as_array().unwrap();
    // One run, which ended after the grace period.
    assert_eq!(checks.len(), 1);
    assert!(ms(&checks[0]["at"]) >= started + 600, "{past:?}");
}

#[test]
fn a_watch_survives_a_sigkill_with_its_deadline() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\necho alive\n");
    let mut d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms"}, "max_duration": "3s"})),
    )
    .assert_ok_empty();
    let before = wait_for("a health run", || {
        watch(&d).filter(|w| !w["last_check"].is_null())
    });
    d.kill();
    let d = fast_daemon(&s.root());
    let after = watch(&d).expect("the watch resumed");
    assert_eq!(after["deadline"], before["deadline"]);
    assert_eq!(after["started_at"], before["started_at"]);
    wait_for("a health run of the new daemon", || {
        watch(&d).filter(|w| w["last_check"]["ok"] == true)
    });
    let task = wait_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    let past = history(&d);
    assert!(ms(&past[0]["ended_at"]) >= ms(&before["deadline"]));
    assert_status_is_disk(&d, &s.root());
}

#[test]
fn a_deadline_that_passed_while_the_daemon_was_down_stops_the_experiment_at_start_up() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let mut d = installed(&s.root(), &[&v2], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "max_duration": "1500ms"})),
    )
    .assert_ok_empty();
    let deadline = ms(&watch(&d).unwrap()["deadline"]);
    d.kill();
    assert_eq!(
        link_target(&s.root(), "pkg", "experiment"),
        Some("2".into())
    );
    // Down past the deadline.
    wait_for("the deadline to pass", || {
        (outpost_now_ms() > deadline).then_some(())
    });
    let d = fast_daemon(&s.root());
    let task = wait_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    assert_eq!(link_target(&s.root(), "pkg", "experiment"), None);
    assert_status_is_disk(&d, &s.root());
}

fn outpost_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A promote sent while the watch is stopping the experiment: exactly one wins, the loser
/// changes nothing, and `/status` says what the disk says.
#[test]
fn a_promote_racing_an_automatic_stop_leaves_one_outcome() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let versions: Vec<String> = (2..8).map(|n| n.to_string()).collect();
    let fixtures: Vec<Fixture> = versions
        .iter()
        .map(|v| with_health(&fx, v, "#!/bin/sh\nexit 1\n"))
        .collect();
    let d = installed(&s.root(), &fixtures.iter().collect::<Vec<_>>(), &v1);
    let mut outcomes = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let stable_before = d.versions("pkg").unwrap().0;
        d.post(
            "/pkg/experiment/start",
            Some(&json!({"version": v, "health": {"interval": "100ms", "failures": 1, "grace": format!("{}ms", i * 3)}})),
        )
        .assert_ok_empty();
        let promote = d.post("/pkg/experiment/promote", None);
        let task = wait_experiment_gone(&d);
        let (stable, _) = d.versions("pkg").unwrap();
        if promote.status == 200 {
            assert_eq!(stable, *v, "promote answered 200 but {stable} is stable");
            assert_eq!(task["operation"], "promote_experiment", "{task}");
            assert_eq!(history(&d).last().unwrap()["outcome"], "promoted");
            outcomes.push("promoted");
        } else {
            promote.assert_error(409, "invalid_state");
            assert_eq!(stable, stable_before);
            assert_eq!(
                history(&d).last().unwrap()["outcome"],
                "health_check_failed"
            );
            outcomes.push("rolled back");
        }
        assert_eq!(watch(&d), None);
        assert_status_is_disk(&d, &s.root());
    }
    assert_eq!(outcomes.len(), versions.len());
}

#[test]
fn a_stop_request_ends_the_watch_and_a_new_start_replaces_it() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = with_health(&fx, "2", "#!/bin/sh\necho two\n");
    let v3 = with_health(&fx, "3", "#!/bin/sh\necho three\n");
    let d = installed(&s.root(), &[&v2, &v3], &v1);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms"}})),
    )
    .assert_ok_empty();
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "3", "health": {"interval": "100ms"}})),
    )
    .assert_ok_empty();
    assert_eq!(watch(&d).unwrap()["version"], "3");
    wait_for("a run of 3's health command", || {
        watch(&d).filter(|w| w["last_check"]["output_tail"] == "three\n")
    });
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    assert_eq!(watch(&d), None);
    let past = history(&d);
    let outcomes: Vec<(&str, &str)> = past
        .iter()
        .map(|w| {
            (
                w["version"].as_str().unwrap(),
                w["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("2", "replaced"), ("3", "stopped")]);
    assert_eq!(d.task("pkg").unwrap()["operation"], "stop_experiment");
}

#[test]
fn malformed_policies_are_refused_naming_the_field() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = installed(&s.root(), &[&v2], &v1);
    let task = d.task("pkg").unwrap();
    for (body, field) in [
        (
            json!({"version": "2", "health": {"interval": "fast"}}),
            "health.interval",
        ),
        (
            json!({"version": "2", "health": {"interval": "0ms"}}),
            "health.interval",
        ),
        (
            json!({"version": "2", "health": {"timeout": "1y"}}),
            "health.timeout",
        ),
        (
            json!({"version": "2", "health": {"failures": 0}}),
            "health.failures",
        ),
        (
            json!({"version": "2", "health": {"failures": "3"}}),
            "health.failures",
        ),
        (
            json!({"version": "2", "health": {"grace": -1}}),
            "health.grace",
        ),
        (
            json!({"version": "2", "health": {"command": "/bin/true"}}),
            "health.command",
        ),
        (
            json!({"version": "2", "health": {"command": [""]}}),
            "health.command[0]",
        ),
        (
            json!({"version": "2", "health": {"commands": ["/bin/true"]}}),
            "health.commands",
        ),
        (json!({"version": "2", "health": []}), "health"),
        (
            json!({"version": "2", "max_duration": "forever"}),
            "max_duration",
        ),
        (
            json!({"version": "2", "auto_promote_after": {}}),
            "auto_promote_after",
        ),
    ] {
        let message = d
            .post("/pkg/experiment/start", Some(&body))
            .assert_error(400, "bad_request");
        assert!(message.contains(&format!("{field}:")), "{body}: {message}");
    }
    // A catalog entry with a malformed policy is refused the same way.
    let mut entry = v2.layout_entry();
    entry["health"] = json!({"interval": "soon"});
    let message = d
        .post("/catalog", Some(&json!({"packages": [entry]})))
        .assert_error(400, "bad_request");
    assert!(message.contains("health.interval"), "{message}");
    // Nothing ran: no experiment, the install is still the last task, no history.
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert_eq!(d.task("pkg").unwrap(), task);
    assert!(history(&d).is_empty());
    d.get("/Not_A_Name/experiment/history")
        .assert_error(400, "bad_request");
}

#[test]
fn the_cli_starts_with_a_policy_shows_the_watch_and_follows_it_to_the_end() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let v3 = standard(&fx, "pkg", "3");
    let d = installed(&s.root(), &[&v2, &v3], &v1);
    let counter = s.path().join("runs");
    let cmd = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; echo \"run $((n+1))\"; [ $n -lt 2 ]",
        c = counter.display()
    );
    let out = d.cli(&[
        "experiment",
        "start",
        "pkg",
        "2",
        "--health-cmd",
        &cmd,
        "--health-interval",
        "100ms",
        "--health-failures",
        "2",
        "--max-duration",
        "10m",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = d.cli(&["status"]);
    let text = stdout(&status);
    assert!(
        text.contains("watch pkg 2: rolls back in 9m")
            || text.contains("watch pkg 2: rolls back in 10m"),
        "{text}"
    );
    d.assert_watch_exits(
        &["experiment", "watch", "pkg"],
        1,
        &[
            "FAIL exit 1 run 4",
            "pkg 2 rolled back (health_check_failed)",
        ],
    );
    // A clean run with auto-promote: the watch exits 0.
    let out = d.cli(&[
        "experiment",
        "start",
        "pkg",
        "3",
        "--health-cmd",
        "echo healthy",
        "--health-interval",
        "100ms",
        "--auto-promote-after",
        "300ms",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_watch_exits(
        &["experiment", "watch", "pkg"],
        0,
        &["pass healthy", "pkg 3 promoted (auto_promoted)"],
    );
    assert_eq!(d.versions("pkg"), Some(("3".into(), String::new())));
    // A bad duration is a usage error, caught before anything is sent.
    let out = d.cli(&["experiment", "start", "pkg", "2", "--max-duration", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The start times (ms) each package's health command logged in `log`, in order.
fn logged_starts(log: &Path, name: &str) -> Vec<u64> {
    fs_err::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, _)| *p == name)
        .filter_map(|(_, ns)| ns.trim().parse::<u64>().ok())
        .map(|ns| ns / 1_000_000)
        .collect()
}

#[test]
fn watches_with_one_interval_run_together_after_their_first_run() {
    // Two packages whose experiments start 500 ms apart with a 1 s interval: each first run
    // comes right after its start (so b's is half an interval away from a's runs); from the
    // second on, the runs of both fall on the daemon's shared grid, so they start together
    // (the daemon wakes once for both), never less than an interval after the previous run
    // of the same package. Without the grid b's runs would all stay 500 ms from a's.
    let s = Scratch::new();
    let fx = s.fixtures();
    let log = s.root().join("health-starts.log");
    let d = fast_daemon(&s.root());
    let mut entries = Vec::new();
    for name in ["a", "b"] {
        for v in ["1", "2"] {
            entries.push(package(&fx, name, v, standard_files(name, v)).layout_entry());
        }
    }
    d.set_catalog(&entries);
    let script = format!(
        "echo \"$OUTPOST_PACKAGE $(date +%s%N)\" >> {}",
        log.display()
    );
    for name in ["a", "b"] {
        d.post(&format!("/{name}/install"), Some(&json!({"version": "1"})))
            .assert_ok_empty();
    }
    for name in ["a", "b"] {
        if name == "b" {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let body = json!({
            "version": "2",
            "health": {"command": ["/bin/sh", "-c", script], "interval": "1s"},
        });
        d.post(&format!("/{name}/experiment/start"), Some(&body))
            .assert_ok_empty();
    }
    wait_for("four runs of each watch", || {
        (logged_starts(&log, "a").len() >= 4 && logged_starts(&log, "b").len() >= 4).then_some(())
    });
    let (a, b) = (logged_starts(&log, "a"), logged_starts(&log, "b"));
    let nearest_a = |t: u64| a.iter().map(|x| x.abs_diff(t)).min().unwrap();
    for starts in [&a, &b] {
        for pair in starts.windows(2) {
            assert!(
                pair[1] - pair[0] >= 950,
                "runs closer than the interval: {starts:?}"
            );
        }
    }
    assert!(
        nearest_a(b[0]) >= 300,
        "b's first run follows its own start, off a's runs: {b:?} against {a:?}"
    );
    // A run of b after a's last logged one may be ahead of a's at the same point of the
    // grid, not yet logged: compared are b's runs up to half an interval past a's last.
    let a_last = *a.last().unwrap();
    let compared: Vec<u64> = b[1..]
        .iter()
        .copied()
        .filter(|r| *r < a_last + 500)
        .collect();
    assert!(compared.len() >= 2, "b's later runs: {b:?} against {a:?}");
    for run in &compared {
        assert!(
            nearest_a(*run) < 100,
            "b's run at {run} is {} ms from a's runs {a:?}",
            nearest_a(*run)
        );
    }
}
