//! Shared fixtures of the `agent_*` tests: the `checks_*` tests' root (`conf.d/` and
//! `checks.d/`) and test venv, the real `outpost agent` process, and the daemon tests' HTTP/1.1
//! client for its socket.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it; tests unwrap

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../checks_support/mod.rs"]
mod checks_support;
#[path = "../support/mod.rs"]
mod support;

pub(crate) use checks_support::{Fixture as Root, OUTPOST, assert_no_rust_noise, venv};
pub(crate) use support::Response;

impl Root {
    /// Removes `conf.d/<name>.d`.
    pub(crate) fn remove_conf(&self, name: &str) {
        fs_err::remove_dir_all(self.root().join(format!("conf.d/{name}.d"))).unwrap();
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.root().join("run/agent.sock")
    }

    /// `outpost <args> --root <root>`, with the environment cleared of outpost variables.
    pub(crate) fn outpost(&self, args: &[&str]) -> Command {
        let mut c = Command::new(OUTPOST);
        c.args(args)
            .arg("--root")
            .arg(self.root())
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
        let log = self.root().join("agent.log");
        let mut cmd = self.outpost(&["agent"]);
        cmd.arg("--conf-dir")
            .arg(self.root().join("conf.d"))
            .arg("--checks-dir")
            .arg(self.root().join("checks.d"))
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
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
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

/// Sends `method path` (no body) over the socket; `None` when the socket does not answer.
pub(crate) fn request(socket: &Path, method: &str, path: &str) -> Option<Response> {
    support::try_request(socket, &support::request(method, path, &[], None)).ok()
}

/// The value of the sample line `series` (name and labels, exactly) in an exposition.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}
