//! Slow and hostile peers against the real server on a real Unix socket: slowloris heads and
//! bodies, thousands of silent connections, clients that never read their answers, and
//! requests answered before their body was read. Each attack runs with short limits
//! ([`ServerLimits`]) while a well-behaved client keeps asking `GET /status`; its latency is
//! printed and must stay under [`NORMAL_LATENCY_BOUND`].
//!
//! The clients here write raw bytes on purpose: the point is what goes over the socket.
// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use outpost_api::{AccessPolicy, Api, Error, Json, Module, Server, ServerLimits};
use outpost_types::config::ApiConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a normal client's `/status` round trip must stay under during an attack (it takes
/// well under a millisecond on an idle machine). This is a liveness bound, not a performance
/// target: the suite runs other test binaries on the same two cores, and the flood's worst
/// connect waits behind 10,000 others in the listen backlog (up to ~0.7 s seen under load).
const NORMAL_LATENCY_BOUND: Duration = Duration::from_secs(3);

/// Size of the `/big` answer, so a client that never reads fills its socket buffer.
const BIG: usize = 256 * 1024;

/// Requests to `/hold` wait until a permit is added here.
static HOLD: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

fn api(config: &ApiConfig) -> Api {
    async fn hold() -> Json<Value> {
        HOLD.acquire().await.unwrap().forget();
        Json(json!({"held": true}))
    }
    async fn status() -> Json<Value> {
        Json(json!({"version": "test", "packages": {}}))
    }
    async fn echo(body: Option<Json<Value>>) -> Json<Value> {
        Json(json!({"echo": body.map(|Json(v)| v)}))
    }
    async fn big() -> Json<Value> {
        Json(json!({"filler": "x".repeat(BIG)}))
    }
    let mut builder = Api::builder().access_policy(AccessPolicy::from_config(config));
    builder.mount(
        Module::root("hostile")
            .get("/status", status)
            .get("/big", big)
            .get("/hold", hold)
            .post("/echo", echo),
    );
    builder.build().unwrap()
}

/// The server, serving until dropped or stopped.
struct Running {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    tcp: Option<std::net::SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    async fn start(limits: ServerLimits, tcp: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let mut server = Server::new(api(&ApiConfig::default()))
            .limits(limits)
            .bind_unix(&sock)
            .await
            .unwrap();
        if tcp {
            server = server
                .bind_tcp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
        }
        let tcp = server.tcp_local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Self {
            _dir: dir,
            sock,
            tcp,
            shutdown: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

fn limits(f: impl FnOnce(&mut ServerLimits)) -> ServerLimits {
    let mut limits = ServerLimits::default();
    f(&mut limits);
    limits
}

/// One parsed HTTP/1.1 answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads answers off one connection (bytes past one answer stay for the next).
struct Replies<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Replies<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next answer (with a `Content-Length` body, as every answer of this API has).
    async fn next(&mut self) -> Reply {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await > 0, "connection closed before an answer");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        let mut reply = Reply {
            status,
            head,
            body: Vec::new(),
        };
        let length: usize = reply
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        while self.buf.len() < head_end + length {
            assert!(self.fill().await > 0, "connection closed inside an answer");
        }
        reply.body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        reply
    }

    /// True once the server closed the connection (no bytes left to read).
    async fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && self.fill().await == 0
    }
}

/// One well-behaved `GET /status` on a new connection; its round-trip time.
async fn status_round_trip(sock: &Path) -> Duration {
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(sock).await {
            Ok(stream) => break stream,
            // The listen backlog is full (a flood is connecting): like a blocking client, wait.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < NORMAL_LATENCY_BOUND, "could not connect");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    let mut replies = Replies::new(stream);
    replies
        .stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = replies.next().await;
    let elapsed = start.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    elapsed
}

/// Round-trip times of a normal client.
#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    async fn sample(&mut self, sock: &Path) {
        self.0.push(status_round_trip(sock).await);
    }

    /// Prints the figures and checks the worst one.
    fn report(&mut self, attack: &str) {
        assert!(!self.0.is_empty(), "no request measured during {attack}");
        self.0.sort();
        let median = self.0[self.0.len() / 2];
        let max = *self.0.last().unwrap();
        println!(
            "{attack}: {} status requests, median {median:?}, max {max:?}",
            self.0.len()
        );
        assert!(
            max < NORMAL_LATENCY_BOUND,
            "{attack}: a normal request took {max:?}"
        );
    }
}

/// A request written one byte at a time, `pause` apart; returns when the server closes the
/// connection (or after the last byte), with the time that took and what the server said.
async fn trickle(sock: PathBuf, request: Vec<u8>, pause: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let stream = UnixStream::connect(&sock).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut said = Vec::new();
        let _ = read.read_to_end(&mut said).await;
        (start.elapsed(), said)
    });
    for byte in request {
        if reader.is_finished() || write.write_all(&[byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the server closes a trickling connection")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_and_bodies_are_cut_at_their_timeouts() {
    const ATTACKERS: usize = 50;
    let header = Duration::from_millis(200);
    let body = Duration::from_millis(300);
    let srv = Running::start(
        limits(|l| {
            l.header_read_timeout = header;
            l.body_read_timeout = body;
        }),
        false,
    )
    .await;

    // Half trickle a head (never finished within the limit), half a head then a body.
    let mut slow_head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
    slow_head.extend(std::iter::repeat_n(b'a', 200));
    let mut slow_body = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Content-Length: 200\r\n\r\n"
        .to_vec();
    let head_len = slow_body.len();
    slow_body.extend(std::iter::repeat_n(b' ', 200));
    let pause = Duration::from_millis(20);
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..ATTACKERS / 2 {
        heads.push(tokio::spawn(trickle(
            srv.sock.clone(),
            slow_head.clone(),
            pause,
        )));
        // The head goes at once; the body trickles.
        let sock = srv.sock.clone();
        let request = slow_body.clone();
        bodies.push(tokio::spawn(async move {
            let start = Instant::now();
            let stream = UnixStream::connect(&sock).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            write.write_all(&request[..head_len]).await.unwrap();
            let reader = tokio::spawn(async move {
                let mut said = Vec::new();
                let _ = read.read_to_end(&mut said).await;
                (start.elapsed(), said)
            });
            for &byte in &request[head_len..] {
                if reader.is_finished() || write.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("the server closes a trickling body")
                .unwrap()
        }));
    }

    let mut latencies = Latencies::default();
    while !(heads.iter().all(JoinHandle::is_finished) && bodies.iter().all(JoinHandle::is_finished))
    {
        latencies.sample(&srv.sock).await;
    }
    latencies.report("50 slowloris connections (1 byte / 20 ms)");

    for attacker in heads {
        let (elapsed, said) = attacker.await.unwrap();
        // The whole head would take 4.6 s; the server closes after the header timeout. It may
        // say 408 first.
        assert!(
            elapsed >= header && elapsed < Duration::from_secs(2),
            "slow head closed after {elapsed:?}"
        );
        let said = String::from_utf8_lossy(&said);
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 408"),
            "slow head got {said:?}"
        );
    }
    for attacker in bodies {
        let (elapsed, said) = attacker.await.unwrap();
        assert!(
            elapsed >= body && elapsed < Duration::from_secs(2),
            "slow body answered after {elapsed:?}"
        );
        let mut replies = Replies::new(std::io::Cursor::new(Vec::new()));
        replies.buf = said;
        let reply = replies.next().await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
        assert_eq!(
            reply.json(),
            json!({"error": {
                "message": "could not read the request body: it did not arrive within 300 ms",
                "code": "bad_request"
            }})
        );
    }
    srv.stop().await;
}

/// Raises the soft limit on open files to the hard one; the limit in force after.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            println!("could not raise the open-file limit: {error}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Whether the server closed its end of this connection (so the client reads end of file).
fn closed_by_server(mut stream: &std::os::unix::net::UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_silent_connections_cannot_lock_out_a_client() {
    const MAX: usize = 256;
    // A long header timeout: here the connection limit alone keeps the server usable.
    let srv = Running::start(
        limits(|l| {
            l.max_connections = MAX;
            l.header_read_timeout = Duration::from_secs(30);
        }),
        false,
    )
    .await;
    // Each silent connection costs this process two descriptors until the server closes its
    // end (then one): keep clear of the limit, and say so when it forces fewer than 10,000.
    let fd_limit = raise_fd_limit();
    let count = usize::try_from(fd_limit.saturating_sub(2 * MAX as u64 + 512))
        .unwrap_or(usize::MAX)
        .min(10_000);
    if count < 10_000 {
        println!("open-file limit {fd_limit}: opening {count} silent connections, not 10,000");
    }

    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let sock = srv.sock.clone();
        let flooding = Arc::clone(&flooding);
        std::thread::spawn(move || {
            let started = Instant::now();
            let streams: Vec<_> = (0..count)
                .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
                .collect();
            flooding.store(false, Ordering::SeqCst);
            (streams, started.elapsed())
        })
    };
    let mut latencies = Latencies::default();
    while flooding.load(Ordering::SeqCst) {
        latencies.sample(&srv.sock).await;
    }
    let (streams, took) = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    println!("{count} silent connections opened in {took:?}");
    // Connections are accepted in order: once this one is answered, every silent one was
    // accepted, and all but MAX - 1 of them were chosen for closing.
    for _ in 0..20 {
        latencies.sample(&srv.sock).await;
    }
    latencies.report(&format!("{count} silent connections"));

    for stream in &streams {
        stream.set_nonblocking(true).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let open = loop {
        let open = streams.iter().filter(|s| !closed_by_server(s)).count();
        if open <= MAX || Instant::now() > deadline {
            break open;
        }
        tokio::task::yield_now().await;
    };
    println!("the server kept {open} of {count} silent connections (limit {MAX})");
    assert!(open <= MAX, "{open} silent connections still open");
    drop(streams);
    srv.stop().await;
}

/// Whether the server closed this connection, without reading what it already sent.
fn hung_up(stream: &UnixStream) -> bool {
    stream
        .ready(tokio::io::Interest::READABLE)
        .now_or_never()
        .is_some_and(|ready| ready.is_ok_and(|r| r.is_read_closed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_cut_at_the_write_timeout() {
    const ATTACKERS: usize = 20;
    const PIPELINED: usize = 64;
    let write = Duration::from_millis(300);
    let srv = Running::start(limits(|l| l.write_timeout = write), false).await;

    let start = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..ATTACKERS {
        let mut stream = UnixStream::connect(&srv.sock).await.unwrap();
        let requests = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
        stream.write_all(&requests).await.unwrap();
        attackers.push((stream, None::<Duration>));
    }
    let mut latencies = Latencies::default();
    while attackers.iter().any(|(_, closed)| closed.is_none()) {
        latencies.sample(&srv.sock).await;
        for (stream, closed) in &mut attackers {
            if closed.is_none() && hung_up(stream) {
                *closed = Some(start.elapsed());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server still writes to clients that never read"
        );
    }
    latencies.report("20 clients that never read (64 x 256 KiB pipelined)");

    for (stream, closed) in attackers {
        let closed = closed.unwrap();
        assert!(closed >= write, "closed after {closed:?}");
        // What the server managed to write before giving up is far less than was asked for.
        let mut stream = stream;
        let mut written = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut written))
            .await
            .expect("the connection is closed")
            .unwrap();
        let answered = written.len() / BIG;
        assert!(
            answered < PIPELINED / 2,
            "{answered} of {PIPELINED} answers were written"
        );
        println!("never-reading client closed after {closed:?} ({answered} answers written)");
    }
    srv.stop().await;
}

/// Sends `head`, waits until the server has had time to answer, then sends `body`: the write
/// must succeed and the JSON answer arrive; then the same connection serves `/status`.
async fn body_after_head<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    head: &str,
    body: &[u8],
) -> Reply {
    let mut replies = Replies::new(stream);
    replies.stream.write_all(head.as_bytes()).await.unwrap();
    replies.stream.flush().await.unwrap();
    // Before, the server answered at once and closed: this write then failed (broken pipe,
    // or a reset that lost the answer over TCP).
    tokio::time::sleep(Duration::from_millis(100)).await;
    replies
        .stream
        .write_all(body)
        .await
        .expect("the server reads the body it answered without");
    let reply = replies.next().await;
    assert_eq!(reply.header("connection"), None, "{reply:?}");
    replies
        .stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        replies.next().await.status,
        200,
        "the connection stays usable"
    );
    reply
}

fn post(path: &str, content_type: &str, body: &[u8]) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
}

#[tokio::test]
async fn answers_before_the_body_never_reset_the_client() {
    let srv = Running::start(ServerLimits::default(), true).await;
    let body = br#"{"version":"7.50.0","padding":"................................"}"#;
    let connect = || UnixStream::connect(&srv.sock);

    let reply = body_after_head(
        connect().await.unwrap(),
        &post("/nope", "application/json", body),
        body,
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json(),
        json!({"error": {"message": "no route for POST /nope", "code": "not_found"}})
    );

    let reply = body_after_head(
        connect().await.unwrap(),
        &post("/echo", "text/plain", body),
        body,
    )
    .await;
    assert_eq!(reply.status, 415);
    assert_eq!(reply.json()["error"]["code"], "unsupported_media_type");

    let reply = body_after_head(
        connect().await.unwrap(),
        &post("/status", "application/json", body),
        body,
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"]["code"], "method_not_allowed");

    // A body of almost the whole limit is drained too.
    let large = format!("\"{}\"", "y".repeat(outpost_api::BODY_LIMIT - 2));
    let reply = body_after_head(
        connect().await.unwrap(),
        &post("/nope", "application/json", large.as_bytes()),
        large.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 404);

    // Over TCP an unread body makes the close a reset, which can destroy the answer in flight.
    // An untrusted TCP caller is refused a mutating route: 403, after the body is read.
    let tcp = tokio::net::TcpStream::connect(srv.tcp.unwrap())
        .await
        .unwrap();
    let reply = body_after_head(tcp, &post("/echo", "application/json", body), body).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["code"], "forbidden");

    // The routed request still reads its body as before.
    let reply = body_after_head(
        connect().await.unwrap(),
        &post("/echo", "application/json", body),
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["echo"]["version"], "7.50.0");
    srv.stop().await;
}

#[tokio::test]
async fn bodies_that_cannot_be_drained_are_answered_with_connection_close() {
    let srv = Running::start(ServerLimits::default(), false).await;

    // Declared over the limit: 413 at once, nothing read, the connection ends.
    let mut replies = Replies::new(UnixStream::connect(&srv.sock).await.unwrap());
    let head = format!(
        "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        2 * outpost_api::BODY_LIMIT
    );
    replies.stream.write_all(head.as_bytes()).await.unwrap();
    let reply = replies.next().await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    assert!(replies.at_eof().await);

    // The same on a route: 413.
    let mut replies = Replies::new(UnixStream::connect(&srv.sock).await.unwrap());
    replies
        .stream
        .write_all(head.replace("/nope", "/echo").as_bytes())
        .await
        .unwrap();
    let reply = replies.next().await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    assert!(replies.at_eof().await);

    // `Expect: 100-continue`: the client has not sent its body, and is not asked to.
    let mut replies = Replies::new(UnixStream::connect(&srv.sock).await.unwrap());
    replies
        .stream
        .write_all(
            b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let reply = replies.next().await;
    assert_eq!(reply.status, 404, "no 100 Continue first: {reply:?}");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    assert!(replies.at_eof().await);
    srv.stop().await;
}

#[tokio::test]
async fn the_tcp_listener_binds_loopback_only() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let err = Server::new(api(&ApiConfig::default()))
            .bind_tcp(addr)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BindTcp { .. }), "{err:?}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("only a loopback address"), "{cause}");
    }
    let server = Server::new(api(&ApiConfig::default()))
        .bind_tcp("127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    assert!(server.tcp_local_addr().unwrap().ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_requests_in_flight_are_never_cut_and_a_new_client_waits() {
    let srv = Running::start(limits(|l| l.max_connections = 2), false).await;
    let request = b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut replies = Replies::new(UnixStream::connect(&srv.sock).await.unwrap());
        replies.stream.write_all(request).await.unwrap();
        held.push(replies);
    }
    // Both connections have a request in flight once the handler waits for them; the server
    // has then read them, and a third connection has nobody to replace.
    let third = tokio::spawn({
        let sock = srv.sock.clone();
        async move { status_round_trip(&sock).await }
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), async {
        while !third.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "the third client was served while both were busy"
    );

    // One request finishes: its connection (idle, then silent) makes room for the third.
    HOLD.add_permits(1);
    let mut first_done = None;
    for (i, replies) in held.iter_mut().enumerate() {
        if let Ok(reply) = tokio::time::timeout(Duration::from_millis(500), replies.next()).await {
            assert_eq!(reply.json(), json!({"held": true}));
            first_done = Some(i);
            break;
        }
    }
    let first_done = first_done.expect("a held request was answered");
    let latency = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third client is served once a connection is free")
        .unwrap();
    println!("third client served {latency:?} after it connected (it waited for room)");

    // The other request was never cut: it is answered when released.
    HOLD.add_permits(1);
    let other = &mut held[1 - first_done];
    let reply = tokio::time::timeout(Duration::from_secs(5), other.next())
        .await
        .expect("the request in flight is answered");
    assert_eq!(reply.json(), json!({"held": true}));
    drop(held);
    srv.stop().await;
}
