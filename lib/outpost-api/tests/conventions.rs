//! The API conventions over a real Unix socket and real HTTP/1.1.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use outpost_api::{Api, Json, Module};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

#[tokio::test]
async fn success_bodies_are_json_with_a_trailing_newline() {
    let srv = start(standard_builder().build().unwrap()).await;
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(200, r#"{"version":"test"}"#);
    // A handler returning () answers {}; axum's own Json gets its newline added.
    request(&srv.sock, "GET", "/unit")
        .await
        .assert_json(200, "{}");
    request(&srv.sock, "GET", "/axum-json")
        .await
        .assert_json(200, r#"{"plain":true}"#);
    // HEAD on a GET route: same status and type, no body.
    let head = request(&srv.sock, "HEAD", "/status").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert!(head.body.is_empty());
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_route_is_404_not_found() {
    let srv = start(standard_builder().build().unwrap()).await;
    request(&srv.sock, "GET", "/nope").await.assert_json(
        404,
        r#"{"error":{"message":"no route for GET /nope","code":"not_found"}}"#,
    );
    request(&srv.sock, "POST", "/a/b/c/d").await.assert_json(
        404,
        r#"{"error":{"message":"no route for POST /a/b/c/d","code":"not_found"}}"#,
    );
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let srv = start(standard_builder().build().unwrap()).await;
    let reply = request(&srv.sock, "POST", "/status").await;
    reply.assert_json(
        405,
        r#"{"error":{"message":"method POST is not allowed on /status (allowed: GET, HEAD)","code":"method_not_allowed"}}"#,
    );
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let reply = request(&srv.sock, "GET", "/pkg/install").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(reply.json()["error"]["code"], "method_not_allowed");
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn dot_segments_are_400_and_never_normalised() {
    let srv = start(standard_builder().build().unwrap()).await;
    request(&srv.sock, "GET", "/x/../status").await.assert_json(
        400,
        r#"{"error":{"message":"path segment \"..\" is not allowed","code":"bad_request"}}"#,
    );
    // `..` in the package position of a real route.
    request(&srv.sock, "POST", "/../install").await.assert_json(
        400,
        r#"{"error":{"message":"path segment \"..\" is not allowed","code":"bad_request"}}"#,
    );
    request(&srv.sock, "POST", "/%2e%2E/install").await.assert_json(
        400,
        r#"{"error":{"message":"path segment \"%2e%2E\" is not allowed","code":"bad_request"}}"#,
    );
    request(&srv.sock, "GET", "/./status").await.assert_json(
        400,
        r#"{"error":{"message":"path segment \".\" is not allowed","code":"bad_request"}}"#,
    );
    // Dots inside a segment are fine.
    let ok = request_with_body(&srv.sock, "POST", "/a.b/install", None, b"").await;
    ok.assert_json(200, r#"{"had_body":false,"package":"a.b"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_body_with_content_length_is_413_without_reading_it() {
    let srv = start(standard_builder().build().unwrap()).await;
    // Announce 2 MiB and send none of it: the answer must still come.
    let reply = raw(
        &srv.sock,
        b"POST /required HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n",
    )
    .await;
    reply.assert_json(
        413,
        r#"{"error":{"message":"request body is larger than 1048576 bytes","code":"payload_too_large"}}"#,
    );
    // Exactly the limit is accepted (it is then decoded).
    let mut body = vec![b' '; 1 << 20];
    body[0] = b'1';
    let reply = request_with_body(
        &srv.sock,
        "POST",
        "/required",
        Some("application/json"),
        &body,
    )
    .await;
    reply.assert_json(200, r#"{"got":1}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_chunked_body_is_413_and_the_connection_closes() {
    let srv = start(standard_builder().build().unwrap()).await;
    let mut stream = tokio::net::UnixStream::connect(&srv.sock).await.unwrap();
    stream
        .write_all(b"POST /required HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // 1.5 MiB in 64 KiB chunks, and no terminating chunk: the server must not wait for it.
    let chunk = vec![b' '; 64 * 1024];
    let (mut read_half, mut write_half) = stream.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..24 {
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(&chunk);
            piece.extend_from_slice(b"\r\n");
            if write_half.write_all(&piece).await.is_err() {
                return; // the server closed on us, as it should once over the limit
            }
        }
        // Keep the write half open: the connection must end because the server closes it.
        std::future::pending::<()>().await;
    });
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        use tokio::io::AsyncReadExt as _;
        match tokio::time::timeout(Duration::from_secs(20), read_half.read(&mut buf))
            .await
            .expect("answered and closed, not left hanging")
        {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => panic!("{e}"),
        }
    }
    writer.abort();
    parse_reply(&bytes).assert_json(
        413,
        r#"{"error":{"message":"request body is larger than 1048576 bytes","code":"payload_too_large"}}"#,
    );
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn small_chunked_body_is_accepted() {
    let srv = start(standard_builder().build().unwrap()).await;
    let reply = raw(
        &srv.sock,
        b"POST /required HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
    )
    .await;
    reply.assert_json(200, r#"{"got":{"a":1}}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn body_content_type_rules_415() {
    let srv = start(standard_builder().build().unwrap()).await;
    let expected_415 = r#"{"error":{"message":"a request body must have Content-Type: application/json","code":"unsupported_media_type"}}"#;
    request_with_body(&srv.sock, "POST", "/required", None, b"{}")
        .await
        .assert_json(415, expected_415);
    request_with_body(&srv.sock, "POST", "/required", Some("text/plain"), b"{}")
        .await
        .assert_json(415, expected_415);
    request_with_body(
        &srv.sock,
        "POST",
        "/required",
        Some("application/x-www-form-urlencoded"),
        b"a=1",
    )
    .await
    .assert_json(415, expected_415);
    // Chunked without a Content-Type is refused once bytes arrive.
    raw(
        &srv.sock,
        b"POST /required HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await
    .assert_json(415, expected_415);
    // Parameters are accepted.
    request_with_body(
        &srv.sock,
        "POST",
        "/required",
        Some("application/json; charset=utf-8"),
        b"[1]",
    )
    .await
    .assert_json(200, r#"{"got":[1]}"#);
    // No body needs no Content-Type, with or without Content-Length: 0.
    request(&srv.sock, "POST", "/pkg/install")
        .await
        .assert_json(200, r#"{"had_body":false,"package":"pkg"}"#);
    request_with_body(&srv.sock, "POST", "/pkg/install", None, b"")
        .await
        .assert_json(200, r#"{"had_body":false,"package":"pkg"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn json_extractor_reports_serde_errors_and_ignores_unknown_fields() {
    let srv = start(standard_builder().build().unwrap()).await;
    let ct = Some("application/json");
    let reply =
        request_with_body(&srv.sock, "POST", "/pkg/install", ct, br#"{"version": 5}"#).await;
    reply.assert_json(
        400,
        r#"{"error":{"message":"invalid request body: invalid type: integer `5`, expected a string at line 1 column 13","code":"bad_request"}}"#,
    );
    let reply = request_with_body(&srv.sock, "POST", "/pkg/install", ct, b"{not json").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "bad_request");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body: key must be a string")
    );
    request_with_body(
        &srv.sock,
        "POST",
        "/pkg/install",
        ct,
        br#"{"version":"7.1.0","extra":{"x":1}}"#,
    )
    .await
    .assert_json(
        200,
        r#"{"args":[],"had_body":true,"package":"pkg","version":"7.1.0"}"#,
    );
    // A required body that is absent.
    request(&srv.sock, "POST", "/required").await.assert_json(
        400,
        r#"{"error":{"message":"a JSON request body is required","code":"bad_request"}}"#,
    );
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn handler_errors_rejections_and_panics_are_json() {
    let srv = start(standard_builder().build().unwrap()).await;
    request(&srv.sock, "POST", "/pkg/experiment/promote")
        .await
        .assert_json(
            409,
            r#"{"error":{"message":"no experiment to promote","code":"invalid_state"}}"#,
        );
    // axum's own Path rejection (plain text) is turned into the JSON error.
    let reply = request(&srv.sock, "GET", "/typed/notanumber").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.text().ends_with('\n'));
    assert_eq!(reply.json()["error"]["code"], "bad_request");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cannot parse"),
        "{}",
        reply.text()
    );
    request(&srv.sock, "GET", "/panic").await.assert_json(
        500,
        r#"{"error":{"message":"internal error: the request handler panicked","code":"internal"}}"#,
    );
    // The server is still serving.
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(200, r#"{"version":"test"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn registering_a_route_twice_replaces_its_handler() {
    let mut builder = Api::builder();
    builder.mount(
        Module::root("localapi")
            .get("/status", || async { Json(json!({"handler": "first"})) })
            .get("/status", || async { Json(json!({"handler": "second"})) })
            .get("/other", || async { Json(json!({"handler": "other"})) }),
    );
    // Mounting the same module again adds to it and replaces what it re-registers.
    let again = builder.mount(
        Module::root("localapi").get("/other", || async { Json(json!({"handler": "third"})) }),
    );
    let api = builder.build().unwrap();
    assert_eq!(again.name(), "localapi");
    let srv = start(api).await;
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(200, r#"{"handler":"second"}"#);
    request(&srv.sock, "GET", "/other")
        .await
        .assert_json(200, r#"{"handler":"third"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_routes_and_conflicts_are_build_errors() {
    let mut b = Api::builder();
    b.mount(Module::root("localapi").get("status", || async {}));
    assert!(matches!(
        b.build().unwrap_err(),
        outpost_api::Error::InvalidRoute { .. }
    ));
    let mut b = Api::builder();
    b.mount(Module::root("localapi").get("/a/../b", || async {}));
    assert!(matches!(
        b.build().unwrap_err(),
        outpost_api::Error::InvalidRoute { .. }
    ));
    let mut b = Api::builder();
    b.mount(Module::new("Bad Name").get("/", || async {}));
    assert!(matches!(
        b.build().unwrap_err(),
        outpost_api::Error::InvalidModuleName { .. }
    ));
    let mut b = Api::builder();
    b.mount(Module::root("localapi").post("/{package}/install", || async {}));
    b.mount(Module::root("other").post("/{name}/install", || async {}));
    let err = b.build().unwrap_err();
    assert!(
        matches!(err, outpost_api::Error::RouteConflict { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn modules_mount_under_their_namespace() {
    let mut builder = Api::builder();
    builder.mount(
        Module::new("checks")
            .get("/", || async { Json(json!(["a"])) })
            .get(
                "/{id}/status",
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    Json(json!({"id": id}))
                },
            ),
    );
    let srv = start(builder.build().unwrap()).await;
    request(&srv.sock, "GET", "/checks")
        .await
        .assert_json(200, r#"["a"]"#);
    request(&srv.sock, "GET", "/checks/cpu/status")
        .await
        .assert_json(200, r#"{"id":"cpu"}"#);
    assert_eq!(request(&srv.sock, "GET", "/cpu/status").await.status, 404);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn stopped_module_answers_503_until_started() {
    let srv = start(standard_builder().build().unwrap()).await;
    let local = srv.api.module("localapi").unwrap();
    local.stop();
    assert!(!local.is_running());
    let stopped = r#"{"error":{"message":"module stopped","code":"unavailable"}}"#;
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(503, stopped);
    request(&srv.sock, "POST", "/pkg/install")
        .await
        .assert_json(503, stopped);
    // Other modules keep serving.
    assert_eq!(request(&srv.sock, "GET", "/telemetry").await.status, 200);
    local.start();
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(200, r#"{"version":"test"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_served_concurrently() {
    const N: usize = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut builder = Api::builder();
    let b = barrier.clone();
    builder.mount(Module::root("localapi").get("/meet", move || {
        let b = b.clone();
        // Every request waits until all N are inside the handler at once.
        async move {
            b.wait().await;
            Json(json!({"met": true}))
        }
    }));
    let srv = start(builder.build().unwrap()).await;
    let client = outpost_api::ApiClient::new(&srv.sock);
    let calls = (0..N).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.get::<serde_json::Value>("/meet").await })
    });
    let results = tokio::time::timeout(Duration::from_secs(20), futures_join(calls.collect()))
        .await
        .expect("all requests were in flight together");
    for r in results {
        assert_eq!(r.unwrap().unwrap(), json!({"met": true}));
    }
    srv.stop().await.unwrap();
}

async fn futures_join<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

#[tokio::test]
async fn keep_alive_connection_serves_many_requests() {
    let srv = start(standard_builder().build().unwrap()).await;
    let mut stream = tokio::net::UnixStream::connect(&srv.sock).await.unwrap();
    let mut req = Vec::new();
    for _ in 0..3 {
        req.extend_from_slice(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    req.extend_from_slice(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(&req).await.unwrap();
    let bytes = read_all(&mut stream).await;
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 4, "{text}");
    assert_eq!(text.matches("{\"version\":\"test\"}\n").count(), 4);
    srv.stop().await.unwrap();
}
