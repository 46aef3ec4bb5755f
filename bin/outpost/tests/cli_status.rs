//! `outpost status` reads at a glance: a failed task's error is cut to one short line (with
//! how to see it whole), `status PACKAGE` and `--wide` show it in full, removed packages are
//! not listed.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::process::Output;

use serde_json::json;
use support::*;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

#[test]
fn errors_are_short_in_the_table_and_whole_on_request() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let good = standard(&fx, "demo", "1.0");
    let missing = s
        .path()
        .join("a-directory-with-a-rather-long-name-that-does-not-exist/layout");
    let bad = json!({"package": "broken", "version": "9.9",
                     "url": format!("file://{}", missing.display())});
    let d = Daemon::start(&s.root());
    d.set_catalog(&[good.layout_entry(), bad]);
    assert_eq!(code(&d.cli(&["install", "demo", "1.0", "-q"])), 0);
    let out = d.cli(&["install", "broken", "9.9"]);
    assert_eq!(code(&out), 1);
    let status = d.status();
    let error = status["remote_config_state"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package"] == "broken")
        .unwrap()["task"]["error"]
        .clone();
    let message = error["message"].as_str().unwrap().to_string();
    let code_name = error["code"].as_str().unwrap().to_string();
    assert!(message.chars().count() > 60, "{message}");

    let out = d.cli(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let short: String = message.lines().next().unwrap().chars().take(60).collect();
    let broken = lines.iter().find(|l| l.starts_with("broken")).unwrap();
    assert!(
        broken.ends_with(&format!("install 9.9 failed ({code_name}): {short}…")),
        "{text}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!(
            "(errors shortened: `outpost status PACKAGE --socket {0}` or `outpost status --wide \
             --socket {0}` shows them in full)",
            d.socket.display()
        )
    );

    let out = d.cli(&["status", "--wide"]);
    assert!(stdout(&out).contains(&message), "{}", stdout(&out));
    assert!(!stdout(&out).contains("errors shortened"));

    let out = d.cli(&["status", "broken"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "package:     broken\nstable:      -\nexperiment:  -\nlast task:   install 9.9 failed\n"
        ) && text.contains(&format!("error code:  {code_name}\nerror:\n  ")),
        "{text}"
    );
    let out = d.cli(&["status", "broken", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()["task"]["error"],
        error
    );
    let out = d.cli(&["status", "nope"]);
    assert_eq!(
        (code(&out), stderr(&out).as_str()),
        (1, "error getting status: nope is not installed\n")
    );

    // A removed package is gone from the table (the API still reports its last task).
    assert_eq!(code(&d.cli(&["remove", "demo", "-q"])), 0);
    let out = d.cli(&["status", "--wide"]);
    assert!(
        !stdout(&out).lines().any(|l| l.starts_with("demo")),
        "{}",
        stdout(&out)
    );
}
