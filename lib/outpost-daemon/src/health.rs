//! The health command of an experiment (`docs/experiment-safety.md`): one run, its output
//! tail and its verdict, for the experiment watch.
//!
//! A run costs the daemon a process start, which is most of what watching costs an idle
//! daemon (`BENCHMARKS.md`, "Watching experiments"). A [`HealthCommand`] is prepared once
//! and run any number of times: the program is resolved before spawning (a bare name is
//! looked up on the clean environment's `PATH` by the daemon, and a name found nowhere is a
//! failed run that says so), and the arguments and environment are built once. The process
//! is started by `health/spawn.rs` on a stack kept for the daemon's life, without an exit
//! signal, and waited for through the pidfd its clone returns.

use std::ffi::OsStr;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_types::{PackageName, Version};
use rustix::process::WaitIdStatus;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe::Receiver;

use crate::hooks::HOOK_PATH;

mod spawn;

use spawn::Spawn;

/// How much of a health command's output is kept.
pub const HEALTH_OUTPUT_TAIL: usize = 4096;

/// One run of an experiment's health command (see [`run_health`]).
#[derive(Debug, Clone, Copy)]
pub struct HealthRun<'a> {
    /// The package.
    pub package: &'a PackageName,
    /// The experiment version being checked.
    pub experiment: &'a Version,
    /// The stable version beside it.
    pub stable: &'a Version,
    /// The experiment's version directory: the working directory, and the base of a relative
    /// program path.
    pub version_dir: &'a Path,
    /// Program and arguments.
    pub command: &'a [String],
    /// How long the run may take before its process group is killed.
    pub timeout: Duration,
    /// Variables set after the standard ones (a name given twice takes the later value): the
    /// versions of a config experiment's watch.
    pub env: &'a [(String, String)],
}

/// What one health run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthOutcome {
    /// Exit code 0 within the timeout.
    pub ok: bool,
    /// The exit code, when the command exited by itself.
    pub exit_code: Option<i32>,
    /// The last [`HEALTH_OUTPUT_TAIL`] bytes of its stdout and stderr as written, followed by
    /// a note when it timed out, died of a signal or could not start.
    pub output_tail: String,
}

/// Runs a health command and never fails: a command that cannot start, exits non-zero, dies
/// of a signal or outlives `timeout` is a failed run whose output says why.
///
/// The command gets the hooks' clean environment (`OUTPOST_PACKAGE`, `OUTPOST_VERSION` and
/// `OUTPOST_PATH` of the experiment, `OUTPOST_EVENT=health`, the system `PATH`) plus
/// `OUTPOST_EXPERIMENT_VERSION` and `OUTPOST_STABLE_VERSION`, then [`HealthRun::env`], no stdin, and one pipe for
/// stdout and stderr. It runs in its own process group, which is killed whole when the run
/// ends (on a timeout, and after the command exits, so that nothing it left behind lingers).
pub async fn run_health(run: HealthRun<'_>) -> HealthOutcome {
    let started = match HealthCommand::prepare(&run) {
        Ok(command) => command.run(run.timeout).await,
        Err(e) => Err(e),
    };
    started.unwrap_or_else(|e| HealthOutcome::not_started(run.command, &e))
}

impl HealthOutcome {
    /// The failed run of a command that could not start.
    #[must_use]
    pub fn not_started(command: &[String], e: &std::io::Error) -> Self {
        Self {
            ok: false,
            exit_code: None,
            output_tail: format!(
                "could not run {:?}: {e}",
                command.first().map_or("", String::as_str)
            ),
        }
    }
}

/// A health command ready to run: program resolved, arguments and environment built, so
/// that a watch running the same command every interval prepares it once
/// ([`HealthCommand::run`] may be called any number of times).
#[derive(Debug)]
pub struct HealthCommand {
    spawn: Spawn,
}

impl HealthCommand {
    /// Resolves the program of `run` and builds what its runs need ([`run_health`] says
    /// what the command gets). `run.timeout` is not kept: each run is given its own.
    ///
    /// # Errors
    /// The command is empty, a bare program name is on none of the `PATH` directories, or
    /// an argument, variable or the directory holds a NUL byte.
    pub fn prepare(run: &HealthRun<'_>) -> std::io::Result<Self> {
        let Some((program, args)) = run.command.split_first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command",
            ));
        };
        let path = resolve_program(program, run.version_dir)?;
        let dir = run.version_dir.as_os_str();
        let mut env: Vec<(&str, &OsStr)> = vec![
            ("PATH", OsStr::new(HOOK_PATH)),
            ("OUTPOST_PACKAGE", OsStr::new(run.package.as_str())),
            ("OUTPOST_VERSION", OsStr::new(run.experiment.as_str())),
            ("OUTPOST_PATH", dir),
            ("OUTPOST_EVENT", OsStr::new("health")),
            (
                "OUTPOST_EXPERIMENT_VERSION",
                OsStr::new(run.experiment.as_str()),
            ),
            ("OUTPOST_STABLE_VERSION", OsStr::new(run.stable.as_str())),
        ];
        // execve keeps duplicates and getenv takes the first: a later value replaces in place.
        for (k, v) in run.env {
            match env.iter_mut().find(|(name, _)| *name == k.as_str()) {
                Some(slot) => slot.1 = OsStr::new(v.as_str()),
                None => env.push((k.as_str(), OsStr::new(v.as_str()))),
            }
        }
        Ok(Self {
            spawn: Spawn::new(&path, program, args, &env, run.version_dir)?,
        })
    }

    /// Runs the command once, killed with its group after `timeout`.
    ///
    /// # Errors
    /// The command could not start (no pipe, the clone or `execve` failed): the run did not
    /// happen. Anything after the start is in the outcome.
    pub async fn run(&self, timeout: Duration) -> std::io::Result<HealthOutcome> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let reader = Receiver::from_owned_fd(read)?;
        // The write end is closed here once the command has it, so the reader sees EOF once
        // the command's group is gone.
        let (pid, pidfd) = self.spawn.start(write.as_fd())?;
        drop(write);
        let child = Child::watch(pid, pidfd)?;
        Ok(wait_health(child, reader, timeout).await)
    }
}

/// The program a health command names: a path with a slash is used as it is, relative to the
/// version directory; a bare name is the first executable regular file of that name in the
/// directories of [`HOOK_PATH`], as `execvp` would find it in the command's environment.
fn resolve_program(program: &str, version_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if program.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty program name",
        ));
    }
    if program.contains('/') {
        return Ok(version_dir.join(program));
    }
    HOOK_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| {
            fs_err::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no executable {program:?} in PATH {HOOK_PATH}"),
            )
        })
}

/// A started health command: its process group is killed when this is dropped, and the
/// command is reaped (at once, or by a task of its own when it has not exited yet).
struct Child {
    pid: rustix::process::Pid,
    /// Readable once the command exited; `None` once it is reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Child {
    fn watch(pid: rustix::process::Pid, pidfd: OwnedFd) -> std::io::Result<Self> {
        // SAFETY: an OwnedFd is open and stays the same descriptor while owned.
        match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
            Ok(pidfd) => Ok(Self {
                pid,
                pidfd: Some(pidfd),
            }),
            Err(refused) => {
                // Without a handle on it, the command is not left running unwatched.
                let (pidfd, e) = refused.into_parts();
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = spawn::wait_exit(pidfd.as_fd(), false);
                Err(e)
            }
        }
    }

    /// Kills the command's process group (it may already be empty).
    fn kill_group(&self) {
        let _ = rustix::process::kill_process_group(self.pid, rustix::process::Signal::KILL);
    }

    /// Waits for the command to exit and reaps it.
    async fn wait(&mut self) -> std::io::Result<WaitIdStatus> {
        let Some(pidfd) = &self.pidfd else {
            return Err(std::io::Error::other("already reaped"));
        };
        loop {
            let mut ready = pidfd.readable().await?;
            if let Some(status) = reap(pidfd.get_ref().as_fd())? {
                self.pidfd = None;
                return Ok(status);
            }
            ready.clear_ready();
        }
    }
}

/// Reaps the command behind `pidfd` if it exited.
fn reap(pidfd: BorrowedFd<'_>) -> std::io::Result<Option<WaitIdStatus>> {
    spawn::wait_exit(pidfd, true)
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        // A run abandoned half-way (its watch ended) still takes its whole group with it.
        self.kill_group();
        if matches!(reap(pidfd.get_ref().as_fd()), Ok(Some(_))) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    while pidfd.readable().await.is_ok() {
                        if !matches!(reap(pidfd.get_ref().as_fd()), Ok(None)) {
                            return;
                        }
                    }
                });
            }
            Err(_) => {
                let _ = spawn::wait_exit(pidfd.get_ref().as_fd(), false);
            }
        }
    }
}

/// Keeps the last [`HEALTH_OUTPUT_TAIL`] bytes.
fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > 2 * HEALTH_OUTPUT_TAIL {
        buf.drain(..buf.len() - HEALTH_OUTPUT_TAIL);
    }
}

async fn wait_health(mut child: Child, mut reader: Receiver, timeout: Duration) -> HealthOutcome {
    use tokio::io::AsyncReadExt as _;

    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let mut status = None;
    let mut timed_out = false;
    while status.is_none() {
        tokio::select! {
            r = reader.read(&mut chunk), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => keep_tail(&mut out, &chunk[..n]),
            },
            s = child.wait() => status = Some(s),
            () = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                child.kill_group();
                status = Some(child.wait().await);
            }
        }
    }
    // Whatever the command left running goes with it; then the pipe drains to EOF.
    child.kill_group();
    let drain_until = tokio::time::Instant::now() + Duration::from_millis(200);
    while !eof {
        match tokio::time::timeout_at(drain_until, reader.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => keep_tail(&mut out, &chunk[..n]),
            _ => eof = true,
        }
    }
    if out.len() > HEALTH_OUTPUT_TAIL {
        out.drain(..out.len() - HEALTH_OUTPUT_TAIL);
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    let note = |text: &mut String, note: String| {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&note);
    };
    let (ok, exit_code) = match status {
        _ if timed_out => {
            note(
                &mut text,
                format!("[timed out after {timeout:?}; process group killed]"),
            );
            (false, None)
        }
        Some(Ok(st)) => match (st.exit_status(), st.terminating_signal()) {
            (Some(code), _) => (code == 0, Some(code)),
            (None, Some(sig)) => {
                note(&mut text, format!("[killed by signal {sig}]"));
                (false, None)
            }
            (None, None) => (false, None),
        },
        Some(Err(e)) => {
            note(&mut text, format!("[could not wait for the command: {e}]"));
            (false, None)
        }
        None => (false, None),
    };
    HealthOutcome {
        ok,
        exit_code,
        output_tail: text,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn names() -> (PackageName, Version) {
        (
            PackageName::new("pkg").unwrap(),
            Version::new("1.0").unwrap(),
        )
    }

    /// True while `pid` exists and is not a zombie (a container's init may not reap it).
    /// Also used by the hooks' tests.
    pub(crate) fn alive(pid: i32) -> bool {
        match fs_err::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    fn health(dir: &Path, script: &str, timeout: Duration) -> HealthOutcome {
        let path = dir.join("check");
        fs_err::write(&path, script).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (p, v) = names();
        let stable = Version::new("0.9").unwrap();
        let command = vec!["./check".to_string()];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_health(HealthRun {
            package: &p,
            experiment: &v,
            stable: &stable,
            version_dir: dir,
            command: &command,
            timeout,
            env: &[],
        }))
    }

    #[test]
    fn health_runs_report_exit_output_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let ok = health(
            dir.path(),
            "#!/bin/sh\necho \"$OUTPOST_EXPERIMENT_VERSION/$OUTPOST_STABLE_VERSION/$OUTPOST_EVENT\"\necho err >&2\n",
            Duration::from_secs(5),
        );
        assert_eq!(
            (ok.ok, ok.exit_code, ok.output_tail.as_str()),
            (true, Some(0), "1.0/0.9/health\nerr\n")
        );
        let failed = health(dir.path(), "#!/bin/sh\nexit 7\n", Duration::from_secs(5));
        assert_eq!((failed.ok, failed.exit_code), (false, Some(7)));
        let killed = health(
            dir.path(),
            "#!/bin/sh\nkill -9 $$\n",
            Duration::from_secs(5),
        );
        assert!(
            !killed.ok && killed.output_tail.contains("signal 9"),
            "{killed:?}"
        );
        let big = health(
            dir.path(),
            "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x\necho END\n",
            Duration::from_secs(5),
        );
        assert_eq!(big.output_tail.len(), HEALTH_OUTPUT_TAIL);
        assert!(big.output_tail.ends_with("xEND\n"));
        let missing = run_missing();
        assert!(
            !missing.ok && missing.output_tail.contains("could not run"),
            "{missing:?}"
        );
    }

    fn run_missing() -> HealthOutcome {
        run_command(&["./nothing-here"], Duration::from_secs(5))
    }

    /// Runs `command` in an empty version directory.
    fn run_command(command: &[&str], timeout: Duration) -> HealthOutcome {
        let dir = tempfile::tempdir().unwrap();
        let (p, v) = names();
        let command: Vec<String> = command.iter().map(|c| (*c).to_string()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_health(HealthRun {
            package: &p,
            experiment: &v,
            stable: &v,
            version_dir: dir.path(),
            command: &command,
            timeout,
            env: &[],
        }))
    }

    /// A bare name is found on the clean environment's PATH, runs with that environment and
    /// sees its own name as `argv[0]`; a name on none of its directories is a failed run that
    /// says what was looked for where.
    #[test]
    fn bare_command_names_resolve_on_the_clean_path() {
        let env = run_command(&["env"], Duration::from_secs(5));
        assert!(env.ok, "{env:?}");
        assert!(
            env.output_tail
                .contains(&format!("\nPATH={}\n", crate::hooks::HOOK_PATH))
                || env
                    .output_tail
                    .starts_with(&format!("PATH={}\n", crate::hooks::HOOK_PATH)),
            "{env:?}"
        );
        assert!(
            env.output_tail.contains("OUTPOST_EVENT=health\n"),
            "{env:?}"
        );
        assert!(!env.output_tail.contains("HOME="), "{env:?}");
        let argv0 = run_command(&["sh", "-c", "echo \"$0\"", "sh"], Duration::from_secs(5));
        assert_eq!(argv0.output_tail, "sh\n", "{argv0:?}");
        let missing = run_command(&["outpost-no-such-health-command"], Duration::from_secs(5));
        assert!(!missing.ok && missing.exit_code.is_none(), "{missing:?}");
        assert!(
            missing.output_tail.starts_with(
                "could not run \"outpost-no-such-health-command\": no executable \"outpost-no-such-health-command\" in PATH /usr/local/sbin:"
            ),
            "{missing:?}"
        );
        let empty = run_command(&[""], Duration::from_secs(5));
        assert!(
            !empty.ok && empty.output_tail.contains("empty program name"),
            "{empty:?}"
        );
    }

    /// The command starts with the default signal dispositions and nothing blocked, although
    /// the daemon ignores SIGPIPE and blocks every signal while it starts a command: a writer
    /// to a closed pipe dies quietly, and a signal the command sends itself is delivered.
    #[test]
    fn commands_start_with_default_signals() {
        let piped = run_command(&["sh", "-c", "yes | head -n 1"], Duration::from_secs(5));
        assert_eq!(
            (piped.ok, piped.output_tail.as_str()),
            (true, "y\n"),
            "{piped:?}"
        );
        let started = std::time::Instant::now();
        let term = run_command(
            &["sh", "-c", "kill -TERM $$; sleep 5"],
            Duration::from_secs(20),
        );
        assert!(
            !term.ok && term.output_tail.contains("killed by signal 15"),
            "{term:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(4), "{term:?}");
        let mask = run_command(
            &["sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"],
            Duration::from_secs(5),
        );
        assert!(
            mask.output_tail.contains("SigBlk:\t0000000000000000\n"),
            "{mask:?}"
        );
        // SIGPIPE, which the daemon ignores, is reset; what the daemon inherited ignored
        // stays ignored, as with the standard library's spawn.
        let ignored = mask
            .output_tail
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "{mask:?}");
    }

    /// A hung command and the background process it started are killed at the timeout, and
    /// a command that exits leaving a process behind does not hold the run open.
    #[test]
    fn hung_health_commands_are_killed_with_their_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let started = std::time::Instant::now();
        let hung = health(
            dir.path(),
            &format!(
                "#!/bin/sh\necho starting\nsleep 300 &\necho $! > {}\nwait\n",
                pidfile.display()
            ),
            Duration::from_millis(300),
        );
        assert!(!hung.ok && hung.exit_code.is_none(), "{hung:?}");
        assert!(hung.output_tail.starts_with("starting\n"), "{hung:?}");
        assert!(hung.output_tail.contains("timed out"), "{hung:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = pid_in(&pidfile);
        wait_gone(pid);
        let started = std::time::Instant::now();
        let left = health(
            dir.path(),
            &format!(
                "#!/bin/sh\nsleep 300 &\necho $! > {}\nexit 0\n",
                pidfile.display()
            ),
            Duration::from_secs(20),
        );
        assert!(left.ok, "{left:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the run waited for its leftover"
        );
        let pid = pid_in(&pidfile);
        wait_gone(pid);
    }

    /// A run dropped half-way (its watch ended) kills the command's group and reaps the
    /// command: neither it nor what it started lingers, not even as a zombie.
    #[test]
    fn an_abandoned_run_kills_and_reaps_its_command() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            "#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nwait\n",
            pids.display()
        );
        let path = dir.path().join("check");
        fs_err::write(&path, script).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (p, v) = names();
        let command = vec!["./check".to_string()];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let run = HealthRun {
            package: &p,
            experiment: &v,
            stable: &v,
            version_dir: dir.path(),
            command: &command,
            timeout: Duration::from_secs(60),
            env: &[],
        };
        let pids_file = pids.clone();
        rt.block_on(async move {
            let abandoned = tokio::time::timeout(Duration::from_secs(30), async {
                let running = run_health(run);
                tokio::pin!(running);
                // Drive the run until the command wrote its pids, then drop it.
                loop {
                    tokio::select! {
                        _ = &mut running => panic!("the run ended by itself"),
                        () = tokio::time::sleep(Duration::from_millis(20)) => {
                            if fs_err::read_to_string(&pids_file)
                                .is_ok_and(|s| s.trim().split(' ').count() == 2)
                            {
                                return;
                            }
                        }
                    }
                }
            })
            .await;
            assert!(abandoned.is_ok(), "the command never started");
            // The reaping task runs on this runtime: keep it turning for a while.
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let text = fs_err::read_to_string(&pids).unwrap();
        let mut both = text.split_whitespace().map(|p| p.parse::<i32>().unwrap());
        let (command_pid, background) = (both.next().unwrap(), both.next().unwrap());
        wait_gone(background);
        // Reaped: not even a zombie entry is left (the runtime may need a moment).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{command_pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "command {command_pid} was not reaped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(rt);
    }

    /// The pid a test script wrote to `file`.
    pub(crate) fn pid_in(file: &Path) -> i32 {
        fs_err::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn wait_gone(pid: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(std::time::Instant::now() < deadline, "{pid} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
