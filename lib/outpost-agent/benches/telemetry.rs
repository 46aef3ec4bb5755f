//! A scrape of `GET /telemetry` with 10,000 check series, over the agent's real Unix socket.
//!
//! The agent runs without Python (a missing venv: nothing else competes for the CPU) and its
//! series store is filled directly with 10,000 series (1,000 check instances × 10 gauges with
//! two tags each), plus the agent's own series and the API's request counters. Measured:
//!
//! * `telemetry/render_10k`: rendering the exposition alone;
//! * `telemetry/scrape_10k_fresh_connection`: connect, `GET /telemetry`, read the whole
//!   answer (`Connection: close`), as a scraper without keep-alive does;
//! * then 300 scrapes over one keep-alive connection with the shared load generator
//!   (p50/p99/max);
//! * `telemetry/metrics_tcp_10k_text` and `telemetry/metrics_tcp_10k_openmetrics`: the same
//!   exposition as `GET /metrics` from the read-only TCP listener (`agent.listen`), on a
//!   fresh loopback connection, in each format.
//!
//! `cargo bench -p outpost-agent --bench telemetry`; without `--bench` a smoke pass.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a benchmark

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use outpost_agent::{Agent, AgentOptions};
use outpost_checks::{Metric, MetricType, Submissions};
use outpost_testkit::loadgen::{LoadOptions, run as load};
use outpost_types::config::AgentConfig;

mod common;
use common::NoFormat;

const INSTANCES: usize = 1000;
const PER_INSTANCE: usize = 10;

fn fill(agent: &Agent) {
    for i in 0..INSTANCES {
        let metrics = (0..PER_INSTANCE)
            .map(|m| Metric {
                name: format!("bench.check_{}.metric_{m}", i % 50),
                metric_type: MetricType::Gauge,
                value: (i * m) as f64 * 0.5,
                tags: vec![format!("instance:{i}"), "env:bench".into()],
                hostname: String::new(),
                flush_first_value: false,
            })
            .collect();
        agent.series().commit(
            &format!("bench:{i:016x}"),
            &Submissions {
                metrics,
                ..Submissions::default()
            },
        );
    }
    assert_eq!(agent.series().series_count(), INSTANCES * PER_INSTANCE);
}

fn scrape(socket: &Path) -> usize {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(b"GET /telemetry HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = Vec::with_capacity(1 << 20);
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"));
    body.len()
}

fn scrape_tcp(addr: std::net::SocketAddr, accept: &str) -> usize {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: agent\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::with_capacity(1 << 20);
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"));
    body.len()
}

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs_err::create_dir_all(root.join("conf.d")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socket = root.join("run/agent.sock");
    let (agent, telemetry_api, tcp) = rt.block_on(async {
        let options = AgentOptions::new(
            root,
            root.join("conf.d"),
            root.join("checks.d"),
            root.join("no-venv"),
            AgentConfig::default(),
            Arc::new(NoFormat),
        )
        .unwrap();
        let agent = Agent::start(options).await.unwrap();
        fill(&agent);
        let api = outpost_agent::api::build_api(
            &agent,
            outpost_api::AccessPolicy::from_config(&Default::default()),
        )
        .unwrap();
        let telemetry = api.telemetry().clone();
        let listener = outpost_api::ReadOnlyServer::builder()
            .telemetry(telemetry.clone())
            .mount(outpost_agent::api::metrics_routes(
                agent.clone(),
                telemetry.clone(),
            ))
            .bind(
                "127.0.0.1:0".parse().unwrap(),
                outpost_api::Exposure::Loopback,
            )
            .await
            .unwrap();
        let tcp = listener.local_addr();
        tokio::spawn(listener.serve(std::future::pending()));
        let server = outpost_api::Server::new(api)
            .bind_unix(&socket)
            .await
            .unwrap();
        tokio::spawn(server.serve(std::future::pending()));
        (agent, telemetry, tcp)
    });
    let bytes = scrape(&socket);
    let text_bytes = scrape_tcp(tcp, "text/plain");
    let om_bytes = scrape_tcp(tcp, OPENMETRICS);
    let text = outpost_agent::telemetry::render(&agent, &telemetry_api);
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("telemetry");
        g.bench_function("render_10k", |b| {
            b.iter(|| outpost_agent::telemetry::render(&agent, &telemetry_api))
        });
        g.bench_function("scrape_10k_fresh_connection", |b| {
            b.iter(|| scrape(&socket))
        });
        g.bench_function("metrics_tcp_10k_text", |b| {
            b.iter(|| scrape_tcp(tcp, "text/plain"))
        });
        g.bench_function("metrics_tcp_10k_openmetrics", |b| {
            b.iter(|| scrape_tcp(tcp, OPENMETRICS))
        });
        g.finish();
    }
    c.final_summary();

    let requests = if full { 300 } else { 20 };
    let report = rt
        .block_on(load(
            &socket,
            &LoadOptions {
                connections: 1,
                ..LoadOptions::get("/telemetry", requests)
            },
        ))
        .unwrap();
    assert_eq!(report.errors, 0);
    let load = fs_err::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n/telemetry: {samples} samples ({} check series), {bytes} bytes on the wire\n\
         /metrics over TCP: {text_bytes} bytes (text), {om_bytes} bytes (OpenMetrics)\n\
         keep-alive scrapes: {} in {:.2?}: p50 {:.2?}, p99 {:.2?}, max {:.2?} (target <= 10 ms)\n\
         load average: {}",
        agent.series().series_count(),
        report.ok,
        report.elapsed,
        report.p50,
        report.p99,
        report.max,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
