//! The Python check runtime: real `datadog-checks-base` checks in an embedded CPython, the way
//! the Datadog agent runs them through rtloader.
//!
//! # The API
//!
//! ```text
//! Runtime::start(RuntimeConfig) -> Result<Runtime, Error>          // once per process
//!   runtime.load_check(name, &CheckConfigFile) -> Result<LoadedCheck, Error>
//!     LoadedCheck { name, version, module, loaded_as_wheel, file,
//!                   instances: Vec<Result<CheckInstance, InstanceLoadError>> }
//!   runtime.validate(&ValidationTarget, timeout) -> Validation     // ready / not_ready / unknown
//!   runtime.memory() -> MemorySnapshot                              // also memtrack::snapshot()
//!   runtime.python() -> &PythonInfo; hostname(); reported_version()
//!   runtime.take_unattributed_external_tags() -> Vec<ExternalTags>
//!
//! CheckInstance (Send + Sync)
//!   id() -> &CheckId, name(), version(), interval(), settings() -> &InstanceSettings,
//!   config_path(), index(), memory() -> Option<MemoryStats>
//!   run() -> RunReport { check_id, started_at, duration, error: Option<CheckError>,
//!                        warnings, submissions: Submissions, metadata, external_tags,
//!                        memory_limit: Option<MemoryLimitExceeded> }
//!   cancel() -> Result<(), Error>
//!
//! conf_d::find(conf_dir, name) -> Result<Vec<CheckConfigFile>, Error>
//! conf_d::discover(conf_dir) -> Result<Discovery { configs, errors }, Error>
//! CheckConfigFile::{read, parse}; instance_settings(i) -> Option<InstanceSettings>
//! CheckId::build(name, digest, &instance, &init_config)        // FNV-1 64, see `id`
//! interpreter::{embedded_version, embedded_library, probe_without_venv, running_info}
//! ```
//!
//! # How the agent uses it
//!
//! ```text
//! let rt = Runtime::start(RuntimeConfig::new(venv, root.join("run"))
//!     .with_checks_dir(checks_d).with_agent_config(config.agent.clone()))?;
//! let found = conf_d::discover(&conf_d)?;           // found.errors: log each (names file, line)
//! for file in &found.configs {
//!     let loaded = rt.load_check(&file.name, file)?;  // Err: import error / no check class
//!     for instance in loaded.instances { /* Ok: schedule every instance.interval(); Err: report */ }
//! }
//! // on a runner thread, never two runs of one instance at once (run() serialises anyway):
//! let report = instance.run();
//! //   report.submissions -> sinks; "" hostnames mean rt.hostname() unless
//! //   instance.settings().empty_default_hostname; settings().no_index flags the samples
//! // on shutdown or unschedule: instance.cancel()
//! // /debug/vars "rtloader": rt.memory().rtloader_expvar()
//! // custom checks (not loaded_as_wheel), off the scheduling path:
//! let v = rt.validate(&ValidationTarget::Name(name), timeout);
//! //   gauge CHECK_READY_METRIC = v.metric_value(), tags v.tags(rt.reported_version())
//! ```
//!
//! # Guarantees
//!
//! * **Python may be missing.** [`Runtime::start`] returns an error value when the venv is
//!   missing or broken, the interpreter fails to start (CPython's `PyConfig` start-up reports
//!   a status instead of aborting) or `datadog_checks` cannot be imported; it never panics or
//!   aborts for these, and the rest of the process keeps working.
//! * **The GIL is held only while Python runs.** [`CheckInstance::run`] attaches for
//!   `run()`/`get_warnings()` only; several runner threads can run different instances,
//!   Python interleaving them as it does its own threads. Runs of one instance are serialised.
//! * **Wrong types are Python errors.** The builtin functions check their arguments like
//!   rtloader (`TypeError`s inside the check); nothing a check passes can crash the process.
//! * **Submissions never block Python**: they go into a per-instance collector (a short
//!   uncontended lock) and are committed after each run; see [`CheckInstance::run`] for the
//!   commit rule (after the run, whether or not it reported an error).
//! * **Legacy constructors run.** A check class whose constructor raises is instantiated
//!   again with the deprecated `agentConfig=` argument (the `agent:` settings with the
//!   defaults `get_config` applies), as the Go agent does; a deprecation warning is logged
//!   once per check. An instance that fails both ways reports the check's own exception
//!   (`ConfigurationError: ...`) with its traceback.
//! * **Check IDs** are the Go agent's layout, stable across restarts ([`id`]).
//! * **Memory tracking** counts Python allocations exactly and attributes them to check
//!   instances, with the bytes in use estimated by sampling ([`memtrack`]); it starts when
//!   [`Runtime::start`] returns, so what the interpreter and the base library allocated
//!   before is in no count but its frees.
//!
//! # Differences from the Datadog agent, on purpose
//!
//! * Histogram bucket bounds keep their 64-bit value (rtloader narrows them to a C `float`).
//! * `hostname` and service-check `message` may be `None` (read as `""`).
//! * The obfuscation functions only normalise whitespace; telemetry and issue reports are
//!   logged at trace level.
//! * YAML is read in Rust with YAML 1.1 scalars, as the agent's Go reader does (`yes`, `no`,
//!   `on`, `off`, `y`, `n` are booleans), except that dates stay strings.
//! * `AgentCheck` is taken from `datadog_checks.base` (the same class rtloader finds through
//!   the `datadog_checks.checks` compatibility package, without that package's extra
//!   imports, about 1 MiB).
//! * Memory counters count block sizes (requests rounded up to pymalloc's size classes or
//!   `malloc`'s chunks); the totals are exact, a check's `InuseBytes` is a sampled estimate,
//!   and `UntrackedFrees` is 0, the hooks being installed before the interpreter starts
//!   (see [`memtrack`]).

#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

pub mod cache;
mod collector;
pub mod conf_d;
mod context;
mod error;
pub mod guards;
pub mod id;
mod instance;
pub mod interpreter;
pub mod memtrack;
mod modules;
mod pyutil;
mod runtime;
pub mod submission;
pub mod thread_state;
mod validate;
pub mod value;

pub use conf_d::{CheckConfigFile, Discovery, InstanceSettings};
pub use error::{ConfigProblem, Error, InitFailure, PythonException};
pub use id::CheckId;
pub use instance::{CheckError, CheckInstance, MemoryLimitExceeded, RunReport};
pub use interpreter::PythonInfo;
pub use memtrack::{CheckMemory, MemorySnapshot, MemoryStats};
pub use runtime::{InstanceLoadError, LoadedCheck, Runtime, RuntimeConfig};
pub use submission::{
    CheckLog, Event, EventPlatformEvent, ExternalTags, HistogramBucket, Metric, MetricType,
    ServiceCheck, Submissions,
};
pub use validate::{CHECK_READY_METRIC, ReadyStatus, Validation, ValidationTarget};
