//! The agent's status page in a real headless Chromium: the real `outpost agent --listen`
//! running real checks; the page lists them, follows a check that starts failing and a reload
//! that removes another without navigating, logs no console error, makes no request beyond
//! the listener, and stays readable at 1280x800 and at phone width. Screenshots are written
//! under `target/tmp/screenshots/`.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod agent_support;
mod browser;

use std::net::SocketAddr;
use std::time::Duration;

use agent_support::Root;
use browser::Browser;
use outpost_testkit::client::{Req, send_blocking};

/// OK until the flag file next to it exists, then raises.
const FLIP: &str = r#"
import os
from datadog_checks.base import AgentCheck

class FlipCheck(AgentCheck):
    def check(self, instance):
        if os.path.exists(instance["flag"]):
            raise RuntimeError("flip saw its flag <b>raised</b>")
        self.gauge("flip.up", 1)
"#;

const STEADY: &str = r#"
from datadog_checks.base import AgentCheck

class SteadyCheck(AgentCheck):
    def check(self, instance):
        for i in range(5):
            self.gauge("steady.value", i, tags=["n:%d" % i])
"#;

/// The text of the cells of the row whose first cell is `check`, joined by `|`.
fn row_js(check: &str) -> String {
    format!(
        "(() => {{ const r = Array.from(document.querySelectorAll('table[data-t=checks] tbody tr'))\
         .find(tr => tr.cells[0].textContent === '{check}'); \
         return r ? Array.from(r.cells).map(c => c.textContent).join('|') : null; }})()"
    )
}

/// The state cell (third column) of `check`'s row.
fn state_js(check: &str) -> String {
    format!(
        "(() => {{ const r = Array.from(document.querySelectorAll('table[data-t=checks] tbody tr'))\
         .find(tr => tr.cells[0].textContent === '{check}'); return r ? r.cells[2].textContent : null; }})()"
    )
}

#[test]
fn the_agent_page_lists_the_checks_and_follows_them_live() {
    let root = Root::new();
    let flag = root.root().join("flip.flag");
    root.check("flip", FLIP);
    root.conf(
        "flip",
        &format!(
            "init_config:\ninstances:\n  - min_collection_interval: 1\n    flag: {}\n",
            flag.display()
        ),
    );
    root.check("steady", STEADY);
    root.conf(
        "steady",
        "init_config:\ninstances:\n  - min_collection_interval: 1\n",
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", browser::free_port())
        .parse()
        .unwrap();
    let agent = root.start_agent(&["--listen", &listen.to_string()]);
    let log = || agent.log();
    // Both ran at least once before the page is opened (so the first render has runs).
    agent.wait_until("both checks ran", |a| {
        let v = a.get_json("/checks");
        v["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|i| !i["last_run"].is_null()))
    });

    let mut b = Browser::start();
    let origin = format!("http://{listen}");
    b.navigate(&format!("{origin}/"));
    assert_eq!(b.eval("document.title"), "outpost agent");
    // Rendered by the server: both instances, with their state.
    let steady = b.eval(&row_js("steady"));
    let steady = steady.as_str().expect("a steady row");
    assert!(steady.contains("|ok|"), "{steady}");
    assert!(steady.contains("steady:"), "the instance id: {steady}");
    assert_eq!(b.eval(&state_js("flip")), "ok");
    // Metric count (5 gauges) and memory in use are shown.
    let cells: Vec<String> = steady.split('|').map(str::to_owned).collect();
    assert_eq!(cells[8], "5", "{steady}");
    assert!(cells[9].ends_with("B"), "memory: {steady}");
    // A marker that a navigation would lose.
    b.eval("window.__stayed = true");

    // The page updates itself: the runs count grows, the sparkline gets points.
    let runs_before: u64 = cells[6].parse().unwrap();
    b.wait_for(
        "the steady row's run count grows",
        &format!(
            "(() => {{ const t = {}; return t && Number(t.split('|')[6]) > {runs_before}; }})()",
            row_js("steady")
        ),
        Duration::from_secs(20),
        log,
    );
    b.wait_for(
        "a sparkline with several points",
        "(() => { const p = document.querySelector('table[data-t=checks] svg.spark polyline'); \
         return p && p.getAttribute('points').split(' ').length >= 2; })()",
        Duration::from_secs(20),
        log,
    );
    let shots = browser::screenshots("agent_page");
    b.screenshot(&shots.join("desktop-1280x800.png"));

    // A real check starts failing: its row turns to error with the message, and the Python
    // traceback is one click away.
    fs_err::write(&flag, "").unwrap();
    b.wait_for(
        "flip shows its error",
        &format!("{} === 'error'", state_js("flip")),
        Duration::from_secs(30),
        log,
    );
    let error = b.eval(
        "(() => { const r = Array.from(document.querySelectorAll('table[data-t=checks] tbody tr'))\
         .find(tr => tr.cells[0].textContent === 'flip'); const d = r.cells[10].querySelector('details'); \
         if (!d) return null; const closed = !d.open; d.querySelector('summary').click(); \
         return {closed, open: d.open, summary: d.querySelector('summary').textContent, \
         tb: d.querySelector('pre').textContent}; })()",
    );
    assert_eq!(error["closed"], true, "{error}");
    assert_eq!(error["open"], true, "a click opens the traceback: {error}");
    assert!(
        error["summary"]
            .as_str()
            .unwrap()
            .contains("flip saw its flag <b>raised</b>"),
        "the message, as text: {error}"
    );
    let tb = error["tb"].as_str().unwrap();
    assert!(
        tb.contains("Traceback") && tb.contains("RuntimeError"),
        "{tb}"
    );
    let errors_cell = b.eval(&format!("{}.split('|')[7]", row_js("flip")));
    assert_ne!(errors_cell, "0", "the error count moved");
    b.screenshot(&shots.join("desktop-error.png"));

    // A reload that removes `steady`: its row goes, without navigation.
    root.remove_conf("steady");
    assert_eq!(agent.post("/checks/reload").status, 200);
    b.wait_for(
        "steady's row goes",
        &format!("{} === null", row_js("steady")),
        Duration::from_secs(20),
        log,
    );
    assert_eq!(b.eval("window.__stayed === true"), true, "no navigation");
    assert_eq!(
        b.eval("document.querySelector('[data-count=checks]').textContent"),
        "1"
    );

    // Phone width: the page itself does not scroll sideways (the table does, in its box).
    b.viewport(390, 844, true);
    b.pump(Duration::from_millis(300));
    let overflow = b.eval("document.documentElement.scrollWidth - window.innerWidth");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than the phone by {overflow}px"
    );
    let font = b.eval("parseFloat(getComputedStyle(document.body).fontSize)");
    assert!(font.as_f64().unwrap() >= 12.0, "{font}");
    b.screenshot(&shots.join("phone-390.png"));

    // Nothing went wrong in the page, and nothing left the listener.
    b.pump(Duration::from_millis(500));
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    let requests = b.requests();
    assert!(requests.len() >= 4, "page, assets, updates: {requests:?}");
    assert!(
        requests
            .iter()
            .any(|u| u.contains("/api/page/updates?since=")),
        "{requests:?}"
    );
    for url in &requests {
        assert!(
            url.starts_with(&format!("{origin}/")),
            "a request left the listener: {url}"
        );
    }

    // The JSON endpoint behind it, and the listener still read-only.
    let checks = send_blocking(listen, &Req::new("GET", "/api/checks")).unwrap();
    assert_eq!(checks.status, 200);
    assert_eq!(checks.json()["instances"].as_array().unwrap().len(), 1);
    let refused = send_blocking(listen, &Req::new("POST", "/api/checks")).unwrap();
    assert_eq!(refused.status, 405);
    drop(b);
    agent_support::assert_no_rust_noise(&agent.log());
}
