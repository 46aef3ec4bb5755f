//! The read-only TCP listener: loopback unless allowed, GET only, the server's limits.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use outpost_api::readonly::{Exposure, ReadOnlyRoutes, ReadOnlyServer};
use outpost_api::{Error, ServerLimits, Telemetry};
use outpost_testkit::client::{Req, send, send_raw};
use tokio::io::AsyncWriteExt as _;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(builder: outpost_api::readonly::ReadOnlyBuilder) -> (SocketAddr, StopGuard) {
    let server = builder.bind(loopback(), Exposure::Loopback).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    (addr, StopGuard { tx: Some(tx), task })
}

struct StopGuard {
    tx: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl StopGuard {
    async fn stop(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the listener stops")
            .unwrap()
            .unwrap();
    }
}

fn routes() -> ReadOnlyRoutes {
    ReadOnlyRoutes::new("metrics")
        .get(
            "/",
            |State(n): State<u32>| async move { format!("up {n}\n") },
        )
        .with_state(7)
}

#[tokio::test]
async fn non_loopback_addresses_need_allow_remote() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9464"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = ReadOnlyServer::builder()
            .mount(routes())
            .bind(addr, Exposure::Loopback)
            .await
            .unwrap_err();
        match &err {
            Error::BindTcp { addr: a, source } => {
                assert_eq!(*a, addr);
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
                assert!(source.to_string().contains("allow_remote"), "{source}");
            }
            other => panic!("expected BindTcp, got {other:?}"),
        }
    }
    // With the permission, the unspecified address binds.
    let server = ReadOnlyServer::builder()
        .mount(routes())
        .bind("0.0.0.0:0".parse().unwrap(), Exposure::Remote)
        .await
        .unwrap();
    assert!(server.local_addr().ip().is_unspecified());
    assert_eq!(Exposure::from_allow_remote(false), Exposure::Loopback);
    assert_eq!(Exposure::from_allow_remote(true), Exposure::Remote);
}

#[tokio::test]
async fn serves_get_and_head_and_refuses_every_other_method() {
    let telemetry = Telemetry::new();
    let (addr, guard) = start(
        ReadOnlyServer::builder()
            .telemetry(telemetry.clone())
            .mount(routes()),
    )
    .await;
    let r = send(addr, &Req::new("GET", "/metrics")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "up 7\n");
    let r = send(addr, &Req::new("HEAD", "/metrics")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/metrics", "/checks/reload", "/nowhere"] {
            let r = send(
                addr,
                &Req::new(method, path)
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await
            .unwrap();
            r.assert_error(405, "method_not_allowed");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
    send(addr, &Req::new("GET", "/checks"))
        .await
        .unwrap()
        .assert_error(404, "not_found");
    send(addr, &Req::new("GET", "/metrics/../checks"))
        .await
        .unwrap()
        .assert_error(400, "bad_request");
    // The requests it routed are counted in the registry it was given.
    assert!(
        telemetry
            .render()
            .contains("outpost_api_requests_total{method=\"GET\",module=\"metrics\",route=\"/metrics\",status=\"200\"} 1\n"),
        "{}",
        telemetry.render()
    );
    guard.stop().await;
}

#[tokio::test]
async fn a_peer_that_never_sends_its_head_is_disconnected() {
    let limits = {
        let mut l = ServerLimits::default();
        l.header_read_timeout = Duration::from_millis(200);
        l
    };
    let (addr, guard) = start(ReadOnlyServer::builder().limits(limits).mount(routes())).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .unwrap();
    // The server closes the connection: the read ends (possibly after a 408 answer).
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf),
    )
    .await;
    assert!(read.is_ok(), "the slow peer was not disconnected");
    // The listener still serves others.
    let r = send_raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    guard.stop().await;
}
