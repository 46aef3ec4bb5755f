//! Small filesystem primitives the operations are built from.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{CWD, RenameFlags};

use crate::error::RepoError;
use crate::failpoint::{self, Step};

/// Mode of every directory the repository creates (explicit, so a strict umask cannot make
/// package trees unreadable to the package's users).
pub(crate) const DIR_MODE: u32 = 0o755;

/// A short random token for temporary names: 16 hex digits from a randomly keyed SipHash of
/// a process-wide counter, the pid and the time. Uniqueness is still enforced by the callers
/// (`mkdir` and no-replace renames fail on a clash), so this only has to make clashes rare.
pub(crate) fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::UNIX_EPOCH.elapsed() {
        hasher.write_u128(elapsed.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

/// Runs one filesystem step between its two failure points, naming `path` in any error.
pub(crate) fn step<T>(
    step: Step,
    op: &'static str,
    path: &Path,
    f: impl FnOnce() -> io::Result<T>,
) -> Result<T, RepoError> {
    point(step.before, op, path)?;
    let value = f().map_err(|e| RepoError::fs(op, path, e))?;
    point(step.after, op, path)?;
    Ok(value)
}

/// Hits one failure point, turning an injected failure into the error of the step it guards.
pub(crate) fn point(name: &'static str, op: &'static str, path: &Path) -> Result<(), RepoError> {
    failpoint::hit(name).map_err(|e| RepoError::fs(op, path, e))
}

/// fsync of a directory, so the entries created, renamed or removed in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Makes the tree at `dir` durable with one `syncfs(2)` on its filesystem.
///
/// Why `syncfs` rather than an fsync of every file and directory: each fsync on ext4 ends in
/// a device cache flush (about 0.15 ms here even when nothing is dirty), so a package of
/// 20,000 files would pay 20,000 flushes, seconds of latency, where `syncfs` pays one journal
/// commit and one flush for the whole tree, its data, inodes and directory entries alike.
/// The price is that dirty data of unrelated files on the same filesystem is written too,
/// which costs time but is never wrong. Since Linux 5.8 `syncfs` reports writeback errors of
/// the filesystem that no one has seen yet (including ones from before this call), so a tree
/// whose data failed to reach the disk is refused here rather than renamed into place; older
/// kernels may not report such errors, the same weakness fsync had before 4.13.
///
/// `tmp/` and `packages/` are checked to share a filesystem when the repository opens, so the
/// filesystem synced here is the one the tree is renamed into.
pub(crate) fn sync_tree(dir: &Path) -> io::Result<()> {
    let file = fs_err::File::open(dir)?;
    rustix::fs::syncfs(file.file()).map_err(io::Error::from)
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`
/// (`renameat2(RENAME_NOREPLACE)`). On a filesystem without that flag it falls back to a
/// check then a plain rename, which is safe under the repository's single-writer rule.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            match fs_err::symlink_metadata(to) {
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", to.display()),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs_err::rename(from, to),
                Err(e) => Err(e),
            }
        }
        Err(errno) => {
            let source = io::Error::from(errno);
            Err(io::Error::new(
                source.kind(),
                RenameFailed {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    source,
                },
            ))
        }
    }
}

/// A failed rename, naming both paths (the way `fs-err` names them for `std` calls).
#[derive(Debug, thiserror::Error)]
#[error("failed to rename `{}` to `{}`", .from.display(), .to.display())]
struct RenameFailed {
    from: PathBuf,
    to: PathBuf,
    #[source]
    source: io::Error,
}

/// `mkdir` with mode [`DIR_MODE`] whatever the umask.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    fs_err::create_dir(path)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Deletes whatever is at `path` without following symlinks: a directory tree, a file or a
/// link. Missing is success.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    let meta = match fs_err::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = if meta.is_dir() {
        fs_err::remove_dir_all(path)
    } else {
        fs_err::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `path` is a real directory (a symlink to one does not count).
pub(crate) fn is_real_dir(path: &Path) -> io::Result<bool> {
    match fs_err::symlink_metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ() {
        let a = nonce();
        let b = nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn rename_noreplace_refuses_existing_targets() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs_err::create_dir(&a).unwrap();
        fs_err::create_dir(&b).unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(a.is_dir() && b.is_dir());
        fs_err::remove_dir(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!a.exists() && b.is_dir());
    }

    #[test]
    fn remove_any_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs_err::create_dir(&outside).unwrap();
        fs_err::write(outside.join("keep"), "x").unwrap();
        let link = dir.path().join("link");
        fs_err::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_any(&link).unwrap();
        assert!(outside.join("keep").exists());
        assert!(fs_err::symlink_metadata(&link).is_err());
        remove_any(&link).unwrap();
    }

    #[test]
    fn created_dirs_ignore_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        create_dir(&path).unwrap();
        let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
    }
}
