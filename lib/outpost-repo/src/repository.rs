//! The repository handle and its switch operations.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use fs_err::os::unix::fs::OpenOptionsExt;
use outpost_types::{PackageName, Version};

use crate::error::{InvalidStateReason, RepoError};
use crate::failpoint::{
    REMOVE_DEAD_LOCKS, REMOVE_FSYNC, REMOVE_RENAME, REPAIR_FSYNC, REPAIR_UNLINK, STAGING_MKDIR,
    VERSION_ASIDE, VERSION_FSYNC, VERSION_RENAME, VERSION_SYNC,
};
use crate::fsutil::{self, nonce, point, step};
use crate::guard;
use crate::link::{self, EXPERIMENT, Link, STABLE};
use crate::lock::{self, VersionLock, WriterLock};
use crate::staging::{StagingDir, live, sanitize_label};
use crate::txn::Txn;

/// The versions a package has in place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackageState {
    /// What `stable` resolves to.
    pub stable: Version,
    /// What `experiment` resolves to, when an experiment runs. Never equal to `stable`.
    pub experiment: Option<Version>,
}

/// The package repository at one root. Cheap to clone (clones share one handle); every method
/// takes `&self` and does blocking I/O, so async callers run it on a blocking thread.
///
/// The disk is the only truth: no state is cached, and a fresh `Repository` on the same root
/// sees exactly what the last process left. Changes (install, experiment start / stop /
/// promote, remove, GC) are serialised within the process by a mutex that every handle on
/// the same root shares; across processes, hold [`Repository::acquire_writer_lock`]. Reads
/// never wait for a change: they see the state before it or after it.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) packages: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) run: PathBuf,
    pub(crate) locks: PathBuf,
    /// The effective uid that must own the root, `packages/`, `tmp/` and `run/`.
    pub(crate) uid: u32,
    /// Shared by every handle on this root in the process.
    mutations: Arc<Mutex<()>>,
}

/// How many times a state read that raced with a switch is retried.
const STATE_READ_ATTEMPTS: usize = 8;

/// What to do with a directory already at the target path of a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Keep it (it is the running experiment).
    Always,
    /// Keep it while a live process locks it, else replace it.
    IfLocked,
    /// Replace it (nothing locks config deployments).
    Never,
}

/// Whether a version directory was put in place or an existing one kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    Moved,
    Reused,
}

impl Repository {
    /// Opens the repository at `root`, creating `root`, `packages/`, `tmp/` and `run/locks/`
    /// (mode 0755) when missing, and nothing else.
    ///
    /// # Errors
    /// [`RepoError::NotADirectory`] if one of those paths is something else (a file, or a
    /// symlink below the root); [`RepoError::CrossFilesystem`] if `tmp/` and `packages/` are on
    /// different filesystems; [`RepoError::Filesystem`] when a directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RepoError> {
        let root = root.into();
        let root = std::path::absolute(&root)
            .map_err(|e| RepoError::fs("resolve the repository root", &root, e))?;
        if !root.exists() {
            // Created here, so made private here whatever the umask: the checks below refuse
            // a root that others may write to.
            fs_err::create_dir_all(&root)
                .and_then(|()| {
                    fs_err::set_permissions(
                        &root,
                        std::fs::Permissions::from_mode(fsutil::DIR_MODE),
                    )
                })
                .map_err(|e| RepoError::fs("create the repository root", &root, e))?;
        }
        if !fs_err::metadata(&root)
            .map_err(|e| RepoError::fs("inspect the repository root", &root, e))?
            .is_dir()
        {
            return Err(RepoError::NotADirectory { path: root });
        }
        let uid = guard::euid();
        guard::check_root(&root, uid)?;
        let packages = root.join("packages");
        let tmp = root.join("tmp");
        let run = root.join("run");
        let locks = run.join("locks");
        for dir in [&packages, &tmp, &run, &locks] {
            ensure_dir(dir)?;
        }
        for dir in [&packages, &tmp, &run] {
            guard::check_dir(dir, uid)?;
        }
        let dev = |p: &Path| {
            fs_err::metadata(p)
                .map(|m| m.dev())
                .map_err(|e| RepoError::fs("inspect", p, e))
        };
        if dev(&tmp)? != dev(&packages)? {
            return Err(RepoError::CrossFilesystem { tmp, packages });
        }
        let canonical = fs_err::canonicalize(&root)
            .map_err(|e| RepoError::fs("resolve the repository root", &root, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                packages,
                tmp,
                run,
                locks,
                uid,
                mutations: root_mutex(&canonical),
            }),
        })
    }

    /// The root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// `packages/<name>/<version>`, whether or not it exists.
    pub fn version_dir(&self, name: &PackageName, version: &Version) -> PathBuf {
        self.package_dir(name).join(version.as_str())
    }

    /// `packages/<name>/stable`: the path package users should run from (it follows
    /// promotions).
    pub fn stable_link(&self, name: &PackageName) -> PathBuf {
        self.package_dir(name).join(STABLE)
    }

    /// `packages/<name>/experiment`, present only while an experiment runs.
    pub fn experiment_link(&self, name: &PackageName) -> PathBuf {
        self.package_dir(name).join(EXPERIMENT)
    }

    /// `run/locks/<name>/<version>`: where users of that version write their pid files.
    pub fn lock_dir(&self, name: &PackageName, version: &Version) -> PathBuf {
        self.inner.locks.join(name.as_str()).join(version.as_str())
    }

    /// Takes the repository's writer lock: a non-blocking `flock` on `<root>/run/repo.lock`,
    /// held until the returned guard drops or the process exits.
    ///
    /// # Errors
    /// [`RepoError::WriterLocked`] (naming the root) if another process (or another handle in
    /// this one) holds it.
    pub fn acquire_writer_lock(&self) -> Result<WriterLock, RepoError> {
        self.check_dirs()?;
        let path = self.inner.run.join("repo.lock");
        // O_NOFOLLOW: a link planted at the lock's name is refused (ELOOP), never opened or
        // created through.
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| RepoError::fs("open the writer lock", &path, e))?;
        match rustix::fs::flock(
            file.file(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(WriterLock::new(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(RepoError::WriterLocked {
                root: self.inner.root.clone(),
                lock: path,
                source: io::Error::from(rustix::io::Errno::WOULDBLOCK),
            }),
            Err(errno) => Err(RepoError::fs("lock", &path, io::Error::from(errno))),
        }
    }

    /// Creates an empty staging directory `tmp/<label>-<random>` (the label is sanitised into
    /// a file name). See [`StagingDir`].
    pub fn staging(&self, label: &str) -> Result<StagingDir, RepoError> {
        self.check_dirs()?;
        let label = sanitize_label(label);
        loop {
            let path = self.inner.tmp.join(format!("{label}-{}", nonce()));
            // Registered before it exists, so a concurrent GC never sees it unregistered.
            if !live::register(&path) {
                continue;
            }
            let op = "create the staging directory";
            if let Err(err) = point(STAGING_MKDIR.before, op, &path) {
                live::unregister(&path);
                return Err(err);
            }
            match fsutil::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    live::unregister(&path);
                    continue;
                }
                Err(e) => {
                    live::unregister(&path);
                    // The mkdir may have succeeded before the chmod failed.
                    if let Err(cleanup) = fsutil::remove_any(&path) {
                        tracing::warn!(path = %path.display(), error = %cleanup,
                            "could not delete a failed staging directory");
                    }
                    return Err(RepoError::fs(op, &path, e));
                }
            }
            let staged = StagingDir::new(path);
            point(STAGING_MKDIR.after, op, staged.path())?;
            return Ok(staged);
        }
    }

    /// Deletes every leftover under `tmp/` (trees of interrupted operations, staging
    /// directories of a process that died) except the live staging directories of this
    /// process. Meant for start-up, under the writer lock. Returns how many entries it deleted.
    pub fn clean_staging(&self) -> Result<usize, RepoError> {
        let _guard = self.checked_mutation()?;
        let mut errors = crate::gc::Errors::default();
        let removed = self.clean_tmp(&mut errors);
        errors.into_result(removed)
    }

    /// Installs `version` of `name` as stable from a staged tree: creates the package on first
    /// install, replaces the stable version otherwise, and drops a running experiment (the
    /// Datadog daemon's `Create` does the same). The old version stays on disk, unreferenced,
    /// until GC.
    ///
    /// When `version` already is stable, this is a no-op and the staged tree is dropped. When
    /// `packages/<name>/<version>` already exists and is the running experiment or locked by a
    /// live process, it is kept and the staged tree dropped; an unlocked leftover is moved into
    /// `tmp/` and replaced.
    ///
    /// Steps: sync the staged tree, rename it into place, fsync the package directory, remove
    /// the `experiment` link, switch `stable`, fsync again. A crash at any instant leaves the
    /// old state, the old stable without the experiment, or the new state. Any error rolls
    /// every step back.
    pub fn install(
        &self,
        name: &PackageName,
        version: &Version,
        staged: StagingDir,
    ) -> Result<(), RepoError> {
        self.check_staging(&staged)?;
        let _guard = self.checked_mutation()?;
        let pkg_dir = self.package_dir(name);
        let exists = self.package_dir_exists(&pkg_dir)?;
        let current = if exists {
            self.repair(&pkg_dir)?;
            self.read_state_at(&pkg_dir)?
        } else {
            None
        };
        if current.as_ref().is_some_and(|s| s.stable == *version) {
            tracing::info!(package.name = %name, package.version = %version,
                "already the stable version; nothing to do");
            return Ok(());
        }
        let experiment = current.as_ref().and_then(|s| s.experiment.clone());
        let mut txn = Txn::new(name);
        if !exists {
            txn.create_package_dir(&self.inner.packages, &pkg_dir)?;
        }
        let keep = if experiment.as_ref() == Some(version) {
            Keep::Always
        } else {
            Keep::IfLocked
        };
        let placement =
            self.place_version(&mut txn, name, &pkg_dir, version, staged.path(), keep)?;
        // Unconditional: an `experiment` link without a valid `stable` must not come back to
        // life as an experiment nobody started.
        txn.unlink(&pkg_dir, EXPERIMENT)?;
        txn.set_link(&pkg_dir, STABLE, version)?;
        txn.commit();
        if placement == Placement::Moved {
            staged.consume();
        }
        tracing::info!(package.name = %name, package.version = %version,
            previous.stable = current.as_ref().map(|s| s.stable.as_str()),
            previous.experiment = experiment.as_ref().map(Version::as_str),
            "installed as stable");
        Ok(())
    }

    /// Starts an experiment: puts the staged `version` beside stable and points `experiment`
    /// at it, replacing a running experiment. The same version as the running experiment is a
    /// no-op (the staged tree is dropped). A locked existing directory of that version is
    /// reused; an unlocked leftover is moved into `tmp/` and replaced.
    ///
    /// Steps: sync the staged tree, rename it into place, fsync, switch `experiment`, fsync.
    /// Atomic: a crash leaves the old state or the new one. Any error rolls back.
    ///
    /// # Errors
    /// [`RepoError::InvalidState`] when the package is not installed or `version` is its
    /// stable version.
    pub fn start_experiment(
        &self,
        name: &PackageName,
        version: &Version,
        staged: StagingDir,
    ) -> Result<(), RepoError> {
        self.check_staging(&staged)?;
        let _guard = self.checked_mutation()?;
        let pkg_dir = self.package_dir(name);
        let invalid = |reason| RepoError::InvalidState {
            package: name.clone(),
            reason,
        };
        if !self.package_dir_exists(&pkg_dir)? {
            return Err(invalid(InvalidStateReason::NotInstalled));
        }
        self.repair(&pkg_dir)?;
        let Some(current) = self.read_state_at(&pkg_dir)? else {
            return Err(invalid(InvalidStateReason::NotInstalled));
        };
        if current.stable == *version {
            return Err(invalid(InvalidStateReason::AlreadyStable(version.clone())));
        }
        if current.experiment.as_ref() == Some(version) {
            tracing::info!(package.name = %name, package.version = %version,
                "already the running experiment; nothing to do");
            return Ok(());
        }
        let mut txn = Txn::new(name);
        let placement = self.place_version(
            &mut txn,
            name,
            &pkg_dir,
            version,
            staged.path(),
            Keep::IfLocked,
        )?;
        txn.set_link(&pkg_dir, EXPERIMENT, version)?;
        txn.commit();
        if placement == Placement::Moved {
            staged.consume();
        }
        tracing::info!(package.name = %name, package.version = %version,
            package.stable = %current.stable,
            previous.experiment = current.experiment.as_ref().map(Version::as_str),
            "experiment started");
        Ok(())
    }

    /// Stops the experiment: removes the `experiment` link (one unlink, then fsync). Stable is
    /// untouched; the experiment's directory stays until GC. No experiment: success, nothing
    /// done.
    ///
    /// # Errors
    /// [`RepoError::NotInstalled`] when the package is not installed.
    pub fn stop_experiment(&self, name: &PackageName) -> Result<(), RepoError> {
        let _guard = self.checked_mutation()?;
        let pkg_dir = self.package_dir(name);
        let current = self.installed_state(name, &pkg_dir)?;
        let Some(experiment) = current.experiment else {
            tracing::info!(package.name = %name, "no experiment running; nothing to stop");
            return Ok(());
        };
        let mut txn = Txn::new(name);
        txn.unlink(&pkg_dir, EXPERIMENT)?;
        txn.commit();
        tracing::info!(package.name = %name, package.version = %experiment,
            package.stable = %current.stable, "experiment stopped");
        Ok(())
    }

    /// Promotes the experiment: switches `stable` to it, then removes `experiment`, with an
    /// fsync after each. The old stable directory stays until GC. Atomic for readers: between
    /// the two steps both links name the new version, which reads as "stable, no experiment".
    ///
    /// # Errors
    /// [`RepoError::NotInstalled`] when the package is not installed;
    /// [`RepoError::InvalidState`] with the message `no experiment to promote` when no
    /// experiment runs.
    pub fn promote_experiment(&self, name: &PackageName) -> Result<(), RepoError> {
        let _guard = self.checked_mutation()?;
        let pkg_dir = self.package_dir(name);
        let current = self.installed_state(name, &pkg_dir)?;
        let Some(experiment) = current.experiment else {
            return Err(RepoError::InvalidState {
                package: name.clone(),
                reason: InvalidStateReason::NoExperimentToPromote,
            });
        };
        let mut txn = Txn::new(name);
        txn.set_link(&pkg_dir, STABLE, &experiment)?;
        txn.unlink(&pkg_dir, EXPERIMENT)?;
        txn.commit();
        tracing::info!(package.name = %name, package.version = %experiment,
            previous.stable = %current.stable, "experiment promoted");
        Ok(())
    }

    /// Removes the package: one rename of `packages/<name>` into `tmp/` (then fsync), so it
    /// disappears whole; GC deletes the tree. Lock files of dead processes are deleted first.
    ///
    /// # Errors
    /// [`RepoError::NotInstalled`] when the package is not installed; [`RepoError::Busy`]
    /// when any of its versions is locked by a live process (nothing is changed then).
    pub fn remove(&self, name: &PackageName) -> Result<(), RepoError> {
        let _guard = self.checked_mutation()?;
        let pkg_dir = self.package_dir(name);
        let current = self.installed_state(name, &pkg_dir)?;
        let pkg_locks = self.inner.locks.join(name.as_str());
        let mut dead = Vec::new();
        for (version, dir) in lock_version_dirs(&pkg_locks)? {
            let scan = lock::scan(&dir).map_err(|e| RepoError::fs("read the locks", &dir, e))?;
            if !scan.live.is_empty() {
                return Err(RepoError::Busy {
                    package: name.clone(),
                    version,
                    pids: scan.live,
                });
            }
            dead.extend(scan.dead);
        }
        if !dead.is_empty() {
            step(
                REMOVE_DEAD_LOCKS,
                "delete lock files of dead processes in",
                &pkg_locks,
                || {
                    dead.iter().try_for_each(|f| match fs_err::remove_file(f) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    })
                },
            )?;
        }
        let trash = self.inner.tmp.join(format!("removed-{name}-{}", nonce()));
        let mut txn = Txn::new(name);
        txn.move_path(REMOVE_RENAME, "move the package out of", &pkg_dir, &trash)?;
        let packages = &self.inner.packages;
        step(REMOVE_FSYNC, "sync", packages, || {
            fsutil::fsync_dir(packages)
        })?;
        txn.commit();
        tracing::info!(package.name = %name, package.version = %current.stable,
            package.experiment = current.experiment.as_ref().map(Version::as_str),
            "package removed");
        Ok(())
    }

    /// The package's state, `None` when it is not installed (no package directory, or no
    /// `stable` link that resolves to a version directory). A dangling `experiment`, or one
    /// naming the stable version (left by a crash during promote), reads as no experiment.
    pub fn state(&self, name: &PackageName) -> Result<Option<PackageState>, RepoError> {
        let pkg_dir = self.package_dir(name);
        match fsutil::is_real_dir(&pkg_dir) {
            Ok(true) => self.read_state_at(&pkg_dir),
            Ok(false) => Ok(None),
            Err(e) => Err(RepoError::fs("inspect", &pkg_dir, e)),
        }
    }

    /// Every installed package's state. Entries of `packages/` that are not package
    /// directories (invalid names, files, symlinks) and packages with no resolvable `stable`
    /// are left out.
    pub fn states(&self) -> Result<BTreeMap<PackageName, PackageState>, RepoError> {
        let mut states = BTreeMap::new();
        for (name, pkg_dir) in self.package_dirs()? {
            if let Some(state) = self.read_state_at(&pkg_dir)? {
                states.insert(name, state);
            }
        }
        Ok(states)
    }

    /// Whether the version directory exists. Version directories only ever appear complete
    /// (renamed into place after a sync) and leave whole (renamed into `tmp/` before GC
    /// deletes them), so existing means complete.
    pub fn has_version(&self, name: &PackageName, version: &Version) -> bool {
        fsutil::is_real_dir(&self.version_dir(name, version)).unwrap_or(false)
    }

    /// The versions of `name` locked by live processes, with their pids, sorted by version.
    /// Lock files of dead processes are ignored (not deleted: this is a read). Lets a caller
    /// learn that [`Repository::remove`] would answer [`RepoError::Busy`] before it does
    /// anything irreversible of its own (a pre-remove hook).
    pub fn live_locks(&self, name: &PackageName) -> Result<Vec<(Version, Vec<u32>)>, RepoError> {
        let pkg_locks = self.inner.locks.join(name.as_str());
        let mut out = Vec::new();
        for (version, dir) in lock_version_dirs(&pkg_locks)? {
            let scan = lock::scan(&dir).map_err(|e| RepoError::fs("read the locks", &dir, e))?;
            if !scan.live.is_empty() {
                out.push((version, scan.live));
            }
        }
        Ok(out)
    }

    /// Marks `version` of `name` as used by process `pid`: writes
    /// `run/locks/<name>/<version>/<pid>`, deleted when the returned guard drops. While the
    /// pid is alive, GC keeps the version and [`Repository::remove`] refuses the package.
    /// For package users (and tests); it does not check that the version exists.
    pub fn lock_version(
        &self,
        name: &PackageName,
        version: &Version,
        pid: u32,
    ) -> Result<VersionLock, RepoError> {
        self.check_dirs()?;
        let dir = self.lock_dir(name, version);
        fs_err::create_dir_all(&dir)
            .map_err(|e| RepoError::fs("create the lock directory", &dir, e))?;
        let path = dir.join(pid.to_string());
        fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RepoError::fs("write the lock file", &path, e))?;
        Ok(VersionLock::new(path))
    }

    // ---- internals -------------------------------------------------------------------------

    /// Takes the mutation lock, then checks that the root, `packages/`, `tmp/` and `run/` are
    /// still real directories owned by the repository's uid and writable by no one else (and
    /// `run/locks/` still a real directory), so that a link or a mode planted between two
    /// operations stops the next one rather than being followed. Every change starts here.
    pub(crate) fn checked_mutation(&self) -> Result<MutexGuard<'_, ()>, RepoError> {
        let guard = self.mutation();
        self.check_dirs()?;
        Ok(guard)
    }

    /// The checks of [`Repository::checked_mutation`], for changes that do not need the lock
    /// (a new staging directory, a lock file).
    pub(crate) fn check_dirs(&self) -> Result<(), RepoError> {
        let inner = &self.inner;
        guard::check_root(&inner.root, inner.uid)?;
        for dir in [&inner.packages, &inner.tmp, &inner.run] {
            guard::check_dir(dir, inner.uid)?;
        }
        if !fsutil::is_real_dir(&inner.locks)
            .map_err(|e| RepoError::fs("inspect", &inner.locks, e))?
        {
            return Err(RepoError::NotADirectory {
                path: inner.locks.clone(),
            });
        }
        Ok(())
    }

    fn mutation(&self) -> MutexGuard<'_, ()> {
        // A panic in another operation leaves the disk in an accepted state (every step
        // does), so the poison carries no information worth refusing to work for.
        self.inner
            .mutations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn package_dir(&self, name: &PackageName) -> PathBuf {
        self.inner.packages.join(name.as_str())
    }

    /// Every real directory in `packages/` with a valid package name.
    pub(crate) fn package_dirs(&self) -> Result<Vec<(PackageName, PathBuf)>, RepoError> {
        let packages = &self.inner.packages;
        let read_err = |e| RepoError::fs("list", packages, e);
        let mut out = Vec::new();
        for entry in fs_err::read_dir(packages).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| PackageName::new(n).ok()) else {
                tracing::warn!(path = %path.display(), "ignoring an entry that is not a package name");
                continue;
            };
            if !entry.file_type().map_err(read_err)?.is_dir() {
                tracing::warn!(path = %path.display(), "ignoring a package entry that is not a directory");
                continue;
            }
            out.push((name, path));
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn check_staging(&self, staged: &StagingDir) -> Result<(), RepoError> {
        if staged.belongs_to(&self.inner) {
            Ok(())
        } else {
            Err(RepoError::ForeignStaging {
                path: staged.path().to_path_buf(),
                root: self.inner.root.clone(),
            })
        }
    }

    /// Whether the package directory exists; refuses one that is not a real directory.
    pub(crate) fn package_dir_exists(&self, pkg_dir: &Path) -> Result<bool, RepoError> {
        match fs_err::symlink_metadata(pkg_dir) {
            Ok(meta) if meta.is_dir() => Ok(true),
            Ok(_) => Err(RepoError::NotADirectory {
                path: pkg_dir.to_path_buf(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(RepoError::fs("inspect", pkg_dir, e)),
        }
    }

    /// The state of an installed package, after repairing its links.
    fn installed_state(
        &self,
        name: &PackageName,
        pkg_dir: &Path,
    ) -> Result<PackageState, RepoError> {
        let not_installed = || RepoError::NotInstalled {
            package: name.clone(),
        };
        if !self.package_dir_exists(pkg_dir)? {
            return Err(not_installed());
        }
        self.repair(pkg_dir)?;
        self.read_state_at(pkg_dir)?.ok_or_else(not_installed)
    }

    pub(crate) fn read_links(&self, pkg_dir: &Path) -> Result<(Link, Link), RepoError> {
        let read = |name| {
            link::read(pkg_dir, name)
                .map_err(|e| RepoError::fs("read the link", pkg_dir.join(name), e))
        };
        Ok((read(STABLE)?, read(EXPERIMENT)?))
    }

    /// Reads the state without tearing: `stable`, then `experiment`, then `stable` again; if
    /// `stable` moved in between (a promote, an install, a remove), read again, so the pair
    /// always comes from one state on disk.
    fn read_state_at(&self, pkg_dir: &Path) -> Result<Option<PackageState>, RepoError> {
        let read = |name| {
            link::read(pkg_dir, name)
                .map_err(|e| RepoError::fs("read the link", pkg_dir.join(name), e))
        };
        let mut attempts = 0;
        let (stable, experiment) = loop {
            attempts += 1;
            let stable = read(STABLE)?;
            let experiment = read(EXPERIMENT)?;
            if attempts == STATE_READ_ATTEMPTS || read(STABLE)? == stable {
                break (stable, experiment);
            }
        };
        let Link::Valid(stable) = stable else {
            return Ok(None);
        };
        let experiment = experiment.version().filter(|e| **e != stable).cloned();
        Ok(Some(PackageState { stable, experiment }))
    }

    /// Clears what an interrupted operation may have left in a package directory: temporary
    /// links, and an `experiment` link that is broken or names the stable version.
    pub(crate) fn repair(&self, pkg_dir: &Path) -> Result<(), RepoError> {
        let list_err = |e| RepoError::fs("list", pkg_dir, e);
        let mut changed = false;
        for entry in fs_err::read_dir(pkg_dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let is_temp = entry.file_name().to_str().is_some_and(link::is_temp_name);
            if is_temp && entry.file_type().map_err(list_err)?.is_symlink() {
                let path = entry.path();
                step(
                    REPAIR_UNLINK,
                    "remove the leftover temporary link",
                    &path,
                    || fs_err::remove_file(&path),
                )?;
                changed = true;
            }
        }
        let (stable, experiment) = self.read_links(pkg_dir)?;
        let stale = match &experiment {
            Link::Absent => false,
            Link::Broken(_) => true,
            Link::Valid(v) => stable.version() == Some(v),
        };
        if stale {
            let path = pkg_dir.join(EXPERIMENT);
            tracing::info!(path = %path.display(), link = %experiment,
                "removing an experiment link left by an interrupted operation");
            step(
                REPAIR_UNLINK,
                "remove the stale experiment link",
                &path,
                || fs_err::remove_file(&path),
            )?;
            changed = true;
        }
        if changed {
            step(REPAIR_FSYNC, "sync", pkg_dir, || fsutil::fsync_dir(pkg_dir))?;
        }
        Ok(())
    }

    /// Puts the staged tree at `packages/<name>/<version>`, or keeps what is there when it is
    /// `keep_existing` or locked by a live process. An unlocked leftover is moved into `tmp/`
    /// first (it is unreferenced: the callers keep referenced versions). Config deployments
    /// have no locks: they pass [`Keep::Never`].
    pub(crate) fn place_version(
        &self,
        txn: &mut Txn<'_>,
        name: &PackageName,
        pkg_dir: &Path,
        version: &Version,
        staged: &Path,
        keep: Keep,
    ) -> Result<Placement, RepoError> {
        let target = pkg_dir.join(version.as_str());
        let existing = match fs_err::symlink_metadata(&target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(RepoError::fs("inspect", &target, e)),
        };
        if let Some(meta) = &existing
            && meta.is_dir()
            && keep != Keep::Never
        {
            let lock_dir = self.lock_dir(name, version);
            let live = lock::scan(&lock_dir)
                .map_err(|e| RepoError::fs("read the locks", &lock_dir, e))?
                .live;
            if keep == Keep::Always || !live.is_empty() {
                tracing::info!(package.name = %name, package.version = %version, pids = %live.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
                    "version directory already in place and in use; keeping it");
                return Ok(Placement::Reused);
            }
        }
        step(VERSION_SYNC, "sync the staged tree", staged, || {
            fsutil::sync_tree(staged)
        })?;
        if existing.is_some() {
            let aside = self
                .inner
                .tmp
                .join(format!("replaced-{name}-{version}-{}", nonce()));
            tracing::info!(package.name = %name, package.version = %version,
                "moving an unused leftover of this version aside");
            txn.move_path(
                VERSION_ASIDE,
                "move the leftover version aside to",
                &target,
                &aside,
            )?;
        }
        txn.move_path(VERSION_RENAME, "move the staged tree to", staged, &target)?;
        step(VERSION_FSYNC, "sync", pkg_dir, || {
            fsutil::fsync_dir(pkg_dir)
        })?;
        Ok(Placement::Moved)
    }
}

/// The mutation lock of a root, shared by every handle opened on it in this process (so two
/// handles cannot interleave, say, a GC with an install).
fn root_mutex(root: &Path) -> Arc<Mutex<()>> {
    static ROOTS: Mutex<BTreeMap<PathBuf, Weak<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    // Only lookups and inserts happen under this lock; a panic cannot leave it half-updated.
    let mut roots = ROOTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = roots.get(root).and_then(Weak::upgrade) {
        return shared;
    }
    roots.retain(|_, handle| handle.strong_count() > 0);
    let shared = Arc::new(Mutex::new(()));
    roots.insert(root.to_path_buf(), Arc::downgrade(&shared));
    shared
}

/// Creates `dir` (mode 0755) if missing; refuses anything but a real directory.
fn ensure_dir(dir: &Path) -> Result<(), RepoError> {
    match fsutil::create_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RepoError::fs("create", dir, e)),
    }
    if fsutil::is_real_dir(dir).map_err(|e| RepoError::fs("inspect", dir, e))? {
        Ok(())
    } else {
        Err(RepoError::NotADirectory {
            path: dir.to_path_buf(),
        })
    }
}

/// The version lock directories under `run/locks/<pkg>/`, sorted; entries that are not
/// directories named like versions are skipped with a warning.
pub(crate) fn lock_version_dirs(pkg_locks: &Path) -> Result<Vec<(Version, PathBuf)>, RepoError> {
    let list_err = |e| RepoError::fs("list", pkg_locks, e);
    let entries = match fs_err::read_dir(pkg_locks) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let path = entry.path();
        let version = entry
            .file_name()
            .to_str()
            .and_then(|n| Version::new(n).ok());
        match version {
            Some(v) if entry.file_type().map_err(list_err)?.is_dir() => out.push((v, path)),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an unexpected entry in the locks")
            }
        }
    }
    out.sort();
    Ok(out)
}
