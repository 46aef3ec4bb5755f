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
//! Each connection is served by hyper's HTTP/1.1 server on its own task, with a 30 s limit for
//! receiving a request's headers. The connection's [`Peer`] (its `SO_PEERCRED` credentials,
//! read at accept time) reaches handlers as axum's `ConnectInfo<Peer>`, and the resolved
//! [`crate::Caller`] as an extension.
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

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustix::fs::Mode;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::caller::{Caller, Peer, PeerCredentials, Transport};
use crate::error::Error;
use crate::module::Api;

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
        }
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
        match fs_err::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                match tokio::net::UnixStream::connect(&path).await {
                    Ok(_) => return Err(Error::SocketInUse { path }),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The listener's backlog is full: it is alive.
                        return Err(Error::SocketInUse { path });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        tracing::info!(socket.path = %path.display(), "removing a stale socket");
                        fs_err::remove_file(&path).map_err(|source| Error::Io {
                            op: "remove the stale socket",
                            path: path.clone(),
                            source,
                        })?;
                    }
                    Err(source) => {
                        return Err(Error::Io {
                            op: "probe the existing socket",
                            path,
                            source,
                        });
                    }
                }
            }
            Ok(meta) => {
                return Err(Error::NotASocket {
                    kind: file_kind(meta.file_type()),
                    path,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    op: "inspect the socket path",
                    path,
                    source,
                });
            }
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

    /// Adds a TCP listener, for tests and tools. TCP callers have no credentials: they may
    /// use mutating routes only if the [`crate::AccessPolicy`] trusts TCP (the configuration
    /// set `api.tcp`).
    ///
    /// # Errors
    /// [`Error::BindTcp`].
    pub async fn bind_tcp(mut self, addr: SocketAddr) -> Result<Self, Error> {
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
        let Self { api, unix, tcp } = self;
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
            async move {
                if let Some(binding) = unix {
                    accept_loop(binding.listener, api, rx).await;
                }
            }
        };
        let tcp_serve = {
            let rx = stop_rx.clone();
            async move {
                if let Some(listener) = tcp {
                    accept_loop(listener, api, rx).await;
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

/// How long a client may take to send a request's headers before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener the accept loop can serve: yields streams with their [`Peer`].
trait Acceptor: Send + 'static {
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

/// The per-connection hyper service: adds the connection's [`Peer`] (as axum's
/// `ConnectInfo<Peer>`) to each request and hands it to the API.
#[derive(Clone)]
struct ConnectionService {
    api: Api,
    peer: ConnectInfo<Peer>,
    /// The caller, resolved (through the cache) on the connection's first request: the
    /// credentials are those of the connecting process and cannot change on the connection.
    caller: Arc<OnceLock<Option<Caller>>>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        let caller = self.caller.get_or_init(|| {
            let shared = &self.api.shared;
            shared.access.caller(&self.peer.0, &shared.callers)
        });
        if let Some(caller) = caller {
            req.extensions_mut().insert(caller.clone());
        }
        req.extensions_mut().insert(self.peer.clone());
        self.api.call_boxed(req.map(axum::body::Body::new))
    }
}

/// Accepts until `stop` turns true, serving each connection on its own task; then waits for
/// every connection to finish its request in flight (idle ones are closed at once).
async fn accept_loop<A: Acceptor>(listener: A, api: Api, mut stop: watch::Receiver<bool>) {
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (alive_tx, alive_rx) = watch::channel(());
    loop {
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
        let service = ConnectionService {
            api: api.clone(),
            peer: ConnectInfo(peer),
            caller: Arc::new(OnceLock::new()),
        };
        let mut stop = stop.clone();
        let alive = alive_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop_signalled(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
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
