//! `/telemetry` and `/debug/vars` served by the ready-made modules, and request counting.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use outpost_api::{Api, DebugVars, Module, Telemetry};

#[tokio::test]
async fn requests_are_counted_per_module_route_method_and_status() {
    let srv = start(standard_builder().build().unwrap()).await;
    for _ in 0..2 {
        request(&srv.sock, "GET", "/status").await;
    }
    request(&srv.sock, "POST", "/status").await;
    request(&srv.sock, "POST", "/pkg/install").await;
    request(&srv.sock, "POST", "/other-pkg/install").await;
    request(&srv.sock, "GET", "/nope").await;
    request(&srv.sock, "GET", "/../status").await;
    srv.api.module("localapi").unwrap().stop();
    request(&srv.sock, "GET", "/status").await;

    let reply = request(&srv.sock, "GET", "/telemetry").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    for line in [
        "# HELP outpost_api_requests_total API requests by module, route template, method and status code.",
        "# TYPE outpost_api_requests_total counter",
        r#"outpost_api_requests_total{method="GET",module="localapi",route="/status",status="200"} 2"#,
        r#"outpost_api_requests_total{method="POST",module="localapi",route="/status",status="405"} 1"#,
        r#"outpost_api_requests_total{method="POST",module="localapi",route="/{package}/install",status="200"} 2"#,
        r#"outpost_api_requests_total{method="GET",module="-",route="-",status="404"} 1"#,
        r#"outpost_api_requests_total{method="GET",module="-",route="-",status="400"} 1"#,
        r#"outpost_api_requests_total{method="GET",module="localapi",route="/status",status="503"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // The telemetry request itself is counted after it is answered.
    let again = request(&srv.sock, "GET", "/telemetry").await;
    assert!(again.text().contains(
        r#"outpost_api_requests_total{method="GET",module="telemetry",route="/telemetry",status="200"} 1"#
    ));
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn dynamic_series_appear_in_the_exposition() {
    let telemetry = Telemetry::new();
    let mut builder = Api::builder().telemetry(telemetry.clone());
    builder.mount(telemetry.module());
    let srv = start(builder.build().unwrap()).await;
    telemetry
        .set_gauge(
            "check.cpu.user",
            &[("check_id", "cpu:abc"), ("host", "h\"1")],
            12.5,
        )
        .unwrap();
    let text = request(&srv.sock, "GET", "/telemetry")
        .await
        .text()
        .to_owned();
    assert!(text.contains("# TYPE check_cpu_user gauge\ncheck_cpu_user{check_id=\"cpu:abc\",host=\"h\\\"1\"} 12.5\n"), "{text}");
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn debug_vars_render_named_providers() {
    let vars = DebugVars::new();
    vars.register("checks", || serde_json::json!({"running": 3}));
    let mut builder = Api::builder();
    builder.mount(vars.module());
    builder.mount(Module::root("localapi").get("/status", || async {}));
    let srv = start(builder.build().unwrap()).await;
    let reply = request(&srv.sock, "GET", "/debug/vars").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.text().ends_with('\n'));
    let body = reply.json();
    assert_eq!(body["checks"], serde_json::json!({"running": 3}));
    assert!(body["cmdline"].as_array().is_some_and(|a| !a.is_empty()));
    srv.stop().await.unwrap();
}
