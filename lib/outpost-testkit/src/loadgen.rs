//! A load generator for benchmarks: N requests over a number of
//! concurrent keep-alive HTTP/1.1 connections to a Unix socket, reporting requests per second
//! and latency percentiles.
//!
//! The API's, the daemon's and the agent's benchmarks share it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use outpost_testkit::loadgen::{LoadOptions, run};
//! let report = run("/run/outpost.sock".as_ref(), &LoadOptions::get("/status", 100_000)).await?;
//! println!("{:.0} req/s, p99 {:?}", report.requests_per_sec, report.p99);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent keep-alive connections (default 32).
    pub connections: usize,
    /// Total requests, spread evenly over the connections.
    pub requests: usize,
    /// Method.
    pub method: Method,
    /// Path (and query).
    pub path: String,
    /// JSON body sent with every request, if any.
    pub body: Option<Bytes>,
    /// The status a successful answer has (others count as errors).
    pub expect_status: u16,
}

impl LoadOptions {
    /// `requests` × `GET path` over 32 connections, expecting 200.
    pub fn get(path: &str, requests: usize) -> Self {
        Self {
            connections: 32,
            requests,
            method: Method::GET,
            path: path.to_owned(),
            body: None,
            expect_status: 200,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Requests answered with the expected status.
    pub ok: usize,
    /// Requests answered otherwise, or lost with their connection.
    pub errors: usize,
    /// From the moment every connection was ready to the last answer.
    pub elapsed: Duration,
    /// `ok / elapsed`.
    pub requests_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 90th percentile latency.
    pub p90: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

/// Runs the load and reports.
///
/// # Errors
/// Connecting to `socket` or the HTTP handshake failed for some connection.
pub async fn run(socket: &Path, options: &LoadOptions) -> std::io::Result<LoadReport> {
    let connections = options.connections.max(1);
    let start = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // The benchmark only cares about answers; a broken connection shows up as errors.
            let _ = connection.await;
        });
        let share =
            options.requests / connections + usize::from(i < options.requests % connections);
        let options = options.clone();
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let mut errors = 0;
            start.wait().await;
            for sent in 0..share {
                let mut builder = Request::builder()
                    .method(options.method.clone())
                    .uri(options.path.as_str())
                    .header(header::HOST, "localhost");
                if options.body.is_some() {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                }
                let Ok(request) = builder.body(Full::new(options.body.clone().unwrap_or_default()))
                else {
                    errors += share - sent;
                    break;
                };
                let began = Instant::now();
                let answered = async {
                    sender.ready().await?;
                    let response = sender.send_request(request).await?;
                    let status = response.status().as_u16();
                    response.into_body().collect().await?;
                    Ok::<u16, hyper::Error>(status)
                }
                .await;
                match answered {
                    Ok(status) if status == options.expect_status => {
                        latencies.push(began.elapsed())
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += share - sent;
                        break;
                    }
                }
            }
            (latencies, errors, Instant::now())
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut latencies = Vec::with_capacity(options.requests);
    let mut errors = 0;
    let mut finished = began;
    for task in tasks {
        let (l, e, end) = task.await.map_err(std::io::Error::other)?;
        latencies.extend(l);
        errors += e;
        finished = finished.max(end);
    }
    latencies.sort_unstable();
    let elapsed = finished - began;
    #[allow(clippy::cast_precision_loss)]
    let requests_per_sec = latencies.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(LoadReport {
        ok: latencies.len(),
        errors,
        elapsed,
        requests_per_sec,
        p50: percentile(&latencies, 0.50),
        p90: percentile(&latencies, 0.90),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}
