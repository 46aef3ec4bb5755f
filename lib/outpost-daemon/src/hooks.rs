//! Package lifecycle hooks (`spec/packages.md`): a package may ship executables at
//! `outpost/hooks/<event>` inside its version directory. They run with a timeout, a clean
//! environment (`OUTPOST_PACKAGE`, `OUTPOST_VERSION`, `OUTPOST_PATH`, `OUTPOST_EVENT` and a
//! fixed system `PATH`), the version directory as working directory, in their own process
//! group (killed whole on timeout), and their output goes to the daemon log line by line.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use outpost_types::{PackageName, Version};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// The lifecycle events, named as their hook files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// After a version became stable by `install`.
    PostInstall,
    /// Before a package is removed.
    PreRemove,
    /// After an experiment started; failure stops the experiment.
    PostExperimentStart,
    /// Before an experiment is stopped.
    PreExperimentStop,
    /// After an experiment was promoted.
    PostPromote,
    /// After a config experiment started; failure stops the config experiment.
    PostConfigExperimentStart,
    /// Before a config experiment is stopped.
    PreConfigExperimentStop,
    /// After a config experiment was promoted.
    PostConfigPromote,
}

impl HookEvent {
    /// The hook's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::PostInstall => "post-install",
            Self::PreRemove => "pre-remove",
            Self::PostExperimentStart => "post-experiment-start",
            Self::PreExperimentStop => "pre-experiment-stop",
            Self::PostPromote => "post-promote",
            Self::PostConfigExperimentStart => "post-config-experiment-start",
            Self::PreConfigExperimentStop => "pre-config-experiment-stop",
            Self::PostConfigPromote => "post-config-promote",
        }
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook file exists but cannot be run.
    #[error("{event} hook {path} is not an executable regular file")]
    NotExecutable {
        /// Event.
        event: &'static str,
        /// Hook path.
        path: PathBuf,
    },
    /// Starting or waiting for the hook failed.
    #[error("{event} hook {path} could not run: {source}")]
    Spawn {
        /// Event.
        event: &'static str,
        /// Hook path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The hook exited unsuccessfully.
    #[error("{event} hook of {package} {version} failed ({}){}", describe_status(*status), tail_suffix(stderr_tail))]
    Failed {
        /// Event.
        event: &'static str,
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// The last lines the hook wrote to stderr (at most [`STDERR_TAIL_LINES`] lines and
        /// [`STDERR_TAIL_BYTES`] bytes), joined with `; `.
        stderr_tail: String,
    },
    /// The hook ran past its timeout and was killed.
    #[error("{event} hook of {package} {version} timed out after {}s and was killed{}", timeout.as_secs_f64(), tail_suffix(stderr_tail))]
    TimedOut {
        /// Event.
        event: &'static str,
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// The limit.
        timeout: Duration,
        /// The last lines the hook wrote to stderr, as for [`HookError::Failed`].
        stderr_tail: String,
    },
}

/// How many of a failed hook's last stderr lines its error carries.
pub const STDERR_TAIL_LINES: usize = 5;
/// The most bytes of stderr a hook's error carries.
pub const STDERR_TAIL_BYTES: usize = 1024;

impl HookError {
    /// The hook's failure without the package and version, for a message that already names
    /// them: `post-install hook failed (exit 3): missing api_key`.
    pub fn short(&self) -> String {
        match self {
            Self::NotExecutable { event, .. } => {
                format!("{event} hook is not an executable regular file")
            }
            Self::Spawn { event, source, .. } => format!("{event} hook could not run: {source}"),
            Self::Failed {
                event,
                status,
                stderr_tail,
                ..
            } => format!(
                "{event} hook failed ({}){}",
                describe_status(*status),
                tail_suffix(stderr_tail)
            ),
            Self::TimedOut {
                event,
                timeout,
                stderr_tail,
                ..
            } => format!(
                "{event} hook timed out after {}s and was killed{}",
                timeout.as_secs_f64(),
                tail_suffix(stderr_tail)
            ),
        }
    }
}

/// `exit 3`, or `killed by signal 9`.
fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// Keeps the last [`STDERR_TAIL_LINES`] non-empty lines, then the last
/// [`STDERR_TAIL_BYTES`] bytes of them (cut on a character boundary).
fn stderr_tail(lines: &std::collections::VecDeque<String>) -> String {
    let joined = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if joined.len() <= STDERR_TAIL_BYTES {
        return joined;
    }
    let mut start = joined.len() - STDERR_TAIL_BYTES;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &joined[start..])
}

/// The system `PATH` hooks get.
pub(crate) const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub use crate::health::{HEALTH_OUTPUT_TAIL, HealthCommand, HealthOutcome, HealthRun, run_health};

/// Runs the hook for `event` if the version directory has one. A missing hook is success.
pub async fn run(
    event: HookEvent,
    package: &PackageName,
    version: &Version,
    version_dir: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<(), HookError> {
    let name = event.file_name();
    let path = version_dir.join("outpost/hooks").join(name);
    let meta = match fs_err::tokio::metadata(&path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(HookError::Spawn {
                event: name,
                path,
                source: e,
            });
        }
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(HookError::NotExecutable { event: name, path });
    }
    tracing::info!(package.name = %package, package.version = %version, hook = name, "running hook");
    let mut child = Command::new(&path)
        .args(args)
        .current_dir(version_dir)
        .env_clear()
        .env("PATH", HOOK_PATH)
        .env("OUTPOST_PACKAGE", package.as_str())
        .env("OUTPOST_VERSION", version.as_str())
        .env("OUTPOST_PATH", version_dir)
        .env("OUTPOST_EVENT", name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Spawn {
            event: name,
            path: path.clone(),
            source: e,
        })?;
    let pgid = child.id();
    // Every line is logged; the last few of stderr are kept for the error, as they are read,
    // so that a hook killed at its timeout still reports what it said.
    type Tail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;
    let seen: Tail = Default::default();
    let log_lines = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                     which: &'static str,
                     keep: Option<Tail>| {
        let package = package.to_string();
        async move {
            let Some(stream) = stream else { return };
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(package.name = %package, hook = name, stream = which, "{line}");
                if let Some(keep) = &keep {
                    let mut last = keep
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if last.len() == STDERR_TAIL_LINES {
                        last.pop_front();
                    }
                    last.push_back(line);
                }
            }
        }
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let output = async {
        tokio::join!(
            log_lines(stdout, "stdout", None),
            log_lines(stderr, "stderr", Some(seen.clone()))
        )
    };
    let waited = tokio::time::timeout(timeout, async {
        let (status, _) = tokio::join!(child.wait(), output);
        status
    })
    .await;
    let tail = || {
        stderr_tail(
            &seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    };
    match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(HookError::Failed {
            event: name,
            package: package.to_string(),
            version: version.to_string(),
            status,
            stderr_tail: tail(),
        }),
        Ok(Err(e)) => Err(HookError::Spawn {
            event: name,
            path,
            source: e,
        }),
        Err(_elapsed) => {
            if let Some(pgid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                // The group may already be gone; the hook is reported as timed out either way.
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            Err(HookError::TimedOut {
                event: name,
                package: package.to_string(),
                version: version.to_string(),
                timeout,
                stderr_tail: tail(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::{alive, pid_in};

    fn write_hook(dir: &Path, event: HookEvent, script: &str) {
        let hooks = dir.join("outpost/hooks");
        fs_err::create_dir_all(&hooks).unwrap();
        let path = hooks.join(event.file_name());
        fs_err::write(&path, script).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn names() -> (PackageName, Version) {
        (
            PackageName::new("pkg").unwrap(),
            Version::new("1.0").unwrap(),
        )
    }

    #[tokio::test]
    async fn missing_hook_is_success() {
        let dir = tempfile::tempdir().unwrap();
        let (p, v) = names();
        run(
            HookEvent::PostInstall,
            &p,
            &v,
            dir.path(),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn hook_gets_clean_environment_and_args() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env.out");
        write_hook(
            dir.path(),
            HookEvent::PostInstall,
            &format!(
                "#!/bin/sh\nenv | sort > {}\necho \"args:$*\" >> {}\n",
                out.display(),
                out.display()
            ),
        );
        let (p, v) = names();
        run(
            HookEvent::PostInstall,
            &p,
            &v,
            dir.path(),
            &["--a".into(), "b".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let env = fs_err::read_to_string(&out).unwrap();
        assert!(env.contains("OUTPOST_PACKAGE=pkg\n"), "{env}");
        assert!(env.contains("OUTPOST_VERSION=1.0\n"), "{env}");
        assert!(
            env.contains(&format!("OUTPOST_PATH={}\n", dir.path().display())),
            "{env}"
        );
        assert!(env.contains("OUTPOST_EVENT=post-install\n"), "{env}");
        assert!(env.contains("args:--a b"), "{env}");
        assert!(!env.contains("HOME="), "environment not clean: {env}");
    }

    #[tokio::test]
    async fn failing_hook_reports_status() {
        let dir = tempfile::tempdir().unwrap();
        write_hook(
            dir.path(),
            HookEvent::PreRemove,
            "#!/bin/sh\necho failing >&2\nexit 3\n",
        );
        let (p, v) = names();
        let err = run(
            HookEvent::PreRemove,
            &p,
            &v,
            dir.path(),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HookError::Failed { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("pre-remove hook of pkg 1.0 failed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn hung_hook_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        write_hook(
            dir.path(),
            HookEvent::PostPromote,
            &format!(
                "#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n",
                pidfile.display()
            ),
        );
        let (p, v) = names();
        let err = run(
            HookEvent::PostPromote,
            &p,
            &v,
            dir.path(),
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        let pid = pid_in(&pidfile);
        // The grandchild was in the hook's process group and got SIGKILL; wait for it to go.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {pid} survived the timeout"
            );
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn non_executable_hook_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_hook(dir.path(), HookEvent::PostInstall, "#!/bin/sh\n");
        let path = dir.path().join("outpost/hooks/post-install");
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (p, v) = names();
        let err = run(
            HookEvent::PostInstall,
            &p,
            &v,
            dir.path(),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HookError::NotExecutable { .. }), "{err}");
    }
}
