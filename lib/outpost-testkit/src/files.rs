//! A file server with range requests.

#[allow(unused_imports)]
use crate::*;

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

pub(crate) fn serve_file(
    conn: TcpStream,
    root: &Path,
    seen: &Mutex<Vec<SeenRequest>>,
) -> io::Result<()> {
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
