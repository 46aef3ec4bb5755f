//! Config experiments (`docs/config-experiments.md`): the config catalog, and the start, stop
//! and promote of a package's config experiment.
//!
//! # Guarantees
//! - Config operations are serialised with the package operations (the same lock and
//!   [`Daemon::run_op`]), record tasks (`start_config_experiment`, `stop_config_experiment`,
//!   `promote_config_experiment`, the deployment id as the task's version), and are refused
//!   before any work for a package that is not installed.
//! - A start builds the new tree in a staging directory: a copy of the stable config (none
//!   for an empty one), then the file operations in order; only a complete tree is switched in,
//!   by the repository's crash-safe switch. Any failure leaves the stable config and the running
//!   experiment as they were.
//! - Which files a start may touch, and their modes, come from the package's stable version
//!   (`outpost/config-files`, or the defaults).
//! - Secrets are opened from their sealed boxes in memory that is wiped on drop, substituted
//!   into the patches only while they are applied, and appear in no log line, task, error or
//!   status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use outpost_config::{ConfigCatalog, ConfigError, ConfigOperations, Rules, copy_tree};
use outpost_secrets::zeroize::Zeroizing;
use outpost_types::PackageName;
use outpost_types::wire::{ExpectedState, Phase};

use super::{Daemon, Precheck, Requester, after_switch, after_switch_undone, not_installed};
use crate::error::{DaemonError, StateConflict};
use crate::hooks::HookEvent;

/// Plaintext secrets by key, wiped when dropped. Never logged.
pub type Secrets = BTreeMap<String, Zeroizing<String>>;

/// The refusal of a config experiment on a package that is not installed.
fn not_installed_for_config(name: &PackageName) -> DaemonError {
    DaemonError::from(StateConflict::NotInstalledForConfig {
        package: name.clone(),
    })
}

impl Daemon {
    /// `GET /config_catalog`: the config catalog as it was last set.
    pub fn config_catalog(&self) -> Result<ConfigCatalog, DaemonError> {
        self.store.config_catalog()
    }

    /// `POST /config_catalog`: validates every entry (a bad one is refused by name), then
    /// replaces and persists the config catalog. Any invalid entry leaves it unchanged.
    pub fn set_config_catalog(
        &self,
        catalog: ConfigCatalog,
        who: Requester,
    ) -> Result<(), DaemonError> {
        outpost_config::validate_catalog(&catalog)?;
        self.store.set_config_catalog(&catalog)?;
        tracing::info!(
            caller.uid = who.uid,
            caller.pid = who.pid,
            entries = catalog.len(),
            "config catalog replaced"
        );
        Ok(())
    }

    /// The operations of config catalog entry `id`.
    ///
    /// # Errors
    /// `package_not_found` (422) when the config catalog has no such entry.
    pub fn config_from_catalog(&self, id: &str) -> Result<ConfigOperations, DaemonError> {
        self.store
            .config_catalog()?
            .get(id)
            .map(outpost_config::ConfigCatalogEntry::operations)
            .ok_or_else(|| ConfigError::NotInCatalog { id: id.to_owned() }.into())
    }

    /// Opens sealed secrets (key -> base64 sealed box) with the daemon's key.
    ///
    /// # Errors
    /// `bad_request` naming the first entry that is not a valid box sealed to this daemon's
    /// key (wrong key, tampered, truncated, not base64, not UTF-8); never its content.
    pub fn open_secrets(&self, sealed: &BTreeMap<String, String>) -> Result<Secrets, DaemonError> {
        Ok(outpost_secrets::open_map(self.secret_key(), sealed)?)
    }

    /// Starts a config experiment of `name` with `ops`, replacing a running one. The same
    /// deployment as the running experiment is a no-op; the stable deployment is refused (409).
    pub async fn start_config_experiment(
        self: &Arc<Self>,
        name: PackageName,
        ops: ConfigOperations,
        secrets: Secrets,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        // The form first, before waiting for the lock: a malformed body is a 400 at once.
        let id = ops.validate()?.deployment_id().clone();
        let this = self.clone();
        self.run_op(
            name.clone(),
            "start_config_experiment",
            Some(id.clone()),
            who,
            Precheck::Installed(not_installed_for_config),
            move |cell| async move {
                this.check_expected(&name, expected.as_ref())?;
                let state = this
                    .repo
                    .state(&name)?
                    .ok_or_else(|| not_installed_for_config(&name))?;
                let current = this.repo.config_state(&name)?;
                if current.stable.as_ref() == Some(&id) {
                    return Err(StateConflict::ConfigAlreadyStable {
                        package: name.clone(),
                        id: id.to_string(),
                    }
                    .into());
                }
                if current.experiment.as_ref() == Some(&id) {
                    tracing::info!(package.name = %name, config.id = %id, "already the config experiment");
                    return Ok(());
                }
                let rules =
                    Rules::for_package(name.as_str(), &this.repo.version_dir(&name, &state.stable))?;
                let keys: BTreeSet<&str> = secrets.keys().map(String::as_str).collect();
                let plan = ops.plan(name.as_str(), &rules, &keys)?;
                cell.set(Phase::Switch, 0, None);
                let repo = this.repo.clone();
                let (n, i) = (name.clone(), id.clone());
                this.blocking(move || {
                    let staged = repo.staging(&format!("config-{n}-{i}"))?;
                    if let Some(stable) = &current.stable {
                        copy_tree(&repo.config_deployment_dir(&n, stable), staged.path())?;
                    }
                    plan.apply(staged.path(), &secrets)?;
                    drop(secrets);
                    repo.start_config_experiment(&n, &i, staged)?;
                    Ok(())
                })
                .await?;
                let args = [id.to_string()];
                if let Err(e) = this
                    .hook(HookEvent::PostConfigExperimentStart, &name, &state.stable, &args)
                    .await
                {
                    tracing::warn!(package.name = %name, config.id = %id, error = %e, "rolling back the config experiment");
                    let repo = this.repo.clone();
                    let n = name.clone();
                    this.blocking(move || Ok(repo.stop_config_experiment(&n)?))
                        .await?;
                    return Err(after_switch_undone(
                        e,
                        format!("config experiment {id} was rolled back"),
                        true,
                    ));
                }
                Ok(())
            },
        )
        .await
    }

    /// Stops the config experiment of `name`, if any; the stable config is untouched.
    pub async fn stop_config_experiment(
        self: &Arc<Self>,
        name: PackageName,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let this = self.clone();
        self.run_op(
            name.clone(),
            "stop_config_experiment",
            None,
            who,
            Precheck::Installed(not_installed),
            move |cell| async move {
                this.check_expected(&name, expected.as_ref())?;
                let Some(experiment) = this.repo.config_state(&name)?.experiment else {
                    return Ok(());
                };
                let stable = this.installed(&name)?.stable;
                this.hook(
                    HookEvent::PreConfigExperimentStop,
                    &name,
                    &stable,
                    &[experiment.to_string()],
                )
                .await?;
                cell.set(Phase::Switch, 0, None);
                let repo = this.repo.clone();
                this.blocking(move || Ok(repo.stop_config_experiment(&name)?))
                    .await
            },
        )
        .await
    }

    /// Promotes the config experiment of `name` to its stable config; none is a 409.
    pub async fn promote_config_experiment(
        self: &Arc<Self>,
        name: PackageName,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let this = self.clone();
        self.run_op(
            name.clone(),
            "promote_config_experiment",
            None,
            who,
            Precheck::Installed(not_installed),
            move |cell| async move {
                this.check_expected(&name, expected.as_ref())?;
                cell.set(Phase::Switch, 0, None);
                let repo = this.repo.clone();
                let n = name.clone();
                this.blocking(move || Ok(repo.promote_config_experiment(&n)?))
                    .await?;
                let Some(id) = this.repo.config_state(&name)?.stable else {
                    return Ok(());
                };
                let stable = this.installed(&name)?.stable;
                this.hook(
                    HookEvent::PostConfigPromote,
                    &name,
                    &stable,
                    &[id.to_string()],
                )
                .await
                .map_err(|e| after_switch(e, format!("config {id} is now stable")))
            },
        )
        .await
    }
}
