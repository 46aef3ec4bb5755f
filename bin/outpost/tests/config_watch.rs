//! The safety watch of config experiments end to end (`docs/config-experiments.md`): the real
//! daemon watches a config experiment with the health command of a package built here, or one
//! the start or the config catalog gives, and stops it on failures, lets it expire, or
//! promotes it; the watch survives a SIGKILL with its deadline; a deadline passed while the
//! daemon was down stops it at start-up; a promote racing an automatic stop leaves one
//! outcome; malformed policies are refused naming the field; and the package watch and the
//! config watch of one package never touch each other.
//!
//! Intervals are 100 ms and deadlines a few hundred ms (the daemon's floor on `max_duration`
//! is lowered with `OUTPOST_EXPERIMENT_MIN_DURATION`); each test polls `/status` until the
//! outcome, and timing claims are checked on the timestamps the daemon records.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use outpost_types::wire::parse_rfc3339;
use serde_json::{Value, json};
use support::*;

/// A daemon whose shortest `max_duration` is 100 ms.
fn fast_daemon(root: &Path) -> Daemon {
    Daemon::start_with(
        root,
        DaemonOptions {
            env: vec![("OUTPOST_EXPERIMENT_MIN_DURATION".into(), "100ms".into())],
            ..Default::default()
        },
    )
}

/// Version `version` of `pkg`, shipping `health` as its `outpost/health` when given.
fn version(dir: &Path, version: &str, health: Option<&str>) -> Fixture {
    let mut files = standard_files("pkg", version);
    if let Some(script) = health {
        files.push(("outpost/health".into(), script.as_bytes().to_vec(), 0o755));
    }
    package(dir, "pkg", version, files)
}

/// A daemon with `stable` installed as `pkg` and `others` in the catalog.
fn installed(root: &Path, stable: &Fixture, others: &[&Fixture]) -> Daemon {
    let d = fast_daemon(root);
    let mut entries: Vec<Value> = others.iter().map(|f| f.layout_entry()).collect();
    entries.push(stable.layout_entry());
    d.set_catalog(&entries);
    d.post("/pkg/install", Some(&json!({"version": stable.version})))
        .assert_ok_empty();
    d
}

/// Inline operations of deployment `id`: `/pkg.yaml` gets `level: <id>`.
fn ops(id: &str) -> Value {
    json!({"deployment_id": id, "file_operations": [
        {"file_op": "merge-patch", "file_path": "/pkg.yaml", "patch": {"level": id}},
    ]})
}

/// A start body of deployment `id` with the policy fields of `policy` (an object).
fn start_body(id: &str, policy: Value) -> Value {
    let mut body = json!({ "operations": ops(id) });
    body.as_object_mut()
        .unwrap()
        .extend(policy.as_object().unwrap().clone());
    body
}

fn start(d: &Daemon, id: &str, policy: Value) {
    d.post(
        "/pkg/config_experiment/start",
        Some(&start_body(id, policy)),
    )
    .assert_ok_empty();
}

/// The entry of `pkg` in `/status`.
fn entry(d: &Daemon) -> Value {
    d.package_state("pkg").unwrap()
}

fn config_watch(d: &Daemon) -> Option<Value> {
    entry(d).get("config_experiment_watch").cloned()
}

fn package_watch(d: &Daemon) -> Option<Value> {
    entry(d).get("experiment_watch").cloned()
}

/// `(stable_config_version, experiment_config_version)`.
fn configs(d: &Daemon) -> (String, String) {
    let e = entry(d);
    (
        e["stable_config_version"].as_str().unwrap().into(),
        e["experiment_config_version"].as_str().unwrap().into(),
    )
}

/// Waits until `pkg` has no config experiment and its last task is finished; returns it.
fn wait_config_experiment_gone(d: &Daemon) -> Value {
    wait_for("the config experiment to end", || {
        let e = entry(d);
        let task = e.get("task")?.clone();
        (e["experiment_config_version"] == "" && task["state"] != "RUNNING").then_some(task)
    })
}

fn history(d: &Daemon, route: &str) -> Vec<Value> {
    let r = d.get(&format!("/pkg/{route}/history"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["package"], "pkg");
    v["watches"].as_array().unwrap().clone()
}

fn config_history(d: &Daemon) -> Vec<Value> {
    history(d, "config_experiment")
}

fn package_history(d: &Daemon) -> Vec<Value> {
    history(d, "experiment")
}

fn ms(v: &Value) -> u64 {
    parse_rfc3339(v.as_str().unwrap()).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Where the config `link` of `pkg` points on disk.
fn config_link(root: &Path, link: &str) -> Option<String> {
    fs_err::read_link(root.join("config/pkg").join(link))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// `/status` agrees with the config links on disk.
fn assert_configs_are_disk(d: &Daemon, root: &Path) {
    let (stable, experiment) = configs(d);
    assert_eq!(
        (!stable.is_empty()).then_some(stable),
        config_link(root, "stable")
    );
    assert_eq!(
        (!experiment.is_empty()).then_some(experiment),
        config_link(root, "experiment")
    );
}

/// A health script that passes its first `passes` runs and fails after, counting in
/// `counter`, and prints what it was given.
fn turns_bad_after(counter: &Path, passes: u32) -> String {
    format!(
        "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {c}\n\
         echo \"run $n config=$OUTPOST_EXPERIMENT_CONFIG_VERSION stable_config=[$OUTPOST_STABLE_CONFIG_VERSION] \
         pkg=$OUTPOST_STABLE_VERSION/[$OUTPOST_EXPERIMENT_VERSION] event=$OUTPOST_EVENT pwd=$(pwd) \
         file=$(cat \"$OUTPOST_CONFIG_PATH/pkg.yaml\" | tr -d '\\n')\"\n[ $n -le {passes} ]\n",
        c = counter.display()
    )
}

#[test]
fn consecutive_failures_stop_the_config_experiment_with_the_output_in_the_task() {
    let s = Scratch::new();
    let counter = s.path().join("runs");
    let v1 = version(&s.fixtures(), "1", Some(&turns_bad_after(&counter, 2)));
    let d = installed(&s.root(), &v1, &[]);
    // No command: the package's own `outpost/health`, in its stable version.
    start(
        &d,
        "c1",
        json!({"health": {"interval": "100ms", "failures": 3}}),
    );
    let w = config_watch(&d).expect("a watch while the config experiment runs");
    assert_eq!(w["version"], "c1");
    // The default deadline: one hour after the start.
    assert_eq!(ms(&w["deadline"]) - ms(&w["started_at"]), 3_600_000);
    assert_eq!(w["auto_promote_at"], Value::Null);
    assert_eq!(
        package_watch(&d),
        None,
        "no package experiment, no package watch"
    );
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["state"], "ERROR", "{task}");
    assert_eq!(task["operation"], "auto_stop_config_experiment", "{task}");
    assert_eq!(task["version"], "c1", "{task}");
    assert_eq!(task["error"]["code"], "health_check_failed", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    let dir = s.root().join("packages/pkg/1");
    assert!(
        message.contains("health check of config experiment c1 of pkg failed 3 time(s) in a row"),
        "{message}"
    );
    // The command saw the config and package versions, ran in the stable version's
    // directory, and read the experiment's config through OUTPOST_CONFIG_PATH.
    let seen = format!(
        "run 5 config=c1 stable_config=[] pkg=1/[] event=health pwd={} file=level: c1",
        dir.display()
    );
    assert!(message.contains(&seen), "{message}\nexpected: {seen}");
    assert_eq!(fs_err::read_to_string(&counter).unwrap().trim(), "5");
    assert_eq!(config_watch(&d), None);
    assert_eq!(configs(&d), (String::new(), String::new()));
    assert_configs_are_disk(&d, &s.root());
    let past = config_history(&d);
    assert_eq!(past.len(), 1, "{past:?}");
    assert_eq!(past[0]["outcome"], "health_check_failed");
    assert_eq!(past[0]["version"], "c1");
    assert_eq!(past[0]["stable_version"], "");
    let oks: Vec<bool> = past[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(oks, [true, true, false, false, false]);
    assert!(package_history(&d).is_empty());
    // The package itself is untouched.
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
}

#[test]
fn a_config_experiment_expires_at_its_deadline_and_a_new_start_replaces_the_watch() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", None);
    let d = installed(&s.root(), &v1, &[]);
    // Promote a first config so that the watched one has a stable config beside it.
    start(&d, "c1", json!({}));
    d.post("/pkg/config_experiment/promote", None)
        .assert_ok_empty();
    start(&d, "c2", json!({"max_duration": "30s"}));
    start(&d, "c3", json!({"max_duration": "600ms"}));
    let w = config_watch(&d).unwrap();
    assert_eq!(w["version"], "c3");
    assert_eq!(ms(&w["deadline"]) - ms(&w["started_at"]), 600);
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["state"], "ERROR", "{task}");
    assert_eq!(task["operation"], "auto_stop_config_experiment", "{task}");
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("config experiment c3 of pkg reached its deadline (600ms"),
        "{message}"
    );
    let past = config_history(&d);
    let outcomes: Vec<(&str, &str)> = past
        .iter()
        .map(|w| {
            (
                w["version"].as_str().unwrap(),
                w["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("c1", "promoted"),
            ("c2", "replaced"),
            ("c3", "experiment_expired")
        ]
    );
    assert_eq!(past[2]["stable_version"], "c1");
    assert!(ms(&past[2]["ended_at"]) >= ms(&w["deadline"]));
    // The stable config is the promoted one, untouched by the expiry.
    assert_eq!(configs(&d), ("c1".into(), String::new()));
    assert_configs_are_disk(&d, &s.root());
    // Counted apart from the package watches (whose series the fleet report reads).
    let telemetry = d.get("/telemetry").text();
    for outcome in ["promoted", "replaced", "experiment_expired"] {
        let series = format!(
            "outpost_daemon_config_experiment_watches_total{{outcome=\"{outcome}\",package=\"pkg\"}} 1"
        );
        assert!(telemetry.contains(&series), "{series} in\n{telemetry}");
    }
    assert!(
        !telemetry.contains("outpost_daemon_experiment_watches_total{"),
        "{telemetry}"
    );
}

#[test]
fn auto_promote_after_a_clean_period_with_the_config_catalog_entry_s_command() {
    let s = Scratch::new();
    let v1 = version(
        &s.fixtures(),
        "1",
        Some("#!/bin/sh\necho package-health\nexit 1\n"),
    );
    let d = installed(&s.root(), &v1, &[]);
    let marker = s.path().join("catalog-health");
    let script = s.path().join("check");
    fs_err::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$OUTPOST_EXPERIMENT_CONFIG_VERSION\" >> {}\necho catalog-health\n",
            marker.display()
        ),
    )
    .unwrap();
    fs_err::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let catalog = json!({
        "c1": {"id": "c1", "file_operations": ops("c1")["file_operations"],
               "health": {"command": [script.display().to_string()], "interval": "100ms", "failures": 1}},
    });
    d.post("/config_catalog", Some(&catalog)).assert_ok_empty();
    assert_eq!(d.get("/config_catalog").json(), catalog);
    // The start gives auto_promote_after and the interval; the entry the command.
    d.post(
        "/pkg/config_experiment/start",
        Some(&json!({"version": "c1", "auto_promote_after": "500ms", "health": {"interval": "150ms"}})),
    )
    .assert_ok_empty();
    let w = config_watch(&d).unwrap();
    assert_eq!(w["version"], "c1");
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["state"], "DONE", "{task}");
    assert_eq!(
        task["operation"], "auto_promote_config_experiment",
        "{task}"
    );
    assert_eq!(configs(&d), ("c1".into(), String::new()));
    assert_configs_are_disk(&d, &s.root());
    let past = config_history(&d);
    assert_eq!(past.len(), 1);
    assert_eq!(past[0]["outcome"], "auto_promoted");
    let checks = past[0]["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    assert!(
        checks
            .iter()
            .all(|c| c["ok"] == true && c["output_tail"] == "catalog-health\n"),
        "{checks:?}"
    );
    // The request's interval won over the entry's, the entry's command over the package's.
    // Runs start 150 ms apart; the times recorded are their ends, so one run's length is
    // allowed for. At 100 ms, six runs would fit before the promote.
    let times: Vec<u64> = checks.iter().map(|c| ms(&c["at"])).collect();
    let span = times.last().unwrap() - times[0];
    assert!(
        times.len() <= 5 && span + 100 >= 150 * (times.len() as u64 - 1),
        "runs too close: {times:?}"
    );
    assert!(ms(&past[0]["ended_at"]) >= ms(&past[0]["started_at"]) + 500);
    let runs = fs_err::read_to_string(&marker).unwrap();
    assert!(runs.lines().all(|l| l == "c1"), "{runs}");
}

#[test]
fn a_config_watch_survives_a_sigkill_with_its_deadline() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", Some("#!/bin/sh\necho alive\n"));
    let mut d = installed(&s.root(), &v1, &[]);
    start(
        &d,
        "c1",
        json!({"health": {"interval": "100ms"}, "max_duration": "3s"}),
    );
    let before = wait_for("a health run", || {
        config_watch(&d).filter(|w| !w["last_check"].is_null())
    });
    d.kill();
    let d = fast_daemon(&s.root());
    let after = config_watch(&d).expect("the config watch resumed");
    assert_eq!(after["deadline"], before["deadline"]);
    assert_eq!(after["started_at"], before["started_at"]);
    assert_eq!(package_watch(&d), None);
    wait_for("a health run of the new daemon", || {
        config_watch(&d).filter(|w| w["last_check"]["ok"] == true)
    });
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    let past = config_history(&d);
    assert_eq!(past.len(), 1);
    assert!(ms(&past[0]["ended_at"]) >= ms(&before["deadline"]));
    assert_configs_are_disk(&d, &s.root());
}

#[test]
fn a_deadline_that_passed_while_the_daemon_was_down_stops_the_config_experiment_at_start_up() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", None);
    let mut d = installed(&s.root(), &v1, &[]);
    start(&d, "c1", json!({"max_duration": "1500ms"}));
    let deadline = ms(&config_watch(&d).unwrap()["deadline"]);
    d.kill();
    assert_eq!(config_link(&s.root(), "experiment"), Some("c1".into()));
    wait_for("the deadline to pass", || {
        (now_ms() > deadline).then_some(())
    });
    let d = fast_daemon(&s.root());
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["operation"], "auto_stop_config_experiment", "{task}");
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    assert_eq!(config_link(&s.root(), "experiment"), None);
    assert_configs_are_disk(&d, &s.root());
}

/// A promote sent while the watch is stopping the config experiment: exactly one wins, the
/// loser changes nothing, and `/status` says what the disk says.
#[test]
fn a_promote_racing_an_automatic_config_stop_leaves_one_outcome() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", Some("#!/bin/sh\nexit 1\n"));
    let d = installed(&s.root(), &v1, &[]);
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let id = format!("c{i}");
        let stable_before = configs(&d).0;
        start(
            &d,
            &id,
            json!({"health": {"interval": "100ms", "failures": 1, "grace": format!("{}ms", i * 3)}}),
        );
        let promote = d.post("/pkg/config_experiment/promote", None);
        let task = wait_config_experiment_gone(&d);
        let (stable, _) = configs(&d);
        let last = config_history(&d).last().unwrap().clone();
        assert_eq!(last["version"], id.as_str());
        if promote.status == 200 {
            assert_eq!(stable, id, "promote answered 200 but {stable} is stable");
            assert_eq!(task["operation"], "promote_config_experiment", "{task}");
            assert_eq!(last["outcome"], "promoted");
            outcomes.push("promoted");
        } else {
            promote.assert_error(409, "invalid_state");
            assert_eq!(stable, stable_before);
            assert_eq!(task["operation"], "auto_stop_config_experiment", "{task}");
            assert_eq!(last["outcome"], "health_check_failed");
            outcomes.push("rolled back");
        }
        assert_eq!(config_watch(&d), None);
        assert_configs_are_disk(&d, &s.root());
    }
    assert_eq!(outcomes.len(), 6);
}

#[test]
fn malformed_policies_are_refused_naming_the_field() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", None);
    let d = installed(&s.root(), &v1, &[]);
    let task = d.task("pkg").unwrap();
    for (policy, field) in [
        (json!({"health": {"interval": "fast"}}), "health.interval"),
        (json!({"health": {"interval": "0ms"}}), "health.interval"),
        (json!({"health": {"failures": 0}}), "health.failures"),
        (
            json!({"health": {"command": "/bin/true"}}),
            "health.command",
        ),
        (json!({"health": {"command": [""]}}), "health.command[0]"),
        (json!({"health": {"commands": ["x"]}}), "health.commands"),
        (json!({"health": []}), "health"),
        (json!({"max_duration": "forever"}), "max_duration"),
        (json!({"max_duration": "0s"}), "max_duration"),
        (json!({"auto_promote_after": {}}), "auto_promote_after"),
    ] {
        let body = start_body("c1", policy.clone());
        let message = d
            .post("/pkg/config_experiment/start", Some(&body))
            .assert_error(400, "bad_request");
        assert!(
            message.contains(&format!("{field}:")),
            "{policy}: {message}"
        );
    }
    // A config catalog entry with a malformed policy is refused the same way, and the catalog
    // is left as it was.
    let bad = json!({"c1": {"id": "c1", "file_operations": [], "health": {"interval": "soon"}}});
    let message = d
        .post("/config_catalog", Some(&bad))
        .assert_error(400, "bad_request");
    assert!(message.contains("health.interval"), "{message}");
    assert_eq!(d.get("/config_catalog").json(), json!({}));
    // Nothing ran: no config experiment, the install is still the last task, no history.
    assert_eq!(configs(&d), (String::new(), String::new()));
    assert_eq!(d.task("pkg").unwrap(), task);
    assert!(config_history(&d).is_empty());
    d.get("/Not_A_Name/config_experiment/history")
        .assert_error(400, "bad_request");
}

/// A package experiment and a config experiment of one package run side by side: each has
/// its own watch, the config watch's rollback leaves the package experiment and its watch
/// alone, and ending the package experiment leaves the config watch alone.
#[test]
fn the_package_watch_and_the_config_watch_of_one_package_are_independent() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", None);
    let v2 = version(&s.fixtures(), "2", Some("#!/bin/sh\necho package-fine\n"));
    let d = installed(&s.root(), &v1, &[&v2]);
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "health": {"interval": "100ms"}, "max_duration": "10m"})),
    )
    .assert_ok_empty();
    let package_before = package_watch(&d).unwrap();
    // A config whose health fails: it is rolled back on its second failure.
    start(
        &d,
        "c1",
        json!({"health": {"command": ["/bin/sh", "-c", "echo config-broken; exit 1"], "interval": "100ms", "failures": 2}, "max_duration": "5m"}),
    );
    let both = entry(&d);
    assert_eq!(both["experiment_watch"]["version"], "2");
    assert_eq!(both["config_experiment_watch"]["version"], "c1");
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["operation"], "auto_stop_config_experiment", "{task}");
    assert_eq!(task["error"]["code"], "health_check_failed", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config-broken"),
        "{task}"
    );
    // The package experiment runs on, watched as before, its runs still passing.
    assert_eq!(d.versions("pkg"), Some(("1".into(), "2".into())));
    let package_after = wait_for("a passing package health run", || {
        package_watch(&d).filter(|w| w["last_check"]["output_tail"] == "package-fine\n")
    });
    assert_eq!(package_after["started_at"], package_before["started_at"]);
    assert_eq!(package_after["deadline"], package_before["deadline"]);
    assert!(package_history(&d).is_empty());
    // The other way round: a config experiment with a passing command, then the package
    // experiment is stopped by a request; the config watch is untouched.
    start(
        &d,
        "c2",
        json!({"health": {"command": ["/bin/sh", "-c", "echo config-fine"], "interval": "100ms"}, "max_duration": "5m"}),
    );
    let config_before = config_watch(&d).unwrap();
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    assert_eq!(package_watch(&d), None);
    let stopped = package_history(&d);
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["outcome"], "stopped");
    let config_after = wait_for("a passing config health run", || {
        config_watch(&d).filter(|w| {
            w["last_check"]["output_tail"] == "config-fine\n"
                && ms(&w["last_check"]["at"]) > ms(&stopped[0]["ended_at"])
        })
    });
    assert_eq!(config_after["version"], "c2");
    assert_eq!(config_after["deadline"], config_before["deadline"]);
    assert_eq!(configs(&d), (String::new(), "c2".into()));
    // A promote of the config ends only the config watch.
    d.post("/pkg/config_experiment/promote", None)
        .assert_ok_empty();
    let outcomes: Vec<(String, String)> = config_history(&d)
        .iter()
        .map(|w| {
            (
                w["version"].as_str().unwrap().into(),
                w["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("c1".to_string(), "health_check_failed".to_string()),
            ("c2".to_string(), "promoted".to_string())
        ]
    );
    assert_eq!(package_history(&d).len(), 1);
}

#[test]
fn the_cli_starts_with_a_policy_and_follows_the_config_watch_to_the_end() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", None);
    let d = installed(&s.root(), &v1, &[]);
    let file = s.path().join("ops.json");
    fs_err::write(&file, ops("c1").to_string()).unwrap();
    let counter = s.path().join("runs");
    let cmd = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; echo \"run $((n+1)) of $OUTPOST_EXPERIMENT_CONFIG_VERSION\"; [ $n -lt 2 ]",
        c = counter.display()
    );
    let out = d.cli(&[
        "config-experiment",
        "start",
        "pkg",
        "--file",
        file.to_str().unwrap(),
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
    let text = stdout(&d.cli(&["status"]));
    assert!(
        text.contains("watch pkg config c1: rolls back in 9m")
            || text.contains("watch pkg config c1: rolls back in 10m"),
        "{text}"
    );
    d.assert_watch_exits(
        &["config-experiment", "watch", "pkg"],
        1,
        &[
            "FAIL exit 1 run 4 of c1",
            "pkg config c1 rolled back (health_check_failed)",
        ],
    );
    // A clean run with auto-promote: the watch exits 0.
    fs_err::write(&file, ops("c2").to_string()).unwrap();
    let out = d.cli(&[
        "config-experiment",
        "start",
        "pkg",
        "--file",
        file.to_str().unwrap(),
        "--health-cmd",
        "echo healthy",
        "--health-interval",
        "100ms",
        "--auto-promote-after",
        "300ms",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_watch_exits(
        &["config-experiment", "watch", "pkg"],
        0,
        &["pass healthy", "pkg config c2 promoted (auto_promoted)"],
    );
    assert_eq!(configs(&d), ("c2".into(), String::new()));
    // A bad duration is a usage error, caught before anything is sent.
    let out = d.cli(&[
        "config-experiment",
        "start",
        "pkg",
        "c9",
        "--max-duration",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A package removed under a running config experiment: the config stays, and so does its
/// watch, across a restart too; the deadline still ends it.
#[test]
fn the_config_watch_of_a_removed_package_still_ends_its_experiment() {
    let s = Scratch::new();
    let v1 = version(&s.fixtures(), "1", None);
    let mut d = installed(&s.root(), &v1, &[]);
    start(&d, "c1", json!({"max_duration": "2s"}));
    let before = config_watch(&d).unwrap();
    d.post("/pkg/remove", None).assert_ok_empty();
    assert_eq!(d.versions("pkg"), None);
    assert_eq!(config_watch(&d), Some(before.clone()));
    d.kill();
    let d = fast_daemon(&s.root());
    let after = config_watch(&d).expect("the config watch resumed");
    assert_eq!(after["deadline"], before["deadline"]);
    let task = wait_config_experiment_gone(&d);
    assert_eq!(task["operation"], "auto_stop_config_experiment", "{task}");
    assert_eq!(task["error"]["code"], "experiment_expired", "{task}");
    assert_eq!(config_link(&s.root(), "experiment"), None);
    let past = config_history(&d);
    assert_eq!(past.len(), 1, "{past:?}");
    assert_eq!(past[0]["outcome"], "experiment_expired");
}
