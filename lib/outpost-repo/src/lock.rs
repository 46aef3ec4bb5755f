//! "In use" markers (`run/locks/<pkg>/<version>/<pid>`) and the repository's writer lock.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use rustix::process::Pid;

/// What a file in a version's lock directory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidFile {
    /// Named by a running process: the version is in use.
    Live(u32),
    /// Named by a process that is gone, or by a number that cannot be a pid (`-1`, `0`, too
    /// large): garbage, deleted by GC and `remove`.
    Dead,
    /// Not a number: ignored with a warning, never deleted.
    Foreign,
}

/// Classifies a lock file by its name. Liveness is `kill(pid, 0)`: success or `EPERM` (the
/// process exists but belongs to someone else) mean alive, `ESRCH` means gone.
pub(crate) fn classify(name: &OsStr) -> PidFile {
    let Some(number) = name.to_str().and_then(|s| s.parse::<i64>().ok()) else {
        return PidFile::Foreign;
    };
    let Some((raw, pid)) = i32::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| Some((n.unsigned_abs(), Pid::from_raw(n)?)))
    else {
        return PidFile::Dead;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => PidFile::Live(raw),
        Err(rustix::io::Errno::SRCH) => PidFile::Dead,
        // Anything else is unexpected; keeping the version is the safe answer.
        Err(_) => PidFile::Live(raw),
    }
}

/// The lock files of one version.
#[derive(Debug, Default)]
pub(crate) struct LockScan {
    /// Pids of live holders, sorted.
    pub(crate) live: Vec<u32>,
    /// Files named by dead or invalid pids.
    pub(crate) dead: Vec<PathBuf>,
}

/// Reads a version's lock directory; a missing directory means no locks. Non-numeric names are
/// logged and skipped.
pub(crate) fn scan(dir: &Path) -> io::Result<LockScan> {
    let mut scan = LockScan::default();
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        match classify(&name) {
            PidFile::Live(pid) => scan.live.push(pid),
            PidFile::Dead => scan.dead.push(entry.path()),
            PidFile::Foreign => tracing::warn!(
                path = %entry.path().display(),
                "ignoring a lock file whose name is not a pid"
            ),
        }
    }
    scan.live.sort_unstable();
    Ok(scan)
}

/// A lock file held by [`crate::Repository::lock_version`]: while it exists, GC keeps the
/// version and `remove` refuses the package (if the pid is alive). Dropping it deletes the
/// file; a file left behind by a crash is harmless once its pid is dead.
#[derive(Debug)]
pub struct VersionLock {
    path: PathBuf,
    released: bool,
}

impl VersionLock {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            released: false,
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the lock file now, reporting a failure that dropping would only log.
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        match fs_err::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for VersionLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = fs_err::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e,
                "could not delete a lock file; GC deletes it once its pid is dead");
        }
    }
}

/// The exclusive right to change the repository, held by one process at a time
/// (`flock(LOCK_EX)` on `<root>/run/repo.lock`). Released when dropped or when the process
/// exits, however it exits.
#[derive(Debug)]
pub struct WriterLock {
    file: fs_err::File,
}

impl WriterLock {
    pub(crate) fn new(file: fs_err::File) -> Self {
        Self { file }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        let own = std::process::id();
        assert_eq!(classify(OsStr::new(&own.to_string())), PidFile::Live(own));
        for dead in ["-1", "0", "99999999999", "-2147483648"] {
            assert_eq!(classify(OsStr::new(dead)), PidFile::Dead, "{dead}");
        }
        for foreign in ["abc", "", "12abc", "1.5"] {
            assert_eq!(classify(OsStr::new(foreign)), PidFile::Foreign, "{foreign}");
        }
        // A pid that existed and is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(classify(OsStr::new(&pid.to_string())), PidFile::Dead);
        // pid 1 belongs to another user when unprivileged (EPERM) and is alive either way.
        assert_eq!(classify(OsStr::new("1")), PidFile::Live(1));
    }

    #[test]
    fn scan_sorts_live_and_lists_dead() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan(&dir.path().join("missing")).unwrap().live.is_empty());
        let own = std::process::id();
        for name in [own.to_string(), "1".into(), "-1".into(), "notapid".into()] {
            fs_err::write(dir.path().join(name), "").unwrap();
        }
        let result = scan(dir.path()).unwrap();
        let mut expected = vec![1, own];
        expected.sort_unstable();
        assert_eq!(result.live, expected);
        assert_eq!(result.dead, vec![dir.path().join("-1")]);
    }
}
