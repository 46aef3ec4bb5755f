//! One connection of a listener: its slot in the listener's table (in flight or silent, and
//! how the accept loop closes it), the body guard with its read timeout and the drain of an
//! unread body, the per-connection service, and the I/O guard with its write timeout.

use super::*;

/// A connection's place in its listener's [`Connections`]: whether a request is in flight, and
/// how the accept loop tells it to close.
pub(super) struct ConnSlot {
    pub(super) state: AtomicU8,
    /// The last read found nothing to read: the client is silent (between requests, or
    /// trickling), not one whose request is waiting to be parsed.
    pub(super) quiet: AtomicBool,
    pub(super) evict: Notify,
}

/// No request in flight: may be closed to make room.
pub(super) const IDLE: u8 = 0;
/// A request is in flight: never closed to make room.
pub(super) const BUSY: u8 = 1;
/// Chosen to make room: its task closes it.
pub(super) const EVICTED: u8 = 2;

impl ConnSlot {
    pub(super) fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            quiet: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    /// Marks a request in flight; false if the connection was already chosen for closing.
    pub(super) fn begin(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Closes the connection if it has no request in flight.
    pub(super) fn try_evict(&self) -> bool {
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
pub(super) struct Connections {
    pub(super) max: usize,
    pub(super) slots: Mutex<BTreeMap<u64, Arc<ConnSlot>>>,
    /// Signalled when a connection ends, a request finishes or a connection falls silent: room
    /// may have appeared.
    pub(super) room: Notify,
}

impl Connections {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            slots: Mutex::new(BTreeMap::new()),
            room: Notify::new(),
        }
    }

    pub(super) fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnSlot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers connection `id` if there is room, closing the oldest silent connection when
    /// at the limit: one with no request in flight whose last read found nothing. A connection
    /// not read yet is never chosen (its request may be waiting in the socket). `None` when
    /// there is no such connection yet.
    pub(super) fn admit(&self, id: u64) -> Option<Arc<ConnSlot>> {
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

    pub(super) fn remove(&self, id: u64) {
        self.slots().remove(&id);
        self.room.notify_one();
    }
}

/// Marks a request in flight on its connection until dropped.
pub(super) struct InFlight {
    pub(super) slot: Arc<ConnSlot>,
    pub(super) connections: Arc<Connections>,
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
pub(super) struct GuardedBody {
    pub(super) state: Arc<Mutex<BodyState>>,
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
    pub(super) timeout: Duration,
}

/// The body of one request, shared by the [`GuardedBody`] and the connection's service.
pub(super) struct BodyState {
    pub(super) incoming: Option<Incoming>,
    /// Bytes of the body read so far.
    pub(super) read: u64,
    /// Whether anything polled the body (which, under `Expect: 100-continue`, asks the client
    /// to send it).
    pub(super) polled: bool,
    pub(super) timed_out: bool,
}

/// The error a [`GuardedBody`] fails with when the body read timeout passes.
#[derive(Debug)]
pub(super) struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it did not arrive within {} ms", self.0.as_millis())
    }
}

impl std::error::Error for BodyTimeout {}

pub(super) fn body_state(state: &Mutex<BodyState>) -> std::sync::MutexGuard<'_, BodyState> {
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
pub(super) async fn drain(
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
pub(super) struct ConnectionService {
    pub(super) api: Api,
    pub(super) peer: ConnectInfo<Peer>,
    /// The caller, resolved (through the cache) on the connection's first request: the
    /// credentials are those of the connecting process and cannot change on the connection.
    pub(super) caller: Arc<OnceLock<Option<Caller>>>,
    pub(super) limits: Arc<ServerLimits>,
    pub(super) slot: Arc<ConnSlot>,
    pub(super) connections: Arc<Connections>,
    pub(super) methods: Methods,
}

pub(super) fn with_connection_close(mut response: Response) -> Response {
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
pub(super) struct GuardedIo<T> {
    pub(super) io: T,
    pub(super) timeout: Duration,
    pub(super) stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) slot: Arc<ConnSlot>,
    pub(super) connections: Arc<Connections>,
}

impl<T> GuardedIo<T> {
    pub(super) fn new(
        io: T,
        timeout: Duration,
        slot: Arc<ConnSlot>,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            slot,
            connections,
        }
    }

    /// Passes a write's result on, failing it once the write has been pending too long.
    pub(super) fn watch<R>(
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
