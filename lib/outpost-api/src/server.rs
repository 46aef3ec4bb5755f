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

/// A connection's place in its listener's [`Connections`]: whether a request is in flight, and
/// how the accept loop tells it to close.
struct ConnSlot {
    state: AtomicU8,
    /// The last read found nothing to read: the client is silent (between requests, or
    /// trickling), not one whose request is waiting to be parsed.
    quiet: AtomicBool,
    evict: Notify,
}

/// No request in flight: may be closed to make room.
const IDLE: u8 = 0;
/// A request is in flight: never closed to make room.
const BUSY: u8 = 1;
/// Chosen to make room: its task closes it.
const EVICTED: u8 = 2;

impl ConnSlot {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            quiet: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    /// Marks a request in flight; false if the connection was already chosen for closing.
    fn begin(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Closes the connection if it has no request in flight.
    fn try_evict(&self) -> bool {
        let evicted = self
            .state
            .compare_exchange(IDLE, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            self.evict.notify_one();
        }
        evicted
    }
}

/// The connections of one listener, oldest first, bounded by [`ServerLimits::max_connections`].
struct Connections {
    max: usize,
    slots: Mutex<BTreeMap<u64, Arc<ConnSlot>>>,
    /// Signalled when a connection ends, a request finishes or a connection falls silent: room
    /// may have appeared.
    room: Notify,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            slots: Mutex::new(BTreeMap::new()),
            room: Notify::new(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnSlot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers connection `id` if there is room, closing the oldest silent connection when
    /// at the limit: one with no request in flight whose last read found nothing. A connection
    /// not read yet is never chosen (its request may be waiting in the socket). `None` when
    /// there is no such connection yet.
    fn admit(&self, id: u64) -> Option<Arc<ConnSlot>> {
        let mut slots = self.slots();
        if slots.len() >= self.max {
            let victim = slots
                .iter()
                .find(|(_, slot)| slot.quiet.load(Ordering::Acquire) && slot.try_evict())
                .map(|(id, _)| *id)?;
            slots.remove(&victim);
            tracing::debug!(
                connection.limit = self.max,
                "connection limit reached; closed the oldest idle connection"
            );
        }
        let slot = Arc::new(ConnSlot::new());
        slots.insert(id, Arc::clone(&slot));
        Some(slot)
    }

    fn remove(&self, id: u64) {
        self.slots().remove(&id);
        self.room.notify_one();
    }
}

/// Marks a request in flight on its connection until dropped.
struct InFlight {
    slot: Arc<ConnSlot>,
    connections: Arc<Connections>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Only BUSY goes back to IDLE; nothing else changes a BUSY slot.
        let _ = self
            .slot
            .state
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
        self.connections.room.notify_one();
    }
}

/// The request body as the server hands it to the API: it fails once the body read timeout
/// has passed, and leaves what was not read in [`BodyState`] for the server to drain.
struct GuardedBody {
    state: Arc<Mutex<BodyState>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

/// The body of one request, shared by the [`GuardedBody`] and the connection's service.
struct BodyState {
    incoming: Option<Incoming>,
    /// Bytes of the body read so far.
    read: u64,
    /// Whether anything polled the body (which, under `Expect: 100-continue`, asks the client
    /// to send it).
    polled: bool,
    timed_out: bool,
}

/// The error a [`GuardedBody`] fails with when the body read timeout passes.
#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it did not arrive within {} ms", self.0.as_millis())
    }
}

impl std::error::Error for BodyTimeout {}

fn body_state(state: &Mutex<BodyState>) -> std::sync::MutexGuard<'_, BodyState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let timed_out = self.deadline.as_mut().poll(cx).is_ready();
        let timeout = self.timeout;
        let mut state = body_state(&self.state);
        state.polled = true;
        if timed_out {
            state.timed_out = true;
            state.incoming = None;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))));
        }
        let Some(incoming) = state.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(incoming).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            state.read += data.len() as u64;
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        body_state(&self.state)
            .incoming
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        body_state(&self.state).incoming.as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            hyper::body::Body::size_hint,
        )
    }
}

/// Reads and discards what is left of a request body that was answered unread, so the client
/// can finish sending it; true if the body ended within the limit and the deadline.
async fn drain(
    state: &Mutex<BodyState>,
    deadline: tokio::time::Instant,
    expects_continue: bool,
) -> bool {
    let (incoming, read, polled) = {
        let mut state = body_state(state);
        if state.timed_out {
            return false;
        }
        let read = state.read;
        let polled = state.polled;
        match state.incoming.take() {
            None => return true,
            Some(incoming) if hyper::body::Body::is_end_stream(&incoming) => return true,
            Some(incoming) => (incoming, read, polled),
        }
    };
    // The client waits for `100 Continue` before sending: nothing to drain, nothing to ask for.
    if expects_continue && !polled {
        return false;
    }
    let limit = crate::BODY_LIMIT as u64;
    let mut read = read;
    if hyper::body::Body::size_hint(&incoming).lower() > limit.saturating_sub(read) {
        return false;
    }
    let mut body = incoming;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                    if read > limit {
                        return false;
                    }
                }
            }
            Ok(None) => return true,
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// The per-connection hyper service: adds the connection's [`Peer`] (as axum's
/// `ConnectInfo<Peer>`) to each request, bounds the body's read time, hands the request to the
/// API, and drains a body the answer left unread.
#[derive(Clone)]
struct ConnectionService {
    api: Api,
    peer: ConnectInfo<Peer>,
    /// The caller, resolved (through the cache) on the connection's first request: the
    /// credentials are those of the connecting process and cannot change on the connection.
    caller: Arc<OnceLock<Option<Caller>>>,
    limits: Arc<ServerLimits>,
    slot: Arc<ConnSlot>,
    connections: Arc<Connections>,
    methods: Methods,
}

fn with_connection_close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        if !self.slot.begin() {
            // Closed to make room an instant ago: the connection ends after this answer.
            let response = crate::error::error_response(
                outpost_types::ErrorCode::Unavailable,
                "too many connections",
            );
            return Box::pin(std::future::ready(Ok(with_connection_close(response))));
        }
        let in_flight = InFlight {
            slot: Arc::clone(&self.slot),
            connections: Arc::clone(&self.connections),
        };
        let caller = self.caller.get_or_init(|| {
            let shared = &self.api.shared;
            shared.access.caller(&self.peer.0, &shared.callers)
        });
        let (mut parts, incoming) = req.into_parts();
        if let Some(caller) = caller {
            parts.extensions.insert(caller.clone());
        }
        parts.extensions.insert(self.peer.clone());
        let expects_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let timeout = self.limits.body_read_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let state = Arc::new(Mutex::new(BodyState {
            incoming: Some(incoming),
            read: 0,
            polled: false,
            timed_out: false,
        }));
        let body = GuardedBody {
            state: Arc::clone(&state),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
        };
        let answer = if self.methods == Methods::ReadOnly
            && !crate::readonly::read_only_method(&parts.method)
        {
            let mut response = crate::error::error_response(
                outpost_types::ErrorCode::MethodNotAllowed,
                "this listener is read-only: only GET and HEAD are served",
            );
            crate::readonly::set_allow(response.headers_mut());
            Box::pin(std::future::ready(Ok(response)))
        } else {
            self.api.call_boxed(http::Request::from_parts(
                parts,
                axum::body::Body::new(body),
            ))
        };
        Box::pin(async move {
            let Ok(response) = answer.await;
            let response = if drain(&state, deadline, expects_continue).await {
                response
            } else {
                with_connection_close(response)
            };
            drop(in_flight);
            Ok(response)
        })
    }
}

/// A connection's I/O: its writes fail once they make no progress for the write timeout, and
/// its reads tell the connection's slot whether the client is silent.
struct GuardedIo<T> {
    io: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    slot: Arc<ConnSlot>,
    connections: Arc<Connections>,
}

impl<T> GuardedIo<T> {
    fn new(io: T, timeout: Duration, slot: Arc<ConnSlot>, connections: Arc<Connections>) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            slot,
            connections,
        }
    }

    /// Passes a write's result on, failing it once the write has been pending too long.
    fn watch<R>(
        stalled: &mut Option<Pin<Box<tokio::time::Sleep>>>,
        timeout: Duration,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            *stalled = None;
            return polled;
        }
        let sleep = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            *stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} ms", timeout.as_millis()),
            )));
        }
        Poll::Pending
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Pending => {
                if !this.slot.quiet.swap(true, Ordering::AcqRel) {
                    // A connection that can be closed to make room.
                    this.connections.room.notify_one();
                }
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.slot.quiet.store(false, Ordering::Release);
            }
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        Self::watch(&mut this.stalled, this.timeout, cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        Self::watch(&mut this.stalled, this.timeout, cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        Self::watch(&mut this.stalled, this.timeout, cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        Self::watch(&mut this.stalled, this.timeout, cx, polled)
    }
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
