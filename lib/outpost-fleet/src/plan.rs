//! The convergence plan: what one host must do to reach a document's desired state.
//!
//! [`plan`] is pure and deterministic: the same document, host and state give the same
//! actions, in the same order. Packages are visited in name order; for each package the
//! actions come in this order:
//!
//! 1. an experiment that should not run any more is ended: **promoted** when its version is
//!    the document's new `stable` (the host already has it, and a promotion is what the
//!    document records), **stopped** otherwise;
//! 2. `stable` is **installed** when the host's differs;
//! 3. the document's experiment is **started** (with its policy) when this host is in its
//!    cohort, it is not already running, and it was not rolled back on this host for this
//!    generation.
//!
//! Applying the actions to the state (as [`HostState::apply`] models it) gives a state whose
//! plan is empty: the plan is idempotent. Packages the document does not name are never
//! touched.

use std::collections::{BTreeMap, BTreeSet};

use outpost_types::{PackageName, Version};

use crate::cohort::in_cohort;
use crate::document::{Document, ExperimentPolicy};

/// This host: its id (for cohorts) and its labels (for selectors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The host id (`fleet.host_id`, else `/etc/machine-id`).
    pub id: String,
    /// The host's labels (`fleet.labels`).
    pub labels: BTreeMap<String, String>,
}

/// The links of one package on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageLinks {
    /// The stable version, `None` when the package is not installed.
    pub stable: Option<Version>,
    /// The running experiment, if any.
    pub experiment: Option<Version>,
}

/// The packages of this host, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Each package's links; a package absent here is not installed.
    pub packages: BTreeMap<PackageName, PackageLinks>,
}

/// An experiment rolled back on this host by its health watch, for one generation: the host
/// does not start the same version again while that generation is applied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RolledBack {
    /// The generation of the document that started the experiment.
    pub generation: u64,
    /// The package.
    pub package: PackageName,
    /// The experiment's version.
    pub version: Version,
}

/// One step towards the desired state; each is one serialised daemon operation, the same as
/// the API call of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the running experiment of `package`; stable is untouched.
    StopExperiment {
        /// The package.
        package: PackageName,
    },
    /// Promote the running experiment of `package` to stable.
    PromoteExperiment {
        /// The package.
        package: PackageName,
        /// The experiment's version, which becomes stable.
        version: Version,
    },
    /// Install `version` as the stable version of `package`.
    Install {
        /// The package.
        package: PackageName,
        /// The version.
        version: Version,
    },
    /// Start `version` as the experiment of `package`, watched under `policy`.
    StartExperiment {
        /// The package.
        package: PackageName,
        /// The version.
        version: Version,
        /// Health watch, deadline and automatic promotion.
        policy: ExperimentPolicy,
    },
}

impl Action {
    /// The package the action changes.
    pub fn package(&self) -> &PackageName {
        match self {
            Self::StopExperiment { package }
            | Self::PromoteExperiment { package, .. }
            | Self::Install { package, .. }
            | Self::StartExperiment { package, .. } => package,
        }
    }

    /// The operation's name as the daemon's tasks record it: `stop_experiment`,
    /// `promote_experiment`, `install`, `start_experiment`.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::StopExperiment { .. } => "stop_experiment",
            Self::PromoteExperiment { .. } => "promote_experiment",
            Self::Install { .. } => "install",
            Self::StartExperiment { .. } => "start_experiment",
        }
    }
}

/// Why this host runs no experiment of a package the document experiments with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The host's labels do not match the selector.
    SelectorMismatch,
    /// The host's bucket is at or above the percent.
    OutsidePercent,
    /// The experiment was rolled back on this host for this generation.
    RolledBack,
}

impl Skip {
    /// A stable snake_case name, for logs and metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SelectorMismatch => "selector_mismatch",
            Self::OutsidePercent => "outside_percent",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// What a host must do for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The document's generation.
    pub generation: u64,
    /// The actions, in the order to run them.
    pub actions: Vec<Action>,
    /// The experiments of the document this host does not run, and why.
    pub skipped: BTreeMap<PackageName, Skip>,
}

impl Plan {
    /// True when the host already is in the desired state: no action left.
    pub fn converged(&self) -> bool {
        self.actions.is_empty()
    }
}

impl HostState {
    /// Models the effect of a successful action on the state (used to check plans; the daemon
    /// reads the real state from its repository).
    pub fn apply(&mut self, action: &Action) {
        self.packages
            .entry(action.package().clone())
            .or_default()
            .apply(action);
    }
}

impl PackageLinks {
    /// Models the effect of a successful action of this package on its links.
    pub fn apply(&mut self, action: &Action) {
        let links = self;
        match action {
            Action::StopExperiment { .. } => links.experiment = None,
            Action::PromoteExperiment { version, .. } => {
                links.stable = Some(version.clone());
                links.experiment = None;
            }
            Action::Install { version, .. } => links.stable = Some(version.clone()),
            Action::StartExperiment { version, .. } => links.experiment = Some(version.clone()),
        }
    }
}

/// Computes the actions that take this host from `state` to the desired state of `doc`.
///
/// `rolled_back` holds the experiments the host's health watch rolled back; an entry of
/// another generation does not hold the experiment back (a new generation is a new decision).
pub fn plan(
    doc: &Document,
    host: &Host,
    state: &HostState,
    rolled_back: &BTreeSet<RolledBack>,
) -> Plan {
    let mut actions = Vec::new();
    let mut skipped = BTreeMap::new();
    let none = PackageLinks::default();
    for (name, spec) in &doc.packages {
        let mut cur = state.packages.get(name).unwrap_or(&none).clone();

        // The experiment this host should run, if any.
        let wanted = spec.experiment.as_ref().and_then(|exp| {
            let skip = if !crate::cohort::selector_matches(&host.labels, &exp.selector) {
                Some(Skip::SelectorMismatch)
            } else if !in_cohort(
                &host.id,
                &host.labels,
                name.as_str(),
                exp.version.as_str(),
                exp.percent,
                &exp.selector,
            ) {
                Some(Skip::OutsidePercent)
            } else if rolled_back.contains(&RolledBack {
                generation: doc.generation,
                package: name.clone(),
                version: exp.version.clone(),
            }) {
                Some(Skip::RolledBack)
            } else {
                None
            };
            match skip {
                Some(s) => {
                    skipped.insert(name.clone(), s);
                    None
                }
                None => Some(exp),
            }
        });

        // 1. End an experiment that should not run.
        if let Some(running) = cur.experiment.clone()
            && wanted.is_none_or(|w| w.version != running)
        {
            let action = if running == spec.stable && cur.stable.as_ref() != Some(&spec.stable) {
                Action::PromoteExperiment {
                    package: name.clone(),
                    version: running,
                }
            } else {
                Action::StopExperiment {
                    package: name.clone(),
                }
            };
            cur.apply(&action);
            actions.push(action);
        }

        // 2. Stable.
        if cur.stable.as_ref() != Some(&spec.stable) {
            let action = Action::Install {
                package: name.clone(),
                version: spec.stable.clone(),
            };
            cur.apply(&action);
            actions.push(action);
        }

        // 3. The experiment.
        if let Some(exp) = wanted
            && cur.experiment.as_ref() != Some(&exp.version)
        {
            let action = Action::StartExperiment {
                package: name.clone(),
                version: exp.version.clone(),
                policy: exp.policy(),
            };
            cur.apply(&action);
            actions.push(action);
        }
    }
    Plan {
        generation: doc.generation,
        actions,
        skipped,
    }
}
