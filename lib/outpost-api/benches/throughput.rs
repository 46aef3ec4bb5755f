//! `GET /status` with a fixed small JSON body over a Unix socket: the full API stack (module
//! router, conventions, caller resolution, spans, request counting) against a bare hyper
//! server answering the same bytes. 32 concurrent keep-alive connections
//! (`outpost_testkit::loadgen`).
//!
//! Criterion measures each side; afterwards a summary runs both back to back in alternating
//! rounds and prints requests/s, latency percentiles and the ratio (target >= 0.7, and
//! >= 20,000 requests/s for the router).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_api::{Api, DebugVars, Json, Module, Server, Telemetry};
use outpost_testkit::loadgen::{LoadOptions, LoadReport, run};
use tokio::runtime::Runtime;

const STATUS_BODY: &[u8] = b"{\"version\":\"0.1.0\",\"packages\":{\"datadog-agent\":{\"Stable\":\"7.50.0\",\"Experiment\":\"\"}}}\n";
const REQUESTS_PER_ITER: usize = 20_000;

struct Fixture {
    rt: Runtime,
    _dir: tempfile::TempDir,
    router_sock: PathBuf,
    bare_sock: PathBuf,
}

/// What the daemon's status handler serialises (the same bytes as `STATUS_BODY`).
#[derive(serde::Serialize)]
struct PackageState {
    #[serde(rename = "Stable")]
    stable: &'static str,
    #[serde(rename = "Experiment")]
    experiment: &'static str,
}

#[derive(serde::Serialize)]
struct Status {
    version: &'static str,
    packages: BTreeMap<&'static str, PackageState>,
}

static STATUS: LazyLock<Status> = LazyLock::new(|| Status {
    version: "0.1.0",
    packages: BTreeMap::from([(
        "datadog-agent",
        PackageState {
            stable: "7.50.0",
            experiment: "",
        },
    )]),
});

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let router_sock = dir.path().join("router.sock");
    let bare_sock = dir.path().join("bare.sock");

    rt.block_on(async {
        let telemetry = Telemetry::new();
        let mut builder = Api::builder().telemetry(telemetry.clone());
        builder.mount(Module::root("localapi").get("/status", || async { Json(&*STATUS) }));
        builder.mount(telemetry.module());
        builder.mount(DebugVars::new().module());
        let api = builder.build().expect("api");
        let server = Server::new(api)
            .bind_unix(&router_sock)
            .await
            .expect("bind");
        tokio::spawn(server.serve(std::future::pending()));

        let listener = tokio::net::UnixListener::bind(&bare_sock).expect("bind bare");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        let response = hyper::Response::builder()
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from_static(STATUS_BODY)))
                            .expect("static response");
                        Ok::<_, Infallible>(response)
                    });
                    // A client hanging up ends the connection; nothing to report.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Fixture {
        rt,
        _dir: dir,
        router_sock,
        bare_sock,
    }
}

fn load(rt: &Runtime, sock: &Path, requests: usize) -> LoadReport {
    let report = rt
        .block_on(run(sock, &LoadOptions::get("/status", requests)))
        .expect("load run");
    assert_eq!(report.errors, 0, "errors under load on {}", sock.display());
    report
}

fn bench(c: &mut Criterion, f: &Fixture) {
    // Sanity: both answer the same bytes.
    let mut group = c.benchmark_group("status_32conn");
    group.throughput(Throughput::Elements(REQUESTS_PER_ITER as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("router", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| load(&f.rt, &f.router_sock, REQUESTS_PER_ITER).elapsed)
                .sum()
        });
    });
    group.bench_function("bare_hyper", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| load(&f.rt, &f.bare_sock, REQUESTS_PER_ITER).elapsed)
                .sum()
        });
    });
    group.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[allow(clippy::print_stdout)]
fn summary(f: &Fixture) {
    const ROUNDS: usize = 9;
    const REQUESTS: usize = 50_000;
    let (mut router, mut bare, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut router_last, mut bare_last) = (None, None);
    // Warm both up, then measure in pairs, alternating which side goes first, and take the
    // median of the per-pair ratios: drifting load from other processes hits both alike.
    load(&f.rt, &f.router_sock, 5_000);
    load(&f.rt, &f.bare_sock, 5_000);
    for round in 0..ROUNDS {
        let (r, b) = if round % 2 == 0 {
            let r = load(&f.rt, &f.router_sock, REQUESTS);
            (r, load(&f.rt, &f.bare_sock, REQUESTS))
        } else {
            let b = load(&f.rt, &f.bare_sock, REQUESTS);
            (load(&f.rt, &f.router_sock, REQUESTS), b)
        };
        router.push(r.requests_per_sec);
        bare.push(b.requests_per_sec);
        ratios.push(r.requests_per_sec / b.requests_per_sec);
        router_last = Some(r);
        bare_last = Some(b);
    }
    println!(
        "\nsummary: GET /status, 32 keep-alive connections, {ROUNDS} paired rounds of {REQUESTS} requests (medians)"
    );
    println!("  router (full stack):     {:>10.0} req/s", median(router));
    println!("  bare hyper:              {:>10.0} req/s", median(bare));
    println!(
        "  ratio router/bare:       {:>10.3} (median of per-pair ratios)",
        median(ratios.clone())
    );
    ratios.sort_by(f64::total_cmp);
    println!("  per-pair ratios:         {ratios:.3?}");
    for (name, rep) in [("router", router_last), ("bare hyper", bare_last)] {
        if let Some(rep) = rep {
            println!(
                "  {name} last round latency: p50 {:?} p90 {:?} p99 {:?} max {:?}",
                rep.p50, rep.p90, rep.p99, rep.max
            );
        }
    }
}

criterion_group!(name = benches; config = Criterion::default(); targets = run_all);

fn run_all(c: &mut Criterion) {
    let f = fixture();
    // Both servers answer the same body.
    let check = |sock: &Path| {
        f.rt.block_on(outpost_api::ApiClient::new(sock).get::<serde_json::Value>("/status"))
            .expect("status")
    };
    assert_eq!(check(&f.router_sock), check(&f.bare_sock));
    assert_eq!(
        serde_json::to_vec(&*STATUS).expect("encode").as_slice(),
        &STATUS_BODY[..STATUS_BODY.len() - 1]
    );
    bench(c, &f);
    summary(&f);
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
