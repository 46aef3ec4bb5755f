//! A recording, fault-injecting HTTP/1.1 proxy.

#[allow(unused_imports)]
use crate::*;

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
    /// Forward the response, but its body one byte every `every_ms` milliseconds, until the
    /// body ends or the client hangs up.
    Trickle {
        /// The pause before each byte.
        every_ms: u64,
    },
    /// Forward the response without its `Content-Length` (the body then ends when the
    /// connection closes), then `extra` more bytes after the body, or bytes without end when
    /// `None`, until the client hangs up: an oversized or endless body.
    PadBody {
        /// Bytes sent after the real body; `None` for an endless body.
        extra: Option<u64>,
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
pub(crate) struct ProxyState {
    rules: Vec<Rule>,
    seen: Vec<SeenRequest>,
    injected: usize,
    released: bool,
    down: bool,
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

    /// While `down`, every request is recorded, then its connection is closed without an
    /// answer: the server behind looks down (a network failure for the client).
    pub fn set_down(&self, down: bool) {
        lock(&self.state.0).down = down;
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
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn seen(&self) -> SeenRequest {
        SeenRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            range: self.header("range").map(str::to_owned),
            authorized: self.header("authorization").is_some(),
        }
    }
}

/// Reads a request or response head (up to the blank line).
pub(crate) fn read_head(
    r: &mut BufReader<TcpStream>,
) -> io::Result<(String, Vec<(String, String)>)> {
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

pub(crate) fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Head> {
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

pub(crate) fn proxy_one(
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
        if st.down {
            return Ok(());
        }
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
    let padded = matches!(fault, Some(Fault::PadBody { .. }));
    for (k, v) in &headers {
        if padded && k.eq_ignore_ascii_case("content-length") {
            continue;
        }
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
            if let Some(Fault::PadBody { extra }) = fault {
                pad(&mut client_w, extra)?;
            }
            break;
        }
        if let Some(Fault::Trickle { every_ms }) = fault {
            for byte in &buf[..n] {
                std::thread::sleep(Duration::from_millis(every_ms));
                client_w.write_all(std::slice::from_ref(byte))?;
                client_w.flush()?;
            }
            continue;
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

/// Writes `extra` bytes (without end when `None`) until done or the client hangs up.
fn pad(w: &mut TcpStream, extra: Option<u64>) -> io::Result<()> {
    let block = vec![0u8; 16 << 10];
    let mut left = extra;
    loop {
        let n = left.map_or(block.len() as u64, |l| l.min(block.len() as u64));
        if n == 0 {
            return Ok(());
        }
        w.write_all(&block[..usize::try_from(n).unwrap_or(block.len())])?;
        if let Some(l) = &mut left {
            *l -= n;
        }
    }
}
