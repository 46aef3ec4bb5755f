//! One access line per request, in the text format the binaries log with:
//! `<METHOD> <path> <status> <code|-> uid=<uid> pid=<pid> <duration>`, refused requests
//! included, the error code taken from the error the handler or the middleware built.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use outpost_api::{Api, ErrorResponse, Json, Module};
use outpost_types::ErrorCode;
use serde_json::{Value, json};

/// method, path, Content-Type, body, expected status, expected line without the duration.
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [u8],
    u16,
    String,
);

/// Everything the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

async fn not_in_catalog() -> Result<Json<Value>, ErrorResponse> {
    Err(ErrorResponse::new(
        ErrorCode::PackageNotFound,
        "could not get package demo, 2.0.0 for amd64, linux: not in the catalog",
    ))
}

/// The access lines logged so far (the part after the target).
fn access_lines(captured: &Captured) -> Vec<String> {
    captured
        .lines()
        .iter()
        .filter_map(|l| {
            l.split_once("outpost_api::access: ")
                .map(|(_, rest)| rest.to_owned())
        })
        .collect()
}

/// Splits off the duration (the last word) and checks it carries a unit.
fn without_duration(line: &str) -> &str {
    let (head, duration) = line.rsplit_once(' ').unwrap();
    let number = duration
        .strip_suffix("us")
        .or_else(|| duration.strip_suffix("ms"))
        .or_else(|| duration.strip_suffix('s'))
        .unwrap_or_else(|| panic!("no unit in {line:?}"));
    assert!(number.parse::<f64>().is_ok(), "{line:?}");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_access_line_with_code_caller_and_duration() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut builder = Api::builder();
    builder.mount(
        Module::root("localapi")
            .get("/status", || async { Json(json!({"version": "test"})) })
            .post("/{package}/install", not_in_catalog)
            .get(
                "/typed/{n}",
                |axum::extract::Path(n): axum::extract::Path<u32>| async move { Json(n) },
            ),
    );
    let srv = start(builder.build().unwrap()).await;
    let uid = rustix::process::geteuid().as_raw();
    let pid = std::process::id();
    let who = format!("uid={uid} pid={pid}");

    let cases: [Case; 6] = [
        (
            "POST",
            "/demo/install",
            Some("application/json"),
            br#"{"version":"2.0.0"}"#,
            422,
            format!("POST /demo/install 422 package_not_found {who}"),
        ),
        (
            "GET",
            "/status",
            None,
            b"",
            200,
            format!("GET /status 200 - {who}"),
        ),
        (
            "GET",
            "/nowhere",
            None,
            b"",
            404,
            format!("GET /nowhere 404 not_found {who}"),
        ),
        (
            "POST",
            "/demo/install",
            Some("text/plain"),
            b"hello",
            415,
            format!("POST /demo/install 415 unsupported_media_type {who}"),
        ),
        (
            // axum's own rejection (plain text), made a JSON error by the middleware.
            "GET",
            "/typed/abc",
            None,
            b"",
            400,
            format!("GET /typed/abc 400 bad_request {who}"),
        ),
        (
            "DELETE",
            "/status",
            None,
            b"",
            405,
            format!("DELETE /status 405 method_not_allowed {who}"),
        ),
    ];
    for (i, (method, path, content_type, body, status, expected)) in cases.iter().enumerate() {
        let reply = request_with_body(&srv.sock, method, path, *content_type, body).await;
        assert_eq!(reply.status, *status, "{method} {path}");
        // The line is written after the response is built, maybe after the client read it.
        wait_until("the access line", || access_lines(&captured).len() > i).await;
        let lines = access_lines(&captured);
        assert_eq!(lines.len(), i + 1, "one line per request: {lines:#?}");
        assert_eq!(without_duration(&lines[i]), expected);
    }
    // A long path is cut at 256 bytes.
    let long = format!("/{}", "a".repeat(1000));
    let reply = request(&srv.sock, "GET", &long).await;
    assert_eq!(reply.status, 404);
    wait_until("the access line", || {
        access_lines(&captured).len() > cases.len()
    })
    .await;
    let lines = access_lines(&captured);
    assert_eq!(
        without_duration(&lines[cases.len()]),
        format!("GET /{}... 404 not_found {who}", "a".repeat(255))
    );
    let all = captured.lines().join("\n");
    assert!(!all.contains("Some("), "no Debug output in the log: {all}");
    srv.stop().await.unwrap();
}
