//! A status page on the read-only listener: the HTML, its assets (types, ETag, 304), the
//! security headers, and the update channel, over real TCP.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_api::page::{
    self, CONTENT_SECURITY_POLICY, Cell, Column, Format, PageSource, PageSpec, RowInput,
    TableInput, TableSpec,
};
use outpost_api::readonly::{Exposure, ReadOnlyServer};
use outpost_testkit::client::{Req, send};
use serde_json::{Value, json};

/// Rows the test changes between polls.
struct Rows(Mutex<Vec<(String, String, u64)>>);

impl PageSource for Rows {
    fn tables(&self) -> Vec<TableInput> {
        let rows = self.0.lock().unwrap();
        vec![TableInput {
            name: "items",
            rows: rows
                .iter()
                .map(|(key, state, runs)| RowInput {
                    key: key.clone(),
                    cells: vec![
                        Cell::Value(json!(key)),
                        Cell::Value(json!(state)),
                        Cell::Series {
                            total: *runs,
                            tail: (0..*runs).map(|r| 10.0 * r as f64).collect(),
                        },
                        Cell::Value(if state == "error" {
                            json!({"m": "boom <b>", "tb": "Traceback:\n  raise"})
                        } else {
                            Value::Null
                        }),
                    ],
                })
                .collect(),
        }]
    }
}

fn spec() -> PageSpec {
    PageSpec {
        title: "Test <page>".into(),
        tables: vec![TableSpec {
            name: "items",
            title: "Items",
            empty: "No item.",
            columns: vec![
                Column::new("n", "Name", Format::Text),
                Column::new("st", "State", Format::State),
                Column::new("s", "Durations", Format::Spark),
                Column::new("e", "Error", Format::Error),
            ],
        }],
    }
}

async fn start(source: Arc<Rows>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = ReadOnlyServer::builder()
        .mount(page::routes(spec(), source, Duration::ZERO))
        .bind("127.0.0.1:0".parse().unwrap(), Exposure::Loopback)
        .await
        .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn assert_secure(r: &outpost_testkit::client::Response) {
    assert_eq!(
        r.header("content-security-policy"),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

#[tokio::test]
async fn serves_the_page_its_assets_and_updates() {
    let source = Arc::new(Rows(Mutex::new(vec![
        ("alpha".into(), "ok".into(), 2),
        ("beta".into(), "ok".into(), 1),
    ])));
    let (addr, stop) = start(Arc::clone(&source)).await;

    let r = send(addr, &Req::new("GET", "/")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_secure(&r);
    let html = r.text();
    assert!(html.contains("<title>Test &lt;page&gt;</title>"), "{html}");
    assert!(
        html.contains("<tr data-k=\"0\"><td>alpha</td><td><span class=\"st st-ok\">ok</span></td>"),
        "{html}"
    );
    assert!(html.contains("data-s=\"0,10\""), "{html}");
    // Nothing from elsewhere: only the page's own assets are referenced.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline script or style: {html}"
    );
    let version = html
        .split("data-v=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();

    for (name, ty) in [
        ("page.js", "text/javascript; charset=utf-8"),
        ("page.css", "text/css; charset=utf-8"),
    ] {
        let path = format!("/assets/{name}");
        let r = send(addr, &Req::new("GET", &path)).await.unwrap();
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-type"), Some(ty));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_secure(&r);
        // The SVG namespace is a name, not an address.
        let text = r.text().replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{name} loads nothing from elsewhere"
        );
        let etag = r.header("etag").unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let r = send(addr, &Req::new("GET", &path).header("if-none-match", &etag))
            .await
            .unwrap();
        assert_eq!(r.status, 304, "{name}");
        assert!(r.body.is_empty());
        let r = send(
            addr,
            &Req::new("GET", &path).header("if-none-match", "\"other\""),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    send(addr, &Req::new("GET", "/assets/nothing.js"))
        .await
        .unwrap()
        .assert_error(404, "not_found");

    // Nothing changed: an empty update.
    let path = format!("/api/page/updates?since={version}");
    let r = send(addr, &Req::new("GET", &path)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_secure(&r);
    let u: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(u["full"], json!(false));
    assert_eq!(u["v"], json!(version));
    assert_eq!(u["tables"]["items"]["rows"], json!([]));

    // beta fails and runs again: only its changed fields come, alpha is left out.
    source.lock_set(1, "error", 2);
    let u: Value =
        serde_json::from_slice(&send(addr, &Req::new("GET", &path)).await.unwrap().body).unwrap();
    assert_eq!(
        u["tables"]["items"]["rows"],
        json!([[1, {"st": "error", "s": [10.0], "e": {"m": "boom <b>", "tb": "Traceback:\n  raise"}}]])
    );
    assert_ne!(u["v"], json!(version));

    // A version from another process start: everything.
    let u: Value = serde_json::from_slice(
        &send(addr, &Req::new("GET", "/api/page/updates?since=1.0"))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(u["full"], json!(true));
    assert_eq!(u["tables"]["items"]["rows"].as_array().unwrap().len(), 2);
    let full: Value = serde_json::from_slice(
        &send(addr, &Req::new("GET", "/api/page"))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(full["tables"], u["tables"]);

    // Read-only like the rest of the listener.
    let r = send(addr, &Req::new("POST", "/api/page/updates"))
        .await
        .unwrap();
    r.assert_error(405, "method_not_allowed");
    let _ = stop.send(());
}

impl Rows {
    fn lock_set(&self, i: usize, state: &str, runs: u64) {
        let mut rows = self.0.lock().unwrap();
        rows[i].1 = state.into();
        rows[i].2 = runs;
    }
}
