//! Serving an [`Api`] on a Unix socket (and optionally TCP), with graceful shutdown.
//!
//! # Binding the socket
//! [`Server::bind_unix`] creates the parent directory, then looks at the socket path:
//! * nothing there: bind;
//! * a socket a live server answers on: refuse ([`Error::SocketInUse`], naming the path);
//! * a socket nobody answers on (left by a crash): remove it, bind;
//! * anything else (file, directory, symlink): refuse ([`Error::NotASocket`]), never remove.
//!
//! The socket is created with mode 0700 at bind time: the process umask is set to 077 around
//! `bind(2)` and restored right after, so there is no window in which the socket is open to
//! others and no chmod by path that a symlink could redirect. (The umask is process-wide:
//! another thread creating a file in that instant gets stricter permissions, never looser.)
//!
//! # Connections
//! Each connection is served by hyper's HTTP/1.1 server on its own task. The connection's
//! [`Peer`] (its `SO_PEERCRED` credentials, read at accept time) reaches handlers as axum's
//! `ConnectInfo<Peer>`, and the resolved [`crate::Caller`] as an extension.
//!
//! # Slow and hostile peers
//! Every limit is a field of [`ServerLimits`], set with [`Server::limits`]; the defaults suit
//! a local socket whose well-behaved callers (the CLI, tools) send a request at once and read
//! the answer at once.
//! * **Header read timeout** (10 s): a connection must deliver a complete request head within
//!   this time from the moment the server starts waiting for it: after the accept, and again
//!   after each answer on a keep-alive connection. A client sending a byte a second
//!   (slowloris), or nothing at all, is disconnected when it runs out.
//! * **Body read timeout** (10 s): the whole body of a request must arrive within this time
//!   from the end of its head. Otherwise the request is answered 400 `bad_request` ("the request
//!   body was not received within ...") and the connection is closed.
//! * **Write timeout** (10 s): a write of the answer that makes no progress for this long (a
//!   client that never reads its responses, so the socket buffer stays full) ends the
//!   connection.
//! * **Connection limit** (1024 per listener): at the limit, a new connection is accepted and
//!   the oldest *silent* connection is closed to make room: one with no request in flight
//!   whose last read found nothing (idle between requests, or trickling its head). Requests
//!   in flight are never cut, and a connection the server has not read yet is never chosen
//!   (its request may be waiting in the socket). With no silent connection, the new one waits
//!   until one falls silent, finishes or closes. So thousands of silent connections cost at
//!   most the limit in file descriptors and cannot lock out a new client.
//! * **Answers before the body is read**: when a request is answered without its body being
//!   read (an unknown route, 403, 405, 415, a stopped module), the server reads and discards the
//!   body (up to [`crate::BODY_LIMIT`], within the body read timeout) before sending the
//!   answer, so the client's write of its body never fails and the connection stays usable.
//!   A body declared larger than the limit, one that does not arrive in time, or one held back
//!   by `Expect: 100-continue` is not read: the answer then carries `Connection: close` and
//!   the connection ends after it.
//!
//! # Wiring it to the configuration
//! ```no_run
//! # async fn run(api_config: outpost_types::config::ApiConfig, socket: std::path::PathBuf,
//! #              shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), outpost_api::Error> {
//! use outpost_api::{AccessPolicy, Api, Server};
//! let builder = Api::builder().access_policy(AccessPolicy::from_config(&api_config));
//! // ... mount modules ...
//! let mut server = Server::new(builder.build()?).bind_unix(&socket).await?;
//! if let Some(addr) = api_config.tcp {
//!     server = server.bind_tcp(addr).await?; // TCP callers then count as the server's uid
//! }
//! server.serve(shutdown).await
//! # }
//! ```
//!
//! # Shutdown
//! When the shutdown future completes the server stops accepting, lets requests in flight
//! finish (idle keep-alive connections are closed), then removes the socket file if it is
//! still the one it created.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustix::fs::Mode;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, watch};

use crate::caller::{Caller, Peer, PeerCredentials, Transport};
use crate::error::Error;
use crate::module::Api;

mod conn;
mod public;
use conn::*;

struct UnixBinding {
    listener: UnixListener,
    path: PathBuf,
    identity: SocketIdentity,
}

/// What tells our socket file apart from one that replaced it (inode numbers are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketIdentity {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl SocketIdentity {
    fn of(meta: &std::fs::Metadata) -> Option<Self> {
        meta.file_type().is_socket().then(|| Self {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        })
    }
}

/// An [`Api`] with its listeners. See the [module docs](self).
pub struct Server {
    api: Api,
    unix: Option<UnixBinding>,
    tcp: Option<TcpListener>,
    limits: ServerLimits,
}

/// What the server allows a connection before closing it (see the
/// [module docs](self#slow-and-hostile-peers)). Start from [`ServerLimits::default`] and
/// change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Time to receive a complete request head, from the accept or the previous answer.
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body, from the end of its head. Default 10 s.
    pub body_read_timeout: Duration,
    /// Time a write of the answer may make no progress. Default 10 s.
    pub write_timeout: Duration,
    /// Connections served at once on each listener (at least 1). Default 1024.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("unix", &self.unix_path())
            .field("tcp", &self.tcp_local_addr())
            .finish_non_exhaustive()
    }
}

fn file_kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a fifo"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a socket"
    }
}

/// What sits at a socket path before binding.
pub(crate) enum Existing {
    /// Nothing.
    Nothing,
    /// A socket nobody answers on (left by a crash).
    StaleSocket,
}

/// Looks at `path` before binding: a live socket is [`Error::SocketInUse`], anything but a
/// socket [`Error::NotASocket`] (never removed); a stale socket or nothing is told apart.
pub(crate) async fn inspect_socket_path(path: &Path) -> Result<Existing, Error> {
    match fs_err::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match tokio::net::UnixStream::connect(path).await {
                Ok(_) => Err(Error::SocketInUse {
                    path: path.to_path_buf(),
                }),
                // The listener's backlog is full: it is alive.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::SocketInUse {
                    path: path.to_path_buf(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Ok(Existing::StaleSocket)
                }
                Err(source) => Err(Error::Io {
                    op: "probe the existing socket",
                    path: path.to_path_buf(),
                    source,
                }),
            }
        }
        Ok(meta) => Err(Error::NotASocket {
            kind: file_kind(meta.file_type()),
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(source) => Err(Error::Io {
            op: "inspect the socket path",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds `path` with umask 077 so the socket is born 0700.
fn bind_private(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let previous = rustix::process::umask(Mode::from_bits_truncate(0o077));
    let result = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(previous);
    result
}

impl Server {
    /// A server for `api` with no listener yet.
    pub fn new(api: Api) -> Self {
        Self {
            api,
            unix: None,
            tcp: None,
            limits: ServerLimits::default(),
        }
    }

    /// Replaces the connection limits (see [`ServerLimits`]).
    #[must_use]
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Binds the Unix socket at `path` (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::SocketInUse`], [`Error::NotASocket`], [`Error::Io`] (creating the directory,
    /// inspecting or removing a stale socket), [`Error::Bind`].
    pub async fn bind_unix(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(|source| Error::Io {
                op: "create the socket directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        if let Existing::StaleSocket = inspect_socket_path(&path).await? {
            tracing::info!(socket.path = %path.display(), "removing a stale socket");
            fs_err::remove_file(&path).map_err(|source| Error::Io {
                op: "remove the stale socket",
                path: path.clone(),
                source,
            })?;
        }
        let std_listener = bind_private(&path).map_err(|source| Error::Bind {
            path: path.clone(),
            source,
        })?;
        let meta = fs_err::symlink_metadata(&path).map_err(|source| Error::Io {
            op: "inspect the new socket",
            path: path.clone(),
            source,
        })?;
        let listener = std_listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(std_listener))
            .map_err(|source| Error::Bind {
                path: path.clone(),
                source,
            })?;
        let Some(identity) = SocketIdentity::of(&meta) else {
            return Err(Error::NotASocket {
                kind: file_kind(meta.file_type()),
                path,
            });
        };
        tracing::info!(socket.path = %path.display(), "API listening");
        self.unix = Some(UnixBinding {
            listener,
            identity,
            path,
        });
        Ok(self)
    }

    /// Adds a TCP listener, for tests and tools, on a loopback address only (`127.0.0.0/8` or
    /// `::1`): TCP callers have no credentials, and when the configuration set `api.tcp` the
    /// [`crate::AccessPolicy`] trusts them as the server's own uid, so the listener must never
    /// be reachable from another host.
    ///
    /// # Errors
    /// [`Error::BindTcp`], also (with an `InvalidInput` cause) for an address that is not
    /// loopback, such as `0.0.0.0`.
    pub async fn bind_tcp(mut self, addr: SocketAddr) -> Result<Self, Error> {
        if !addr.ip().is_loopback() {
            return Err(Error::BindTcp {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the TCP listener is for local tests and tools: only a loopback address \
                     (127.0.0.0/8 or ::1) may be bound",
                ),
            });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::BindTcp { addr, source })?;
        tracing::info!(tcp.addr = %addr, "API listening on TCP");
        self.tcp = Some(listener);
        Ok(self)
    }

    /// The Unix socket path, once bound.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|u| u.path.as_path())
    }

    /// The TCP address actually bound (useful with port 0).
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains and cleans up (see the
    /// [module docs](self)). Also sweeps the API's caller cache on its interval.
    ///
    /// # Errors
    /// [`Error::NoListener`] if nothing was bound; [`Error::Io`] if the socket file could not
    /// be removed at the end.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            api,
            unix,
            tcp,
            limits,
        } = self;
        let limits = Arc::new(limits);
        if unix.is_none() && tcp.is_none() {
            return Err(Error::NoListener);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let signal = tokio::spawn(async move {
            shutdown.await;
            // Nobody listening any more just means everything already stopped.
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which only happens after it sent `true`.
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let sweeper = {
            let callers = api.caller_cache().clone();
            let rx = stop_rx.clone();
            async move { callers.run_sweeper(stopped(rx)).await }
        };
        let unix_path = unix.as_ref().map(|u| (u.path.clone(), u.identity));
        let unix_serve = {
            let api = api.clone();
            let rx = stop_rx.clone();
            let limits = Arc::clone(&limits);
            async move {
                if let Some(binding) = unix {
                    accept_loop(binding.listener, api, limits, rx, Methods::All).await;
                }
            }
        };
        let tcp_serve = {
            let rx = stop_rx.clone();
            async move {
                if let Some(listener) = tcp {
                    accept_loop(listener, api, limits, rx, Methods::All).await;
                }
            }
        };
        tokio::join!(unix_serve, tcp_serve, sweeper);
        signal.abort();

        if let Some((path, identity)) = unix_path {
            match fs_err::symlink_metadata(&path) {
                Ok(meta) if SocketIdentity::of(&meta) == Some(identity) => {
                    fs_err::remove_file(&path).map_err(|source| Error::Io {
                        op: "remove the socket",
                        path: path.clone(),
                        source,
                    })?;
                }
                Ok(_) => tracing::warn!(
                    socket.path = %path.display(),
                    "the socket path was replaced while serving; leaving it"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "inspect the socket",
                        path,
                        source,
                    });
                }
            }
            tracing::info!(socket.path = %path.display(), "API stopped");
        }
        Ok(())
    }
}

/// A listener the accept loop can serve: yields streams with their [`Peer`].
pub(crate) trait Acceptor: Send + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Peer)>> + Send;
}

impl Acceptor for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Peer)> {
        let (stream, _) = UnixListener::accept(self).await?;
        let credentials = match PeerCredentials::of(&stream) {
            Ok(c) => Some(c),
            Err(error) => {
                tracing::warn!(%error, "could not read the peer credentials of a connection");
                None
            }
        };
        Ok((
            stream,
            Peer {
                transport: Transport::Unix,
                credentials,
            },
        ))
    }
}

impl Acceptor for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Peer)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        Ok((
            stream,
            Peer {
                transport: Transport::Tcp(addr),
                credentials: None,
            },
        ))
    }
}

/// Resolves once `stop` is true (or its sender is gone, which happens only after that).
async fn stop_signalled(stop: &mut watch::Receiver<bool>) {
    // The guard is dropped here, before the caller's next await.
    let _ = stop.wait_for(|s| *s).await;
}

/// Errors of one connection attempt, not of the listener: accept again at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Which methods a listener passes on to the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Methods {
    /// Every method (the API's own rules decide).
    All,
    /// `GET` and `HEAD` only; anything else is answered 405 before routing
    /// ([`crate::readonly`]).
    ReadOnly,
}

/// Accepts until `stop` turns true, serving each connection on its own task within `limits`;
/// then waits for every connection to finish its request in flight (idle ones are closed at
/// once).
pub(crate) async fn accept_loop<A: Acceptor>(
    listener: A,
    api: Api,
    limits: Arc<ServerLimits>,
    mut stop: watch::Receiver<bool>,
    methods: Methods,
) {
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (alive_tx, alive_rx) = watch::channel(());
    let connections = Arc::new(Connections::new(limits.max_connections));
    let mut next_id: u64 = 0;
    'accept: loop {
        let accepted = tokio::select! {
            biased;
            () = stop_signalled(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (io, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            Err(error) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::error!(%error, "accepting a connection failed");
                tokio::select! {
                    () = stop_signalled(&mut stop) => break,
                    () = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
        };
        let id = next_id;
        next_id += 1;
        let mut waited = false;
        let slot = loop {
            // Registered before the check, so a request finishing in between is not missed.
            let room = connections.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(slot) = connections.admit(id) {
                break slot;
            }
            if !waited {
                waited = true;
                // Debug, like the closing of a silent connection: a flood must not flood the log.
                tracing::debug!(
                    connection.limit = connections.max,
                    "connection limit reached and no connection is silent yet; a new one waits"
                );
            }
            tokio::select! {
                () = stop_signalled(&mut stop) => break 'accept,
                () = room => {}
            }
        };
        let service = ConnectionService {
            api: api.clone(),
            peer: ConnectInfo(peer),
            caller: Arc::new(OnceLock::new()),
            limits: Arc::clone(&limits),
            slot: Arc::clone(&slot),
            connections: Arc::clone(&connections),
            methods,
        };
        let mut stop = stop.clone();
        let alive = alive_rx.clone();
        let connections = Arc::clone(&connections);
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let io = GuardedIo::new(
                io,
                limits.write_timeout,
                Arc::clone(&slot),
                Arc::clone(&connections),
            );
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = slot.evict.notified() => Ok(()),
                () = stop_signalled(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            connections.remove(id);
            drop(alive);
        });
    }
    drop(listener);
    drop(alive_rx);
    alive_tx.closed().await;
}

/// Binds `path` and serves `api` until `shutdown` completes. Shorthand for
/// `Server::new(api).bind_unix(path).await?.serve(shutdown).await`.
///
/// # Errors
/// See [`Server::bind_unix`] and [`Server::serve`].
pub async fn serve_unix<F>(path: impl AsRef<Path>, api: Api, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    Server::new(api)
        .bind_unix(path)
        .await?
        .serve(shutdown)
        .await
}
