//! `outpost daemon`: assembles the API (LocalAPI, telemetry, debug vars), serves it on the
//! Unix socket (and TCP if configured), collects garbage on a timer, and shuts down
//! gracefully on SIGTERM or SIGINT.
//!
//! Start-up order: signal handlers (so a SIGTERM during start-up is graceful too), the state
//! (the repository's writer lock: a second daemon on the root is refused with
//! [`RunError::AlreadyRunning`]), the socket (a live one is never stolen, a stale one is
//! replaced), its ACL for `api.allow_uids`/`allow_gids` ([`crate::socket_access`]), then
//! the read-only status socket (`<root>/run/status.sock`, [`crate::status_socket`]), then
//! serving; the leftovers of a crash are removed in the background while mutations wait.
//! `/debug/vars` shows the daemon's version, root, uptime, queued mutations and GC counters.
//!
//! With `telemetry.listen` (or `outpost daemon --listen`), the read-only listener
//! ([`crate::listener`]) is bound right after the state is opened and before the socket: an
//! address it refuses (not loopback without `telemetry.allow_remote`, in use) stops the
//! start-up with the reason. It stops with the socket's server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use outpost_api::{AccessPolicy, Api, DebugVars, Server};
use outpost_types::config::Config;

use crate::error::DaemonError;
use crate::ops::Daemon;
use crate::routes;
use crate::socket_access::{self, SocketAccessError};

/// What `outpost daemon` needs to start.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// State directory.
    pub root: PathBuf,
    /// Socket path (default `<root>/run/outpost.sock`).
    pub socket: PathBuf,
    /// Configuration.
    pub config: Config,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another daemon holds the root.
    #[error(
        "another outpost daemon is running on {} (socket {}); refusing to start a second one",
        root.display(),
        socket.display()
    )]
    AlreadyRunning {
        /// The state directory.
        root: PathBuf,
        /// The socket this daemon would have served.
        socket: PathBuf,
        /// The writer lock's refusal.
        #[source]
        source: Box<DaemonError>,
    },
    /// Opening the state failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The API could not be built or served.
    #[error(transparent)]
    Api(#[from] outpost_api::Error),
    /// The socket could not be opened to the configured uids and gids.
    #[error(transparent)]
    SocketAccess(#[from] SocketAccessError),
}

/// Builds the daemon's API: the LocalAPI at the root, `/telemetry` and `/debug/vars`.
pub fn build_api(daemon: Arc<Daemon>) -> Result<Api, RunError> {
    // The daemon's registry: its own metrics, and the API's request counters beside them.
    let telemetry = daemon.telemetry().clone();
    let debug = DebugVars::new();
    {
        let d = daemon.clone();
        debug.register("daemon", move || {
            let gc = d.gc_summary();
            let last = gc.last.map(|r| {
                let versions = |v: &[(outpost_types::PackageName, outpost_types::Version)]| {
                    v.iter()
                        .map(|(p, v)| format!("{p} {v}"))
                        .collect::<Vec<_>>()
                };
                serde_json::json!({
                    "removed_versions": versions(&r.removed_versions),
                    "kept_locked": versions(&r.kept_locked),
                    "removed_packages": r.removed_packages.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "repaired_links": r.repaired_links,
                    "removed_lock_files": r.removed_lock_files,
                    "removed_lock_dirs": r.removed_lock_dirs,
                    "removed_tmp_entries": r.removed_tmp_entries,
                })
            });
            serde_json::json!({
                "version": outpost_types::VERSION,
                "root": d.root(),
                "uptime_seconds": d.uptime().as_secs_f64(),
                "operations_waiting": d.operations_waiting(),
                "gc": {"runs": gc.runs, "failures": gc.failures, "last": last},
            })
        });
    }
    {
        let d = daemon.clone();
        debug.register("status", move || match d.status() {
            Ok(s) => serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        });
    }
    let mut builder = Api::builder()
        .access_policy(AccessPolicy::from_config(&daemon.config().api))
        .telemetry(telemetry.clone());
    builder.mount(routes::module(daemon.clone()));
    builder.mount(crate::config_routes::module(daemon));
    builder.mount(telemetry.module());
    builder.mount(debug.module());
    Ok(builder.build()?)
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// The signal handlers are installed first, before the state is opened and the socket bound:
/// a SIGTERM that arrives while the daemon is starting (a service manager stopping it right
/// away) still shuts it down gracefully instead of killing it mid-cleanup.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let started = Instant::now();
    let shutdown = shutdown_signal();
    let root = options.root.clone();
    let config = options.config.clone();
    let daemon = tokio::task::spawn_blocking(move || Daemon::open(&root, config))
        .await
        .map_err(|e| DaemonError::Internal(format!("start-up task failed: {e}")))?
        .map_err(|e| match e {
            DaemonError::Repo(outpost_repo::RepoError::WriterLocked { .. }) => {
                RunError::AlreadyRunning {
                    root: options.root.clone(),
                    socket: options.socket.clone(),
                    source: Box::new(e),
                }
            }
            e => RunError::Daemon(e),
        })?;
    let api = build_api(daemon.clone())?;
    let telemetry = &options.config.telemetry;
    let listener = match telemetry.listen {
        Some(addr) => {
            let exposure = outpost_api::Exposure::from_allow_remote(telemetry.allow_remote);
            let listener = crate::listener::bind(daemon.clone(), addr, exposure).await?;
            tracing::info!(tcp.addr = %listener.local_addr(), "serving /metrics");
            Some(listener)
        }
        None => None,
    };
    let mut server = Server::new(api).bind_unix(&options.socket).await?;
    let api_config = &options.config.api;
    socket_access::grant(
        &options.socket,
        &api_config.allow_uids,
        &api_config.allow_gids,
    )?;
    // Leftovers of a crash are removed in the background; mutations wait for it.
    let cleanup = daemon.start_cleanup();
    // Experiments resume their watches; an expired one is stopped once the cleanup is done.
    daemon.start_watches()?;
    let status_server = crate::status_socket::bind(&options.root).await?;
    // The fleet poller, when `fleet:` is configured; its operations wait for the cleanup too.
    let fleet = daemon.start_fleet();
    if let Some(addr) = options.config.api.tcp {
        server = server.bind_tcp(addr).await?;
        tracing::warn!(tcp.addr = %addr, "TCP listener enabled by configuration");
    }
    tracing::info!(
        root = %options.root.display(),
        socket.path = %options.socket.display(),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        version = outpost_types::VERSION,
        "daemon accepting requests"
    );

    let every = options.config.packages.gc_interval.0;
    let gc = if every.is_zero() {
        tracing::warn!(
            "packages.gc_interval is 0: no periodic garbage collection (it still runs after each operation)"
        );
        None
    } else {
        let daemon = daemon.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                daemon.gc().await;
            }
        }))
    };

    // One shutdown for the sockets and the listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        // Nobody listening any more just means all already stopped.
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens after it sent `true`.
        let _ = rx.wait_for(|s| *s).await;
    };
    let listener_served = async {
        match listener {
            Some(l) => l.serve(stopped(stop_rx.clone())).await,
            None => Ok(()),
        }
    };
    let (served, status_served, listener_served) = tokio::join!(
        server.serve(stopped(stop_rx.clone())),
        status_server.serve(stopped(stop_rx.clone())),
        listener_served
    );
    stopper.abort();
    served?;
    status_served?;
    listener_served?;
    if let Some(gc) = gc {
        gc.abort();
    }
    if let Some(fleet) = fleet {
        fleet.abort();
    }
    if let Err(e) = cleanup.await {
        tracing::warn!(error = %e, "start-up cleanup task failed");
    }
    // The server drained every request, including a running operation; wait for a GC started
    // after it so the daemon exits at a safe point.
    daemon.gc().await;
    tracing::info!("daemon stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now, and returns a future that completes when
/// either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
