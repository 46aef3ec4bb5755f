//! Helpers shared by the integration tests: a server on a temporary socket, exchanges through
//! the testkit's client (raw bytes where a test needs exact or malformed HTTP), and a module
//! exercising every convention.
// Test support: a failed unwrap is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path as UrlPath;
use outpost_api::{Api, ApiBuilder, Caller, Error, ErrorResponse, Json, Module, Server};
use outpost_testkit::client::Req;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A served API on a socket in its own temporary directory.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub api: Api,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Triggers shutdown without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for the server to finish; hands back the temporary directory so
    /// the caller can look at what the server left there.
    pub async fn stop(mut self) -> Result<tempfile::TempDir, Error> {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops within the deadline")
            .expect("server task")
            .map(|()| self.dir)
    }
}

/// Serves `api` on `<tempdir>/run/api.sock`.
pub async fn start(api: Api) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run").join("api.sock");
    start_at(api, dir, sock).await
}

/// Serves `api` on `sock` (inside `dir`).
pub async fn start_at(api: Api, dir: tempfile::TempDir, sock: PathBuf) -> Running {
    let server = Server::new(api.clone()).bind_unix(&sock).await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running {
        dir,
        sock,
        api,
        shutdown: Some(tx),
        task,
    }
}

/// A parsed HTTP response (the testkit client's).
pub use outpost_testkit::client::Response as Reply;

/// Parses one response from the bytes read.
pub fn parse_reply(raw: &[u8]) -> Reply {
    outpost_testkit::client::parse_response(raw)
}

/// Reads until the server closes (a reset after the answer also ends the read: the kernel
/// reports it when the server closed with unread request bytes).
pub async fn read_all(stream: &mut tokio::net::UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("the server answers and closes within the deadline")
        {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => {
                return out;
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Sends `request` bytes verbatim (it should say `Connection: close`) and parses the answer.
pub async fn raw(sock: &Path, request: &[u8]) -> Reply {
    outpost_testkit::client::send_raw(sock, request)
        .await
        .unwrap()
}

/// `METHOD path` without a body, sent with the testkit's hyper client.
pub async fn request(sock: &Path, method: &str, path: &str) -> Reply {
    let req = Req::new(method, path).header("Host", "x");
    outpost_testkit::client::send(sock, &req).await.unwrap()
}

/// `METHOD path` with a body and an optional Content-Type, sent with the testkit's hyper
/// client.
pub async fn request_with_body(
    sock: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut req = Req::new(method, path).header("Host", "x");
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    outpost_testkit::client::send(sock, &req.body(body))
        .await
        .unwrap()
}

#[derive(Debug, Deserialize)]
pub struct InstallParams {
    pub version: Option<String>,
    #[serde(default)]
    pub install_args: Vec<String>,
}

async fn install(
    UrlPath(package): UrlPath<String>,
    params: Option<Json<InstallParams>>,
) -> Json<Value> {
    Json(match params {
        Some(Json(p)) => {
            json!({"package": package, "version": p.version, "args": p.install_args, "had_body": true})
        }
        None => json!({"package": package, "had_body": false}),
    })
}

async fn required(Json(v): Json<Value>) -> Json<Value> {
    Json(json!({"got": v}))
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({
        "uid": caller.uid,
        "gid": caller.gid,
        "pid": caller.pid,
        "container_id": caller.container_id,
    }))
}

async fn typed(UrlPath(n): UrlPath<u32>) -> Json<u32> {
    Json(n)
}

async fn panics() -> Json<Value> {
    panic!("handler bug")
}

async fn failing() -> Result<Json<Value>, ErrorResponse> {
    Err(ErrorResponse::new(
        outpost_types::ErrorCode::InvalidState,
        "no experiment to promote",
    ))
}

/// The root module the tests talk to.
pub fn local_api() -> Module {
    Module::root("localapi")
        .get("/status", || async { Json(json!({"version": "test"})) })
        .post("/{package}/install", install)
        .post("/{package}/experiment/promote", failing)
        .post("/required", required)
        .get("/whoami", whoami)
        .get("/typed/{n}", typed)
        .get("/panic", panics)
        .get("/unit", || async {})
        .get("/axum-json", || async {
            axum::Json(json!({"plain": true}))
        })
        .route_with_access(
            http::Method::GET,
            "/secret",
            outpost_api::Access::Privileged,
            || async { Json(json!({"secret": 42})) },
        )
}

/// An API with [`local_api`], `telemetry` and `debug`.
pub fn standard_builder() -> ApiBuilder {
    let telemetry = outpost_api::Telemetry::new();
    let mut builder = Api::builder().telemetry(telemetry.clone());
    builder.mount(local_api());
    builder.mount(telemetry.module());
    builder.mount(outpost_api::DebugVars::new().module());
    builder
}

/// Polls `cond` until it holds (yielding, with a real-time deadline, never sleeping blind).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn shared<T>(v: T) -> Arc<T> {
    Arc::new(v)
}
