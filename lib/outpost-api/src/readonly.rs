//! A read-only TCP listener: `GET` routes only, for scrapers and (later) a status page.
//!
//! The mutating API lives on the Unix socket ([`crate::Server`]), where the caller's
//! credentials decide what it may do. A TCP peer has no credentials, so this listener is built
//! so that it *cannot* route to anything that changes state:
//!
//! * Its routes are [`ReadOnlyRoutes`], whose only way to add a route is
//!   [`ReadOnlyRoutes::get`]; there is no way to mount a [`crate::Module`] (the type the
//!   mutating modules are made of) on it.
//! * Every request whose method is not `GET` or `HEAD` is answered 405 `method_not_allowed`
//!   (with `Allow: GET, HEAD`) before routing, whatever its path.
//! * No caller is ever privileged: the access policy trusts no TCP peer.
//!
//! # Binding
//! [`ReadOnlyBuilder::bind`] binds a loopback address (`127.0.0.0/8`, `::1`) unless the
//! configuration said `allow_remote: true` beside the address ([`Exposure::Remote`]); any
//! other address (`0.0.0.0` included) is refused with [`Error::BindTcp`] naming the
//! address and the key to set.
//!
//! # Limits
//! Connections are served by the same machinery as the API's listeners, with the same
//! [`ServerLimits`] (header, body and write timeouts, connection limit) and the same
//! conventions (unknown route: 404 JSON; a `.`/`..` path: 400; a body over 1 MiB: 413).
//!
//! # What to serve
//! Whatever is mounted must reveal no secret: no credential, no password file's content, no
//! URL with its user information. The routes' authors answer for their content; the
//! listener's part is that they can only read.
//!
//! ```no_run
//! # async fn run() -> Result<(), outpost_api::Error> {
//! use outpost_api::readonly::{Exposure, ReadOnlyRoutes, ReadOnlyServer};
//! let listener = ReadOnlyServer::builder()
//!     .mount(ReadOnlyRoutes::new("metrics").get("/", || async { "up 1\n" }))
//!     .bind("127.0.0.1:9464".parse().unwrap(), Exposure::Loopback)
//!     .await?;
//! let addr = listener.local_addr();
//! listener.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::handler::Handler;
use http::{HeaderValue, Method, header};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::caller::AccessPolicy;
use crate::error::Error;
use crate::module::{Api, ApiBuilder, Module};
use crate::server::ServerLimits;
use crate::telemetry::Telemetry;

/// Whether a non-loopback address may be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback addresses only (the default).
    Loopback,
    /// Any address: the configuration said `allow_remote: true`.
    Remote,
}

impl Exposure {
    /// [`Exposure::Remote`] when `allow_remote` is true.
    pub fn from_allow_remote(allow_remote: bool) -> Self {
        if allow_remote {
            Self::Remote
        } else {
            Self::Loopback
        }
    }
}

/// A group of `GET` routes for the read-only listener, mounted under `/<name>`
/// ([`ReadOnlyRoutes::new`]) or at the root ([`ReadOnlyRoutes::root`]). Handlers are ordinary
/// axum handlers; `GET` routes also answer `HEAD`.
pub struct ReadOnlyRoutes<S = ()> {
    module: Module<S>,
}

impl<S> std::fmt::Debug for ReadOnlyRoutes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyRoutes")
            .field("module", &self.module)
            .finish()
    }
}

impl<S: Clone + Send + Sync + 'static> ReadOnlyRoutes<S> {
    /// Routes mounted under `/<name>` (`name` as for [`Module::new`]).
    pub fn new(name: &str) -> Self {
        Self {
            module: Module::new(name),
        }
    }

    /// Routes mounted at `/` (a status page's `GET /`).
    pub fn root(name: &str) -> Self {
        Self {
            module: Module::root(name),
        }
    }

    /// Adds (or replaces) `GET path`. The only kind of route there is.
    #[must_use]
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        Self {
            module: self.module.get(path, handler),
        }
    }

    /// Gives the handlers their state (axum's `State<S>`).
    pub fn with_state(self, state: S) -> ReadOnlyRoutes<()> {
        ReadOnlyRoutes {
            module: self.module.with_state(state),
        }
    }
}

/// Assembles the routes of a [`ReadOnlyServer`].
#[derive(Debug)]
pub struct ReadOnlyBuilder {
    api: ApiBuilder,
    limits: ServerLimits,
}

/// A bound read-only listener (see the [module docs](self)).
pub struct ReadOnlyServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    api: Api,
    limits: ServerLimits,
}

impl std::fmt::Debug for ReadOnlyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ReadOnlyServer {
    /// A builder with no route, the default [`ServerLimits`] and a registry of its own for
    /// the request counters.
    pub fn builder() -> ReadOnlyBuilder {
        // The listener's own peers are never trusted, whatever `api.tcp` says.
        let access = AccessPolicy::from_config(&outpost_types::config::ApiConfig::default());
        ReadOnlyBuilder {
            api: Api::builder().access_policy(access),
            limits: ServerLimits::default(),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (idle
    /// connections are closed at once).
    ///
    /// # Errors
    /// None today; the `Result` leaves room for start-up failures.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let signal = tokio::spawn(async move {
            shutdown.await;
            // Nobody listening any more just means everything already stopped.
            let _ = stop_tx.send(true);
        });
        let addr = self.local_addr;
        crate::server::accept_loop(
            self.listener,
            self.api,
            Arc::new(self.limits),
            stop_rx,
            crate::server::Methods::ReadOnly,
        )
        .await;
        signal.abort();
        tracing::info!(tcp.addr = %addr, "read-only listener stopped");
        Ok(())
    }
}

impl ReadOnlyBuilder {
    /// Counts requests (`outpost_api_requests_total`) in `telemetry` instead of a registry of
    /// the listener's own (so that they show in the exposition it serves).
    #[must_use]
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.api = self.api.telemetry(telemetry);
        self
    }

    /// Replaces the connection limits.
    #[must_use]
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Mounts a group of routes (a route mounted twice replaces the first).
    #[must_use]
    pub fn mount(mut self, routes: ReadOnlyRoutes) -> Self {
        self.api.mount(routes.module);
        self
    }

    /// Builds the router and binds `addr`.
    ///
    /// # Errors
    /// [`Error::BindTcp`] for a non-loopback address without [`Exposure::Remote`] (an
    /// `InvalidInput` cause), or when the address cannot be bound; the router's errors
    /// ([`Error::InvalidModuleName`], [`Error::InvalidRoute`], [`Error::RouteConflict`]).
    pub async fn bind(self, addr: SocketAddr, exposure: Exposure) -> Result<ReadOnlyServer, Error> {
        if exposure == Exposure::Loopback && !addr.ip().is_loopback() {
            return Err(Error::BindTcp {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a loopback address: set `allow_remote: true` beside the address to \
                     expose the read-only listener to other hosts",
                ),
            });
        }
        let api = self.api.build()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::BindTcp { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::BindTcp { addr, source })?;
        tracing::info!(tcp.addr = %local_addr, remote = exposure == Exposure::Remote, "read-only listener bound");
        Ok(ReadOnlyServer {
            listener,
            local_addr,
            api,
            limits: self.limits,
        })
    }
}

/// `Allow` of every read-only route.
pub(crate) const READ_ONLY_ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// Whether the read-only listener passes a request with this method on to routing.
pub(crate) fn read_only_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Sets the `Allow` header of a refused method.
pub(crate) fn set_allow(headers: &mut http::HeaderMap) {
    headers.insert(header::ALLOW, READ_ONLY_ALLOW);
}
