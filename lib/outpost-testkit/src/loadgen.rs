//! A load generator for benchmarks and load tests: N requests over a number of
//! concurrent keep-alive HTTP/1.1 connections to a Unix socket, reporting requests per second
//! and latency percentiles.
//!
//! The API's, the daemon's and the agent's benchmarks share [`run`] (one route). The load
//! tests use [`run_mixed`]: clients sending a mix of routes for a duration, with a latency
//! distribution and counts by status code per route ([`MixedReport::table`]).
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

/// One request of a mixed load: the route it is counted under, and what to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// The route's name in the report (e.g. `GET /status`, `POST /{pkg}/install`).
    pub route: String,
    /// Method.
    pub method: Method,
    /// Path (and query).
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Bytes>,
}

impl Call {
    /// `GET path`, counted under `GET path`.
    pub fn get(path: &str) -> Self {
        Self {
            route: format!("GET {path}"),
            method: Method::GET,
            path: path.to_owned(),
            body: None,
        }
    }

    /// `POST path` with an optional JSON body, counted under `route`.
    pub fn post(route: &str, path: String, body: Option<serde_json::Value>) -> Self {
        Self {
            route: route.to_owned(),
            method: Method::POST,
            path,
            body: body.map(|b| Bytes::from(b.to_string())),
        }
    }
}

/// A mixed load: `clients` keep-alive connections, each sending the calls its plan gives,
/// one after the other, for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct MixedOptions {
    /// Concurrent clients (one connection each, re-opened if the server closes it).
    pub clients: usize,
    /// How long the load lasts.
    pub duration: Duration,
}

/// What one route got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteReport {
    /// Answers by status code.
    pub by_status: std::collections::BTreeMap<u16, usize>,
    /// Latency of every answer, sorted (the route's latency distribution).
    pub latencies: Vec<Duration>,
}

impl RouteReport {
    /// Answers received.
    pub fn answered(&self) -> usize {
        self.latencies.len()
    }

    /// The latency at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }

    /// Counts of answers in latency buckets bounded by `bounds` (a last bucket holds the
    /// rest): the route's latency histogram.
    pub fn histogram(&self, bounds: &[Duration]) -> Vec<usize> {
        let mut counts = vec![0; bounds.len() + 1];
        for l in &self.latencies {
            let i = bounds.iter().position(|b| l <= b).unwrap_or(bounds.len());
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        counts
    }
}

/// What a mixed load got, by route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MixedReport {
    /// From the moment every client was connected to the last answer.
    pub elapsed: Duration,
    /// By route name.
    pub routes: std::collections::BTreeMap<String, RouteReport>,
    /// Requests lost with their connection (no answer at all).
    pub transport_errors: usize,
}

impl MixedReport {
    /// Answers received, all routes.
    pub fn answered(&self) -> usize {
        self.routes.values().map(RouteReport::answered).sum()
    }

    /// Answers per second, all routes.
    pub fn throughput(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.answered() as f64;
        n / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Answers by status code, all routes.
    pub fn by_status(&self) -> std::collections::BTreeMap<u16, usize> {
        let mut all = std::collections::BTreeMap::new();
        for r in self.routes.values() {
            for (code, n) in &r.by_status {
                *all.entry(*code).or_insert(0) += n;
            }
        }
        all
    }

    /// A plain-text table: per route, answers, p50, p99, max and counts by status.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{} answers in {:.1} s: {:.0} req/s; transport errors {}\n{:<36} {:>8} {:>9} {:>9} {:>9}  codes\n",
            self.answered(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.transport_errors,
            "route",
            "answers",
            "p50 ms",
            "p99 ms",
            "max ms",
        );
        for (name, r) in &self.routes {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let codes: Vec<String> = r
                .by_status
                .iter()
                .map(|(c, n)| format!("{c}:{n}"))
                .collect();
            let _ = writeln!(
                out,
                "{name:<36} {:>8} {:>9.2} {:>9.2} {:>9.2}  {}",
                r.answered(),
                ms(r.quantile(0.5)),
                ms(r.quantile(0.99)),
                ms(r.latencies.last().copied().unwrap_or_default()),
                codes.join(" "),
            );
        }
        out
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(socket: &Path) -> std::io::Result<Sender> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // A broken connection shows up as a transport error of the request in flight.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Runs a mixed load: client `c` sends `plan(c, n)` as its `n`-th request, until the
/// duration is over (a request in flight then is waited for and counted).
///
/// # Errors
/// Connecting a client at the start failed (later, a lost connection is re-opened and the
/// request counted in [`MixedReport::transport_errors`]).
pub async fn run_mixed<F>(
    socket: &Path,
    options: MixedOptions,
    plan: F,
) -> std::io::Result<MixedReport>
where
    F: Fn(usize, u64) -> Call + Send + Sync + 'static,
{
    let clients = options.clients.max(1);
    let plan = Arc::new(plan);
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut sender = connect(socket).await?;
        let (plan, start, socket) = (Arc::clone(&plan), Arc::clone(&start), socket.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut routes: std::collections::BTreeMap<String, RouteReport> =
                std::collections::BTreeMap::new();
            let mut transport_errors = 0;
            start.wait().await;
            let end = Instant::now() + options.duration;
            let mut n = 0;
            while Instant::now() < end {
                let call = plan(c, n);
                n += 1;
                let mut builder = Request::builder()
                    .method(call.method.clone())
                    .uri(call.path.as_str())
                    .header(header::HOST, "localhost");
                if call.body.is_some() {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                }
                let Ok(request) = builder.body(Full::new(call.body.clone().unwrap_or_default()))
                else {
                    transport_errors += 1;
                    continue;
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
                    Ok(status) => {
                        let r = routes.entry(call.route).or_default();
                        r.latencies.push(began.elapsed());
                        *r.by_status.entry(status).or_insert(0) += 1;
                    }
                    Err(_) => {
                        transport_errors += 1;
                        match connect(&socket).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            (routes, transport_errors, Instant::now())
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut report = MixedReport::default();
    let mut finished = began;
    for task in tasks {
        let (routes, errors, end) = task.await.map_err(std::io::Error::other)?;
        for (name, r) in routes {
            let all = report.routes.entry(name).or_default();
            all.latencies.extend(r.latencies);
            for (code, n) in r.by_status {
                *all.by_status.entry(code).or_insert(0) += n;
            }
        }
        report.transport_errors += errors;
        finished = finished.max(end);
    }
    for r in report.routes.values_mut() {
        r.latencies.sort_unstable();
    }
    report.elapsed = finished - began;
    Ok(report)
}

/// [`run_mixed`] on a runtime of its own (for synchronous tests), on `threads` worker
/// threads.
///
/// # Errors
/// The runtime cannot start, or as [`run_mixed`].
pub fn run_mixed_blocking<F>(
    socket: &Path,
    options: MixedOptions,
    threads: usize,
    plan: F,
) -> std::io::Result<MixedReport>
where
    F: Fn(usize, u64) -> Call + Send + Sync + 'static,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?
        .block_on(run_mixed(socket, options, plan))
}

/// A process's resident memory (`VmRSS`, bytes), threads and open file descriptors, read
/// from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// `VmRSS` in bytes.
    pub rss: u64,
    /// `Threads`.
    pub threads: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: usize,
}

impl ProcessSample {
    /// Reads the figures of process `pid`.
    ///
    /// # Errors
    /// `/proc/<pid>` cannot be read (the process is gone), or its status has no `VmRSS`.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let status = fs_err::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| std::io::Error::other(format!("no {name} in /proc/{pid}/status")))
        };
        let rss = field("VmRSS:")? * 1024;
        let threads = field("Threads:")?;
        let fds = fs_err::read_dir(format!("/proc/{pid}/fd"))?.count();
        Ok(Self { rss, threads, fds })
    }
}

impl std::fmt::Display for ProcessSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[allow(clippy::cast_precision_loss)]
        let mib = self.rss as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "rss {mib:.1} MiB, threads {}, fds {}",
            self.threads, self.fds
        )
    }
}
