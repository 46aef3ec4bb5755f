//! The token endpoint of a registry's bearer-token flow, and the JWTs it signs.

#[allow(unused_imports)]
use crate::*;

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
    pub fn registry_auth(&self) -> RegistryAccess {
        RegistryAccess::Token {
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

pub(crate) struct Signer {
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

pub(crate) fn percent_decode(s: &str) -> String {
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

pub(crate) fn serve_token(
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
