//! The ownership and mode checks that keep a root-run daemon from being steered by whoever can
//! write inside its repository.
//!
//! The repository is changed by root. If another user could write to the root, `packages/`,
//! `tmp/` or `run/`, that user could plant a symbolic link where the repository expects a
//! directory (`tmp/` pointing at `/etc`, say) and have root delete or write through it. So every
//! one of those directories must be a real directory (not a symlink), owned by the process's
//! effective uid, and writable by nobody else (no group or other write bit). The checks run
//! when the repository opens and again before every change ([`Repository::checked_mutation`]),
//! so a directory made unsafe while the daemon runs stops the next change instead of being
//! followed. Nothing is repaired: a directory someone else could write to may already hold
//! their links, so the operator must look at it.
//!
//! [`Repository::checked_mutation`]: crate::Repository

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{RepoError, UnsafeReason};

/// Group and other write bits.
const FOREIGN_WRITE: u32 = 0o022;

/// Checks that `dir` is a real directory owned by `uid` and writable by no one else.
///
/// # Errors
/// [`RepoError::NotADirectory`] for a symlink or any other non-directory,
/// [`RepoError::UnsafeDirectory`] for a foreign owner or a group/other write bit,
/// [`RepoError::Filesystem`] when it cannot be inspected (missing included).
pub(crate) fn check_dir(dir: &Path, uid: u32) -> Result<(), RepoError> {
    let meta = fs_err::symlink_metadata(dir).map_err(|e| RepoError::fs("inspect", dir, e))?;
    check_meta(dir, &meta, uid)
}

/// Checks the repository root like [`check_dir`], except that the root itself may be reached
/// through a symbolic link the operator made (its parent is the operator's choice): the
/// directory it resolves to is what must be private.
pub(crate) fn check_root(root: &Path, uid: u32) -> Result<(), RepoError> {
    let meta = fs_err::metadata(root).map_err(|e| RepoError::fs("inspect", root, e))?;
    check_meta(root, &meta, uid)
}

fn check_meta(dir: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), RepoError> {
    if !meta.is_dir() {
        return Err(RepoError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let reason = if meta.uid() != uid {
        UnsafeReason::Owner {
            owner: meta.uid(),
            expected: uid,
        }
    } else if meta.mode() & FOREIGN_WRITE != 0 {
        UnsafeReason::Writable {
            mode: meta.mode() & 0o7777,
        }
    } else {
        return Ok(());
    };
    let err = RepoError::UnsafeDirectory {
        path: dir.to_path_buf(),
        reason,
    };
    tracing::error!(path = %dir.display(), error = %err,
        "refusing to use a repository directory others could write to");
    Err(err)
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use std::io;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_directory_passes() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        check_dir(dir.path(), euid()).unwrap();
        chmod(dir.path(), 0o700);
        check_dir(dir.path(), euid()).unwrap();
    }

    #[test]
    fn group_or_other_write_is_refused_naming_the_path_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o775, 0o757, 0o1777, 0o770] {
            chmod(dir.path(), mode);
            let err = check_dir(dir.path(), euid()).unwrap_err();
            assert!(
                matches!(&err, RepoError::UnsafeDirectory { path, reason: UnsafeReason::Writable { mode: m } }
                    if path == dir.path() && *m == mode),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
            assert!(text.contains(&format!("{mode:o}")), "{text}");
            assert_eq!(err.code(), outpost_types::ErrorCode::Filesystem);
        }
    }

    #[test]
    fn a_foreign_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = euid().wrapping_add(1);
        let err = check_dir(dir.path(), other).unwrap_err();
        assert!(
            matches!(&err, RepoError::UnsafeDirectory { reason: UnsafeReason::Owner { owner, expected }, .. }
                if *owner == euid() && *expected == other),
            "{err:?}"
        );
        assert!(err.to_string().contains("owned by uid"), "{err}");
    }

    #[test]
    fn symlinks_and_files_are_not_directories() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs_err::create_dir(&real).unwrap();
        chmod(&real, 0o755);
        let link = dir.path().join("link");
        fs_err::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            check_dir(&link, euid()),
            Err(RepoError::NotADirectory { path }) if path == link
        ));
        let file = dir.path().join("file");
        fs_err::write(&file, "x").unwrap();
        assert!(matches!(
            check_dir(&file, euid()),
            Err(RepoError::NotADirectory { .. })
        ));
        let missing = check_dir(&dir.path().join("missing"), euid()).unwrap_err();
        assert!(
            matches!(&missing, RepoError::Filesystem { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
    }
}
