//! The one test HTTP client: a request over a Unix socket or TCP, sent with hyper's HTTP/1.1
//! client, or raw bytes when a test needs malformed HTTP.
//!
//! Every request uses a fresh connection and ends it after the response, so a test sees
//! exactly one exchange per call. [`send`] is async; [`send_blocking`] runs it on a
//! current-thread runtime of its own (for tests without a runtime, and never inside one).
//! [`send_raw`] writes the bytes as given and reads the answer until the server closes; it is
//! the only place that parses an HTTP response by hand, because hyper cannot be made to send
//! a malformed request.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// How long one exchange may take before it fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket (the LocalAPI).
    Unix(PathBuf),
    /// A TCP address (loopback servers).
    Tcp(SocketAddr),
}

impl From<&Path> for Target {
    fn from(p: &Path) -> Self {
        Self::Unix(p.to_owned())
    }
}

impl From<&PathBuf> for Target {
    fn from(p: &PathBuf) -> Self {
        Self::Unix(p.clone())
    }
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Self {
        Self::Tcp(a)
    }
}

/// A well-formed request: method, path, headers and an optional body. `Host` is added when
/// not given, and `Content-Length` when a body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl Req {
    /// `method path` without headers or body.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The request as HTTP/1.1 bytes with `Connection: close`, for [`send_raw`] and for tests
    /// that write it themselves (slowly, in pieces).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has_header("host") {
            out.push_str("Host: outpost\r\n");
        }
        out.push_str("Connection: close\r\n");
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = &self.body
            && !self.has_header("content-length")
        {
            out.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if let Some(b) = &self.body {
            bytes.extend_from_slice(b);
        }
        bytes
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    fn to_http(&self) -> io::Result<Request<Full<Bytes>>> {
        let method = Method::from_bytes(self.method.as_bytes()).map_err(io::Error::other)?;
        let mut b = Request::builder().method(method).uri(&self.path);
        if !self.has_header("host") {
            b = b.header("host", "outpost");
        }
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let body = self.body.clone().unwrap_or_default();
        b.body(Full::new(Bytes::from(body)))
            .map_err(io::Error::other)
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossily decoded).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts a JSON response whose body is exactly `expected` plus a newline.
    #[track_caller]
    pub fn assert_json(&self, status: u16, expected: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.text(), format!("{expected}\n"));
    }

    /// Asserts the conventions every LocalAPI response follows: JSON content type, one line,
    /// a trailing newline.
    #[track_caller]
    pub fn assert_json_convention(&self) {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        assert!(self.body.ends_with(b"\n"), "no trailing newline: {self:?}");
        assert!(
            !self.body[..self.body.len() - 1].contains(&b'\n'),
            "one line expected: {self:?}"
        );
    }

    /// Asserts `200 {}\n`.
    #[track_caller]
    pub fn assert_ok_empty(&self) {
        assert_eq!((self.status, self.text().as_str()), (200, "{}\n"));
        self.assert_json_convention();
    }

    /// Asserts an error response with this status and code and exactly the keys `message` and
    /// `code`; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        self.assert_json_convention();
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"));
        assert_eq!(obj.len(), 1, "{v}");
        let err = obj["error"]
            .as_object()
            .unwrap_or_else(|| panic!("no error object: {v}"));
        assert_eq!(err.len(), 2, "{v}");
        assert_eq!(err["code"], code, "{v}");
        let message = err["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "{v}");
        message
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

async fn connect(target: &Target) -> io::Result<Box<dyn Stream>> {
    Ok(match target {
        Target::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
        Target::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
    })
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} took over {DEADLINE:?}"),
    )
}

/// Sends `req` over a new connection to `target` with hyper's HTTP/1.1 client and reads the
/// whole response.
///
/// # Errors
/// Connecting, or the exchange failing (the server closed or reset the connection before a
/// whole response), or the deadline of 20 s passing.
pub async fn send(target: impl Into<Target>, req: &Req) -> io::Result<Response> {
    let target = target.into();
    let request = req.to_http()?;
    let exchange = async {
        let stream = connect(&target).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let driver = tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes()
            .to_vec();
        drop(sender);
        driver.abort();
        Ok(Response {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| timed_out("the exchange"))?
}

/// [`send`] on a current-thread runtime of its own, for blocking code (also inside a runtime:
/// the exchange then runs on a thread of its own).
///
/// # Errors
/// Those of [`send`].
///
/// # Panics
/// When a runtime cannot be built.
pub fn send_blocking(target: impl Into<Target>, req: &Req) -> io::Result<Response> {
    let target = target.into();
    block_on(async move { send(target, req).await })
}

/// Writes `raw` as given over a new connection to `target`, then reads until the server
/// closes, and parses the answer. A write error is reported only if nothing was answered: a
/// server may answer and close before reading all of a large request (413).
///
/// # Errors
/// Connecting; no answer at all (the write's error, a reset, or an empty answer); the
/// deadline of 20 s passing.
///
/// # Panics
/// When the answer is not an HTTP/1.1 response.
pub async fn send_raw(target: impl Into<Target>, raw: &[u8]) -> io::Result<Response> {
    let target = target.into();
    let exchange = async {
        let mut stream = connect(&target).await?;
        let write_result = stream.write_all(raw).await;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // The kernel reports a reset when the server closed with unread request
                // bytes; the answer that arrived before it stands.
                Err(_) if !buf.is_empty() => break,
                Err(e) => return Err(write_result.err().unwrap_or(e)),
            }
        }
        if buf.is_empty() {
            return Err(write_result.err().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "empty response")
            }));
        }
        Ok(parse_response(&buf))
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| timed_out("the raw exchange"))?
}

/// [`send_raw`] on a current-thread runtime of its own.
///
/// # Errors
/// Those of [`send_raw`].
///
/// # Panics
/// Those of [`send_raw`] and [`send_blocking`].
pub fn send_raw_blocking(target: impl Into<Target>, raw: &[u8]) -> io::Result<Response> {
    let target = target.into();
    block_on(async move { send_raw(target, raw).await })
}

/// Runs `f` to completion on a current-thread runtime of its own; on a thread of its own when
/// the caller is inside a runtime (which cannot block on another).
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a test runtime: {e}"))
            .block_on(f)
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        run()
    }
}

/// Parses one HTTP/1.1 response read until the server closed: its body runs for its
/// `Content-Length` (at most what arrived: a `HEAD` answer announces a length without a body),
/// is chunked, or runs to the end.
///
/// # Panics
/// When `buf` is not an HTTP/1.1 response.
pub fn parse_response(buf: &[u8]) -> Response {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &buf[end + 4..];
    response.body = if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .unwrap_or_else(|e| panic!("bad Content-Length {len:?}: {e}"));
        rest[..len.min(rest.len())].to_vec()
    } else if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        decode_chunked(rest)
    } else {
        rest.to_vec()
    };
    response
}

/// Decodes a chunked body.
///
/// # Panics
/// When `at` is not a complete chunked body.
pub fn decode_chunked(mut at: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let nl = at
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("no chunk size line in {:?}", String::from_utf8_lossy(at)));
        let line = String::from_utf8_lossy(&at[..nl]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size {line:?}: {e}"));
        at = &at[nl + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&at[..size]);
        at = &at[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection server on a Unix socket that answers `answer` to whatever it reads
    /// (until the blank line, plus `Content-Length` bytes), and returns what it read.
    async fn serve_once(
        listener: tokio::net::UnixListener,
        answer: &'static [u8],
    ) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap_or(0));
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = s.write_all(answer).await;
            let _ = s.shutdown().await;
            got
        })
    }

    #[tokio::test]
    async fn sends_a_request_and_reads_the_answer_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sock = dir.path().join("s");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap_or_else(|e| panic!("{e}"));
        let server = serve_once(
            listener,
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n",
        )
        .await;
        let r = send(
            &sock,
            &Req::new("POST", "/x?y=1")
                .header("Content-Type", "application/json")
                .body("{\"a\":1}"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 201);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.text(), "{}\n");
        let got = String::from_utf8(server.await.unwrap_or_default()).unwrap_or_default();
        assert!(got.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{got}");
        assert!(
            got.to_ascii_lowercase().contains("content-length: 7"),
            "{got}"
        );
        assert!(got.ends_with("{\"a\":1}"), "{got}");
    }

    #[tokio::test]
    async fn raw_bytes_go_out_as_given_over_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let (mut s, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut got = vec![0u8; 64];
            let n = s.read(&mut got).unwrap_or(0);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nno\n");
            got.truncate(n);
            got
        });
        let r = send_raw(addr, b"GARBAGE\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status, r.text().as_str()), (400, "no\n"));
        assert_eq!(server.join().unwrap_or_default(), b"GARBAGE\r\n\r\n");
    }

    #[test]
    fn a_closed_socket_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sock = dir.path().join("nobody");
        assert!(send_blocking(&sock, &Req::new("GET", "/")).is_err());
        assert!(send_raw_blocking(&sock, b"GET / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn request_bytes_have_host_close_and_length() {
        let raw = Req::new("POST", "/p").body("ab").to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&raw),
            "POST /p HTTP/1.1\r\nHost: outpost\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab"
        );
    }
}
