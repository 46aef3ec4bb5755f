//! A switch as a transaction: every change is recorded as data right after it succeeds, and
//! a transaction dropped without [`Txn::commit`] undoes them in reverse order.
//!
//! The undo log only covers *failures the process survives* (an error at some step). A crash
//! needs no undo: each step leaves the disk in a state the readers accept (see the crate docs),
//! and the leftovers (temporary links, trees under `tmp/`) are cleaned by the next operation
//! or GC. Rollback errors cannot be returned from `Drop`; they are logged, and the disk is then
//! still in one of those accepted states.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use outpost_types::{PackageName, Version};

use crate::error::RepoError;
use crate::failpoint::{LINK_FSYNC, LINK_UNLINK, PACKAGE_FSYNC, PACKAGE_MKDIR, Step};
use crate::fsutil::{self, step};
use crate::link;

#[derive(Debug)]
enum Undo {
    /// A directory was created; undo removes it (it must be empty again by then).
    CreatedDir(PathBuf),
    /// `from` was renamed to `to`; undo renames it back.
    Moved { from: PathBuf, to: PathBuf },
    /// A link was switched or removed; undo restores its previous target (or removes it).
    Relinked {
        link: PathBuf,
        previous: Option<PathBuf>,
    },
}

/// For logs: what the change was, in words.
impl std::fmt::Display for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CreatedDir(dir) => write!(f, "created {}", dir.display()),
            Self::Moved { from, to } => write!(f, "moved {} to {}", from.display(), to.display()),
            Self::Relinked {
                link,
                previous: Some(previous),
            } => write!(
                f,
                "relinked {} (was {})",
                link.display(),
                previous.display()
            ),
            Self::Relinked {
                link,
                previous: None,
            } => write!(f, "linked {} (was absent)", link.display()),
        }
    }
}

/// An operation in progress on one package.
#[derive(Debug)]
pub(crate) struct Txn<'a> {
    package: &'a PackageName,
    undo: Vec<Undo>,
    committed: bool,
}

impl<'a> Txn<'a> {
    pub(crate) fn new(package: &'a PackageName) -> Self {
        Self {
            package,
            undo: Vec::new(),
            committed: false,
        }
    }

    /// Creates the package directory and makes its entry in `packages/` durable.
    pub(crate) fn create_package_dir(
        &mut self,
        packages: &Path,
        dir: &Path,
    ) -> Result<(), RepoError> {
        fsutil::point(PACKAGE_MKDIR.before, "create the package directory", dir)?;
        fsutil::create_dir(dir)
            .map_err(|e| RepoError::fs("create the package directory", dir, e))?;
        self.undo.push(Undo::CreatedDir(dir.to_path_buf()));
        fsutil::point(PACKAGE_MKDIR.after, "create the package directory", dir)?;
        step(PACKAGE_FSYNC, "sync", packages, || {
            fsutil::fsync_dir(packages)
        })
    }

    /// Renames `from` to `to`, refusing to replace anything at `to`.
    pub(crate) fn move_path(
        &mut self,
        at: Step,
        op: &'static str,
        from: &Path,
        to: &Path,
    ) -> Result<(), RepoError> {
        fsutil::point(at.before, op, to)?;
        fsutil::rename_noreplace(from, to).map_err(|e| RepoError::fs(op, to, e))?;
        self.undo.push(Undo::Moved {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        fsutil::point(at.after, op, to)
    }

    /// Points `dir/name` at `version` (temporary symlink renamed over the link), then fsyncs
    /// `dir`.
    pub(crate) fn set_link(
        &mut self,
        dir: &Path,
        name: &str,
        version: &Version,
    ) -> Result<(), RepoError> {
        let path = dir.join(name);
        let previous =
            link::raw_target(&path).map_err(|e| RepoError::fs("read the link", &path, e))?;
        let undo = &mut self.undo;
        link::replace(dir, name, Path::new(version.as_str()), true, || {
            undo.push(Undo::Relinked {
                link: path.clone(),
                previous,
            });
        })?;
        step(LINK_FSYNC, "sync", dir, || fsutil::fsync_dir(dir))
    }

    /// Removes the link `dir/name` if present, then fsyncs `dir`.
    pub(crate) fn unlink(&mut self, dir: &Path, name: &str) -> Result<(), RepoError> {
        let path = dir.join(name);
        let Some(previous) =
            link::raw_target(&path).map_err(|e| RepoError::fs("read the link", &path, e))?
        else {
            return Ok(());
        };
        fsutil::point(LINK_UNLINK.before, "remove the link", &path)?;
        fs_err::remove_file(&path).map_err(|e| RepoError::fs("remove the link", &path, e))?;
        self.undo.push(Undo::Relinked {
            link: path.clone(),
            previous: Some(previous),
        });
        fsutil::point(LINK_UNLINK.after, "remove the link", &path)?;
        step(LINK_FSYNC, "sync", dir, || fsutil::fsync_dir(dir))
    }

    /// Keeps every change.
    pub(crate) fn commit(mut self) {
        self.committed = true;
    }

    fn rollback(&mut self) {
        let mut dirs = BTreeSet::new();
        while let Some(change) = self.undo.pop() {
            let result = match &change {
                Undo::CreatedDir(dir) => {
                    dirs.extend(dir.parent().map(Path::to_path_buf));
                    fs_err::remove_dir(dir).map_err(|e| e.to_string())
                }
                Undo::Moved { from, to } => {
                    dirs.extend(from.parent().map(Path::to_path_buf));
                    dirs.extend(to.parent().map(Path::to_path_buf));
                    fs_err::rename(to, from).map_err(|e| e.to_string())
                }
                Undo::Relinked { link, previous } => {
                    let dir = link.parent().unwrap_or(Path::new("."));
                    dirs.insert(dir.to_path_buf());
                    match (previous, link.file_name().and_then(|n| n.to_str())) {
                        (Some(target), Some(name)) => {
                            link::replace(dir, name, target, false, || {}).map_err(|e| e.detail())
                        }
                        (Some(_), None) => Err("link path has no name".to_owned()),
                        (None, _) => fs_err::remove_file(link).map_err(|e| e.to_string()),
                    }
                }
            };
            match result {
                Ok(()) => tracing::debug!(package.name = %self.package, change = %change,
                    "rolled back"),
                Err(error) => tracing::error!(package.name = %self.package, change = %change,
                    error, "rollback step failed; the next operation or GC cleans up"),
            }
        }
        for dir in dirs {
            match fsutil::fsync_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::error!(package.name = %self.package, path = %dir.display(),
                        error = %e, "could not sync after rollback");
                }
                _ => {}
            }
        }
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.committed && !self.undo.is_empty() {
            tracing::warn!(package.name = %self.package, changes = self.undo.len(),
                "operation failed; rolling back");
            self.rollback();
        }
    }
}
