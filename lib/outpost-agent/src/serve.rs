//! `outpost agent`: starts the agent, serves its API on `<root>/run/agent.sock`, reloads on
//! SIGHUP, and shuts down gracefully on SIGTERM or SIGINT.
//!
//! Start-up order: signal handlers (a signal during start-up is honoured once it is up), the
//! `--output` file, Python (failing that, the agent still serves its API and says why), the
//! scheduler and the first load, then the socket (0700). Shutdown: the API stops accepting,
//! scheduling stops, `cancel()` is requested for every check, runs in progress get the grace
//! period (`agent.shutdown_timeout`, default 5 s), requests in flight are answered, the
//! socket is removed.
//!
//! With `agent.listen` (or `--listen`), `GET /metrics` and the status page (`GET /`, see
//! [`crate::page`]) are also served on that TCP address by a read-only listener (loopback unless `agent.allow_remote: true`); it is bound before the
//! socket, so a refused address stops the start-up with the reason. Runs still going after that are abandoned with the process.

use std::sync::Arc;

use outpost_api::{AccessPolicy, Exposure, ReadOnlyServer, Server};
use outpost_types::config::ApiConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::agent::{Agent, AgentOptions};
use crate::error::AgentError;

/// Runs the agent until SIGTERM or SIGINT. Returns `Ok` after a graceful shutdown.
///
/// # Errors
/// Start-up failures: [`AgentError::AlreadyRunning`], [`AgentError::Output`],
/// [`AgentError::InvalidConfig`], [`AgentError::Thread`], [`AgentError::Api`] (the socket
/// cannot be bound).
pub async fn run(options: AgentOptions, api: &ApiConfig) -> Result<(), AgentError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler; reload with `outpost agent reload`");
            None
        }
    };
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            let stop = Arc::clone(&stop_tx);
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
                // Receivers outlive the process's useful life; a send error means nobody waits.
                let _ = stop.send(true);
            });
        }
        _ => tracing::error!(
            "cannot install the SIGTERM/SIGINT handlers; stop the agent with SIGKILL"
        ),
    }

    let socket = options.socket_path();
    // Before any check runs: a live agent on this root is not to be doubled (binding the
    // socket below refuses it too, but only after the checks would have started).
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return Err(AgentError::AlreadyRunning { socket });
    }
    let agent = Agent::start(options).await?;
    let api = crate::api::build_api(&agent, AccessPolicy::from_config(api))?;
    let metrics = match agent.options().agent.listen {
        Some(addr) => {
            let config = &agent.options().agent;
            let mut builder = ReadOnlyServer::builder()
                .telemetry(api.telemetry().clone())
                .mount(crate::api::metrics_routes(
                    agent.clone(),
                    api.telemetry().clone(),
                ));
            for routes in crate::page::routes(&agent) {
                builder = builder.mount(routes);
            }
            let listener = builder
                .bind(addr, Exposure::from_allow_remote(config.allow_remote))
                .await?;
            tracing::info!(tcp.addr = %listener.local_addr(), "serving /metrics and the status page");
            Some(listener)
        }
        None => None,
    };
    let server = Server::new(api).bind_unix(&socket).await?;
    tracing::info!(
        socket.path = %socket.display(),
        python.available = agent.python_status().available,
        instances = agent.scheduler_stats().jobs,
        runners = agent.options().scheduler.runners,
        "check agent running"
    );

    let reloader = {
        let agent = agent.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let Some(hangup) = hangup.as_mut() else {
                return;
            };
            loop {
                let hung_up = tokio::select! {
                    stopped = stop.wait_for(|s| *s) => {
                        drop(stopped);
                        false
                    }
                    got = hangup.recv() => got.is_some(),
                };
                if !hung_up {
                    return;
                }
                tracing::info!("SIGHUP: reloading check configurations");
                if let Err(e) = agent.reload().await {
                    tracing::error!(error = %e, "reload failed; the previous configuration keeps running");
                }
            }
        })
    };

    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            // An error means the sender is gone, which only happens after it sent `true`.
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let scheduler_stop = {
        let agent = agent.clone();
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
            match agent.shutdown().await {
                Ok(report) => tracing::info!(
                    cancelled = report.cancelled,
                    unfinished = %report.unfinished.join(", "),
                    "checks stopped"
                ),
                Err(e) => tracing::warn!(error = %e, "stopping the checks"),
            }
        }
    };
    // The server drains requests in flight while the scheduler stops (a run-now request is
    // answered when its run ends or the scheduler gives up on it).
    let metrics_serve = {
        let mut rx = stop_rx.clone();
        async move {
            match metrics {
                Some(listener) => {
                    listener
                        .serve(async move {
                            let _ = rx.wait_for(|s| *s).await;
                        })
                        .await
                }
                None => Ok(()),
            }
        }
    };
    let (served, (), metrics_served) =
        tokio::join!(server.serve(stopped), scheduler_stop, metrics_serve);
    reloader.abort();
    served?;
    metrics_served?;
    tracing::info!("check agent stopped");
    Ok(())
}
