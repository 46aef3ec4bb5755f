//! Shared fixtures of the `agent_*` tests: a root with `conf.d/` and `checks.d/`, the real
//! `outpost agent` process on the test venv, and a small HTTP/1.1 client for its socket.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it; tests unwrap

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const OUTPOST: &str = env!("CARGO_BIN_EXE_outpost");

/// The venv with datadog-checks-base[deps] 38.5.0.
pub(crate) fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

/// A root directory with `conf.d/` and `checks.d/`.
pub(crate) struct Root {
    pub(crate) dir: tempfile::TempDir,
}

impl Root {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("conf.d")).unwrap();
        fs_err::create_dir_all(dir.path().join("checks.d")).unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `checks.d/<name>.py`.
    pub(crate) fn check(&self, name: &str, source: &str) {
        fs_err::write(self.path().join(format!("checks.d/{name}.py")), source).unwrap();
    }

    /// Writes `conf.d/<name>.d/conf.yaml`.
    pub(crate) fn conf(&self, name: &str, yaml: &str) {
        let d = self.path().join(format!("conf.d/{name}.d"));
        fs_err::create_dir_all(&d).unwrap();
        fs_err::write(d.join("conf.yaml"), yaml).unwrap();
    }

    /// Removes `conf.d/<name>.d`.
    pub(crate) fn remove_conf(&self, name: &str) {
        fs_err::remove_dir_all(self.path().join(format!("conf.d/{name}.d"))).unwrap();
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.path().join("run/agent.sock")
    }

    /// `outpost <args> --root <root>`, with the environment cleared of outpost variables.
    pub(crate) fn outpost(&self, args: &[&str]) -> Command {
        let mut c = Command::new(OUTPOST);
        c.args(args)
            .arg("--root")
            .arg(self.path())
            .env_remove("OUTPOST_ROOT")
            .env_remove("OUTPOST_CONFIG")
            .env_remove("OUTPOST_SOCKET")
            .env_remove("OUTPOST_LOG");
        c
    }

    /// Starts `outpost agent` with the test venv and waits until its API answers.
    pub(crate) fn start_agent(&self, extra: &[&str]) -> AgentProcess {
        self.start_agent_with_venv(&venv(), extra)
    }

    pub(crate) fn start_agent_with_venv(&self, venv: &Path, extra: &[&str]) -> AgentProcess {
        let log = self.path().join("agent.log");
        let mut cmd = self.outpost(&["agent"]);
        cmd.arg("--conf-dir")
            .arg(self.path().join("conf.d"))
            .arg("--checks-dir")
            .arg(self.path().join("checks.d"))
            .arg("--python-venv")
            .arg(venv)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs_err::File::create(&log).unwrap().into_file());
        let child = cmd.spawn().unwrap();
        let agent = AgentProcess {
            child,
            socket: self.socket(),
            log,
        };
        agent.wait_until("the API answers", |a| a.try_get("/checks").is_some());
        agent
    }
}

/// The running `outpost agent`; killed (SIGKILL) if still running when dropped.
pub(crate) struct AgentProcess {
    pub(crate) child: Child,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
}

impl AgentProcess {
    pub(crate) fn log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `cond` every 50 ms until it holds; fails after 60 s with the agent's log.
    pub(crate) fn wait_until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if cond(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; agent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One request; `None` when the socket does not answer.
    pub(crate) fn try_request(&self, method: &str, path: &str) -> Option<Response> {
        request(&self.socket, method, path)
    }

    pub(crate) fn try_get(&self, path: &str) -> Option<Response> {
        self.try_request("GET", path)
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        self.try_get(path)
            .unwrap_or_else(|| panic!("no answer to GET {path}; log:\n{}", self.log()))
    }

    pub(crate) fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    pub(crate) fn post(&self, path: &str) -> Response {
        self.try_request("POST", path)
            .unwrap_or_else(|| panic!("no answer to POST {path}; log:\n{}", self.log()))
    }

    /// The instance of `/checks` whose check is `check` (the first one).
    pub(crate) fn instance(&self, check: &str) -> Value {
        let view = self.get_json("/checks");
        view["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["check"] == check)
            .cloned()
            .unwrap_or_else(|| panic!("no instance of {check} in {view}"))
    }

    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the process to exit (at most 30 s).
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Our own child, by its pid; a failing test must not leave it running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` (no body) over the socket with `Connection: close`.
pub(crate) fn request(socket: &Path, method: &str, path: &str) -> Option<Response> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some(Response {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// The value of the sample line `series` (name and labels, exactly) in an exposition.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Users never see a panic, a Rust backtrace or a `Debug` dump.
pub(crate) fn assert_no_rust_noise(text: &str) {
    for bad in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "Os {",
        "Error {",
    ] {
        assert!(!text.contains(bad), "{bad:?} in output:\n{text}");
    }
}
