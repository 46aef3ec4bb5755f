//! Config trees: each package's config deployments beside its versions, switched by the same
//! transactions, links, failure points and GC as package versions.
//!
//! ```text
//! <root>/config/<pkg>/<deployment id>/          complete config trees
//! <root>/config/<pkg>/stable -> <id>            absent: the package's stable config is empty
//! <root>/config/<pkg>/experiment -> <id>        only while a config experiment runs
//! ```
//! Deployment ids follow the version rules ([`Version`]), so each is one safe path component.
//! The differences from package versions: a config experiment needs no stable config (the
//! stable config of a package that never promoted one is empty, `""`), and nothing locks a
//! deployment, so an unreferenced one is always collected.
//!
//! Crash model, as for versions: a crash at any instant leaves each operation's old state or
//! its new state; `experiment` naming the stable deployment (mid-promote) reads as no
//! experiment; leftovers are repaired by the next operation and GC.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_types::{PackageName, Version};

use crate::error::{InvalidStateReason, RepoError};
use crate::failpoint::{GC_LINK_FSYNC, GC_RMDIR_PACKAGE, GC_UNLINK};
use crate::fsutil::{self, step};
use crate::gc::{Errors, GcReport};
use crate::link::{self, EXPERIMENT, Link, STABLE};
use crate::repository::{Keep, Placement, Repository};
use crate::staging::StagingDir;
use crate::txn::Txn;

/// The directory under the root that holds the config trees.
const CONFIG: &str = "config";

/// The config deployments of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfigState {
    /// What `stable` resolves to; `None` is the empty stable config.
    pub stable: Option<Version>,
    /// What `experiment` resolves to, while a config experiment runs. Never equal to `stable`.
    pub experiment: Option<Version>,
}

impl Repository {
    /// `config/`: where the config trees live (created by the first config experiment).
    pub fn config_root(&self) -> PathBuf {
        self.root().join(CONFIG)
    }

    /// `config/<name>`, whether or not it exists.
    pub fn config_dir(&self, name: &PackageName) -> PathBuf {
        self.config_root().join(name.as_str())
    }

    /// `config/<name>/stable`: the directory the package should read its config from (it
    /// follows promotions). Absent while the stable config is empty.
    pub fn config_stable_link(&self, name: &PackageName) -> PathBuf {
        self.config_dir(name).join(STABLE)
    }

    /// `config/<name>/experiment`, present only while a config experiment runs.
    pub fn config_experiment_link(&self, name: &PackageName) -> PathBuf {
        self.config_dir(name).join(EXPERIMENT)
    }

    /// `config/<name>/<id>`, whether or not it exists.
    pub fn config_deployment_dir(&self, name: &PackageName, id: &Version) -> PathBuf {
        self.config_dir(name).join(id.as_str())
    }

    /// The config state of `name`: empty (`stable: None`, no experiment) for a package that
    /// has no config tree. Never waits for a change.
    pub fn config_state(&self, name: &PackageName) -> Result<ConfigState, RepoError> {
        if !self.config_root_exists()? {
            return Ok(ConfigState::default());
        }
        let dir = self.config_dir(name);
        match fsutil::is_real_dir(&dir) {
            Ok(true) => read_config_state(&dir),
            Ok(false) => Ok(ConfigState::default()),
            Err(e) => Err(RepoError::fs("inspect", &dir, e)),
        }
    }

    /// The config state of every package that has a config tree. Entries of `config/` that
    /// are not package directories are left out.
    pub fn config_states(&self) -> Result<BTreeMap<PackageName, ConfigState>, RepoError> {
        let mut out = BTreeMap::new();
        for (name, dir) in self.config_dirs()? {
            out.insert(name, read_config_state(&dir)?);
        }
        Ok(out)
    }

    /// Starts a config experiment: puts the staged tree at `config/<name>/<id>` and points
    /// `experiment` at it, replacing a running config experiment. Creates `config/` and
    /// `config/<name>` on the first one. The same id as the running experiment is a no-op
    /// (the staged tree is dropped); an unreferenced leftover of that id is moved into `tmp/`
    /// and replaced.
    ///
    /// Steps: (create the directories, fsync), sync the staged tree, rename it into place,
    /// fsync, switch `experiment`, fsync. A crash leaves the old state or the new one; any
    /// error rolls back.
    ///
    /// # Errors
    /// [`RepoError::InvalidState`] when `id` is the stable config.
    pub fn start_config_experiment(
        &self,
        name: &PackageName,
        id: &Version,
        staged: StagingDir,
    ) -> Result<(), RepoError> {
        self.check_staging(&staged)?;
        let _guard = self.checked_mutation()?;
        let root_exists = self.config_root_exists()?;
        let dir = self.config_dir(name);
        let exists = root_exists && self.package_dir_exists(&dir)?;
        let current = if exists {
            self.repair(&dir)?;
            read_config_state(&dir)?
        } else {
            ConfigState::default()
        };
        if current.stable.as_ref() == Some(id) {
            return Err(RepoError::InvalidState {
                package: name.clone(),
                reason: InvalidStateReason::ConfigAlreadyStable(id.clone()),
            });
        }
        if current.experiment.as_ref() == Some(id) {
            tracing::info!(package.name = %name, config.id = %id,
                "already the running config experiment; nothing to do");
            return Ok(());
        }
        let mut txn = Txn::new(name);
        if !root_exists {
            txn.create_package_dir(self.root(), &self.config_root())?;
        }
        if !exists {
            txn.create_package_dir(&self.config_root(), &dir)?;
        }
        let placement = self.place_version(&mut txn, name, &dir, id, staged.path(), Keep::Never)?;
        txn.set_link(&dir, EXPERIMENT, id)?;
        txn.commit();
        if placement == Placement::Moved {
            staged.consume();
        }
        tracing::info!(package.name = %name, config.id = %id,
            config.stable = current.stable.as_ref().map(Version::as_str),
            previous.experiment = current.experiment.as_ref().map(Version::as_str),
            "config experiment started");
        Ok(())
    }

    /// Stops the config experiment: removes `experiment` (unlink, fsync). The stable config is
    /// untouched; the experiment's tree stays until GC. No experiment: success, nothing done.
    pub fn stop_config_experiment(&self, name: &PackageName) -> Result<(), RepoError> {
        let _guard = self.checked_mutation()?;
        let Some(dir) = self.existing_config_dir(name)? else {
            return Ok(());
        };
        self.repair(&dir)?;
        let current = read_config_state(&dir)?;
        let Some(experiment) = current.experiment else {
            tracing::info!(package.name = %name, "no config experiment running; nothing to stop");
            return Ok(());
        };
        let mut txn = Txn::new(name);
        txn.unlink(&dir, EXPERIMENT)?;
        txn.commit();
        tracing::info!(package.name = %name, config.id = %experiment, "config experiment stopped");
        Ok(())
    }

    /// Promotes the config experiment: switches `stable` to it, then removes `experiment`,
    /// with an fsync after each. The old stable tree stays until GC.
    ///
    /// # Errors
    /// [`RepoError::InvalidState`] (`no config experiment to promote`) when none runs.
    pub fn promote_config_experiment(&self, name: &PackageName) -> Result<(), RepoError> {
        let _guard = self.checked_mutation()?;
        let none = || RepoError::InvalidState {
            package: name.clone(),
            reason: InvalidStateReason::NoConfigExperimentToPromote,
        };
        let dir = self.existing_config_dir(name)?.ok_or_else(none)?;
        self.repair(&dir)?;
        let current = read_config_state(&dir)?;
        let experiment = current.experiment.ok_or_else(none)?;
        let mut txn = Txn::new(name);
        txn.set_link(&dir, STABLE, &experiment)?;
        txn.unlink(&dir, EXPERIMENT)?;
        txn.commit();
        tracing::info!(package.name = %name, config.id = %experiment,
            previous.stable = current.stable.as_ref().map(Version::as_str),
            "config experiment promoted");
        Ok(())
    }

    /// GC of the config trees (called by [`Repository::gc`]): broken and stale links removed,
    /// unreferenced deployments moved into `tmp/` and deleted, empty package directories
    /// removed.
    pub(crate) fn gc_configs(&self, report: &mut GcReport, errors: &mut Errors) {
        let Some(dirs) = errors.note(self.config_dirs()) else {
            return;
        };
        for (name, dir) in dirs {
            self.gc_config(&name, &dir, report, errors);
        }
    }

    fn gc_config(
        &self,
        name: &PackageName,
        dir: &Path,
        report: &mut GcReport,
        errors: &mut Errors,
    ) {
        let Some((stable, experiment)) = errors.note(self.read_links(dir)) else {
            return;
        };
        let unlink = |path: &Path, op| step(GC_UNLINK, op, path, || fsutil::remove_any(path));
        let mut relinked = false;
        let mut stable_ok = stable.is_present();
        if let Link::Broken(target) = &stable {
            tracing::warn!(package.name = %name, target = %target.display(),
                "removing a stable config link that does not resolve to a deployment");
            if errors
                .note(unlink(&dir.join(STABLE), "remove the broken link"))
                .is_some()
            {
                stable_ok = false;
                relinked = true;
                report.repaired_links += 1;
            }
        }
        let stale = match &experiment {
            Link::Absent => false,
            Link::Broken(_) => true,
            Link::Valid(v) => stable.version() == Some(v),
        };
        let mut experiment_ok = experiment.is_present();
        if stale
            && errors
                .note(unlink(&dir.join(EXPERIMENT), "remove the stale link"))
                .is_some()
        {
            experiment_ok = false;
            relinked = true;
            report.repaired_links += 1;
        }
        if relinked {
            errors.note(step(GC_LINK_FSYNC, "sync", dir, || fsutil::fsync_dir(dir)));
        }
        let referenced: Vec<&Version> = [stable.version(), experiment.version()]
            .into_iter()
            .flatten()
            .collect();
        let removed = self.gc_unreferenced(name, dir, &referenced, false, report, errors);
        report
            .removed_configs
            .extend(removed.into_iter().map(|v| (name.clone(), v)));
        if stable_ok || experiment_ok {
            return;
        }
        let empty = match fs_err::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => {
                errors.note::<()>(Err(RepoError::fs("list", dir, e)));
                false
            }
        };
        if empty
            && errors
                .note(step(
                    GC_RMDIR_PACKAGE,
                    "remove the empty config directory",
                    dir,
                    || fs_err::remove_dir(dir),
                ))
                .is_some()
        {
            tracing::info!(package.name = %name, "removed an empty config directory");
        }
    }

    /// Whether `config/` exists; refuses one that is not a real directory.
    fn config_root_exists(&self) -> Result<bool, RepoError> {
        self.package_dir_exists(&self.config_root())
    }

    /// `config/<name>` when it exists (refusing one that is not a real directory).
    fn existing_config_dir(&self, name: &PackageName) -> Result<Option<PathBuf>, RepoError> {
        if !self.config_root_exists()? {
            return Ok(None);
        }
        let dir = self.config_dir(name);
        Ok(self.package_dir_exists(&dir)?.then_some(dir))
    }

    /// Every real directory in `config/` with a valid package name, sorted.
    fn config_dirs(&self) -> Result<Vec<(PackageName, PathBuf)>, RepoError> {
        let root = self.config_root();
        if !self.config_root_exists()? {
            return Ok(Vec::new());
        }
        let list_err = |e| RepoError::fs("list", &root, e);
        let mut out = Vec::new();
        for entry in fs_err::read_dir(&root).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let name = entry
                .file_name()
                .to_str()
                .and_then(|n| PackageName::new(n).ok());
            match name {
                Some(name) if entry.file_type().map_err(list_err)?.is_dir() => {
                    out.push((name, entry.path()));
                }
                _ => tracing::warn!(path = %entry.path().display(),
                    "ignoring an entry of config/ that is not a package directory"),
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Reads a config directory's links without tearing (`stable`, `experiment`, `stable` again,
/// as for versions). A broken `stable` reads as the empty config; an `experiment` that is
/// broken or names the stable deployment reads as none.
fn read_config_state(dir: &Path) -> Result<ConfigState, RepoError> {
    let read =
        |name| link::read(dir, name).map_err(|e| RepoError::fs("read the link", dir.join(name), e));
    let mut attempts = 0;
    let (stable, experiment) = loop {
        attempts += 1;
        let stable = read(STABLE)?;
        let experiment = read(EXPERIMENT)?;
        if attempts == 8 || read(STABLE)? == stable {
            break (stable, experiment);
        }
    };
    let stable = stable.version().cloned();
    let experiment = experiment
        .version()
        .filter(|e| stable.as_ref() != Some(*e))
        .cloned();
    Ok(ConfigState { stable, experiment })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg() -> PackageName {
        PackageName::new("demo").unwrap()
    }

    fn id(s: &str) -> Version {
        Version::new(s).unwrap()
    }

    fn stage(repo: &Repository, content: &str) -> StagingDir {
        let staged = repo.staging("config").unwrap();
        fs_err::write(staged.path().join("app.yaml"), content).unwrap();
        staged
    }

    #[test]
    fn a_package_without_config_has_an_empty_stable_config() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        assert_eq!(repo.config_state(&pkg()).unwrap(), ConfigState::default());
        assert!(repo.config_states().unwrap().is_empty());
        assert!(!repo.config_root().exists(), "nothing is created by a read");
    }

    #[test]
    fn start_promote_stop_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        repo.start_config_experiment(&pkg(), &id("c1"), stage(&repo, "v: 1\n"))
            .unwrap();
        assert_eq!(
            repo.config_state(&pkg()).unwrap(),
            ConfigState {
                stable: None,
                experiment: Some(id("c1"))
            }
        );
        let read = |link: PathBuf| fs_err::read_to_string(link.join("app.yaml")).unwrap();
        assert_eq!(read(repo.config_experiment_link(&pkg())), "v: 1\n");
        repo.promote_config_experiment(&pkg()).unwrap();
        assert_eq!(read(repo.config_stable_link(&pkg())), "v: 1\n");
        repo.start_config_experiment(&pkg(), &id("c2"), stage(&repo, "v: 2\n"))
            .unwrap();
        // Same id again: a no-op; the stable id: refused.
        repo.start_config_experiment(&pkg(), &id("c2"), stage(&repo, "other"))
            .unwrap();
        assert_eq!(read(repo.config_experiment_link(&pkg())), "v: 2\n");
        let err = repo
            .start_config_experiment(&pkg(), &id("c1"), stage(&repo, "x"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start a config experiment: deployment c1 is already the stable config of package demo"
        );
        repo.stop_config_experiment(&pkg()).unwrap();
        repo.stop_config_experiment(&pkg()).unwrap();
        let err = repo.promote_config_experiment(&pkg()).unwrap_err();
        assert_eq!(err.to_string(), "no config experiment to promote");
        assert!(repo.config_deployment_dir(&pkg(), &id("c2")).is_dir());
        let report = repo.gc().unwrap();
        assert_eq!(report.removed_configs, vec![(pkg(), id("c2"))]);
        assert!(!repo.config_deployment_dir(&pkg(), &id("c2")).exists());
        assert_eq!(
            repo.config_states().unwrap(),
            BTreeMap::from([(
                pkg(),
                ConfigState {
                    stable: Some(id("c1")),
                    experiment: None
                }
            )])
        );
    }

    #[test]
    fn a_planted_config_directory_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path().join("root")).unwrap();
        fs_err::os::unix::fs::symlink(outside.path(), repo.config_root()).unwrap();
        let err = repo
            .start_config_experiment(&pkg(), &id("c1"), stage(&repo, "x"))
            .unwrap_err();
        assert!(matches!(err, RepoError::NotADirectory { .. }), "{err:?}");
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
        assert!(repo.config_state(&pkg()).is_err());
    }

    #[test]
    fn stop_without_a_config_tree_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        repo.stop_config_experiment(&pkg()).unwrap();
        assert!(repo.promote_config_experiment(&pkg()).is_err());
        assert!(!repo.config_root().exists());
    }
}
