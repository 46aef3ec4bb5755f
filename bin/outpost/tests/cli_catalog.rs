//! `outpost catalog set` checks the catalog strictly before sending it: a typo in a key, at
//! the top or in an entry, is refused with the closest known key and nothing is sent; an empty
//! catalog needs `--allow-empty`; `[]` is JSON, not a file name.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::process::Output;

use serde_json::json;
use support::*;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn setup() -> (Scratch, Daemon, Fixture) {
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixture = standard(&fx, "demo", "1.0");
    let d = Daemon::start(&s.root());
    d.set_catalog(&[fixture.layout_entry()]);
    (s, d, fixture)
}

#[test]
fn a_typo_is_refused_and_the_catalog_kept() {
    let (_s, d, fixture) = setup();
    let before = d.get("/catalog").json();

    let out = d.cli(&["catalog", "set", r#"{"pakages": []}"#]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "error setting catalog: invalid catalog in the argument: unknown field \"pakages\", \
         did you mean \"packages\"?\n"
    );
    assert_eq!(stdout(&out), "");

    let mut entry = fixture.layout_entry();
    entry["sha265"] = json!("00");
    let text = json!({"packages": [entry]}).to_string();
    let out = d.cli(&["set-catalog", &text]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error setting catalog: invalid catalog in the argument: catalog entry 0: unknown \
         field \"sha265\", did you mean \"sha256\"?\n"
    );

    let mut entry = fixture.layout_entry();
    entry["version"] = json!(2.5);
    let text = json!({"packages": [fixture.layout_entry(), entry]}).to_string();
    let out = d.cli(&["catalog", "set", &text]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with(
            "error setting catalog: invalid catalog in the argument: catalog entry 1: invalid type"
        ),
        "{}",
        stderr(&out)
    );

    // `[]` is JSON (of the wrong shape), not a file called "[]".
    let out = d.cli(&["catalog", "set", "[]"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error setting catalog: invalid catalog in the argument: expected an object \
         {\"packages\": [...]}, found an array\n"
    );
    assert_eq!(d.get("/catalog").json(), before);
}

#[test]
fn an_empty_catalog_needs_allow_empty() {
    let (_s, d, fixture) = setup();
    let out = d.cli(&["catalog", "set", r#"{"packages": []}"#]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error setting catalog: invalid catalog in the argument: the catalog has no entries \
         (pass --allow-empty to clear the catalog)\n"
    );
    assert_eq!(
        d.get("/catalog").json()["packages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let out = d.cli(&["catalog", "set", r#"{"packages": []}"#, "--allow-empty"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "catalog set (0 entries)\n");
    assert_eq!(d.get("/catalog").json(), json!({"packages": []}));

    let text = json!({"packages": [fixture.layout_entry()]}).to_string();
    let out = d.cli(&["catalog", "set", &text]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "catalog set (1 entry)\n");
}
