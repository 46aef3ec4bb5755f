//! Real servers for tests and benchmarks (feature `testkit`; never used by outpost itself):
//!
//! - [`Registry`]: Debian's `docker-registry` on `127.0.0.1`, on a free port, with its own
//!   configuration and storage in a temporary directory, optionally behind htpasswd (basic)
//!   or bearer-token authentication. It is stopped when dropped.
//! - [`TokenServer`]: the token endpoint of the bearer-token flow, signing JWTs with a key
//!   made by the `openssl` command.
//! - [`FaultProxy`]: an HTTP/1.1 proxy in front of any server that records every request
//!   (method, path, `Range`) and injects faults into chosen ones: an error status, a
//!   connection cut in the middle of a body, a corrupted byte.
//! - [`FileServer`]: serves the files of a directory, with range requests.
//! - [`noise`]: deterministic incompressible bytes for packages and archives.
//!
//! Everything is std threads and blocking sockets, independent of the caller's runtime.
//! Waits poll with a deadline; nothing sleeps a fixed time before using a server.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `len` deterministic bytes (xorshift64 from `seed`) that neither gzip nor zstd can
/// compress: package payloads whose size on the wire is their size on disk.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How long a server may take to start.
const START_DEADLINE: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `check` with a short backoff until it returns `Some` or `deadline` passes.
fn poll<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if started.elapsed() > deadline {
            return None;
        }
        // A poll interval while a process starts, not a wait for an event.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends one HTTP/1.1 request and returns the status code and the body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let end = find(&buf, b"\r\n\r\n").ok_or_else(|| io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, buf[end + 4..].to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 (with padding) or its URL-safe variant (without).
pub fn base64(data: &[u8], url_safe: bool) -> String {
    let table: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}

/// How a [`Registry`] authenticates.
#[derive(Debug, Clone)]
pub enum RegistryAuth {
    /// No authentication.
    None,
    /// HTTP basic authentication against an htpasswd file with one user.
    Htpasswd {
        /// The user.
        username: String,
        /// Their password.
        password: String,
    },
    /// Bearer tokens from a [`TokenServer`].
    Token {
        /// The token endpoint, `http://127.0.0.1:PORT/token`.
        realm: String,
        /// The certificate the tokens are signed with.
        cert: PathBuf,
    },
}

/// `docker-registry` on 127.0.0.1 with temporary storage, stopped when dropped.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The service name tokens are issued for.
const TOKEN_SERVICE: &str = "outpost-test-registry";
/// The issuer of the tokens.
const TOKEN_ISSUER: &str = "outpost-test-issuer";

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Self {
        Self::start_with(RegistryAuth::None)
    }

    /// A registry with the given authentication. Panics (with its log) if it does not
    /// answer `GET /v2/` within 30 s, or if `docker-registry` is not installed.
    pub fn start_with(auth: RegistryAuth) -> Self {
        let mut last_log = String::new();
        // The port is free when chosen but could be taken before the registry binds it:
        // try a few.
        for _ in 0..5 {
            match Self::try_start(&auth) {
                Ok(r) => return r,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }

    fn try_start(auth: &RegistryAuth) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("outpost-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let auth_yaml = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd { username, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", username, password])
                    .output()
                    .map_err(|e| format!("cannot run htpasswd (install apache2-utils): {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "htpasswd failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let file = dir.path().join("htpasswd");
                fs_err::write(&file, &out.stdout).map_err(|e| e.to_string())?;
                format!(
                    "auth:\n  htpasswd:\n    realm: outpost-test\n    path: {}\n",
                    file.display()
                )
            }
            RegistryAuth::Token { realm, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: outpost-test-secret\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        fs_err::write(&config_path, config).map_err(|e| e.to_string())?;
        let log =
            fs_err::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let binary =
            std::env::var("OUTPOST_DOCKER_REGISTRY").unwrap_or_else(|_| "docker-registry".into());
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.into_parts().0))
            .stderr(Stdio::from(log2.into_parts().0))
            .spawn()
            .map_err(|e| {
                format!("cannot run {binary} (install the docker-registry package): {e}")
            })?;
        let mut registry = Self { child, addr, dir };
        let ready = poll(START_DEADLINE, || {
            if let Ok(Some(_)) = registry.child.try_wait() {
                return Some(false);
            }
            match http_get(addr, "/v2/", &[]) {
                Ok((200 | 401, _)) => Some(true),
                _ => None,
            }
        });
        if ready == Some(true) {
            Ok(registry)
        } else {
            let log = registry.log();
            registry.stop();
            Err(log)
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stop(&mut self) {
        // The process may already have exited; either way it is reaped below.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request a [`FaultProxy`] or [`FileServer`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// `GET`, `HEAD`, `PUT`...
    pub method: String,
    /// The request target.
    pub path: String,
    /// The `Range` header, when present.
    pub range: Option<String>,
    /// Whether an `Authorization` header was sent.
    pub authorized: bool,
}

/// A fault a [`FaultProxy`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and a short body) without asking the upstream.
    Status(u16),
    /// Forward the response, but close the connection after this many bytes of its body.
    CutBody {
        /// Body bytes forwarded before the cut.
        after: u64,
    },
    /// Forward the response with the body byte at this offset inverted.
    FlipBodyByte {
        /// The offset in the body.
        at: u64,
    },
    /// Forward this many bytes of the body, then hold the rest until
    /// [`FaultProxy::release`] is called.
    HoldBody {
        /// Body bytes forwarded before holding.
        after: u64,
    },
}

/// When a [`FaultProxy`] injects a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Only `GET` requests whose path contains this.
    pub path_contains: String,
    /// Only requests with a `Range` header (`Some(true)`), without (`Some(false)`), or any.
    pub ranged: Option<bool>,
    /// What to do.
    pub fault: Fault,
    /// How many matching requests get the fault (the next ones pass).
    pub times: usize,
}

impl Rule {
    /// A rule for the first `times` GET requests whose path contains `path_contains`.
    pub fn new(path_contains: impl Into<String>, fault: Fault, times: usize) -> Self {
        Self {
            path_contains: path_contains.into(),
            ranged: None,
            fault,
            times,
        }
    }
}

#[derive(Debug, Default)]
struct ProxyState {
    rules: Vec<Rule>,
    seen: Vec<SeenRequest>,
    injected: usize,
    released: bool,
}

/// An HTTP/1.1 proxy in front of `upstream` that records requests and injects faults.
/// Every request is forwarded with `Connection: close`, so each connection carries one
/// request. Stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<(Mutex<ProxyState>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` with these rules.
    pub fn start(upstream: SocketAddr, rules: Vec<Rule>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new((
            Mutex::new(ProxyState {
                rules,
                ..ProxyState::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = proxy_one(conn, upstream, &state) {
                            eprintln!("fault proxy: {e}");
                        }
                    });
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state.0).seen.clone()
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        lock(&self.state.0).injected
    }

    /// Replaces the rules.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        lock(&self.state.0).rules = rules;
    }

    /// Lets every held body ([`Fault::HoldBody`]) go on, now and from now on.
    pub fn release(&self) {
        lock(&self.state.0).released = true;
        self.state.1.notify_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag; a failure means it is already gone.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn seen(&self) -> SeenRequest {
        SeenRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            range: self.header("range").map(str::to_owned),
            authorized: self.header("authorization").is_some(),
        }
    }
}

/// Reads a request or response head (up to the blank line).
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no head"));
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated head",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok((first.trim_end().to_owned(), headers))
}

fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Head> {
    let (line, headers) = read_head(r)?;
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    Ok(Head {
        method,
        path,
        headers,
    })
}

fn proxy_one(
    client: TcpStream,
    upstream: SocketAddr,
    shared: &(Mutex<ProxyState>, Condvar),
) -> io::Result<()> {
    let state = &shared.0;
    let mut reader = BufReader::new(client.try_clone()?);
    let head = match read_request(&mut reader) {
        Ok(h) => h,
        // A connection closed without a request (the wake-up at drop, a probe).
        Err(_) => return Ok(()),
    };
    let fault = {
        let mut st = lock(state);
        st.seen.push(head.seen());
        let ranged = head.header("range").is_some();
        let hit = st.rules.iter_mut().find(|r| {
            r.times > 0
                && head.method == "GET"
                && head.path.contains(&r.path_contains)
                && r.ranged.is_none_or(|want| want == ranged)
        });
        let fault = hit.map(|r| {
            r.times -= 1;
            r.fault
        });
        if fault.is_some() {
            st.injected += 1;
        }
        fault
    };
    let mut client_w = client;
    if let Some(Fault::Status(code)) = fault {
        let body = b"injected failure\n";
        write!(
            client_w,
            "HTTP/1.1 {code} Injected\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )?;
        client_w.write_all(body)?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.path);
    for (k, v) in &head.headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    // A request body (a push through the proxy) follows as is.
    let body_len: u64 = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if body_len > 0 {
        io::copy(&mut (&mut reader).take(body_len), &mut up)?;
    } else if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        // Chunked request bodies are relayed until the client closes its side.
        let mut up2 = up.try_clone()?;
        std::thread::spawn(move || {
            // The relay ends when either side closes; nothing is left to report.
            let _ = io::copy(&mut reader, &mut up2);
        });
    }
    let mut up_reader = BufReader::new(up);
    let (status_line, headers) = read_head(&mut up_reader)?;
    let mut resp = format!("{status_line}\r\n");
    for (k, v) in &headers {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\n");
    client_w.write_all(resp.as_bytes())?;
    if head.method == "HEAD" {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut sent: u64 = 0;
    loop {
        let n = up_reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        match fault {
            Some(Fault::CutBody { after }) => {
                let left = after.saturating_sub(sent);
                if (n as u64) >= left {
                    let keep = usize::try_from(left).unwrap_or(n);
                    client_w.write_all(&chunk[..keep])?;
                    client_w.flush()?;
                    client_w.shutdown(Shutdown::Both)?;
                    return Ok(());
                }
            }
            Some(Fault::FlipBodyByte { at }) if at >= sent && at < sent + n as u64 => {
                let i = usize::try_from(at - sent).unwrap_or(0);
                chunk[i] = !chunk[i];
            }
            Some(Fault::HoldBody { after }) if sent + n as u64 > after => {
                let keep = usize::try_from(after.saturating_sub(sent))
                    .unwrap_or(n)
                    .min(n);
                client_w.write_all(&chunk[..keep])?;
                client_w.flush()?;
                let mut st = lock(state);
                while !st.released {
                    st = shared.1.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                drop(st);
                client_w.write_all(&chunk[keep..])?;
                io::copy(&mut up_reader, &mut client_w)?;
                return Ok(());
            }
            _ => {}
        }
        client_w.write_all(chunk)?;
        sent += n as u64;
    }
    Ok(())
}

/// Serves the files under a directory over HTTP/1.1 (`GET` and `HEAD`, with
/// `Range: bytes=N-`), recording every request. Stopped when dropped.
#[derive(Debug)]
pub struct FileServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `root`.
    pub fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the file server");
        let addr = listener.local_addr().expect("file server address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop, root) = (seen.clone(), stop.clone(), root.to_owned());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, root) = (seen.clone(), root.clone());
                    std::thread::spawn(move || {
                        if let Err(e) = serve_file(conn, &root, &seen) {
                            eprintln!("file server: {e}");
                        }
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.seen).clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop; a failure means it is already gone.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_file(conn: TcpStream, root: &Path, seen: &Mutex<Vec<SeenRequest>>) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let Ok(head) = read_request(&mut reader) else {
        return Ok(());
    };
    lock(seen).push(head.seen());
    let mut w = conn;
    let rel = head
        .path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    let safe = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    let file = if safe {
        fs_err::File::open(root.join(rel)).ok()
    } else {
        None
    };
    let Some(mut file) = file else {
        w.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
        )?;
        return Ok(());
    };
    let len = file.metadata()?.len();
    let start = head
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<u64>().ok());
    let (status, start) = match start {
        Some(s) if s < len => ("206 Partial Content", s),
        Some(_) => {
            w.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        None => ("200 OK", 0),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Accept-Ranges: bytes\r\nConnection: close\r\n",
        len - start
    );
    if start > 0 {
        out.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            len - 1
        ));
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    if head.method == "HEAD" {
        return Ok(());
    }
    io::Seek::seek(&mut file, io::SeekFrom::Start(start))?;
    io::copy(&mut file, &mut w)?;
    Ok(())
}

/// The token endpoint of a registry's bearer-token authentication: answers
/// `GET /token?scope=...&service=...` with a signed JWT granting what the scope asks for,
/// to the one user it knows (HTTP basic credentials). Stopped when dropped.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    issued: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Makes a signing key and certificate with `openssl` and starts serving tokens to
    /// `username` / `password`.
    pub fn start(username: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("outpost-token-")
            .tempdir()
            .expect("token server directory");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=outpost-test-token-issuer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl x509");
        assert!(der.status.success(), "openssl x509 failed");
        let x5c = base64(&der.stdout, false);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let addr = listener.local_addr().expect("token server address");
        let expected_auth = format!(
            "Basic {}",
            base64(format!("{username}:{password}").as_bytes(), false)
        );
        let issued = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (issued, stop, key) = (issued.clone(), stop.clone(), key.clone());
            let subject = username.to_owned();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let signer = Signer {
                        key: key.clone(),
                        x5c: x5c.clone(),
                        subject: subject.clone(),
                    };
                    if let Err(e) = serve_token(conn, &expected_auth, &signer, &issued) {
                        eprintln!("token server: {e}");
                    }
                }
            })
        };
        Self {
            addr,
            dir,
            issued,
            stop,
            thread: Some(thread),
        }
    }

    /// The registry settings that use this server.
    pub fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Token {
            realm: format!("http://{}/token", self.addr),
            cert: self.dir.path().join("cert.pem"),
        }
    }

    /// The scopes of the tokens issued so far.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.issued).clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop; a failure means it is already gone.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Signer {
    key: PathBuf,
    x5c: String,
    subject: String,
}

impl Signer {
    /// A JWT (RS256, certificate in `x5c`) granting `access`.
    fn token(&self, access: serde_json::Value) -> io::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER, "sub": self.subject, "aud": TOKEN_SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", std::process::id()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            base64(header.to_string().as_bytes(), true),
            base64(claims.to_string().as_bytes(), true)
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "openssl dgst failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(format!("{input}.{}", base64(&out.stdout, true)))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    conn: TcpStream,
    expected_auth: &str,
    signer: &Signer,
    issued: &Mutex<Vec<String>>,
) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let Ok(head) = read_request(&mut reader) else {
        return Ok(());
    };
    let mut w = conn;
    if head.header("authorization") != Some(expected_auth) {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(
            w,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )?;
        return w.write_all(body);
    }
    let query = head.path.split_once('?').map_or("", |(_, q)| q);
    let params: BTreeMap<String, Vec<String>> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            m.entry(percent_decode(k))
                .or_default()
                .push(percent_decode(v));
            m
        });
    let mut access = Vec::new();
    for scope in params.get("scope").into_iter().flatten() {
        // repository:NAME:ACTIONS
        let mut parts = scope.splitn(3, ':');
        if let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        {
            access.push(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
            }));
        }
        lock(issued).push(scope.clone());
    }
    let token = signer.token(serde_json::Value::Array(access))?;
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 600}).to_string();
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"", false), "");
        assert_eq!(base64(b"f", false), "Zg==");
        assert_eq!(base64(b"fo", false), "Zm8=");
        assert_eq!(base64(b"foo", false), "Zm9v");
        assert_eq!(base64(b"foob", true), "Zm9vYg");
        assert_eq!(base64(&[0xfb, 0xff], true), "-_8");
        assert_eq!(base64(&[0xfb, 0xff], false), "+/8=");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull"),
            "repository:a/b:pull"
        );
        assert_eq!(percent_decode("a+b%"), "a b%");
    }
}
