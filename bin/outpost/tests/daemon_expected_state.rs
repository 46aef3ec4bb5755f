//! `expected_state` on every mutating route of the real daemon: a mismatch in any of the four
//! fields does nothing, answers 409 `invalid_state` and records an `INVALID_STATE` task with
//! both states; a match proceeds.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use serde_json::{Value, json};
use support::*;

const PKG: &str = "test-package";

/// The five mutations: (path, operation as the task names it, body without expected_state).
fn operations() -> [(&'static str, &'static str, Value); 5] {
    [
        ("install", "install", json!({"version": "3.0.0"})),
        (
            "experiment/start",
            "start_experiment",
            json!({"version": "3.0.0"}),
        ),
        ("experiment/stop", "stop_experiment", json!({})),
        ("experiment/promote", "promote_experiment", json!({})),
        ("remove", "remove", json!({})),
    ]
}

fn with_expected(body: &Value, expected: Value) -> Value {
    let mut body = body.clone();
    body["expected_state"] = expected;
    body
}

#[test]
fn a_mismatch_in_any_field_does_nothing_for_every_operation() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixtures: Vec<Fixture> = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .map(|v| standard(&fx, PKG, v))
        .collect();
    let mut d = Daemon::start(&s.root());
    d.set_catalog(
        &fixtures
            .iter()
            .map(Fixture::layout_entry)
            .collect::<Vec<_>>(),
    );
    let root = s.root();

    // Matching states proceed: not installed is stable "" and experiment "".
    d.post(
        &format!("/{PKG}/install"),
        Some(&json!({"version": "1.0.0", "expected_state": {"stable": "", "experiment": ""}})),
    )
    .assert_ok_empty();
    d.post(
        &format!("/{PKG}/experiment/start"),
        Some(&json!({"version": "2.0.0", "expected_state": {
            "stable": "1.0.0", "experiment": "", "stable_config": "", "experiment_config": ""}})),
    )
    .assert_ok_empty();
    assert_eq!(d.versions(PKG), Some(("1.0.0".into(), "2.0.0".into())));
    let host =
        r#"{stable: "1.0.0", experiment: "2.0.0", stable_config: "", experiment_config: ""}"#;

    let mismatches = [
        ("stable", json!("2.0.0")),
        ("experiment", json!("")),
        ("stable_config", json!("cfg-1")),
        ("experiment_config", json!("cfg-2")),
    ];
    for (path, operation, body) in operations() {
        for (field, value) in &mismatches {
            // The other fields match: only this one differs.
            let mut expected = json!({"stable": "1.0.0", "experiment": "2.0.0",
                                      "stable_config": "", "experiment_config": ""});
            expected[*field] = value.clone();
            let r = d.post(
                &format!("/{PKG}/{path}"),
                Some(&with_expected(&body, expected)),
            );
            let message = r.assert_error(409, "invalid_state");
            let wanted = format!("{field}: {value}");
            assert!(message.contains(&wanted), "{operation}: {message}");
            assert!(message.contains(host), "{operation}: {message}");
            assert!(message.contains("nothing was done"), "{message}");

            // Nothing was done ...
            assert_eq!(d.versions(PKG), Some(("1.0.0".into(), "2.0.0".into())));
            assert!(!version_exists(&root, PKG, "3.0.0"), "nothing fetched");
            // ... and the task says so, with both states.
            let task = d.task(PKG).unwrap();
            assert_eq!(task["state"], "INVALID_STATE", "{task}");
            assert_eq!(task["operation"], operation, "{task}");
            assert_eq!(task["error"]["code"], "invalid_state");
            assert_eq!(task["error"]["message"], message.as_str());
        }
    }

    // The refused task is persisted like any other.
    d.stop();
    let mut d = Daemon::start(&s.root());
    let task = d.task(PKG).unwrap();
    assert_eq!(task["state"], "INVALID_STATE", "{task}");
    assert_eq!(task["operation"], "remove");

    // Matching states proceed for stop, promote and remove too.
    let both = json!({"stable": "1.0.0", "experiment": "2.0.0"});
    d.post(
        &format!("/{PKG}/experiment/stop"),
        Some(&json!({ "expected_state": both })),
    )
    .assert_ok_empty();
    assert_eq!(d.versions(PKG), Some(("1.0.0".into(), String::new())));
    assert_eq!(d.task(PKG).unwrap()["state"], "DONE");
    d.post(
        &format!("/{PKG}/experiment/start"),
        Some(&json!({"version": "2.0.0"})),
    )
    .assert_ok_empty();
    d.post(
        &format!("/{PKG}/experiment/promote"),
        Some(&json!({ "expected_state": both })),
    )
    .assert_ok_empty();
    assert_eq!(d.versions(PKG), Some(("2.0.0".into(), String::new())));
    d.post(
        &format!("/{PKG}/install"),
        Some(&json!({"version": "3.0.0", "expected_state": {"stable": "2.0.0"}})),
    )
    .assert_ok_empty();
    assert_eq!(d.versions(PKG), Some(("3.0.0".into(), String::new())));
    d.post(
        &format!("/{PKG}/remove"),
        Some(&json!({"expected_state": {"stable": "3.0.0", "experiment": ""}})),
    )
    .assert_ok_empty();
    assert_eq!(d.versions(PKG), None);
    d.stop();
}

#[test]
fn a_malformed_expected_state_is_a_400_naming_the_field() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, PKG, "1.0.0");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry()]);
    d.post(
        &format!("/{PKG}/install"),
        Some(&json!({"version": "1.0.0"})),
    )
    .assert_ok_empty();
    let before = d.task(PKG).unwrap();

    for (path, body) in operations().map(|(p, _, b)| (p, b)) {
        // A misspelt field must not make a guarded request an unguarded one.
        let r = d.post(
            &format!("/{PKG}/{path}"),
            Some(&with_expected(&body, json!({"stabel": "1.0.0"}))),
        );
        let message = r.assert_error(400, "bad_request");
        assert!(
            message.contains("unknown field `stabel`"),
            "{path}: {message}"
        );
        let r = d.post(
            &format!("/{PKG}/{path}"),
            Some(&with_expected(&body, json!({"stable": 1}))),
        );
        r.assert_error(400, "bad_request");
        let r = d.post(
            &format!("/{PKG}/{path}"),
            Some(&with_expected(&body, json!(["1.0.0"]))),
        );
        r.assert_error(400, "bad_request");
        assert_eq!(d.versions(PKG), Some(("1.0.0".into(), String::new())));
        assert_eq!(
            d.task(PKG).unwrap(),
            before,
            "a 400 does not replace the last task"
        );
    }
}

#[test]
fn stop_promote_and_remove_still_take_no_body_or_an_empty_one() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, PKG, "1.0.0");
    let v2 = standard(&fx, PKG, "2.0.0");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);
    d.post(
        &format!("/{PKG}/install"),
        Some(&json!({"version": "1.0.0"})),
    )
    .assert_ok_empty();
    d.post(
        &format!("/{PKG}/experiment/start"),
        Some(&json!({"version": "2.0.0"})),
    )
    .assert_ok_empty();
    d.post(&format!("/{PKG}/experiment/stop"), None)
        .assert_ok_empty();
    d.post(
        &format!("/{PKG}/experiment/start"),
        Some(&json!({"version": "2.0.0"})),
    )
    .assert_ok_empty();
    d.post(&format!("/{PKG}/experiment/promote"), Some(&json!({})))
        .assert_ok_empty();
    // Fields other than expected_state are ignored, as they always were on these routes.
    d.post(
        &format!("/{PKG}/remove"),
        Some(&json!({"version": "ignored"})),
    )
    .assert_ok_empty();
    assert_eq!(d.versions(PKG), None);
}
