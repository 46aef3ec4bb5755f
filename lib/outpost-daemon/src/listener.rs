//! The daemon's read-only TCP listener (`telemetry.listen`, `outpost daemon --listen ADDR`):
//! `GET /metrics` for a Prometheus server, and whatever [`mounts`] adds (the status page).
//!
//! It is built on [`outpost_api::ReadOnlyServer`]: only `GET` and `HEAD` reach a route, every
//! other method is answered 405 before routing, no peer is trusted, and a non-loopback
//! address is refused unless `telemetry.allow_remote: true` is set beside it.
//!
//! # What `/metrics` serves
//! The daemon's registry ([`crate::metrics`]: operations, durations, GC, experiment watch
//! outcomes, the fleet series, the API's request counters), followed by one family computed
//! at each scrape from the repository on disk:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `outpost_package_info` | gauge, always 1 | `package`, `stable`, `experiment` (empty when none) |
//!
//! Being computed from the disk at each scrape, it never shows a version the host left. The
//! exposition is Prometheus text 0.0.4, or OpenMetrics 1.0.0 when the scraper's `Accept`
//! asks for it ([`outpost_api::exposition`]). Nothing in it comes from a catalog URL, a
//! credential or a configuration file's content: package names and versions only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use outpost_api::telemetry::{escape_help, push_label};
use outpost_api::{Exposure, ReadOnlyRoutes, ReadOnlyServer};

use crate::ops::Daemon;

/// The family computed at each scrape.
pub const PACKAGE_INFO: &str = "outpost_package_info";

/// Extra routes served on the daemon's read-only listener beside `GET /metrics`: the one
/// place where other parts of the daemon (its status page) add read-only routes.
pub fn mounts(daemon: &Arc<Daemon>) -> Vec<ReadOnlyRoutes> {
    vec![crate::page::routes(daemon.clone())]
}

/// The exposition `GET /metrics` serves, in the text format 0.0.4. A status that cannot be
/// read leaves `outpost_package_info` out (and is logged); the rest is served.
pub fn render(daemon: &Daemon) -> String {
    let mut out = daemon.telemetry().render();
    match daemon.status() {
        Ok(status) => {
            if status.packages.is_empty() {
                return out;
            }
            out.push_str("# HELP ");
            out.push_str(PACKAGE_INFO);
            out.push(' ');
            escape_help(
                "The versions of each package on this host: always 1; `experiment` is empty \
                 when none runs.",
                &mut out,
            );
            out.push('\n');
            out.push_str("# TYPE ");
            out.push_str(PACKAGE_INFO);
            out.push_str(" gauge\n");
            let mut labels = String::new();
            for (name, state) in &status.packages {
                labels.clear();
                push_label(&mut labels, "experiment", &state.experiment);
                push_label(&mut labels, "package", name);
                push_label(&mut labels, "stable", &state.stable);
                out.push_str(PACKAGE_INFO);
                out.push('{');
                out.push_str(&labels);
                out.push_str("} 1\n");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the packages for /metrics; outpost_package_info left out");
        }
    }
    out
}

async fn metrics(State(daemon): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    // The status reads the repository's state files: off the runtime's workers.
    let d = daemon.clone();
    let text = tokio::task::spawn_blocking(move || render(&d))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "rendering /metrics failed");
            daemon.telemetry().render()
        });
    outpost_api::exposition::respond(&headers, text)
}

/// `GET /metrics`.
pub fn metrics_routes(daemon: Arc<Daemon>) -> ReadOnlyRoutes {
    ReadOnlyRoutes::new("metrics")
        .get("/", metrics)
        .with_state(daemon)
}

/// Binds the listener on `addr`: `GET /metrics` and the routes of [`mounts`]. Requests are
/// counted in the daemon's registry (`outpost_api_requests_total`).
///
/// # Errors
/// [`outpost_api::Error::BindTcp`] for a non-loopback address with [`Exposure::Loopback`] or
/// an address that cannot be bound; the router's errors if two mounted routes conflict.
pub async fn bind(
    daemon: Arc<Daemon>,
    addr: SocketAddr,
    exposure: Exposure,
) -> Result<ReadOnlyServer, outpost_api::Error> {
    let mut builder = ReadOnlyServer::builder()
        .telemetry(daemon.telemetry().clone())
        .mount(metrics_routes(daemon.clone()));
    for routes in mounts(&daemon) {
        builder = builder.mount(routes);
    }
    builder.bind(addr, exposure).await
}
