//! `GET /status`: the state read from the disk and the task table, and the serialised body
//! cached until something changes (or for [`STATUS_TTL`], for changes made behind the daemon's
//! back).

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outpost_types::wire::{PackageState as WireState, PackageStatus, StatusResponse, TaskState};
use outpost_types::{PackageName, Version};

use super::Daemon;
use crate::error::DaemonError;
use crate::watch::WatchKey;

/// How long a cached `/status` body may be served without looking at the disk again. Every
/// change the daemon makes invalidates it at once; this bounds how long a change made behind
/// the daemon's back (by hand, by another tool) can go unseen.
pub(super) const STATUS_TTL: Duration = Duration::from_secs(1);

/// The last `/status` body, valid while `generation` has not moved and for [`STATUS_TTL`].
/// Never holds a body with a running task (its progress moves without a generation change).
#[derive(Debug, Default)]
pub(super) struct StatusCache {
    /// Bumped after every change to the repository or the task table.
    generation: AtomicU64,
    entry: RwLock<Option<CachedStatus>>,
}

#[derive(Debug)]
struct CachedStatus {
    generation: u64,
    at: Instant,
    body: StatusBody,
}

/// A `/status` body, serialised once and shared by every answer until something changes.
#[derive(Debug, Clone)]
pub struct StatusBody(Arc<Box<serde_json::value::RawValue>>);

impl serde::Serialize for StatusBody {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl StatusBody {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Daemon {
    /// Marks the state `/status` shows as changed: the next request reads the disk again.
    /// Called after every change to the repository and the task table.
    pub(crate) fn state_changed(&self) {
        self.status_cache.generation.fetch_add(1, Ordering::Release);
    }

    /// `GET /status`, serialised: from the cache when nothing changed since it was made (and
    /// it is under a second old), else read from the disk ([`Daemon::status`]) and cached
    /// unless a task is running. Never waits for a running operation.
    pub fn status_body(&self) -> Result<StatusBody, DaemonError> {
        let cache = &self.status_cache;
        let generation = cache.generation.load(Ordering::Acquire);
        if let Some(c) = cache
            .entry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|c| c.generation == generation && c.at.elapsed() < STATUS_TTL)
        {
            return Ok(c.body.clone());
        }
        let status = self.status()?;
        let running = status.remote_config_state.iter().any(|p| {
            p.task
                .as_ref()
                .is_some_and(|t| t.state == TaskState::Running)
        });
        let text = serde_json::to_string(&status).map_err(DaemonError::EncodeStatus)?;
        let raw =
            serde_json::value::RawValue::from_string(text).map_err(DaemonError::EncodeStatus)?;
        let body = StatusBody(Arc::new(raw));
        if !running {
            // Stamped with the generation read before the disk: a change made meanwhile has
            // bumped it, so this entry is already stale and will not be served.
            *cache
                .entry
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(CachedStatus {
                generation,
                at: Instant::now(),
                body: body.clone(),
            });
        }
        Ok(body)
    }

    /// `GET /status`: the repository as it is on disk, and the last task of each package.
    /// Never waits for a running operation.
    pub fn status(&self) -> Result<StatusResponse, DaemonError> {
        let states = self.repo.states()?;
        // A config tree the repository refuses to read (a planted `config` link) must not take
        // `/status` down with it: the packages are still reported, the config versions empty.
        let configs = self.repo.config_states().unwrap_or_else(|e| {
            tracing::warn!(error = %e.detail(), "could not read the config trees");
            Default::default()
        });
        let tasks = self.tasks.snapshot();
        let mut watches = self.watches.snapshot();
        let mut extensions = self.recorded_extensions();
        let mut resp = StatusResponse {
            version: outpost_types::VERSION.to_string(),
            secrets_pub_key: self.secrets_pub_key.clone(),
            fleet: self.fleet.as_ref().map(crate::fleet::FleetShared::status),
            ..Default::default()
        };
        let mut names: Vec<String> = states.keys().map(|n| n.to_string()).collect();
        names.extend(tasks.keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            let state = PackageName::new(name.clone())
                .ok()
                .and_then(|n| states.get(&n));
            let (stable, experiment) = match state {
                Some(s) => (
                    s.stable.to_string(),
                    s.experiment
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
                None => (String::new(), String::new()),
            };
            if state.is_some() {
                resp.packages.insert(
                    name.clone(),
                    WireState {
                        stable: stable.clone(),
                        experiment: experiment.clone(),
                    },
                );
            }
            let experiment_watch = watches
                .remove(&WatchKey::package(&name))
                .filter(|w| !experiment.is_empty() && w.version == experiment);
            let config = PackageName::new(name.clone())
                .ok()
                .and_then(|n| configs.get(&n).cloned())
                .unwrap_or_default();
            let config_experiment_watch = watches.remove(&WatchKey::config(&name)).filter(|w| {
                config
                    .experiment
                    .as_ref()
                    .is_some_and(|e| e.as_str() == w.version)
            });
            let id = |v: Option<Version>| v.map(|v| v.to_string()).unwrap_or_default();
            resp.remote_config_state.push(PackageStatus {
                package: name.clone(),
                stable_version: stable,
                experiment_version: experiment,
                stable_config_version: id(config.stable),
                experiment_config_version: id(config.experiment),
                task: tasks.get(&name).cloned(),
                experiment_watch,
                config_experiment_watch,
                extensions: extensions.remove(&name).unwrap_or_default(),
            });
        }
        Ok(resp)
    }
}
