//! The CLI's client against real sockets: success, API errors, and each failure kind.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;

use common::*;
use outpost_api::{Api, ApiClient, ClientError, ClientErrorKind, Json, Module};
use outpost_types::ErrorCode;
use serde_json::{Value, json};

#[tokio::test]
async fn get_and_post_decode_success_bodies() {
    let mut builder = Api::builder();
    builder.mount(
        Module::root("localapi")
            .get("/status", || async { Json(json!({"version": "1"})) })
            // Echoes whether a Content-Type came, and the body.
            .post(
                "/echo",
                |headers: http::HeaderMap, body: Option<Json<Value>>| async move {
                    Json(json!({
                        "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()),
                        "body": body.map(|Json(v)| v),
                    }))
                },
            ),
    );
    let srv = start(builder.build().unwrap()).await;
    let client = ApiClient::new(&srv.sock);
    assert_eq!(client.socket_path(), srv.sock.as_path());
    let status: Value = client.get("/status").await.unwrap();
    assert_eq!(status, json!({"version": "1"}));
    let with_body: Value = client
        .post("/echo", Some(&json!({"version": "7.1.0"})))
        .await
        .unwrap();
    assert_eq!(
        with_body,
        json!({"content_type": "application/json", "body": {"version": "7.1.0"}})
    );
    let without: Value = client.post::<Value, Value>("/echo", None).await.unwrap();
    assert_eq!(without, json!({"content_type": null, "body": null}));
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn api_errors_are_parsed() {
    let srv = start(standard_builder().build().unwrap()).await;
    let client = ApiClient::new(&srv.sock);
    let err = client.get::<Value>("/nope").await.unwrap_err();
    assert_eq!(err.kind(), ClientErrorKind::Api);
    let ClientError::Api { status, error } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 404);
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(error.message, "no route for GET /nope");
    assert_eq!(
        err.to_string(),
        "no route for GET /nope (not_found, HTTP 404)"
    );

    let err = client
        .post::<Value, Value>("/pkg/experiment/promote", None)
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().code, ErrorCode::InvalidState);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn missing_socket_is_not_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let err = ApiClient::new(&sock)
        .get::<Value>("/status")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ClientErrorKind::NotReachable);
    let ClientError::NotReachable { socket, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(socket, &sock);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&sock.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn refused_connection_is_not_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let err = ApiClient::new(&sock)
        .get::<Value>("/status")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ClientErrorKind::NotReachable);
    let ClientError::NotReachable { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// A foreign server on the socket: answers `body` with `content_type` and `status`.
async fn foreign_server(
    sock: std::path::PathBuf,
    status: u16,
    content_type: &'static str,
    body: &'static str,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", content_type)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                body.as_bytes(),
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

#[tokio::test]
async fn non_json_answers_are_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("foreign.sock");
    let server = foreign_server(sock.clone(), 404, "text/plain", "404 page not found\n").await;
    let err = ApiClient::new(&sock)
        .get::<Value>("/status")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ClientErrorKind::Protocol);
    let ClientError::Decode {
        status, body_start, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 404);
    assert_eq!(body_start, "404 page not found\n");
    server.abort();

    let sock2 = dir.path().join("foreign2.sock");
    let server = foreign_server(
        sock2.clone(),
        200,
        "application/json",
        "{\"unexpected\": true}",
    )
    .await;
    let err = ApiClient::new(&sock2)
        .get::<Vec<String>>("/status")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ClientErrorKind::Protocol);
    server.abort();
}

#[tokio::test]
async fn a_server_hanging_up_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rude.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        }
    });
    let err = ApiClient::new(&sock)
        .get::<Value>("/status")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ClientErrorKind::Protocol);
    assert!(matches!(err, ClientError::Http { .. }), "{err:?}");
    server.abort();
}
