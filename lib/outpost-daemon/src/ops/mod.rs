//! The daemon's operations: catalog, install, experiment start / stop / promote, remove,
//! status and garbage collection.
//!
//! # Guarantees
//! - Mutations are serialised by one lock: a second request waits its turn and is never
//!   rejected for that reason. `status` and `catalog` never take it.
//! - Each mutation is atomic on disk (the repository's switches are), runs detached from the
//!   request that asked for it (a client that disconnects does not leave a half state: the
//!   operation completes, or fails and rolls back), and records its outcome as the package's
//!   last task.
//! - Old versions are collected after each operation, once the caller has its answer, and on
//!   a timer; collection respects in-use locks.
//! - An operation on a package that is not installed (stop, promote, remove, experiment
//!   start) is refused before a task is recorded, so unknown names never appear in `/status`.
//! - `/status` is served from a serialised body cached until the next change the daemon
//!   makes (task start or end, GC) and for at most one second (changes made behind its back);
//!   while a task runs it is read from the disk on every request. The disk stays the truth.
//! - Every experiment has a watch (see [`crate::watch`]) that acts through [`Daemon::run_op`]
//!   like a request does; each operation ends the watch whose experiment it ended.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use outpost_fetch::{FetchContext, Limits, RegistrySettings};
use outpost_repo::{GcReport, Repository, StagingDir, WriterLock};
use outpost_types::config::Config;
use outpost_types::error::ApiError;
use outpost_types::platform;
use outpost_types::wire::{
    Catalog, ExpectedState, ExperimentHistory, ExperimentStartParams, HealthPolicy, Phase,
    ResolvedPackage, TaskParams, WireDuration,
};
use outpost_types::{PackageName, Version};

use crate::error::{DaemonError, StateConflict};
use crate::hooks::{self, HookEvent};
use crate::metrics::DaemonMetrics;
use crate::store::Store;
use crate::tasks::{ProgressCell, TaskTable};
use crate::watch::{self, Action, Target, WatchKey, WatchSpec, Watches};

mod config;
mod config_watch;
pub mod expected;
mod extensions;
mod gc;
mod status;

pub use status::StatusBody;
use status::StatusCache;
mod watching;

pub use config::Secrets;

pub use watching::MIN_DURATION_ENV;
use watching::MIN_MAX_DURATION;

/// What an operation checks under the lock before it records a task.
#[derive(Debug)]
enum Precheck {
    /// Nothing.
    None,
    /// The package is installed; else the given refusal.
    Installed(fn(&PackageName) -> DaemonError),
    /// The watch `id` is still current and its version is still the experiment on disk;
    /// else [`DaemonError::Superseded`].
    Watch {
        target: Target,
        id: String,
        version: String,
    },
}

/// A hook's failure after the switch it follows: the message starts with what is now true
/// (`7.51.0 is now stable, but its post-install hook failed (exit 3): missing api_key`).
fn after_switch(e: DaemonError, now_true: String) -> DaemonError {
    after_switch_undone(e, now_true, false)
}

/// As [`after_switch`], for a switch the hook's failure undid.
fn after_switch_undone(e: DaemonError, now_true: String, undone: bool) -> DaemonError {
    match e {
        DaemonError::Hook(hook) => DaemonError::HookAfterSwitch {
            now_true,
            undone,
            hook: Box::new(hook),
        },
        other => other,
    }
}

/// The error of an operation on a package that is not installed.
fn not_installed(name: &PackageName) -> DaemonError {
    DaemonError::from(outpost_repo::RepoError::NotInstalled {
        package: name.clone(),
    })
}

/// Free space kept on top of a package's size.
const DISK_MARGIN: u64 = 10 << 20;

/// Who asked for an operation, for the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requester {
    /// Caller uid, when known.
    pub uid: Option<u32>,
    /// Caller pid, when known.
    pub pid: Option<i32>,
}

/// The fleet daemon's state and operations. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Daemon {
    repo: Repository,
    _writer: WriterLock,
    store: Store,
    tasks: TaskTable,
    catalog: RwLock<Catalog>,
    /// Serialises mutations and garbage collection. Shared so that the start-up cleanup can
    /// take it before the socket serves and keep it on a task of its own.
    op_lock: Arc<tokio::sync::Mutex<()>>,
    config: Config,
    limits: Limits,
    started: Instant,
    gc_stats: GcStats,
    /// Mutations waiting for the operation lock.
    waiting: AtomicUsize,
    /// The serialised `/status` body, while nothing changed.
    status_cache: StatusCache,
    /// The daemon's own telemetry.
    metrics: DaemonMetrics,
    /// The watches of the running experiments.
    watches: Watches,
    /// The floor of the `max_duration` clamp.
    min_max_duration: Duration,
    /// The key pair of encrypted secrets (`<root>/secrets.key`); its public half is published
    /// in `/status` as `secrets_pub_key`.
    secret_key: outpost_secrets::SecretKey,
    /// The public key in base64, as `/status` shows it.
    secrets_pub_key: String,
    /// The fleet poller's shared state, when `fleet:` is configured.
    fleet: Option<crate::fleet::FleetShared>,
}

/// Counters of garbage collection, for `/debug/vars`.
#[derive(Debug, Default)]
struct GcStats {
    runs: AtomicU64,
    failures: AtomicU64,
    last: Mutex<Option<GcReport>>,
}

/// What garbage collection has done since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct GcSummary {
    /// Passes finished (successful or not).
    pub runs: u64,
    /// Passes that reported an error (they are retried on the next pass).
    pub failures: u64,
    /// The report of the last successful pass.
    pub last: Option<GcReport>,
}

impl Daemon {
    /// Opens the daemon's state under `root`: takes the repository's writer lock (one daemon
    /// per root), opens the state file and turns tasks left running by a crash into errors.
    /// Quick: the leftovers of a crash are removed by [`Daemon::start_cleanup`], which the
    /// caller starts once it is ready to serve.
    ///
    /// # Errors
    /// [`DaemonError::Repo`] when the root cannot be used or another process holds it
    /// (`busy`); [`DaemonError::State`] / [`DaemonError::Corrupt`] for the state file.
    pub fn open(root: &Path, config: Config) -> Result<Arc<Self>, DaemonError> {
        let repo = Repository::open(root)?;
        let writer = repo.acquire_writer_lock()?;
        let store = Store::open(&root.join("state.redb"))?;
        let (tasks, repaired) = TaskTable::from_persisted(store.tasks()?);
        for (pkg, task) in &repaired {
            tracing::warn!(package.name = %pkg, task.id = %task.id, "task was interrupted by a daemon stop");
            store.put_task(pkg, task)?;
        }
        let catalog = store.catalog()?;
        let secret_key =
            outpost_secrets::SecretKey::load_or_create(&root.join(outpost_secrets::KEY_FILE_NAME))?;
        let secrets_pub_key = secret_key.public_key().to_base64();
        let limits = Limits::from(&config.packages);
        let metrics = DaemonMetrics::new(outpost_api::Telemetry::new());
        metrics.catalog_entries(catalog.packages.len());
        let min_max_duration = match std::env::var(MIN_DURATION_ENV) {
            Ok(v) => {
                let d = WireDuration::parse(&v)
                    .map_err(|source| DaemonError::InvalidEnvironment {
                        name: MIN_DURATION_ENV,
                        source,
                    })?
                    .0
                    .min(MIN_MAX_DURATION);
                tracing::warn!(
                    min_ms = d.as_millis() as u64,
                    "{MIN_DURATION_ENV} lowers the shortest experiment deadline"
                );
                d
            }
            Err(_) => MIN_MAX_DURATION,
        };
        let fleet = crate::fleet::FleetShared::open(root, config.fleet.as_ref(), &metrics);
        let daemon = Self {
            repo,
            _writer: writer,
            store,
            tasks,
            catalog: RwLock::new(catalog),
            op_lock: Arc::new(tokio::sync::Mutex::new(())),
            config,
            limits,
            started: Instant::now(),
            gc_stats: GcStats::default(),
            waiting: AtomicUsize::new(0),
            status_cache: StatusCache::default(),
            metrics,
            watches: Watches::default(),
            min_max_duration,
            secret_key,
            secrets_pub_key,
            fleet,
        };
        Ok(Arc::new(daemon))
    }

    /// Removes what a crash left (staging trees under `tmp/`, unreferenced versions) on a task
    /// of its own, so the socket answers at once however much there is to delete. The
    /// operation lock is taken before this returns: every mutation waits for the cleanup.
    /// Must be called from within the runtime.
    pub fn start_cleanup(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let guard = self.op_lock.clone().try_lock_owned();
        let this = self.clone();
        tokio::spawn(async move {
            // Nothing else can hold the lock before the daemon serves; if something does, wait.
            let _guard = match guard {
                Ok(g) => g,
                Err(_) => this.op_lock.clone().lock_owned().await,
            };
            let repo = this.repo.clone();
            let gc = this.clone();
            let done = tokio::task::spawn_blocking(move || {
                match repo.clean_staging() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        entries = n,
                        "removed staging leftovers of an interrupted operation"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not clean tmp/; will retry"),
                }
                gc.gc_now();
            })
            .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "start-up cleanup task failed");
            }
        })
    }

    /// The telemetry registry holding the daemon's metrics (see [`crate::metrics`]); the API
    /// serves it on `/telemetry`, with its own request counters.
    pub fn telemetry(&self) -> &outpost_api::Telemetry {
        self.metrics.telemetry()
    }

    /// How many mutations are waiting for the one running now (they are served in turn).
    pub fn operations_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// What garbage collection has done so far.
    pub fn gc_summary(&self) -> GcSummary {
        GcSummary {
            runs: self.gc_stats.runs.load(Ordering::Relaxed),
            failures: self.gc_stats.failures.load(Ordering::Relaxed),
            last: self
                .gc_stats
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        self.repo.root()
    }

    /// The key pair that opens the encrypted secrets of configuration operations.
    pub fn secret_key(&self) -> &outpost_secrets::SecretKey {
        &self.secret_key
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The daemon's metrics.
    pub(crate) fn metrics(&self) -> &DaemonMetrics {
        &self.metrics
    }

    /// The fleet poller's shared state, when `fleet:` is configured.
    pub(crate) fn fleet(&self) -> Option<&crate::fleet::FleetShared> {
        self.fleet.as_ref()
    }

    /// `GET /catalog`.
    pub fn catalog(&self) -> Catalog {
        self.catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `POST /catalog`: validates every entry, then replaces and persists the catalog. Any
    /// invalid entry leaves the catalog unchanged.
    pub fn set_catalog(&self, catalog: Catalog, who: Requester) -> Result<(), DaemonError> {
        catalog.validate()?;
        self.store.set_catalog(&catalog)?;
        let count = catalog.packages.len();
        self.metrics.catalog_entries(count);
        *self
            .catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = catalog;
        tracing::info!(
            caller.uid = who.uid,
            caller.pid = who.pid,
            entries = count,
            "catalog replaced"
        );
        Ok(())
    }

    /// Resolves a package and version against the catalog for this host.
    fn resolve(&self, name: &PackageName, version: &str) -> Result<ResolvedPackage, DaemonError> {
        let catalog = self
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = catalog
            .position_host(name.as_str(), version)
            .ok_or_else(|| DaemonError::PackageNotFound {
                package: name.to_string(),
                version: Some(version.to_string()),
                arch: platform::host_arch(),
                os: platform::host_os(),
            })?;
        let entry = &catalog.packages[index];
        // Entries were validated when the catalog was set; a failure here means a bug.
        entry.resolve().map_err(|reason| {
            DaemonError::InvalidCatalog(outpost_types::wire::CatalogError {
                index,
                package: entry.package.clone(),
                version: entry.version.clone(),
                reason,
            })
        })
    }

    /// The version an install asks for: the body's, or the only one the catalog has for this
    /// host when the request had no body.
    pub fn install_version(
        &self,
        name: &PackageName,
        params: Option<&TaskParams>,
    ) -> Result<Version, DaemonError> {
        let given = params.map(|p| p.version.as_str()).filter(|v| !v.is_empty());
        let version = match given {
            Some(v) => v.to_string(),
            None => {
                let catalog = self
                    .catalog
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let versions = catalog.host_versions(name.as_str());
                match versions.as_slice() {
                    [only] => (*only).to_string(),
                    [] => {
                        return Err(DaemonError::PackageNotFound {
                            package: name.to_string(),
                            version: None,
                            arch: platform::host_arch(),
                            os: platform::host_os(),
                        });
                    }
                    many => {
                        return Err(DaemonError::VersionRequired {
                            package: name.to_string(),
                            versions: many.iter().map(|v| (*v).to_string()).collect(),
                        });
                    }
                }
            }
        };
        Ok(Version::new(version)?)
    }

    /// Installs `version` as the stable version of `name`. Same version already stable: no-op.
    pub async fn install(
        self: &Arc<Self>,
        name: PackageName,
        version: Version,
        install_args: Vec<String>,
        extensions: Option<Vec<String>>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        self.install_expecting(name, version, install_args, extensions, None, who)
            .await
    }

    /// [`Daemon::install`], done only if the package is in the `expected` state (see
    /// [`expected`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn install_expecting(
        self: &Arc<Self>,
        name: PackageName,
        version: Version,
        install_args: Vec<String>,
        extensions: Option<Vec<String>>,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let resolved = self.resolve(&name, version.as_str())?;
        let this = self.clone();
        self.run_op(name.clone(), "install", Some(version.clone()), who, Precheck::None, move |cell| async move {
            this.check_expected(&name, expected.as_ref())?;
            let extensions = this.extensions_for(&name, extensions.as_deref())?;
            if this.repo.state(&name)?.is_some_and(|s| s.stable == version) {
                if extensions != this.extensions_for(&name, None)? {
                    return Err(StateConflict::ExtensionsOfStable {
                        package: name.clone(),
                        version: version.clone(),
                    }
                    .into());
                }
                tracing::info!(package.name = %name, package.version = %version, "already the stable version");
                return Ok(());
            }
            let staged = this.fetch(&resolved, "install", cell.clone(), &extensions).await?;
            cell.set(Phase::Switch, 0, None);
            this.blocking({
                let (repo, name, version) = (this.repo.clone(), name.clone(), version.clone());
                move || repo.install(&name, &version, staged).map_err(DaemonError::from)
            })
            .await?;
            this.record_extensions(&name, &extensions)
                .map_err(|e| after_switch(e, format!("{version} is now stable")))?;
            this.hook(HookEvent::PostInstall, &name, &version, &install_args)
                .await
                .map_err(|e| after_switch(e, format!("{version} is now stable")))
        })
        .await
    }

    /// Starts an experiment with `version` beside the stable version of `name`, watched by
    /// the policy of `params` over the catalog entry's over the defaults (see
    /// [`crate::watch`]). Starting the version that is already the experiment is a no-op
    /// that leaves its watch as it is.
    pub async fn start_experiment(
        self: &Arc<Self>,
        name: PackageName,
        version: Version,
        params: ExperimentStartParams,
        who: Requester,
    ) -> Result<(), DaemonError> {
        self.start_experiment_expecting(name, version, params, None, who)
            .await
    }

    /// [`Daemon::start_experiment`], done only if the package is in the `expected` state.
    pub async fn start_experiment_expecting(
        self: &Arc<Self>,
        name: PackageName,
        version: Version,
        params: ExperimentStartParams,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let resolved = self.resolve(&name, version.as_str())?;
        let policy = self.watch_policy(&name, &version, &params);
        let this = self.clone();
        let not_installed = |name: &PackageName| {
            DaemonError::from(StateConflict::NotInstalled {
                package: name.clone(),
            })
        };
        self.run_op(name.clone(), "start_experiment", Some(version.clone()), who, Precheck::Installed(not_installed), move |cell| async move {
            this.check_expected(&name, expected.as_ref())?;
            let state = this.repo.state(&name)?.ok_or_else(|| not_installed(&name))?;
            if state.stable == version {
                return Err(StateConflict::AlreadyStable {
                    package: name.clone(),
                    version: version.clone(),
                }
                .into());
            }
            if state.experiment.as_ref() == Some(&version) {
                tracing::info!(package.name = %name, package.version = %version, "already the experiment");
                return Ok(());
            }
            let extensions = this.extensions_for(&name, None)?;
            let staged = this.fetch(&resolved, "experiment", cell.clone(), &extensions).await?;
            cell.set(Phase::Switch, 0, None);
            this.blocking({
                let (repo, name, version) = (this.repo.clone(), name.clone(), version.clone());
                move || repo.start_experiment(&name, &version, staged).map_err(DaemonError::from)
            })
            .await?;
            if let Err(e) = this.hook(HookEvent::PostExperimentStart, &name, &version, &[]).await {
                tracing::warn!(package.name = %name, package.version = %version, error = %e, "rolling back the experiment");
                let repo = this.repo.clone();
                let n = name.clone();
                this.blocking(move || repo.stop_experiment(&n).map_err(DaemonError::from)).await?;
                return Err(after_switch_undone(
                    e,
                    format!("experiment {version} was rolled back"),
                    true,
                ));
            }
            this.begin_watch(&name, &version, &state.stable, policy);
            Ok(())
        })
        .await
    }

    /// Stops the experiment of `name`, if any; stable is untouched.
    pub async fn stop_experiment(
        self: &Arc<Self>,
        name: PackageName,
        who: Requester,
    ) -> Result<(), DaemonError> {
        self.stop_experiment_expecting(name, None, who).await
    }

    /// [`Daemon::stop_experiment`], done only if the package is in the `expected` state.
    pub async fn stop_experiment_expecting(
        self: &Arc<Self>,
        name: PackageName,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let this = self.clone();
        self.run_op(
            name.clone(),
            "stop_experiment",
            None,
            who,
            Precheck::Installed(not_installed),
            move |cell| async move {
                this.check_expected(&name, expected.as_ref())?;
                let state = this.installed(&name)?;
                let Some(experiment) = state.experiment else {
                    return Ok(());
                };
                this.hook(HookEvent::PreExperimentStop, &name, &experiment, &[])
                    .await?;
                cell.set(Phase::Switch, 0, None);
                let repo = this.repo.clone();
                this.blocking(move || repo.stop_experiment(&name).map_err(DaemonError::from))
                    .await
            },
        )
        .await
    }

    /// Promotes the experiment of `name` to stable.
    pub async fn promote_experiment(
        self: &Arc<Self>,
        name: PackageName,
        who: Requester,
    ) -> Result<(), DaemonError> {
        self.promote_experiment_expecting(name, None, who).await
    }

    /// [`Daemon::promote_experiment`], done only if the package is in the `expected` state.
    pub async fn promote_experiment_expecting(
        self: &Arc<Self>,
        name: PackageName,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let this = self.clone();
        self.run_op(
            name.clone(),
            "promote_experiment",
            None,
            who,
            Precheck::Installed(not_installed),
            move |cell| async move {
                this.check_expected(&name, expected.as_ref())?;
                let state = this.installed(&name)?;
                let Some(experiment) = state.experiment else {
                    return Err(StateConflict::NoExperiment.into());
                };
                cell.set(Phase::Switch, 0, None);
                let repo = this.repo.clone();
                let n = name.clone();
                this.blocking(move || repo.promote_experiment(&n).map_err(DaemonError::from))
                    .await?;
                this.hook(HookEvent::PostPromote, &name, &experiment, &[])
                    .await
                    .map_err(|e| after_switch(e, format!("{experiment} is now stable")))
            },
        )
        .await
    }

    /// Removes `name` entirely. Refused while one of its versions is in use.
    pub async fn remove(
        self: &Arc<Self>,
        name: PackageName,
        who: Requester,
    ) -> Result<(), DaemonError> {
        self.remove_expecting(name, None, who).await
    }

    /// [`Daemon::remove`], done only if the package is in the `expected` state.
    pub async fn remove_expecting(
        self: &Arc<Self>,
        name: PackageName,
        expected: Option<ExpectedState>,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let this = self.clone();
        self.run_op(
            name.clone(),
            "remove",
            None,
            who,
            Precheck::Installed(not_installed),
            move |cell| async move {
                this.check_expected(&name, expected.as_ref())?;
                let state = this.installed(&name)?;
                // Refuse before the pre-remove hook runs: the hook's effects (services stopped,
                // users deleted) must not happen for a removal that will not.
                if let Some((version, pids)) = this.repo.live_locks(&name)?.into_iter().next() {
                    return Err(outpost_repo::RepoError::Busy {
                        package: name.clone(),
                        version,
                        pids,
                    }
                    .into());
                }
                this.hook(HookEvent::PreRemove, &name, &state.stable, &[])
                    .await?;
                cell.set(Phase::Switch, 0, None);
                let repo = this.repo.clone();
                let n = name.clone();
                this.blocking(move || repo.remove(&n).map_err(DaemonError::from))
                    .await?;
                this.record_extensions(&name, &[])
            },
        )
        .await
    }

    fn installed(&self, name: &PackageName) -> Result<outpost_repo::PackageState, DaemonError> {
        self.repo.state(name)?.ok_or_else(|| not_installed(name))
    }

    /// Runs one serialised operation: waits for the lock, checks that the package is installed
    /// when `requires_installed` says so (refusing with its error, without recording a task:
    /// a name that was never installed gets no entry in `/status`), records the task, runs
    /// `body`, records the outcome, then schedules garbage collection. The body runs on a task
    /// of its own, so a caller that goes away does not interrupt it.
    async fn run_op<F, Fut>(
        self: &Arc<Self>,
        name: PackageName,
        operation: &'static str,
        version: Option<Version>,
        who: Requester,
        precheck: Precheck,
        body: F,
    ) -> Result<(), DaemonError>
    where
        F: FnOnce(Arc<ProgressCell>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), DaemonError>> + Send + 'static,
    {
        let this = self.clone();
        let handle = tokio::spawn(async move {
            this.metrics
                .waiting(this.waiting.fetch_add(1, Ordering::Relaxed) + 1);
            let _guard = this.op_lock.lock().await;
            this.metrics
                .waiting(this.waiting.fetch_sub(1, Ordering::Relaxed) - 1);
            match &precheck {
                Precheck::None => {}
                Precheck::Installed(refusal) => {
                    if this.repo.state(&name)?.is_none() {
                        let e = refusal(&name);
                        tracing::info!(
                            caller.uid = who.uid, caller.pid = who.pid, package.name = %name,
                            operation, error = %e, "operation refused: package not installed"
                        );
                        return Err(e);
                    }
                }
                Precheck::Watch {
                    target,
                    id,
                    version,
                } => {
                    let experiment = this.experiment_on_disk(&name, *target)?;
                    if !this
                        .watches
                        .is_current(&WatchKey::new(name.as_str(), *target), id)
                        || experiment.as_ref().is_none_or(|e| e.as_str() != version)
                    {
                        tracing::info!(package.name = %name, package.version = %version, operation, "experiment watch superseded; nothing to do");
                        return Err(DaemonError::Superseded {
                            package: name.to_string(),
                        });
                    }
                }
            }
            let (task, cell, previous) = this.tasks.start(
                name.as_str(),
                operation,
                version.as_ref().map(Version::as_str),
            );
            this.state_changed();
            tracing::info!(
                caller.uid = who.uid, caller.pid = who.pid, task.id = %task.id,
                package.name = %name, package.version = version.as_ref().map(Version::as_str),
                operation, "operation started"
            );
            if let Err(e) = this.store.put_task(name.as_str(), &task) {
                tracing::warn!(error = %e, "could not persist the running task");
            }
            let started = Instant::now();
            let result = body(cell).await;
            this.reconcile_watch(&name, operation);
            if let Err(e) = &result
                && e.is_refusal()
            {
                // Refused before anything changed: the package's last task stays what it was.
                this.tasks
                    .restore(name.as_str(), &task.id, previous.clone());
                this.state_changed();
                let persisted = match &previous {
                    Some(prev) => this.store.put_task(name.as_str(), prev),
                    None => this.store.delete_task(name.as_str()),
                };
                if let Err(pe) = persisted {
                    tracing::warn!(error = %pe, "could not restore the previous task");
                }
                this.metrics
                    .operation(operation, e.code().as_str(), started.elapsed());
                tracing::info!(
                    caller.uid = who.uid, caller.pid = who.pid, package.name = %name,
                    operation, error = %e, "operation refused"
                );
                return result;
            }
            let outcome = result.as_ref().map(|_| ()).map_err(ApiError::from);
            let done = this.tasks.finish(name.as_str(), &task.id, outcome);
            // After the repository changed and the task table too.
            this.state_changed();
            if let Some(done) = done
                && let Err(e) = this.store.put_task(name.as_str(), &done)
            {
                tracing::warn!(error = %e, "could not persist the finished task");
            }
            let code = result.as_ref().err().map_or("ok", |e| e.code().as_str());
            this.metrics.operation(operation, code, started.elapsed());
            match &result {
                Ok(()) => {
                    tracing::info!(task.id = %task.id, package.name = %name, operation, elapsed_ms = started.elapsed().as_millis() as u64, "operation done")
                }
                Err(e) => {
                    tracing::warn!(task.id = %task.id, package.name = %name, operation, error = %e, "operation failed")
                }
            }
            // Collect old versions after answering, still under the lock's turn order.
            let gc = this.clone();
            tokio::spawn(async move { gc.gc().await });
            result
        });
        handle.await.map_err(|source| DaemonError::TaskFailed {
            what: "operation task",
            source,
        })?
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, DaemonError>
    where
        F: FnOnce() -> Result<T, DaemonError> + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|source| DaemonError::TaskFailed {
                what: "blocking task",
                source,
            })?
    }

    async fn hook(
        &self,
        event: HookEvent,
        name: &PackageName,
        version: &Version,
        args: &[String],
    ) -> Result<(), DaemonError> {
        let dir = self.repo.version_dir(name, version);
        hooks::run(
            event,
            name,
            version,
            &dir,
            args,
            self.config.packages.hook_timeout.0,
        )
        .await?;
        Ok(())
    }

    /// Fetches a package into a fresh staging directory: resolves its source first (for a
    /// registry: the index and manifest, not the payload), checks disk space against the
    /// size that tells, and only then downloads and unpacks (`outpost_fetch::prepare`).
    async fn fetch(
        self: &Arc<Self>,
        resolved: &ResolvedPackage,
        label: &str,
        cell: Arc<ProgressCell>,
        extensions: &[String],
    ) -> Result<StagingDir, DaemonError> {
        let ctx = FetchContext::new(
            RegistrySettings::from_config(&self.config.registry),
            self.limits,
        )
        .with_progress(cell);
        let prepared = outpost_fetch::prepare(resolved, &ctx)
            .await?
            .with_extensions(extensions)?;
        self.check_disk_space(prepared.required_bytes())?;
        let staged = self.repo.staging(label)?;
        prepared.fetch(staged.path(), &ctx).await?;
        Ok(staged)
    }

    /// Refuses a package of `size` bytes (when known) unless the root's filesystem has that
    /// much free, plus a margin.
    fn check_disk_space(&self, size: Option<u64>) -> Result<(), DaemonError> {
        let Some(size) = size else {
            return Ok(());
        };
        let required = size.saturating_add(DISK_MARGIN);
        let available = available_space(self.repo.root())?;
        if available < required {
            return Err(DaemonError::NotEnoughDiskSpace {
                root: self.repo.root().to_path_buf(),
                available,
                required,
            });
        }
        Ok(())
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
pub(crate) fn available_space(path: &Path) -> Result<u64, DaemonError> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
