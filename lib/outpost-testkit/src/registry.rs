//! Debian's `docker-registry` on loopback, optionally behind basic or bearer-token authentication.

#[allow(unused_imports)]
use crate::*;

/// How a [`Registry`] authenticates.
#[derive(Debug, Clone)]
pub enum RegistryAccess {
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
pub(crate) const TOKEN_SERVICE: &str = "outpost-test-registry";
/// The issuer of the tokens.
pub(crate) const TOKEN_ISSUER: &str = "outpost-test-issuer";

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Self {
        Self::start_with(RegistryAccess::None)
    }

    /// A registry with the given authentication. Panics (with its log) if it does not
    /// answer `GET /v2/` within 30 s, or if `docker-registry` is not installed.
    pub fn start_with(auth: RegistryAccess) -> Self {
        Self::start_logged(auth, false)
    }

    /// A registry without authentication that writes an access log line per request into
    /// [`Registry::log`] (`"HEAD /v2/<repo>/manifests/<tag> HTTP/1.1" 200 ...`), for tests
    /// that count requests.
    pub fn start_with_access_log() -> Self {
        Self::start_logged(RegistryAccess::None, true)
    }

    fn start_logged(auth: RegistryAccess, access_log: bool) -> Self {
        let mut last_log = String::new();
        // The port is free when chosen but could be taken before the registry binds it:
        // try a few.
        for _ in 0..5 {
            match Self::try_start(&auth, access_log) {
                Ok(r) => return r,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }

    fn try_start(auth: &RegistryAccess, access_log: bool) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("outpost-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let auth_yaml = match auth {
            RegistryAccess::None => String::new(),
            RegistryAccess::Htpasswd { username, password } => {
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
            RegistryAccess::Token { realm, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: outpost-test-secret\n{auth_yaml}",
            !access_log,
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
