//! The poll loop: fetch, accept, persist, converge, report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use outpost_fetch::{Cancel, Digest, RegistrySettings};
use outpost_fleet::{
    Action, Document, ExperimentPolicy, FleetError, Host, HostState, MAX_DOCUMENT_BYTES,
    MEDIA_TYPE, PackageLinks, Plan, RolledBack, SIGNATURE_MEDIA_TYPE, Timestamp, TrustedKey,
};
use outpost_oci::{ArtifactPoll, ArtifactSource};
use outpost_types::config::FleetConfig;
use outpost_types::wire::{
    Catalog, ExperimentStartParams, HealthPolicy, Task, TaskState, WireDuration,
};
use outpost_types::wire::{format_rfc3339, parse_rfc3339};
use outpost_types::{PackageName, Version};

use super::state::{self, PersistedState, RolledBackEntry};
use crate::error::DaemonError;
use crate::ops::{Daemon, Requester};
use crate::watch::now_ms;

/// Every `reason` label of `outpost_fleet_poll_errors_total`: the six refusals of a document,
/// then `registry` (the registry could not be read), `apply` (an operation of the plan
/// failed), `key` (a trusted key could not be read), `host_id` (no host id), `state` (the
/// state file could not be read or written).
pub const ERROR_REASONS: [&str; 11] = [
    "malformed",
    "unsigned",
    "bad_signature",
    "untrusted_key",
    "stale_generation",
    "expired",
    "registry",
    "apply",
    "key",
    "host_id",
    "state",
];

/// The operation of the experiment watch's stop.
const AUTO_STOP: &str = "auto_stop_experiment";

/// Watch outcomes that are a roll-back by the health watch.
const ROLLED_BACK_OUTCOMES: [&str; 2] = ["health_check_failed", "experiment_expired"];

/// A failure of one poll: a stable reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PollError {
    reason: &'static str,
    message: String,
}

impl PollError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl From<FleetError> for PollError {
    fn from(e: FleetError) -> Self {
        Self::new(e.reason(), e.to_string())
    }
}

struct Poller {
    daemon: Arc<Daemon>,
    config: FleetConfig,
    /// The artifact's source; made again at the next poll while it cannot be (a password
    /// file that is not there yet).
    source: Option<ArtifactSource>,
    trusted: Vec<TrustedKey>,
    key_errors: Vec<String>,
    host: Result<Host, String>,
    state: PersistedState,
    document: Option<Document>,
    /// The digest last fetched, and the refusal of its document if it was refused: an
    /// unchanged refused document is refused again without a download.
    last_seen: Option<(Digest, Option<PollError>)>,
    /// The generation whose desired state the host has reached (and
    /// `outpost_fleet_applied_timestamp_seconds` tells when), since the daemon started.
    reached: Option<u64>,
    /// This poll fetched a document or ran an operation: the memory it used is handed back
    /// at its end.
    busy: bool,
    cancel: Cancel,
}

/// Polls until the task is aborted: once at once, then after each spaced delay (the first
/// one a phase of the host's own).
pub(super) async fn run(daemon: Arc<Daemon>, config: FleetConfig) {
    let mut poller = Poller::new(daemon, config);
    let interval = poller.config.poll_interval.0;
    let host_id = poller
        .host
        .as_ref()
        .map(|h| h.id.clone())
        .unwrap_or_default();
    let mut n: u64 = 0;
    loop {
        poller.poll_once().await;
        n += 1;
        // After the start-up poll, a phase of the host's own; then the interval ±10 %.
        let delay = if n == 1 {
            outpost_fleet::first_delay(interval, &host_id)
        } else {
            outpost_fleet::poll_delay(interval, &host_id, n)
        }
        .max(Duration::from_millis(100));
        tokio::time::sleep(delay).await;
    }
}

impl Poller {
    fn new(daemon: Arc<Daemon>, config: FleetConfig) -> Self {
        let mut trusted = Vec::new();
        let mut key_errors = Vec::new();
        for path in &config.trusted_keys {
            match TrustedKey::from_file(path) {
                Ok(k) => trusted.push(k),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "fleet: a trusted key cannot be used");
                    key_errors.push(e.to_string());
                }
            }
        }
        if config.allow_unsigned {
            tracing::warn!(
                source = %config.source,
                "fleet.allow_unsigned is on: UNSIGNED fleet documents are accepted (a lab setting)"
            );
        }
        let host = outpost_fleet::host_id(config.host_id.as_deref())
            .map(|id| Host {
                id,
                labels: config.labels.clone(),
            })
            .map_err(|e| e.to_string());
        let state = state::load(daemon.root()).unwrap_or_default();
        let document = state
            .document
            .as_deref()
            .and_then(|d| Document::from_json(d.as_bytes()).ok());
        tracing::info!(
            source = %config.source,
            poll_interval_ms = config.poll_interval.0.as_millis() as u64,
            trusted_keys = trusted.len(),
            applied_generation = state.applied_generation,
            "fleet poller started"
        );
        Self {
            daemon,
            config,
            source: None,
            trusted,
            key_errors,
            host,
            state,
            document,
            last_seen: None,
            reached: None,
            busy: false,
            cancel: Cancel::new(),
        }
    }

    /// One poll: fetch, accept or refuse, converge, report.
    async fn poll_once(&mut self) {
        let mut error = self.fetch().await.err();
        if self.document.is_some() {
            match self.converge().await {
                Ok(converged) => self.report_converged(converged),
                Err(e) => {
                    self.report_converged(false);
                    error.get_or_insert(e);
                }
            }
        }
        if error.is_none()
            && let Some(k) = self.key_errors.first()
        {
            error = Some(PollError::new("key", k.clone()));
        }
        self.daemon
            .metrics()
            .fleet_poll(error.as_ref().map(|e| e.reason));
        let at = format_rfc3339(now_ms());
        if let Some(e) = &error {
            tracing::warn!(fleet.reason = e.reason, error = %e.message, "fleet poll failed");
        }
        self.update(|s, _| {
            s.last_poll_at = Some(at);
            s.last_error = error.as_ref().map(|e| e.message.clone());
            s.last_error_reason = error.as_ref().map(|e| e.reason.to_owned());
        });
        if std::mem::take(&mut self.busy) {
            // The download, unpack and TLS code and buffers of this poll are not what an
            // idle daemon runs: hand them back (see `crate::allocator`).
            let released = crate::allocator::release_code_pages();
            crate::allocator::trim();
            tracing::debug!(
                released_bytes = released,
                "fleet: memory handed back after a busy poll"
            );
        }
    }

    /// Fetches the artifact unless unchanged, and applies its document if accepted.
    async fn fetch(&mut self) -> Result<(), PollError> {
        if self.source.is_none() {
            let made = ArtifactSource::new(
                &RegistrySettings::from_config(&self.daemon.config().registry),
                &self.config.source.0,
            )
            .map_err(|e| PollError::new("registry", outpost_types::error_chain(&e)))?;
            self.source = Some(made);
        }
        let Some(source) = self.source.as_ref() else {
            return Ok(());
        };
        let known = self.last_seen.as_ref().map(|(d, _)| d.clone()).or_else(|| {
            self.state
                .applied_digest
                .as_deref()
                .and_then(|d| Digest::parse(d).ok())
        });
        let polled = match source
            .poll(known.as_ref(), MAX_DOCUMENT_BYTES as u64, &self.cancel)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // Set up afresh at the next poll: credentials are read again (a rotated
                // password), and a new connection is made.
                self.source = None;
                return Err(PollError::new("registry", outpost_types::error_chain(&e)));
            }
        };
        let artifact = match polled {
            ArtifactPoll::Unchanged { digest } => {
                return match &self.last_seen {
                    Some((d, Some(refusal))) if *d == digest => Err(refusal.clone()),
                    _ => Ok(()),
                };
            }
            ArtifactPoll::Changed(a) => a,
        };
        self.busy = true;
        let digest = artifact.digest.clone();
        let accepted = match artifact.blob(MEDIA_TYPE) {
            None => Err(PollError::new(
                "malformed",
                format!("the artifact {digest} has no blob of media type {MEDIA_TYPE}"),
            )),
            Some(bytes) => outpost_fleet::accept(
                bytes,
                artifact.blob(SIGNATURE_MEDIA_TYPE),
                &self.trusted,
                self.state.applied_generation,
                Timestamp::now(),
                self.config.allow_unsigned,
            )
            .map(|a| (a, bytes.to_vec()))
            .map_err(PollError::from),
        };
        match accepted {
            Err(refusal) => {
                tracing::warn!(
                    artifact.digest = %digest, fleet.reason = refusal.reason,
                    error = %refusal.message, "fleet document refused; the host keeps its state"
                );
                self.last_seen = Some((digest, Some(refusal.clone())));
                Err(refusal)
            }
            Ok((accepted, bytes)) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| PollError::new("malformed", "the document is not UTF-8"))?;
                let generation = accepted.document.generation;
                let new_state = PersistedState {
                    applied_generation: Some(generation),
                    applied_digest: Some(digest.to_string()),
                    applied_at_ms: now_ms(),
                    signed_by: accepted.signed_by.clone(),
                    document: Some(text),
                    // Roll-backs hold only under the generation they happened in.
                    rolled_back: BTreeSet::new(),
                };
                state::save(self.daemon.root(), &new_state)
                    .map_err(|e| PollError::new("state", e.message()))?;
                self.state = new_state;
                self.last_seen = Some((digest.clone(), None));
                if accepted.is_unsigned() {
                    tracing::warn!(
                        fleet.generation = generation, artifact.digest = %digest,
                        "applying an UNSIGNED fleet document (fleet.allow_unsigned is on)"
                    );
                } else {
                    tracing::info!(
                        fleet.generation = generation, artifact.digest = %digest,
                        fleet.signed_by = accepted.signed_by.as_deref(),
                        "fleet document accepted"
                    );
                }
                let managed: BTreeSet<String> = accepted
                    .document
                    .packages
                    .keys()
                    .map(ToString::to_string)
                    .collect();
                self.update(|s, m| {
                    s.applied_generation = Some(generation);
                    s.applied_digest = Some(digest.to_string());
                    s.signed_by = accepted.signed_by.clone();
                    s.unsigned = accepted.is_unsigned();
                    s.managed = managed.iter().cloned().collect();
                    // Not converged until the plan of this generation says so.
                    s.converged = false;
                    *m = managed;
                });
                // The gauges change together: a scrape during the convergence must not see
                // the new generation beside the previous one's `converged`.
                self.daemon.metrics().fleet_converged(false);
                self.daemon.metrics().fleet_generation(generation);
                self.document = Some(accepted.document);
                Ok(())
            }
        }
    }

    /// Brings the host to the applied document's state; returns whether it is there.
    async fn converge(&mut self) -> Result<bool, PollError> {
        let Some(doc) = self.document.clone() else {
            return Ok(false);
        };
        let host = self
            .host
            .clone()
            .map_err(|e| PollError::new("host_id", e))?;
        self.merge_catalog(&doc)?;
        let (state, tasks) = self.snapshot()?;
        self.note_rollbacks(&doc, &state, &tasks)?;
        let plan = self.plan(&doc, &host, &state);
        let mut first_error: Option<PollError> = None;
        let mut failed: BTreeSet<PackageName> = BTreeSet::new();
        self.busy |= !plan.actions.is_empty();
        for action in plan.actions {
            if failed.contains(action.package()) {
                continue;
            }
            let package = action.package().clone();
            let operation = action.operation();
            tracing::info!(
                fleet.generation = doc.generation, package.name = %package, operation,
                "fleet: applying"
            );
            if let Err(e) = self.run(action).await {
                tracing::warn!(
                    fleet.generation = doc.generation, package.name = %package, operation,
                    error = %e, "fleet: operation failed"
                );
                first_error.get_or_insert_with(|| {
                    PollError::new("apply", format!("{operation} {package}: {}", e.message()))
                });
                failed.insert(package);
            }
        }
        // Recomputed from the host as it now is: the truth, whatever the steps did.
        let (state, _) = self.snapshot()?;
        let after = self.plan(&doc, &host, &state);
        let skipped = after
            .skipped
            .iter()
            .map(|(p, s)| (p.to_string(), s.reason().to_owned()))
            .collect::<BTreeMap<_, _>>();
        self.update(|s, _| s.skipped = skipped);
        match first_error {
            Some(e) => Err(e),
            None => Ok(after.converged()),
        }
    }

    /// The host's packages, then the last task of each: read in that order, so that an
    /// experiment found gone because its watch is stopping it has that stop's task in view.
    fn snapshot(&self) -> Result<(HostState, BTreeMap<String, Task>), PollError> {
        let status = self
            .daemon
            .status()
            .map_err(|e| PollError::new("apply", e.message()))?;
        let version = |v: &str| (!v.is_empty()).then(|| Version::new(v).ok()).flatten();
        let packages = status
            .packages
            .iter()
            .filter_map(|(name, links)| {
                Some((
                    PackageName::new(name.clone()).ok()?,
                    PackageLinks {
                        stable: version(&links.stable),
                        experiment: version(&links.experiment),
                    },
                ))
            })
            .collect();
        let tasks = status
            .remote_config_state
            .into_iter()
            .filter_map(|p| Some((p.package, p.task?)))
            .collect();
        Ok((HostState { packages }, tasks))
    }

    fn plan(&self, doc: &Document, host: &Host, state: &HostState) -> Plan {
        let rolled_back = self
            .state
            .rolled_back
            .iter()
            .filter_map(|r| {
                Some(RolledBack {
                    generation: r.generation,
                    package: PackageName::new(r.package.clone()).ok()?,
                    version: Version::new(r.version.clone()).ok()?,
                })
            })
            .collect();
        outpost_fleet::plan(doc, host, state, &rolled_back)
    }

    /// Makes sure the daemon's catalog has the document's entries: those of the packages the
    /// document's catalog names are replaced by the document's, the others are kept.
    fn merge_catalog(&self, doc: &Document) -> Result<(), PollError> {
        let current = self.daemon.catalog();
        if doc
            .catalog
            .packages
            .iter()
            .all(|e| current.packages.contains(e))
        {
            return Ok(());
        }
        let names: BTreeSet<&str> = doc
            .catalog
            .packages
            .iter()
            .map(|e| e.package.as_str())
            .collect();
        let mut packages: Vec<_> = doc.catalog.packages.clone();
        packages.extend(
            current
                .packages
                .into_iter()
                .filter(|e| !names.contains(e.package.as_str())),
        );
        self.daemon
            .set_catalog(Catalog { packages }, Requester::default())
            .map_err(|e| PollError::new("apply", e.message()))?;
        tracing::info!(
            fleet.generation = doc.generation,
            "catalog updated with the fleet document's entries"
        );
        Ok(())
    }

    /// Records the experiments of the document that the health watch rolled back under this
    /// generation: the host does not run it, and a watch of that version ended as
    /// `health_check_failed` or `experiment_expired` after the document was applied (an
    /// experiment started under an earlier generation and kept by this one included), or
    /// the watch's stop of it is running now (its history entry is written before its task
    /// ends; the history is read after the tasks).
    fn note_rollbacks(
        &mut self,
        doc: &Document,
        state: &HostState,
        tasks: &BTreeMap<String, Task>,
    ) -> Result<(), PollError> {
        let mut added = false;
        for (name, spec) in &doc.packages {
            let Some(exp) = &spec.experiment else {
                continue;
            };
            let entry = RolledBackEntry {
                generation: doc.generation,
                package: name.to_string(),
                version: exp.version.to_string(),
            };
            let running = state.packages.get(name).and_then(|l| l.experiment.as_ref());
            if self.state.rolled_back.contains(&entry) || running == Some(&exp.version) {
                continue;
            }
            let stopping = tasks.get(name.as_str()).is_some_and(|t| {
                t.state == TaskState::Running
                    && t.operation == AUTO_STOP
                    && t.version.as_deref() == Some(exp.version.as_str())
            });
            let history = self
                .daemon
                .experiment_history(name)
                .map_err(|e| PollError::new("apply", e.message()))?;
            let rolled_back = stopping
                || history.watches.iter().any(|w| {
                    w.version == exp.version.as_str()
                        && ROLLED_BACK_OUTCOMES.contains(&w.outcome.as_str())
                        && parse_rfc3339(&w.ended_at).is_some_and(|t| t >= self.state.applied_at_ms)
                });
            if rolled_back {
                tracing::warn!(
                    fleet.generation = doc.generation, package.name = %name,
                    package.version = %exp.version,
                    "experiment rolled back by its health watch; not restarted under this generation"
                );
                self.state.rolled_back.insert(entry);
                added = true;
            }
        }
        if added {
            state::save(self.daemon.root(), &self.state)
                .map_err(|e| PollError::new("state", e.message()))?;
        }
        Ok(())
    }

    /// One step of the plan, through the daemon's serialised operations.
    async fn run(&self, action: Action) -> Result<(), DaemonError> {
        let who = Requester::default();
        let d = &self.daemon;
        match action {
            Action::StopExperiment { package } => d.stop_experiment(package, who).await,
            Action::PromoteExperiment { package, .. } => d.promote_experiment(package, who).await,
            Action::Install { package, version } => {
                d.install(package, version, Vec::new(), None, who).await
            }
            Action::StartExperiment {
                package,
                version,
                policy,
            } => {
                let params = start_params(&version, &policy);
                d.start_experiment(package, version, params, who).await
            }
        }
    }

    fn report_converged(&mut self, converged: bool) {
        let generation = self.state.applied_generation;
        if converged && generation.is_some() && self.reached != generation {
            self.reached = generation;
            self.daemon.metrics().fleet_applied_at(now_ms());
        }
        self.daemon.metrics().fleet_converged(converged);
        self.update(|s, _| s.converged = converged);
    }

    fn update(&self, f: impl FnOnce(&mut outpost_types::wire::FleetStatus, &mut BTreeSet<String>)) {
        if let Some(shared) = self.daemon.fleet() {
            shared.update(f);
            self.daemon.state_changed();
        }
    }
}

/// The experiment start of the document's policy, as the API's body would give it.
fn start_params(version: &Version, policy: &ExperimentPolicy) -> ExperimentStartParams {
    let d = |x: Option<Duration>| x.map(WireDuration);
    ExperimentStartParams {
        version: version.to_string(),
        health: policy.health.as_ref().map(|h| HealthPolicy {
            command: h.command.clone(),
            interval: d(h.interval),
            timeout: d(h.timeout),
            failures: h.failures,
            grace: d(h.grace),
        }),
        max_duration: d(policy.max_duration),
        auto_promote_after: d(policy.auto_promote_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_policy_becomes_the_api_start_body() {
        let policy = ExperimentPolicy {
            health: Some(outpost_fleet::HealthPolicy {
                command: Some(vec!["/bin/check".into(), "--quick".into()]),
                interval: Some(Duration::from_secs(10)),
                timeout: Some(Duration::from_millis(500)),
                failures: Some(3),
                grace: None,
            }),
            max_duration: Some(Duration::from_secs(3600)),
            auto_promote_after: None,
        };
        let version = Version::new("1.3.0").expect("version");
        let params = start_params(&version, &policy);
        assert_eq!(params.version, "1.3.0");
        let health = params.health.expect("health");
        assert_eq!(
            health.command,
            Some(vec!["/bin/check".to_string(), "--quick".to_string()])
        );
        assert_eq!(health.interval, Some(WireDuration(Duration::from_secs(10))));
        assert_eq!(
            health.timeout,
            Some(WireDuration(Duration::from_millis(500)))
        );
        assert_eq!(health.failures, Some(3));
        assert_eq!(health.grace, None);
        assert_eq!(
            params.max_duration,
            Some(WireDuration(Duration::from_secs(3600)))
        );
        assert_eq!(params.auto_promote_after, None);
        let bare = start_params(&version, &ExperimentPolicy::default());
        assert_eq!(bare.health, None);
        assert_eq!(bare.max_duration, None);
    }
}
