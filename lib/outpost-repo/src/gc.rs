//! Garbage collection: everything an operation leaves behind for later, and everything a crash
//! leaves behind by accident.

use std::io;
use std::path::Path;

use outpost_types::{PackageName, Version};

use crate::error::RepoError;
use crate::failpoint::{
    GC_ASIDE, GC_DELETE, GC_DELETE_LOCK, GC_DELETE_LOCK_DIR, GC_DELETE_TMP, GC_FSYNC,
    GC_LINK_FSYNC, GC_RMDIR_PACKAGE, GC_UNLINK,
};
use crate::fsutil::{self, nonce, step};
use crate::link::{self, EXPERIMENT, Link, STABLE};
use crate::lock;
use crate::repository::{Repository, lock_version_dirs};

/// What a GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Version directories deleted (unreferenced and unlocked).
    pub removed_versions: Vec<(PackageName, Version)>,
    /// Unreferenced version directories kept because a live process locks them.
    pub kept_locked: Vec<(PackageName, Version)>,
    /// Package directories deleted (no links, nothing left in them).
    pub removed_packages: Vec<PackageName>,
    /// Broken or stale links and leftover temporary links removed.
    pub repaired_links: usize,
    /// Lock files of dead processes (or invalid pids) deleted.
    pub removed_lock_files: usize,
    /// Lock directories of versions or packages that no longer exist deleted.
    pub removed_lock_dirs: usize,
    /// Leftovers under `tmp/` deleted.
    pub removed_tmp_entries: usize,
    /// Config deployments deleted (unreferenced by the package's config links).
    pub removed_configs: Vec<(PackageName, Version)>,
}

impl GcReport {
    /// Whether the pass found nothing to do (kept locked versions aside).
    pub fn is_empty(&self) -> bool {
        self.removed_versions.is_empty()
            && self.removed_packages.is_empty()
            && self.repaired_links == 0
            && self.removed_lock_files == 0
            && self.removed_lock_dirs == 0
            && self.removed_tmp_entries == 0
            && self.removed_configs.is_empty()
    }
}

/// For logs: the counts, e.g. `2 versions removed, 1 kept locked, 0 packages removed, 1 link
/// repaired, 0 lock files removed, 0 lock directories removed, 0 tmp entries removed, 0 config
/// deployments removed`.
impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} versions removed, {} kept locked, {} packages removed, {} links repaired, \
             {} lock files removed, {} lock directories removed, {} tmp entries removed, \
             {} config deployments removed",
            self.removed_versions.len(),
            self.kept_locked.len(),
            self.removed_packages.len(),
            self.repaired_links,
            self.removed_lock_files,
            self.removed_lock_dirs,
            self.removed_tmp_entries,
            self.removed_configs.len()
        )
    }
}

/// Collects the failures of a pass that carries on past them.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    first: Option<RepoError>,
    count: usize,
}

impl Errors {
    pub(crate) fn note<T>(&mut self, result: Result<T, RepoError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::warn!(error = %err.detail(), "GC step failed; carrying on");
                self.count += 1;
                if self.first.is_none() {
                    self.first = Some(err);
                }
                None
            }
        }
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, RepoError> {
        match self.first {
            None => Ok(value),
            Some(err) => {
                if self.count > 1 {
                    tracing::warn!(failures = self.count, "GC pass had several failures");
                }
                Err(err)
            }
        }
    }
}

impl Repository {
    /// Collects garbage:
    /// - per package: removes broken links, an `experiment` equal to `stable`, and leftover
    ///   temporary links; moves every version directory that no link references and no live
    ///   process locks into `tmp/` (then fsyncs the package directory) and deletes it there,
    ///   so a half-deleted tree never sits at a version path; removes the package directory
    ///   when it is left empty with no links;
    /// - under `run/locks/`: deletes lock files of dead processes and invalid pids, and the
    ///   lock directories of versions that no longer exist (when no live process holds them);
    /// - under `tmp/`: deletes every leftover except the live staging directories of this
    ///   process.
    ///
    /// A failing step does not stop the pass: it carries on with the rest and then returns
    /// the first error (every failure is logged). Nothing GC does changes a package's state.
    pub fn gc(&self) -> Result<GcReport, RepoError> {
        let _guard = self.checked_mutation()?;
        let mut report = GcReport::default();
        let mut errors = Errors::default();
        if let Some(packages) = errors.note(self.package_dirs()) {
            for (name, pkg_dir) in packages {
                self.gc_package(&name, &pkg_dir, &mut report, &mut errors);
            }
        }
        self.gc_configs(&mut report, &mut errors);
        self.gc_locks(&mut report, &mut errors);
        report.removed_tmp_entries = self.clean_tmp(&mut errors);
        if !report.is_empty() {
            tracing::info!(
                removed_versions = report.removed_versions.len(),
                removed_packages = report.removed_packages.len(),
                kept_locked = report.kept_locked.len(),
                repaired_links = report.repaired_links,
                removed_lock_files = report.removed_lock_files,
                removed_lock_dirs = report.removed_lock_dirs,
                removed_tmp_entries = report.removed_tmp_entries,
                removed_configs = report.removed_configs.len(),
                "garbage collected"
            );
        }
        errors.into_result(report)
    }

    fn gc_package(
        &self,
        name: &PackageName,
        pkg_dir: &Path,
        report: &mut GcReport,
        errors: &mut Errors,
    ) {
        let Some((mut stable, mut experiment)) = errors.note(self.read_links(pkg_dir)) else {
            return;
        };
        let unlink = |path: &Path, op| step(GC_UNLINK, op, path, || fsutil::remove_any(path));
        let mut relinked = false;
        if let Link::Broken(target) = &stable {
            tracing::warn!(package.name = %name, target = %target.display(),
                "removing a stable link that does not resolve to a version");
            if errors
                .note(unlink(&pkg_dir.join(STABLE), "remove the broken link"))
                .is_some()
            {
                stable = Link::Absent;
                relinked = true;
                report.repaired_links += 1;
            }
        }
        let stale = match &experiment {
            Link::Absent => false,
            Link::Broken(_) => true,
            Link::Valid(v) => stable.version().is_none_or(|s| s == v),
        };
        if stale
            && errors
                .note(unlink(&pkg_dir.join(EXPERIMENT), "remove the stale link"))
                .is_some()
        {
            experiment = Link::Absent;
            relinked = true;
            report.repaired_links += 1;
        }
        if relinked {
            errors.note(step(GC_LINK_FSYNC, "sync", pkg_dir, || {
                fsutil::fsync_dir(pkg_dir)
            }));
        }

        let referenced: Vec<&Version> = [stable.version(), experiment.version()]
            .into_iter()
            .flatten()
            .collect();
        let removed = self.gc_unreferenced(name, pkg_dir, &referenced, true, report, errors);
        report
            .removed_versions
            .extend(removed.into_iter().map(|v| (name.clone(), v)));

        if stable.is_present() || experiment.is_present() {
            return;
        }
        let empty = match fs_err::read_dir(pkg_dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => {
                errors.note::<()>(Err(RepoError::fs("list", pkg_dir, e)));
                false
            }
        };
        if empty
            && errors
                .note(step(
                    GC_RMDIR_PACKAGE,
                    "remove the empty package directory",
                    pkg_dir,
                    || fs_err::remove_dir(pkg_dir),
                ))
                .is_some()
        {
            tracing::info!(package.name = %name, "removed an empty package directory");
            report.removed_packages.push(name.clone());
        }
    }

    /// Moves every entry of `pkg_dir` named like a version that no link references (and,
    /// with `check_locks`, no live process locks) into `tmp/`, fsyncs, and deletes it there;
    /// removes stray links and files named like versions. Returns the versions deleted.
    pub(crate) fn gc_unreferenced(
        &self,
        name: &PackageName,
        pkg_dir: &Path,
        referenced: &[&Version],
        check_locks: bool,
        report: &mut GcReport,
        errors: &mut Errors,
    ) -> Vec<Version> {
        let unlink = |path: &Path, op| step(GC_UNLINK, op, path, || fsutil::remove_any(path));
        let mut removed = Vec::new();
        let Some(entries) =
            errors.note(fs_err::read_dir(pkg_dir).map_err(|e| RepoError::fs("list", pkg_dir, e)))
        else {
            return removed;
        };
        let mut doomed = Vec::new();
        for entry in entries {
            let Some(entry) = errors.note(entry.map_err(|e| RepoError::fs("list", pkg_dir, e)))
            else {
                continue;
            };
            let path = entry.path();
            let Some(entry_name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "ignoring an entry with a non-UTF-8 name");
                continue;
            };
            if entry_name == STABLE || entry_name == EXPERIMENT {
                continue;
            }
            let Some(file_type) = errors.note(
                entry
                    .file_type()
                    .map_err(|e| RepoError::fs("inspect", &path, e)),
            ) else {
                continue;
            };
            if link::is_temp_name(&entry_name) {
                if file_type.is_dir() {
                    tracing::warn!(path = %path.display(), "ignoring an unexpected directory");
                } else if errors
                    .note(unlink(&path, "remove the leftover temporary link"))
                    .is_some()
                {
                    report.repaired_links += 1;
                }
                continue;
            }
            let Ok(version) = Version::new(entry_name) else {
                tracing::warn!(path = %path.display(), "ignoring an unexpected entry");
                continue;
            };
            if !file_type.is_dir() {
                // Not a version directory, only named like one (a planted file or symlink):
                // removed without following it.
                tracing::warn!(path = %path.display(), "removing a stray entry named like a version");
                if errors
                    .note(unlink(&path, "remove the stray entry"))
                    .is_some()
                {
                    report.repaired_links += 1;
                }
                continue;
            }
            if referenced.contains(&&version) {
                continue;
            }
            if !check_locks {
                doomed.push(version);
                continue;
            }
            let lock_dir = self.lock_dir(name, &version);
            let Some(scan) = errors.note(
                lock::scan(&lock_dir).map_err(|e| RepoError::fs("read the locks", &lock_dir, e)),
            ) else {
                continue;
            };
            if scan.live.is_empty() {
                doomed.push(version);
            } else {
                tracing::info!(package.name = %name, package.version = %version,
                    pids = %scan.live.iter().map(u32::to_string).collect::<Vec<_>>().join(","), "keeping an unreferenced version: it is locked");
                report.kept_locked.push((name.clone(), version));
            }
        }

        let mut moved = Vec::new();
        for version in doomed {
            let from = pkg_dir.join(version.as_str());
            let trash = self
                .inner
                .tmp
                .join(format!("gc-{name}-{version}-{}", nonce()));
            let moved_ok =
                errors.note(step(GC_ASIDE, "move the unused version to", &trash, || {
                    fsutil::rename_noreplace(&from, &trash)
                }));
            if moved_ok.is_some() {
                moved.push((version, trash));
            }
        }
        if !moved.is_empty() {
            // Deleting only once the moves are durable: after a power cut the tree is either
            // whole at its version path or somewhere under tmp/.
            let synced = errors.note(step(GC_FSYNC, "sync", pkg_dir, || {
                fsutil::fsync_dir(pkg_dir)
            }));
            if synced.is_some() {
                for (version, trash) in moved {
                    let deleted = errors.note(step(GC_DELETE, "delete", &trash, || {
                        fsutil::remove_any(&trash)
                    }));
                    if deleted.is_some() {
                        tracing::info!(package.name = %name, package.version = %version,
                            "removed an unused version");
                        removed.push(version);
                    }
                }
            }
        }

        removed
    }

    fn gc_locks(&self, report: &mut GcReport, errors: &mut Errors) {
        let locks = &self.inner.locks;
        let Some(entries) =
            errors.note(fs_err::read_dir(locks).map_err(|e| RepoError::fs("list", locks, e)))
        else {
            return;
        };
        for entry in entries {
            let Some(entry) = errors.note(entry.map_err(|e| RepoError::fs("list", locks, e)))
            else {
                continue;
            };
            let pkg_locks = entry.path();
            let name = entry
                .file_name()
                .to_str()
                .and_then(|n| PackageName::new(n).ok());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let Some(name) = name.filter(|_| is_dir) else {
                tracing::warn!(path = %pkg_locks.display(), "ignoring an unexpected entry in the locks");
                continue;
            };
            let Some(versions) = errors.note(lock_version_dirs(&pkg_locks)) else {
                continue;
            };
            for (version, dir) in versions {
                let Some(scan) = errors
                    .note(lock::scan(&dir).map_err(|e| RepoError::fs("read the locks", &dir, e)))
                else {
                    continue;
                };
                for dead in &scan.dead {
                    let deleted = errors.note(step(
                        GC_DELETE_LOCK,
                        "delete the lock file of a dead process",
                        dead,
                        || fsutil::remove_any(dead),
                    ));
                    if deleted.is_some() {
                        report.removed_lock_files += 1;
                    }
                }
                let version_exists = self.has_version(&name, &version);
                if !version_exists && scan.live.is_empty() {
                    let deleted = errors.note(step(
                        GC_DELETE_LOCK_DIR,
                        "delete the lock directory of a missing version",
                        &dir,
                        || fsutil::remove_any(&dir),
                    ));
                    if deleted.is_some() {
                        report.removed_lock_dirs += 1;
                    }
                }
            }
            let package_exists = fsutil::is_real_dir(&self.package_dir(&name)).unwrap_or(true);
            let empty = fs_err::read_dir(&pkg_locks).is_ok_and(|mut e| e.next().is_none());
            if !package_exists && empty {
                let deleted = errors.note(step(
                    GC_DELETE_LOCK_DIR,
                    "delete the lock directory of a missing package",
                    &pkg_locks,
                    || match fs_err::remove_dir(&pkg_locks) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    },
                ));
                if deleted.is_some() {
                    report.removed_lock_dirs += 1;
                }
            }
        }
    }

    /// Deletes every entry of `tmp/` except live staging directories; returns how many.
    pub(crate) fn clean_tmp(&self, errors: &mut Errors) -> usize {
        let tmp = &self.inner.tmp;
        let Some(entries) =
            errors.note(fs_err::read_dir(tmp).map_err(|e| RepoError::fs("list", tmp, e)))
        else {
            return 0;
        };
        let mut leftovers = Vec::new();
        for entry in entries {
            if let Some(entry) = errors.note(entry.map_err(|e| RepoError::fs("list", tmp, e))) {
                let path = entry.path();
                if !crate::staging::live::contains(&path) {
                    leftovers.push(path);
                }
            }
        }
        if leftovers.is_empty() {
            return 0;
        }
        // A tree renamed into tmp/ by an operation that crashed before its fsync must be
        // durably out of its version path before it is taken apart.
        if errors
            .note(step(GC_FSYNC, "sync", tmp, || fsutil::fsync_dir(tmp)))
            .is_none()
        {
            return 0;
        }
        let mut removed = 0;
        for path in leftovers {
            let deleted = errors.note(step(GC_DELETE_TMP, "delete the leftover", &path, || {
                fsutil::remove_any(&path)
            }));
            if deleted.is_some() {
                tracing::debug!(path = %path.display(), "deleted a leftover");
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_as_counts_in_logs() {
        let report = GcReport {
            removed_versions: vec![(
                PackageName::new("demo").unwrap(),
                Version::new("1.0.0").unwrap(),
            )],
            repaired_links: 2,
            ..GcReport::default()
        };
        let text = report.to_string();
        assert_eq!(
            text,
            "1 versions removed, 0 kept locked, 0 packages removed, 2 links repaired, \
             0 lock files removed, 0 lock directories removed, 0 tmp entries removed, \
             0 config deployments removed"
        );
        assert!(!text.contains("GcReport"));
    }
}
