//! The daemon's status page in a real headless Chromium: the real `outpost daemon --listen`;
//! the page follows an install and an experiment under watch (countdown, last health check
//! and its output) and its end, without navigating, with no console error and no request
//! beyond the listener. Screenshots are written under `target/tmp/screenshots/`.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod browser;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use browser::Browser;
use serde_json::json;
use support::*;

fn with_health(dir: &Path, version: &str, script: &str) -> Fixture {
    let mut files = standard_files("pkg", version);
    files.push(("outpost/health".into(), script.as_bytes().to_vec(), 0o755));
    package(dir, "pkg", version, files)
}

/// The cells of `table`'s row for `pkg`, joined by `|`.
fn row_js(table: &str) -> String {
    format!(
        "(() => {{ const r = Array.from(document.querySelectorAll('table[data-t={table}] tbody tr'))\
         .find(tr => tr.cells[0].textContent === 'pkg'); \
         return r ? Array.from(r.cells).map(c => c.textContent).join('|') : null; }})()"
    )
}

#[test]
fn the_daemon_page_follows_packages_and_experiments_live() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = package(&fx, "pkg", "1", standard_files("pkg", "1"));
    let v2 = with_health(&fx, "2", "#!/bin/sh\necho \"health says <hello>\"\n");
    let addr: SocketAddr = format!("127.0.0.1:{}", browser::free_port())
        .parse()
        .unwrap();
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            args: vec!["--listen".into(), addr.to_string()],
            ..Default::default()
        },
    );
    let log = || d.log();
    d.set_catalog(&[v1.layout_entry(), v2.layout_entry()]);

    let mut b = Browser::start();
    let origin = format!("http://{addr}");
    b.navigate(&format!("{origin}/"));
    assert_eq!(b.eval("document.title"), "outpost daemon");
    assert_eq!(
        b.eval("!document.querySelector('table[data-t=packages]').closest('section').querySelector('.empty').hidden"),
        true,
        "no package yet"
    );
    b.eval("window.__stayed = true");

    // An install shows up without a reload.
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let row = b.wait_for(
        "pkg 1 is listed",
        &format!("(() => {{ const t = {}; return t && t.includes('|1|') && t.includes('done') ? t : null; }})()", row_js("packages")),
        Duration::from_secs(20),
        log,
    );
    assert!(row.as_str().unwrap().contains("install 1"), "{row}");

    // An experiment under watch: its version, the time left counting down, the health check.
    d.post(
        "/pkg/experiment/start",
        Some(&json!({"version": "2", "max_duration": "10m", "health": {"interval": "200ms", "failures": 1000}})),
    )
    .assert_ok_empty();
    b.wait_for(
        "the watch row with a passed health check",
        &format!(
            "(() => {{ const t = {}; return t && t.includes('passed'); }})()",
            row_js("watch")
        ),
        Duration::from_secs(30),
        log,
    );
    let watch = b.eval(&row_js("watch")).as_str().unwrap().to_owned();
    let cells: Vec<&str> = watch.split('|').collect();
    assert_eq!(cells[1], "2", "{watch}");
    assert!(
        cells[2].starts_with("9m ") || cells[2].starts_with("10m "),
        "{watch}"
    );
    let packages = b.eval(&row_js("packages")).as_str().unwrap().to_owned();
    assert!(packages.starts_with("pkg|1|2|"), "{packages}");
    // The countdown moves on its own.
    let before = cells[2].to_owned();
    b.wait_for(
        "the countdown moves",
        &format!(
            "(() => {{ const t = {}; return t && t.split('|')[2] !== '{before}'; }})()",
            row_js("watch")
        ),
        Duration::from_secs(5),
        log,
    );
    // The health check's output, one click away, as text.
    let output = b.eval(
        "(() => { const r = document.querySelector('table[data-t=watch] tbody tr'); \
         const d = r.cells[6].querySelector('details'); d.querySelector('summary').click(); \
         return {open: d.open, text: d.querySelector('pre').textContent, summary: d.querySelector('summary').textContent}; })()",
    );
    assert_eq!(output["open"], true, "{output}");
    assert!(
        output["text"]
            .as_str()
            .unwrap()
            .contains("health says <hello>"),
        "{output}"
    );
    assert!(
        output["summary"].as_str().unwrap().starts_with("exit 0, "),
        "{output}"
    );
    let shots = browser::screenshots("daemon_page");
    b.screenshot(&shots.join("desktop-1280x800.png"));

    // Stopped: the watch row goes, the package is back to its stable version alone.
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    b.wait_for(
        "the watch row goes",
        &format!("{} === null", row_js("watch")),
        Duration::from_secs(20),
        log,
    );
    b.wait_for(
        "pkg shows no experiment",
        &format!(
            "(() => {{ const t = {}; return t && t.startsWith('pkg|1|\u{2014}|'); }})()",
            row_js("packages")
        ),
        Duration::from_secs(20),
        log,
    );
    assert_eq!(b.eval("window.__stayed === true"), true, "no navigation");

    b.viewport(390, 844, true);
    b.pump(Duration::from_millis(300));
    let overflow = b.eval("document.documentElement.scrollWidth - window.innerWidth");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than the phone by {overflow}px"
    );
    b.screenshot(&shots.join("phone-390.png"));

    b.pump(Duration::from_millis(500));
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    let requests = b.requests();
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
}

/// Bytes that do not compress (xorshift), so the package's layer is as large as its files.
fn noise_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn a_running_install_shows_its_progress_bar() {
    use outpost_testkit::{Fault, FaultProxy, FileServer, Rule};

    let s = Scratch::new();
    let mut files = standard_files("tool", "3.0.0");
    files.push(("data/blob".into(), noise_bytes(4 << 20), 0o644));
    let fixture = package(&s.fixtures(), "tool", "3.0.0", files);
    let www = s.path().join("www");
    fs_err::create_dir(&www).unwrap();
    fs_err::copy(&fixture.layer_blob, www.join("tool-3.0.0.tar")).unwrap();
    let server = FileServer::start(&www);
    // One MiB goes through, then the download waits until released.
    let proxy = FaultProxy::start(
        server.addr(),
        vec![Rule::new(
            "tool-3.0.0",
            Fault::HoldBody { after: 1 << 20 },
            1,
        )],
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", browser::free_port())
        .parse()
        .unwrap();
    let d = Daemon::start_with(
        &s.root(),
        DaemonOptions {
            args: vec!["--listen".into(), addr.to_string()],
            ..Default::default()
        },
    );
    let log = || d.log();
    d.set_catalog(&[json!({"package": "tool", "version": "3.0.0",
        "url": format!("http://{}/tool-3.0.0.tar", proxy.host()),
        "sha256": fixture.layer_sha256, "size": fixture.layer_size})]);

    let mut b = Browser::start();
    let origin = format!("http://{addr}");
    b.navigate(&format!("{origin}/"));
    let socket = d.socket.clone();
    let install =
        std::thread::spawn(move || cli(&socket, &["--json", "install", "tool", "3.0.0"], None));
    let value = b.wait_for(
        "a progress bar part way",
        "(() => { const p = document.querySelector('table[data-t=packages] progress'); \
         return p && p.value > 0 && p.value < 1 ? p.value : null; })()",
        Duration::from_secs(30),
        log,
    );
    let fraction = value.as_f64().unwrap();
    let expected = (1 << 20) as f64 / fixture.layer_size as f64;
    assert!(fraction <= expected + 0.01, "{fraction} > {expected}");
    let row = b.eval(
        "Array.from(document.querySelector('table[data-t=packages] tbody tr').cells).map(c => c.textContent).join('|')",
    );
    assert!(row.as_str().unwrap().contains("|running|"), "{row}");
    assert!(row.as_str().unwrap().contains("download "), "{row}");
    b.screenshot(&browser::screenshots("daemon_page").join("progress.png"));

    proxy.release();
    let out = install.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Done: the bar is gone and the version is stable, without a reload.
    b.wait_for(
        "the install is done",
        "(() => { const r = document.querySelector('table[data-t=packages] tbody tr'); \
         return r && r.cells[1].textContent === '3.0.0' && !r.querySelector('progress'); })()",
        Duration::from_secs(30),
        log,
    );
    b.pump(Duration::from_millis(300));
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    for url in b.requests() {
        assert!(
            url.starts_with(&format!("{origin}/")),
            "a request left the listener: {url}"
        );
    }
}
