//! The runtime: one embedded interpreter per process, and the loader of checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use outpost_types::config::AgentConfig;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use crate::collector::{self, Collector, CurrentCheck};
use crate::conf_d::{CheckConfigFile, validate_check_name};
use crate::context::{self, AgentContext};
use crate::error::{Error, PythonException};
use crate::guards;
use crate::id::CheckId;
use crate::instance::CheckInstance;
use crate::interpreter::{self, PythonInfo};
use crate::memtrack::{self, MemorySnapshot, OwnerGuard, Slot};
use crate::pyutil::{capture, display, json_to_py};
use crate::submission::ExternalTags;

/// How to start the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The virtual environment with `datadog-checks-base` (its `bin/python` becomes
    /// `sys.executable`, its site-packages are importable).
    pub python_venv: PathBuf,
    /// Directory of custom checks (`checks.d`), appended to `sys.path`.
    pub checks_dir: Option<PathBuf>,
    /// The agent's run directory (`<root>/run`); the persistent cache lives in
    /// `<run_dir>/checks-cache/`, and `get_config("run_path")` answers it.
    pub run_dir: PathBuf,
    /// The `agent:` section of the configuration file: hostname, version reported to
    /// checks, `memtrack_enabled`, and every key `get_config` may be asked for.
    pub agent: AgentConfig,
}

impl RuntimeConfig {
    /// A configuration with the default `agent:` section.
    pub fn new(python_venv: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            python_venv: python_venv.into(),
            checks_dir: None,
            run_dir: run_dir.into(),
            agent: AgentConfig::default(),
        }
    }

    /// Sets the custom checks directory.
    pub fn with_checks_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checks_dir = Some(dir.into());
        self
    }

    /// Sets the `agent:` section.
    pub fn with_agent_config(mut self, agent: AgentConfig) -> Self {
        self.agent = agent;
        self
    }
}

/// A check class found by the loader.
#[derive(Debug)]
struct CheckClass {
    class: Py<PyType>,
    version: String,
    module: String,
    loaded_as_wheel: bool,
    file: Option<PathBuf>,
    /// Set once the deprecation warning of the `agentConfig` constructor was logged.
    legacy_warned: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    python: PythonInfo,
    agent_check: Py<PyType>,
    context: Arc<AgentContext>,
    checks_dir: Option<PathBuf>,
    classes: Mutex<HashMap<String, Arc<CheckClass>>>,
}

/// The check runtime of this process. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// An instance of a configuration that could not be instantiated.
#[derive(Debug)]
pub struct InstanceLoadError {
    /// 0-based index of the instance in its file.
    pub index: usize,
    /// The ID it would have had.
    pub check_id: CheckId,
    /// Why.
    pub error: Error,
}

/// A check class and its instances for one configuration file.
#[derive(Debug)]
pub struct LoadedCheck {
    /// Check name.
    pub name: String,
    /// `__version__` of its module, or `unversioned`.
    pub version: String,
    /// The module it was found in (`datadog_checks.<name>` or `<name>`).
    pub module: String,
    /// True when found in the `datadog_checks` namespace (an installed integration).
    pub loaded_as_wheel: bool,
    /// The module's file.
    pub file: Option<PathBuf>,
    /// One entry per instance of the file, in file order.
    pub instances: Vec<Result<CheckInstance, InstanceLoadError>>,
}

impl Runtime {
    /// Starts the embedded interpreter and the runtime. Call once per process.
    ///
    /// # Errors
    /// When Python cannot be used ([`Error::is_python_unavailable`]): the venv is missing,
    /// not a venv, made for another Python, the interpreter fails to initialise,
    /// `datadog_checks` cannot be imported, or the interpreter already runs. Never panics or
    /// aborts for these; the rest of the process keeps working.
    pub fn start(config: RuntimeConfig) -> Result<Runtime, Error> {
        let memtrack = config.agent.memtrack_enabled;
        interpreter::start(Some(&config.python_venv), memtrack)?;
        let ctx = context::install(Arc::new(AgentContext::new(
            config.agent.clone(),
            config.run_dir.clone(),
        )));
        let venv = config.python_venv.clone();
        let checks_dir = config.checks_dir.clone();
        let (python, agent_check) = Python::attach(|py| -> Result<_, Error> {
            let sys = py.import("sys").map_err(|e| Error::Python {
                context: "importing sys".into(),
                source: capture(py, &e),
            })?;
            if let Some(dir) = &checks_dir {
                let path = sys
                    .getattr("path")
                    .and_then(|p| p.call_method1("append", (dir.display().to_string(),)));
                if let Err(e) = path {
                    return Err(Error::Python {
                        context: "adding the checks directory to sys.path".into(),
                        source: capture(py, &e),
                    });
                }
            }
            // rtloader imports `datadog_checks.checks`, a compatibility package that also
            // pulls in the database and network helpers (about 1 MiB); its `AgentCheck` is
            // the same class as `datadog_checks.base.AgentCheck`, imported here.
            let agent_check = py
                .import("datadog_checks.base")
                .and_then(|m| m.getattr("AgentCheck"))
                .and_then(|c| Ok(c.cast_into::<PyType>()?.unbind()))
                .map_err(|e| Error::BaseMissing {
                    venv: venv.clone(),
                    source: capture(py, &e),
                })?;
            let python = interpreter::info(py, Some(&venv)).map_err(|e| Error::Python {
                context: "reading the interpreter's details".into(),
                source: capture(py, &e),
            })?;
            if memtrack {
                // SAFETY: the GIL is held, so no other thread uses the MEM/OBJ allocators.
                unsafe { memtrack::confirm() };
            }
            guards::install(py)?;
            Ok((python, agent_check))
        })?;
        let limit = config.agent.check_memory_limit.map(|b| b.0);
        memtrack::set_check_limit(limit);
        if limit.is_some() && !memtrack::enabled() {
            tracing::warn!(
                "agent.check_memory_limit has no effect: memory tracking is off (agent.memtrack_enabled)"
            );
        }
        tracing::info!(
            python.version = %python.version,
            python.prefix = %python.prefix.display(),
            memtrack = memtrack::enabled(),
            "Python check runtime started"
        );
        Ok(Runtime {
            inner: Arc::new(Inner {
                python,
                agent_check,
                context: ctx,
                checks_dir,
                classes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The embedded interpreter's details.
    pub fn python(&self) -> &PythonInfo {
        &self.inner.python
    }

    /// The hostname reported to checks.
    pub fn hostname(&self) -> &str {
        &self.inner.context.hostname
    }

    /// The version reported to checks.
    pub fn reported_version(&self) -> &str {
        &self.inner.context.version
    }

    /// The custom checks directory, if any.
    pub fn checks_dir(&self) -> Option<&Path> {
        self.inner.checks_dir.as_deref()
    }

    /// A snapshot of the memory tracking counters (see [`crate::memtrack`]).
    pub fn memory(&self) -> MemorySnapshot {
        memtrack::snapshot()
    }

    /// External tags set while no check was running on the calling thread (a check's own
    /// thread, for example). Taken out: a second call returns only newer ones.
    pub fn take_unattributed_external_tags(&self) -> Vec<ExternalTags> {
        std::mem::take(
            &mut *crate::modules::datadog_agent::UNATTRIBUTED_EXTERNAL_TAGS
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Loads check `name` for one configuration file: imports its module (first
    /// `datadog_checks.<name>`, then `<name>` from the checks directory; cached after the
    /// first success), picks the leaf `AgentCheck` subclass, and instantiates it once per
    /// instance as `klass(name=, init_config=, instances=(instance,))` (retried with the
    /// deprecated `agentConfig=` argument when that raises, as the Go agent does) with
    /// `check_id` set.
    ///
    /// # Errors
    /// The module cannot be imported ([`Error::Import`], with the traceback) or has no check
    /// class ([`Error::NoCheckClass`]). Instances that fail on their own (their `__init__`
    /// raises, or they duplicate another instance) are reported in
    /// [`LoadedCheck::instances`] without failing the others.
    pub fn load_check(&self, name: &str, config: &CheckConfigFile) -> Result<LoadedCheck, Error> {
        validate_check_name(name)?;
        Python::attach(|py| {
            let class = self.check_class(py, name)?;
            let mut seen: Vec<CheckId> = Vec::new();
            let mut instances = Vec::with_capacity(config.instances.len());
            for (index, instance) in config.instances.iter().enumerate() {
                let id = CheckId::build(name, config.digest, instance, &config.init_config);
                if let Some(first) = seen.iter().position(|s| s == &id) {
                    instances.push(Err(InstanceLoadError {
                        index,
                        check_id: id.clone(),
                        error: Error::DuplicateInstance {
                            path: config.path.clone(),
                            index,
                            first,
                            check_id: id.to_string(),
                        },
                    }));
                    continue;
                }
                seen.push(id.clone());
                instances.push(
                    self.instantiate(py, &class, name, config, index, &id)
                        .map_err(|error| InstanceLoadError {
                            index,
                            check_id: id,
                            error,
                        }),
                );
            }
            Ok(LoadedCheck {
                name: name.to_owned(),
                version: class.version.clone(),
                module: class.module.clone(),
                loaded_as_wheel: class.loaded_as_wheel,
                file: class.file.clone(),
                instances,
            })
        })
    }

    fn instantiate(
        &self,
        py: Python<'_>,
        class: &Arc<CheckClass>,
        name: &str,
        config: &CheckConfigFile,
        index: usize,
        id: &CheckId,
    ) -> Result<CheckInstance, Error> {
        let settings = config
            .instance_settings(index)
            .expect("instances[index] exists: the caller iterates over them");
        let collector = Arc::new(Collector::new(
            id.to_string(),
            name.to_owned(),
            settings.service.as_deref(),
        ));
        collector::register(&collector);
        let slot = Slot::acquire(py, id.as_str(), name);
        let created = {
            let _current = CurrentCheck::enter(&collector);
            let _owner = OwnerGuard::enter(slot.as_ref());
            construct(py, class, name, config, index, &self.inner.context).and_then(|obj| {
                obj.setattr("check_id", id.as_str())?;
                Ok(obj.unbind())
            })
        };
        match created {
            Ok(check) => Ok(CheckInstance::new(
                id.clone(),
                name.to_owned(),
                class.version.clone(),
                config.path.clone(),
                index,
                settings,
                check,
                collector,
                slot,
            )),
            Err(e) => {
                collector::unregister(&collector);
                Err(Error::Instantiate {
                    check_id: id.to_string(),
                    exception: capture(py, &e),
                })
            }
        }
    }

    /// The check class of `name`, importing it the first time.
    fn check_class(&self, py: Python<'_>, name: &str) -> Result<Arc<CheckClass>, Error> {
        if let Some(c) = self
            .inner
            .classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(Arc::clone(c));
        }
        let class = Arc::new(self.import_check(py, name)?);
        self.inner
            .classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), Arc::clone(&class));
        Ok(class)
    }

    fn import_check(&self, py: Python<'_>, name: &str) -> Result<CheckClass, Error> {
        let candidates = [format!("datadog_checks.{name}"), name.to_owned()];
        let mut errors: Vec<Error> = Vec::new();
        for (i, module_name) in candidates.iter().enumerate() {
            let module = match py.import(module_name.as_str()) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(Error::Import {
                        module: module_name.clone(),
                        source: capture(py, &e),
                    });
                    continue;
                }
            };
            match find_check_class(py, &module, self.inner.agent_check.bind(py)) {
                Ok(Some(class)) => {
                    let version = module
                        .getattr("__version__")
                        .ok()
                        .and_then(|v| v.extract::<String>().ok())
                        .unwrap_or_else(|| "unversioned".to_owned());
                    let file = module
                        .getattr("__file__")
                        .ok()
                        .and_then(|f| f.extract::<String>().ok())
                        .map(PathBuf::from);
                    return Ok(CheckClass {
                        class: class.unbind(),
                        version,
                        module: module_name.clone(),
                        loaded_as_wheel: i == 0,
                        file,
                        legacy_warned: AtomicBool::new(false),
                    });
                }
                Ok(None) => errors.push(Error::NoCheckClass {
                    module: module_name.clone(),
                }),
                Err(e) => errors.push(Error::Python {
                    context: format!("inspecting module '{module_name}'"),
                    source: capture(py, &e),
                }),
            }
        }
        // Prefer the error of a module that exists (a real import failure, or no class)
        // over "no module named ...".
        let existing = errors.iter().position(|e| match e {
            Error::Import { module, source } => !source_is_missing(source, module),
            _ => true,
        });
        let index = existing.unwrap_or(errors.len().saturating_sub(1));
        Err(errors.swap_remove(index))
    }
}

/// The keyword arguments of a constructor call, built afresh for each call (a constructor
/// may change the dicts it was given): `name`, `init_config`, `instances=(instance,)`.
fn constructor_kwargs<'py>(
    py: Python<'py>,
    name: &str,
    config: &CheckConfigFile,
    index: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("name", name)?;
    kwargs.set_item("init_config", config.init_config.to_python(py)?)?;
    let instance = config.instances[index].to_python(py)?;
    kwargs.set_item("instances", PyTuple::new(py, [instance])?)?;
    Ok(kwargs)
}

/// Instantiates `class` for instance `index` of `config` as the Go agent does:
/// `klass(name=, init_config=, instances=(instance,))`, and when that raises, the deprecated
/// form with `agentConfig=<the agent's settings>` (legacy constructors such as
/// `GenericPrometheusCheck(name, init_config, agentConfig, instances=None)` require it). A
/// constructor that succeeds only in the deprecated form gets a deprecation warning in the
/// log, once per check class.
///
/// # Errors
/// When both calls raise, the first call's exception: the one a check written for the
/// current API needs. The exception is the second call's when the first one only said that
/// the constructor requires `agentConfig` (a `TypeError` naming it): the check is then a
/// legacy one, and what stopped its constructor is in the second.
fn construct<'py>(
    py: Python<'py>,
    class: &CheckClass,
    name: &str,
    config: &CheckConfigFile,
    index: usize,
    agent: &AgentContext,
) -> PyResult<Bound<'py, PyAny>> {
    let klass = class.class.bind(py);
    let first = klass.call((), Some(&constructor_kwargs(py, name, config, index)?));
    guards::after_check_code(py);
    let first = match first {
        Ok(check) => return Ok(check),
        Err(e) => e,
    };
    let legacy = constructor_kwargs(py, name, config, index).and_then(|kwargs| {
        kwargs.set_item("agentConfig", json_to_py(py, &agent.settings)?)?;
        let check = klass.call((), Some(&kwargs));
        guards::after_check_code(py);
        check
    });
    match legacy {
        Ok(check) => {
            if !class.legacy_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    check.name = %name,
                    check.module = %class.module,
                    "passing `agentConfig` to the constructor is deprecated, please use the \
                     `get_config` function from the 'datadog_agent' package"
                );
            }
            Ok(check)
        }
        Err(second) => {
            tracing::debug!(
                check.name = %name,
                error = %display(second.value(py).as_any()),
                "the deprecated constructor with `agentConfig` failed too"
            );
            if requires_agent_config(py, &first) {
                Err(second)
            } else {
                Err(first)
            }
        }
    }
}

/// True when `err` is the `TypeError` of a constructor called without its required
/// `agentConfig` argument.
fn requires_agent_config(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyTypeError>(py)
        && display(err.value(py).as_any()).contains("'agentConfig'")
}

/// True when the import error says that `module` itself (or its top package) does not
/// exist, as opposed to the module existing and failing to import.
fn source_is_missing(source: &PythonException, module: &str) -> bool {
    source.kind == "ModuleNotFoundError"
        && (source.message == format!("No module named '{module}'")
            || module
                .split('.')
                .next()
                .is_some_and(|top| source.message == format!("No module named '{top}'")))
}

/// The first attribute of `module`, in sorted name order, that is a subclass of
/// `agent_check` (not `agent_check` itself) and has no subclasses of its own.
pub(crate) fn find_check_class<'py>(
    py: Python<'py>,
    module: &Bound<'py, PyModule>,
    agent_check: &Bound<'py, PyType>,
) -> PyResult<Option<Bound<'py, PyType>>> {
    Ok(leaf_check_classes(py, module, agent_check)?
        .into_iter()
        .next())
}

/// Every leaf subclass of `agent_check` among `module`'s attributes, in sorted name order.
pub(crate) fn leaf_check_classes<'py>(
    _py: Python<'py>,
    module: &Bound<'py, PyModule>,
    agent_check: &Bound<'py, PyType>,
) -> PyResult<Vec<Bound<'py, PyType>>> {
    let mut names: Vec<String> = module.dir()?.extract()?;
    names.sort();
    let mut found = Vec::new();
    for attr in names {
        let Ok(value) = module.getattr(attr.as_str()) else {
            continue;
        };
        let Ok(class) = value.cast_into::<PyType>() else {
            continue;
        };
        if class.is(agent_check) || !class.is_subclass(agent_check)? {
            continue;
        }
        let subclasses = class.call_method0("__subclasses__")?;
        if subclasses
            .cast::<PyList>()
            .map(|l| l.is_empty())
            .unwrap_or(false)
        {
            found.push(class);
        }
    }
    Ok(found)
}
