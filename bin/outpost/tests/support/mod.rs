//! Shared machinery of the end-to-end tests: the real `outpost` binary started as a daemon on
//! a temporary root, HTTP/1.1 over its Unix socket (`outpost_testkit::client`), the CLI, package fixtures built in code
//! (OCI layouts with `outpost_fetch::pack`, tarballs from their layers) and the repository
//! invariants.
//!
//! Every daemon is killed when its [`Daemon`] guard drops, so a failing test never leaves one
//! behind. Nothing sleeps for a fixed time: waits poll with a deadline ([`wait_for`]).
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use outpost_fetch::pack::{PackFormat, PackOptions, pack};
use outpost_types::{PackageName, Version};
use serde_json::{Value, json};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// How long any wait may take before the test fails. Generous: CI has two busy cores.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Environment variables of the binary that a test must not inherit from the caller.
const OUTPOST_VARS: [&str; 6] = [
    "OUTPOST_ROOT",
    "OUTPOST_SOCKET",
    "OUTPOST_CONFIG",
    "OUTPOST_FAILPOINT",
    "OUTPOST_LOG",
    "OUTPOST_TEST_VENV",
];

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        // Back off up to 20 ms between polls; this is a poll interval, not a wait for an event.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A scratch directory for one test: the daemon root, fixtures, config. World-traversable
/// (0755) so a client running under another uid can reach a socket inside it.
pub(crate) struct Scratch {
    pub(crate) dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("outpost-e2e-")
            .tempdir()
            .unwrap();
        fs_err::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon root used by most tests.
    pub(crate) fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// Where fixtures go.
    pub(crate) fn fixtures(&self) -> PathBuf {
        let p = self.path().join("fixtures");
        fs_err::create_dir_all(&p).unwrap();
        p
    }

    /// Writes a config file and returns its path.
    pub(crate) fn config(&self, yaml: &str) -> PathBuf {
        let p = self.path().join("outpost.yaml");
        fs_err::write(&p, yaml).unwrap();
        p
    }
}

/// How to start a daemon.
#[derive(Default, Clone)]
pub(crate) struct DaemonOptions {
    /// `--config FILE`.
    pub(crate) config: Option<PathBuf>,
    /// `--socket PATH` (default `<root>/run/outpost.sock`).
    pub(crate) socket: Option<PathBuf>,
    /// Extra environment (e.g. `OUTPOST_FAILPOINT`).
    pub(crate) env: Vec<(String, String)>,
    /// Extra arguments after `daemon` (e.g. `--listen ADDR`).
    pub(crate) args: Vec<String>,
}

/// A running `outpost daemon`, killed (SIGKILL) and reaped when dropped.
pub(crate) struct Daemon {
    pub(crate) root: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon on `root` with default options and waits until it answers `/status`.
    pub(crate) fn start(root: &Path) -> Self {
        Self::start_with(root, DaemonOptions::default())
    }

    /// Starts a daemon and waits until it answers `/status`.
    pub(crate) fn start_with(root: &Path, options: DaemonOptions) -> Self {
        let mut d = Self::spawn(root, options);
        d.wait_ready();
        d
    }

    /// Starts a daemon without waiting. Its stderr goes to a log file beside the root (appended
    /// to, so the logs of successive daemons on one root accumulate).
    pub(crate) fn spawn(root: &Path, options: DaemonOptions) -> Self {
        let socket = options
            .socket
            .clone()
            .unwrap_or_else(|| root.join("run/outpost.sock"));
        let log = log_path(root);
        let stderr = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("daemon").arg("--root").arg(root);
        if let Some(s) = &options.socket {
            cmd.arg("--socket").arg(s);
        }
        if let Some(c) = &options.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&options.args);
        for var in OUTPOST_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        // A failure point aborts the process; keep any core file out of the way.
        cmd.current_dir(root.parent().unwrap_or(root));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr.into_parts().0));
        let child = cmd.spawn().unwrap();
        Self {
            root: root.to_path_buf(),
            socket,
            log,
            child: Some(child),
        }
    }

    /// Waits until `/status` answers 200, failing early (with the log) if the daemon exits.
    pub(crate) fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        let log = self.log.clone();
        let child = self.child.as_mut().expect("daemon running");
        wait_for("the daemon to answer /status", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the daemon exited with {status} before it was ready:\n{}",
                    fs_err::read_to_string(&log).unwrap_or_default()
                );
            }
            try_request(&socket, &request("GET", "/status", &[], None))
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends a signal to the daemon.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the daemon to exit on its own and returns its status.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let status = wait_for("the daemon to exit", || child.try_wait().unwrap());
        self.child = None;
        status
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may already have exited (e.g. aborted at a failure point).
            let _ = child.kill();
            child.wait().unwrap();
        }
    }

    /// Everything the daemons of this root logged so far.
    pub(crate) fn log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        send(&self.socket, &request("GET", path, &[], None))
    }

    /// `POST path` with a JSON body (and its Content-Type), or with no body at all.
    pub(crate) fn post(&self, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let headers: &[(&str, &str)] = if bytes.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        send(
            &self.socket,
            &request("POST", path, headers, bytes.as_deref()),
        )
    }

    /// `GET /status` as JSON.
    pub(crate) fn status(&self) -> Value {
        let r = self.get("/status");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// `POST /catalog`, asserting success.
    pub(crate) fn set_catalog(&self, packages: &[Value]) {
        let r = self.post("/catalog", Some(&json!({ "packages": packages })));
        assert_eq!((r.status, r.text().as_str()), (200, "{}\n"));
    }

    /// The `(Stable, Experiment)` pair of a package in `/status`, `None` when absent.
    pub(crate) fn versions(&self, package: &str) -> Option<(String, String)> {
        let s = self.status();
        let p = s["packages"].get(package)?;
        Some((
            p["Stable"].as_str().unwrap().to_owned(),
            p["Experiment"].as_str().unwrap().to_owned(),
        ))
    }

    /// The entry of a package in `/status`'s `remote_config_state`.
    pub(crate) fn package_state(&self, package: &str) -> Option<Value> {
        let s = self.status();
        s["remote_config_state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["package"] == package)
            .cloned()
    }

    /// The last task of a package in `/status`.
    pub(crate) fn task(&self, package: &str) -> Option<Value> {
        self.package_state(package)
            .and_then(|p| p.get("task").cloned())
    }

    /// `/debug/vars` as JSON.
    pub(crate) fn debug_vars(&self) -> Value {
        let r = self.get("/debug/vars");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// How many garbage collections have finished (from `/debug/vars`).
    pub(crate) fn gc_runs(&self) -> u64 {
        self.debug_vars()["daemon"]["gc"]["runs"].as_u64().unwrap()
    }

    /// Waits until `n` more garbage collections than `since` have finished.
    pub(crate) fn wait_gc_runs(&self, since: u64, n: u64) -> u64 {
        wait_for("garbage collections", || {
            let runs = self.gc_runs();
            (runs >= since + n).then_some(runs)
        })
    }

    /// Runs the CLI against this daemon.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        cli(&self.socket, args, None)
    }

    /// Runs a `watch` command of the CLI (`experiment watch`, `config-experiment watch`) to
    /// its end and checks that it exits with `code` (0 promoted, 1 rolled back) having
    /// printed each of `lines`; returns what it printed.
    #[allow(dead_code)] // used by the watch tests only
    pub(crate) fn assert_watch_exits(&self, args: &[&str], code: i32, lines: &[&str]) -> String {
        let out = self.cli(args);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(code), "{text}{}", stderr(&out));
        for line in lines {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
        text
    }

    /// SIGTERM and wait for a clean exit.
    pub(crate) fn stop(&mut self) {
        self.signal(rustix::process::Signal::TERM);
        let status = self.wait_exit();
        assert!(status.success(), "daemon exit: {status}\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_path(root: &Path) -> PathBuf {
    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    root.with_file_name(format!("{name}.daemon.log"))
}

/// Runs `outpost` with `args` against `socket`, with `stdin` fed if given.
pub(crate) fn cli(socket: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--socket").arg(socket).args(args);
    cli_output(cmd, stdin)
}

/// Runs a prepared `outpost` command (environment cleaned), with `stdin` fed if given.
pub(crate) fn cli_output(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    for var in OUTPOST_VARS {
        cmd.env_remove(var);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---- HTTP over the socket (the testkit's client) -------------------------------------------

pub(crate) use outpost_testkit::client::{Req, Response};

/// A request with `headers` and, if given, a body (its `Content-Length` is added).
pub(crate) fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Req {
    let mut req = Req::new(method, path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    req
}

/// Sends `req` over the socket and reads the response.
pub(crate) fn send(socket: &Path, req: &Req) -> Response {
    try_request(socket, req).unwrap_or_else(|e| panic!("request to {}: {e}", socket.display()))
}

/// Like [`send`], but returns I/O errors (connection refused, reset by a dying daemon).
pub(crate) fn try_request(socket: &Path, req: &Req) -> std::io::Result<Response> {
    outpost_testkit::client::send_blocking(socket, req)
}

/// Sends raw request bytes (malformed HTTP, or a body the daemon refuses before reading it
/// whole) and reads the response until the daemon closes.
pub(crate) fn send_raw(socket: &Path, raw: &[u8]) -> Response {
    outpost_testkit::client::send_raw_blocking(socket, raw)
        .unwrap_or_else(|e| panic!("request to {}: {e}", socket.display()))
}

// ---- fixtures ------------------------------------------------------------------------------

/// The files of a fixture package version, `(path, contents, mode)`.
pub(crate) type Files = Vec<(String, Vec<u8>, u32)>;

/// The standard contents of a fixture version: a binary naming the version and a data file.
pub(crate) fn standard_files(name: &str, version: &str) -> Files {
    vec![
        (
            "bin/app".into(),
            format!("#!/bin/sh\necho {name} {version}\n").into_bytes(),
            0o755,
        ),
        (
            "share/data.txt".into(),
            format!("{name}={version}\n").repeat(64).into_bytes(),
            0o644,
        ),
    ]
}

/// Adds an executable lifecycle hook to a file list.
pub(crate) fn with_hook(mut files: Files, event: &str, script: &str) -> Files {
    files.push((
        format!("outpost/hooks/{event}"),
        script.as_bytes().to_vec(),
        0o755,
    ));
    files
}

fn write_tree(dir: &Path, files: &Files) {
    fs_err::create_dir_all(dir).unwrap();
    for (path, data, mode) in files {
        let p = dir.join(path);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(&p, data).unwrap();
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// A package built with `outpost_fetch::pack`.
#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    pub(crate) name: String,
    pub(crate) version: String,
    /// The OCI image layout directory.
    pub(crate) layout: PathBuf,
    /// The layer blob, which is also a tarball of the tree.
    pub(crate) layer_blob: PathBuf,
    pub(crate) layer_sha256: String,
    pub(crate) layer_size: u64,
    pub(crate) files: Files,
}

impl Fixture {
    /// Its catalog entry as an OCI layout.
    pub(crate) fn layout_entry(&self) -> Value {
        json!({
            "package": self.name,
            "version": self.version,
            "url": format!("file://{}", self.layout.display()),
        })
    }

    /// Copies the layer out as a `.tar.gz`/`.tar.zst` tarball; returns its catalog entry.
    pub(crate) fn tarball_entry(&self, dir: &Path) -> Value {
        let ext = if fs_err::read(&self.layer_blob)
            .unwrap()
            .starts_with(&[0x1f, 0x8b])
        {
            "tar.gz"
        } else {
            "tar.zst"
        };
        let path = dir.join(format!("{}-{}.{ext}", self.name, self.version));
        fs_err::copy(&self.layer_blob, &path).unwrap();
        json!({
            "package": self.name,
            "version": self.version,
            "url": format!("file://{}", path.display()),
            "sha256": self.layer_sha256,
            "size": self.layer_size,
        })
    }
}

/// Packs `files` as `name` `version` into an OCI layout under `dir`.
pub(crate) fn package(dir: &Path, name: &str, version: &str, files: Files) -> Fixture {
    package_as(dir, name, version, files, PackFormat::Zstd)
}

/// [`package`] with a chosen layer compression.
pub(crate) fn package_as(
    dir: &Path,
    name: &str,
    version: &str,
    files: Files,
    format: PackFormat,
) -> Fixture {
    let src = dir.join(format!("src-{name}-{version}"));
    write_tree(&src, &files);
    let out = dir.join(format!("layout-{name}-{version}"));
    let packed = pack(
        &src,
        &PackageName::new(name).unwrap(),
        &Version::new(version).unwrap(),
        &PackOptions::host(format),
        &out,
    )
    .unwrap();
    Fixture {
        name: name.into(),
        version: version.into(),
        layer_blob: packed.layer.digest.blob_path(&out),
        layer_sha256: packed.layer.digest.hex().to_owned(),
        layer_size: packed.layer.size,
        layout: out,
        files,
    }
}

/// The standard fixture of `name` `version`.
pub(crate) fn standard(dir: &Path, name: &str, version: &str) -> Fixture {
    package(dir, name, version, standard_files(name, version))
}

// ---- repository invariants -------------------------------------------------------------------

/// What a link in `packages/<pkg>/` points at: `None` when absent.
pub(crate) fn link_target(root: &Path, package: &str, link: &str) -> Option<String> {
    let p = root.join("packages").join(package).join(link);
    match fs_err::read_link(&p) {
        Ok(t) => Some(t.to_string_lossy().into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{e}"),
    }
}

/// The inode of a version directory.
pub(crate) fn version_inode(root: &Path, package: &str, version: &str) -> u64 {
    fs_err::metadata(root.join("packages").join(package).join(version))
        .unwrap()
        .ino()
}

pub(crate) fn version_exists(root: &Path, package: &str, version: &str) -> bool {
    root.join("packages").join(package).join(version).is_dir()
}

/// Asserts that a version directory holds exactly `files` (paths, contents, exec bits).
pub(crate) fn assert_complete(dir: &Path, files: &Files) {
    let mut want: Vec<String> = files.iter().map(|(p, _, _)| p.clone()).collect();
    want.sort();
    let mut have = Vec::new();
    collect_files(dir, dir, &mut have);
    have.sort();
    assert_eq!(have, want, "files of {}", dir.display());
    for (path, data, mode) in files {
        let p = dir.join(path);
        assert_eq!(&fs_err::read(&p).unwrap(), data, "{}", p.display());
        let exec = fs_err::metadata(&p).unwrap().permissions().mode() & 0o111 != 0;
        assert_eq!(exec, mode & 0o111 != 0, "exec bit of {}", p.display());
    }
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs_err::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            collect_files(base, &entry.path(), out);
        } else {
            out.push(
                entry
                    .path()
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// The invariants that hold after any crash and restart, for one package whose versions'
/// contents are given: `stable` resolves to a complete version, `experiment` is absent or
/// resolves to a complete version, no temporary link lingers.
/// Returns `(stable, experiment)`.
pub(crate) fn assert_invariants(
    root: &Path,
    package: &str,
    contents: &dyn Fn(&str) -> Files,
) -> (String, Option<String>) {
    let pkg = root.join("packages").join(package);
    let stable = link_target(root, package, "stable").expect("stable link");
    assert!(
        !stable.contains('/'),
        "stable link is relative to the package: {stable}"
    );
    assert_complete(&pkg.join(&stable), &contents(&stable));
    // An experiment link naming the stable version (left by a crash in the middle of a
    // promote) reads as no experiment.
    let experiment = link_target(root, package, "experiment").filter(|e| *e != stable);
    if let Some(e) = &experiment {
        assert_complete(&pkg.join(e), &contents(e));
    }
    for entry in fs_err::read_dir(&pkg).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains('@'), "temporary link left behind: {name}");
    }
    (stable, experiment)
}

/// The entries under `<root>/tmp`.
pub(crate) fn tmp_entries(root: &Path) -> Vec<String> {
    fs_err::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits until `<root>/tmp` is empty.
pub(crate) fn wait_tmp_clean(root: &Path) {
    wait_for("tmp/ to be cleaned", || {
        tmp_entries(root).is_empty().then_some(())
    });
}

/// A catalog entry for a tarball streamed through a named pipe, so a test decides when each
/// byte arrives: returns the entry and the pipe's path.
pub(crate) fn fifo_entry(dir: &Path, fixture: &Fixture) -> (Value, PathBuf) {
    let path = dir.join(format!("{}-{}-pipe.tar.gz", fixture.name, fixture.version));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let entry = json!({
        "package": fixture.name,
        "version": fixture.version,
        "url": format!("file://{}", path.display()),
        "sha256": fixture.layer_sha256,
        "size": fixture.layer_size,
    });
    (entry, path)
}

/// The state of a running task in `/status`: `(phase, bytes_done)` while RUNNING with progress.
pub(crate) fn running_progress(task: &Value) -> Option<(String, u64)> {
    if task["state"] != "RUNNING" {
        return None;
    }
    let p = task.get("progress")?;
    Some((p["phase"].as_str()?.to_owned(), p["bytes_done"].as_u64()?))
}
