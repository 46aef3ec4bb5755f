//! The watch of a config experiment (`docs/config-experiments.md`): the same engine as the
//! package experiment's ([`crate::watch`]), with [`Target::Config`].
//!
//! # Guarantees
//! - The policy is read as a package experiment start's (`health`, `max_duration`,
//!   `auto_promote_after`, the same defaults and clamps), over the `health` of the config
//!   catalog entry the start named, with the `outpost/health` of the package's stable version
//!   as the command of last resort.
//! - The health command runs in the package's stable version directory with the hooks' clean
//!   environment, the package versions and the config versions
//!   (`OUTPOST_EXPERIMENT_CONFIG_VERSION`, `OUTPOST_STABLE_CONFIG_VERSION`,
//!   `OUTPOST_CONFIG_PATH`).
//! - A stop or promote decided by the watch goes through [`Daemon::run_op`] as
//!   `auto_stop_config_experiment` / `auto_promote_config_experiment`, with the same hooks as
//!   the requests, and only while the config experiment on disk is still the watched one.
//! - The package watch and the config watch of a package are independent: neither ends,
//!   replaces or acts for the other.

use std::collections::BTreeMap;

use super::watching::WatchPolicy;
use super::*;
use crate::watch::HealthSubject;

impl Daemon {
    /// Starts (and persists) the watch of config experiment `id` of `name`, replacing the
    /// previous config watch. Called under the operation lock, after the switch (or at
    /// start-up); `package_stable` is `None` for a package removed since (its config stays).
    pub(super) fn begin_config_watch(
        self: &Arc<Self>,
        name: &PackageName,
        id: &Version,
        stable_config: Option<&Version>,
        package_stable: Option<&Version>,
        policy: WatchPolicy,
    ) {
        // Without a stable version there is no `outpost/health` to fall back on.
        let dir = package_stable.map(|v| self.version_dir(name, v));
        let stable = stable_config.map(Version::as_str).unwrap_or_default();
        let (id, dir) = (id.as_str(), dir.as_deref());
        self.begin(name, Target::Config, id, stable, dir, policy);
    }

    /// Where and with what a config watch's health command runs: the package's stable
    /// version directory, `OUTPOST_VERSION` the stable version, `OUTPOST_EXPERIMENT_VERSION`
    /// the package experiment (`""` when none), and the config versions.
    pub(super) fn config_health_subject(
        &self,
        name: &PackageName,
        spec: &WatchSpec,
    ) -> Result<HealthSubject, DaemonError> {
        let state = self.installed(name)?;
        let id = Version::new(spec.version.clone()).map_err(|_| DaemonError::WatchVersion {
            package: name.to_string(),
        })?;
        let config_dir = self.repo.config_deployment_dir(name, &id);
        let experiment = state
            .experiment
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let env = vec![
            ("OUTPOST_EXPERIMENT_VERSION".to_string(), experiment),
            (
                "OUTPOST_EXPERIMENT_CONFIG_VERSION".to_string(),
                spec.version.clone(),
            ),
            (
                "OUTPOST_STABLE_CONFIG_VERSION".to_string(),
                spec.stable.clone(),
            ),
            (
                "OUTPOST_CONFIG_PATH".to_string(),
                config_dir.display().to_string(),
            ),
        ];
        Ok(HealthSubject {
            dir: self.version_dir(name, &state.stable),
            experiment: state.stable.clone(),
            stable: state.stable,
            env,
        })
    }

    /// At start-up, after the persisted watches are resumed: a config experiment with no
    /// watch gets one with the default deadline (a removed package's too: its config stays,
    /// and no experiment is unbounded).
    pub(super) fn start_config_watches(
        self: &Arc<Self>,
        states: &BTreeMap<PackageName, outpost_repo::PackageState>,
    ) {
        let configs = match self.repo.config_states() {
            Ok(configs) => configs,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the config trees; config experiments are not watched");
                return;
            }
        };
        for (name, config) in configs {
            let Some(id) = &config.experiment else {
                continue;
            };
            if self.watches.get(&WatchKey::config(name.as_str())).is_some() {
                continue;
            }
            tracing::warn!(package.name = %name, config.id = %id, "config experiment without a watch; watching it with the default deadline");
            let policy =
                self.policy_over(&ExperimentStartParams::default(), &HealthPolicy::default());
            let stable = states.get(&name).map(|s| &s.stable);
            self.begin_config_watch(&name, id, config.stable.as_ref(), stable, policy);
        }
    }

    /// `GET /{package}/config_experiment/history`: the last watches of the config
    /// experiments of `name`, oldest first.
    pub fn config_experiment_history(
        &self,
        name: &PackageName,
    ) -> Result<ExperimentHistory, DaemonError> {
        Ok(ExperimentHistory {
            package: name.to_string(),
            watches: self
                .store
                .history(&WatchKey::config(name.as_str()).store_key())?,
        })
    }

    /// [`Daemon::watch_action`] for a config watch: stops the config experiment (after the
    /// `pre-config-experiment-stop` hook, when the package is installed) recording `ERROR`
    /// with the watch's code, or promotes it (then `post-config-promote`) recording `DONE`.
    pub(super) async fn config_watch_action(
        self: &Arc<Self>,
        name: PackageName,
        spec: WatchSpec,
        action: Action,
    ) -> Result<(), DaemonError> {
        let (operation, version, precheck) = super::watching::watch_op(&spec, &action);
        let this = self.clone();
        self.run_op(
            name.clone(),
            operation,
            version.clone(),
            Requester::default(),
            precheck,
            move |cell| async move {
                let id = version.ok_or_else(|| DaemonError::WatchVersion {
                    package: name.to_string(),
                })?;
                let key = WatchKey::config(name.as_str());
                // The config outlives a removed package: its experiment still ends, without
                // the package's hooks.
                let stable = this.repo.state(&name)?.map(|s| s.stable);
                let args = [id.to_string()];
                match action {
                    Action::Stop { code, message } => {
                        if let Some(stable) = &stable {
                            this.hook(HookEvent::PreConfigExperimentStop, &name, stable, &args)
                                .await?;
                        }
                        cell.set(Phase::Switch, 0, None);
                        let repo = this.repo.clone();
                        let n = name.clone();
                        this.blocking(move || Ok(repo.stop_config_experiment(&n)?))
                            .await?;
                        this.end_watch(&key, code.as_str(), message.clone());
                        Err(DaemonError::RolledBack { code, message })
                    }
                    Action::Promote => {
                        cell.set(Phase::Switch, 0, None);
                        let repo = this.repo.clone();
                        let n = name.clone();
                        this.blocking(move || Ok(repo.promote_config_experiment(&n)?))
                            .await?;
                        this.end_watch_promoted(&key, &spec);
                        let Some(stable) = stable else {
                            return Ok(());
                        };
                        this.hook(HookEvent::PostConfigPromote, &name, &stable, &args)
                            .await
                            .map_err(|e| after_switch(e, format!("config {id} is now stable")))
                    }
                }
            },
        )
        .await
    }
}
