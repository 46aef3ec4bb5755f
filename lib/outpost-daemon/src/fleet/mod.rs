//! Fleet convergence (`docs/fleet.md`): the daemon polls a signed desired-state document from
//! an OCI registry (`fleet.source`) and converges to it on its own.
//!
//! # Guarantees
//! - A document is applied only when [`outpost_fleet::accept`] accepts it: a valid signature
//!   by one of `fleet.trusted_keys` (or unsigned with `fleet.allow_unsigned`, said loudly in the
//!   log and in `/status`), a generation above the applied one, an `expires` in the future.
//!   Anything else is refused, logged, counted and shown in `/status`; the host keeps its
//!   state.
//! - An unchanged document costs one registry request (`HEAD` of the manifest) and no blob.
//! - Each step of the plan is the same serialised operation as the API call of the same name
//!   (install, experiment start with its policy, stop, promote), in the plan's order.
//! - An experiment its health watch rolled back is not started again under the same
//!   generation; the roll-back is kept in `<root>/fleet-state.json` (written atomically) with
//!   the applied generation, digest and document.
//! - A registry that is down changes nothing: the error is reported, and the next poll that
//!   reaches the registry carries on.
//! - Packages the applied document names are managed: local mutations of them, and local
//!   catalogs that add, remove or change one of their entries ([`managed`]), are refused
//!   with 409 `managed_by_fleet` unless the request says `"force": true` (logged as an
//!   override).
//! - `converged` in `/status` and `outpost_fleet_converged` are recomputed from the host's
//!   state after every poll, a new generation included.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use outpost_types::PackageName;
use outpost_types::config::FleetConfig;
use outpost_types::wire::FleetStatus;

use crate::error::DaemonError;
use crate::metrics::DaemonMetrics;
use crate::ops::{Daemon, Requester};

mod managed;
mod poller;
pub mod state;

pub use poller::ERROR_REASONS;

/// What the poller shares with the rest of the daemon: the status it shows, and the packages
/// the applied document manages.
#[derive(Debug)]
pub struct FleetShared {
    inner: Mutex<View>,
    config: FleetConfig,
}

#[derive(Debug, Default)]
struct View {
    status: FleetStatus,
    managed: BTreeSet<String>,
}

impl FleetShared {
    /// The shared state for `config` (none when `fleet:` is not configured), seeded from the
    /// state file under `root`, with the fleet's metrics declared.
    pub(crate) fn open(
        root: &Path,
        config: Option<&FleetConfig>,
        metrics: &DaemonMetrics,
    ) -> Option<Self> {
        let config = config?;
        metrics.fleet_enabled(&ERROR_REASONS);
        let mut view = View {
            status: FleetStatus {
                source: config.source.to_string(),
                allow_unsigned: config.allow_unsigned,
                ..FleetStatus::default()
            },
            managed: BTreeSet::new(),
        };
        match state::load(root) {
            Ok(persisted) => {
                view.status.applied_generation = persisted.applied_generation;
                view.status.applied_digest = persisted.applied_digest.clone();
                view.status.signed_by = persisted.signed_by.clone();
                view.status.unsigned =
                    persisted.document.is_some() && persisted.signed_by.is_none();
                if let Some(doc) = persisted
                    .document
                    .as_deref()
                    .and_then(|d| outpost_fleet::Document::from_json(d.as_bytes()).ok())
                {
                    view.managed = doc.packages.keys().map(ToString::to_string).collect();
                    view.status.managed = view.managed.iter().cloned().collect();
                }
                if let Some(g) = persisted.applied_generation {
                    metrics.fleet_generation(g);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "fleet state unreadable; starting from no applied document");
                view.status.last_error = Some(e.message());
                view.status.last_error_reason = Some("state".into());
            }
        }
        Some(Self {
            inner: Mutex::new(view),
            config: config.clone(),
        })
    }

    /// The `fleet` object of `/status`.
    pub fn status(&self) -> FleetStatus {
        self.lock().status.clone()
    }

    /// The generation that manages `name`, when the applied document names it.
    pub fn managing_generation(&self, name: &str) -> Option<u64> {
        let view = self.lock();
        if view.managed.contains(name) {
            view.status.applied_generation
        } else {
            None
        }
    }

    /// The configuration the poller runs with.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut FleetStatus, &mut BTreeSet<String>)) {
        let mut view = self.lock();
        let View { status, managed } = &mut *view;
        f(status, managed);
    }
}

impl Daemon {
    /// The `fleet` object of `/status`, when `fleet:` is configured.
    pub fn fleet_status(&self) -> Option<FleetStatus> {
        self.fleet().map(FleetShared::status)
    }

    /// Refuses a local mutation of a package the applied fleet document manages with
    /// [`DaemonError::ManagedByFleet`], unless `force` (then logged as an override). Packages
    /// the document does not name, and daemons without `fleet:`, are not concerned.
    ///
    /// # Errors
    /// [`DaemonError::ManagedByFleet`].
    pub fn check_managed(
        &self,
        name: &PackageName,
        force: bool,
        operation: &str,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let Some(generation) = self
            .fleet()
            .and_then(|f| f.managing_generation(name.as_str()))
        else {
            return Ok(());
        };
        if force {
            tracing::warn!(
                caller.uid = who.uid, caller.pid = who.pid, package.name = %name, operation,
                fleet.generation = generation,
                "local override of a package managed by the fleet document (force)"
            );
            return Ok(());
        }
        tracing::info!(
            caller.uid = who.uid, caller.pid = who.pid, package.name = %name, operation,
            fleet.generation = generation,
            "refused: the package is managed by the fleet document"
        );
        Err(DaemonError::ManagedByFleet {
            package: name.to_string(),
            generation,
        })
    }

    /// Starts the fleet poller on a task of its own, when `fleet:` is configured. Must be
    /// called from within the runtime, once.
    pub fn start_fleet(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let config = self.fleet()?.config().clone();
        let daemon = self.clone();
        Some(tokio::spawn(poller::run(daemon, config)))
    }
}
