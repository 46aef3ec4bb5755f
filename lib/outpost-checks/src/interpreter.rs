//! Starting the embedded CPython, once per process.
//!
//! The start uses CPython's `PyConfig` API instead of `Py_Initialize`, so that a broken
//! installation is an error value (`PyStatus`) rather than a fatal abort of the process:
//!
//! 1. the builtin modules are appended to the inittab;
//! 2. pre-initialisation turns on UTF-8 mode;
//! 3. the program name is the venv's `bin/python`: CPython finds `pyvenv.cfg` beside it, so
//!    `sys.prefix` is the venv, its site-packages are on `sys.path`, and `sys.executable`
//!    is a real interpreter that can run `-c` subprocesses (which
//!    `AgentCheck.load_config` does);
//! 4. Python's signal handlers are not installed (Ctrl-C stays the agent's), C stdio is left
//!    alone, the user site directory is off; `PYTHON*` environment variables are honoured as
//!    by any Python.
//!
//! The GIL is released when start-up completes; every later use attaches to it.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use pyo3::ffi;
use serde::Serialize;

use crate::error::{Error, InitFailure};

/// The Python the binary was built against (`PYO3_PYTHON`), if known.
const BUILD_PYTHON: &str = env!("OUTPOST_BUILD_PYTHON");

/// Facts about the embedded interpreter, for `outpost version` and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonInfo {
    /// `major.minor.micro`.
    pub version: String,
    /// `sys.version`.
    pub full_version: String,
    /// `sys.base_prefix`: where the embedded Python's standard library lives.
    pub base_prefix: PathBuf,
    /// `sys.prefix`: the venv when one is used.
    pub prefix: PathBuf,
    /// `sys.executable`.
    pub executable: PathBuf,
    /// The libpython file mapped into this process.
    pub library: Option<PathBuf>,
    /// The venv the runtime was started with.
    pub venv: Option<PathBuf>,
    /// `datadog_checks.base.__version__`, when importable.
    pub checks_base_version: Option<String>,
}

/// How the interpreter of this process was started.
#[derive(Debug, Clone)]
enum Started {
    Ok { venv: Option<PathBuf> },
    Failed { failure: InitFailure },
}

static STARTED: Mutex<Option<Started>> = Mutex::new(None);

/// The embedded interpreter's version string (`Py_GetVersion`), available without starting it.
pub fn embedded_version() -> String {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string and may be called before
    // initialisation.
    let full = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    full.to_string_lossy().into_owned()
}

/// `major.minor` of the embedded interpreter.
pub fn embedded_major_minor() -> String {
    let v = embedded_version();
    let numbers = v.split_whitespace().next().unwrap_or("");
    numbers.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The libpython shared object mapped into this process, from `/proc/self/maps`.
pub fn embedded_library() -> Option<PathBuf> {
    let maps = fs_err::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libpython"))
        })
        .map(PathBuf::from)
}

/// Checks that `venv` is a virtual environment made for the embedded Python.
pub(crate) fn check_venv(venv: &Path) -> Result<PathBuf, Error> {
    match venv.try_exists() {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::VenvMissing {
                venv: venv.to_owned(),
            });
        }
        Err(_) => {
            // Say which path and why, through fs-err's message.
            let source = fs_err::metadata(venv)
                .err()
                .unwrap_or_else(|| std::io::Error::other("cannot be examined"));
            return Err(Error::VenvUnreadable {
                venv: venv.to_owned(),
                source,
            });
        }
    }
    let cfg = venv.join("pyvenv.cfg");
    let text = match fs_err::read_to_string(&cfg) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotAVenv {
                venv: venv.to_owned(),
                missing: cfg,
            });
        }
        Err(source) => {
            return Err(Error::VenvUnreadable {
                venv: venv.to_owned(),
                source,
            });
        }
    };
    let python = venv.join("bin/python");
    if !python.exists() {
        return Err(Error::NotAVenv {
            venv: venv.to_owned(),
            missing: python,
        });
    }
    let venv_version = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_owned())
    });
    if let Some(v) = venv_version {
        let venv_mm = v.split('.').take(2).collect::<Vec<_>>().join(".");
        let embedded = embedded_major_minor();
        if venv_mm != embedded {
            return Err(Error::VenvVersionMismatch {
                venv: venv.to_owned(),
                venv_version: v,
                embedded,
            });
        }
    }
    Ok(python)
}

fn status_error(status: &ffi::PyStatus) -> Option<InitFailure> {
    // SAFETY: PyStatus_Exception only reads the struct.
    if unsafe { ffi::PyStatus_Exception(*status) } == 0 {
        return None;
    }
    let text = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: CPython's status strings are static NUL-terminated strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let given = |s: String| Some(s).filter(|s| !s.is_empty());
    Some(InitFailure::Status {
        function: given(text(status.func)),
        message: given(text(status.err_msg)),
        exit_code: status.exitcode,
    })
}

/// Starts the interpreter (once per process). `venv`: the virtual environment, or `None`
/// for the bare interpreter (used by `outpost version` without one). `memtrack`: install
/// memory tracking before the interpreter allocates anything.
pub(crate) fn start(venv: Option<&Path>, memtrack: bool) -> Result<(), Error> {
    let mut started = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
    match started.as_ref() {
        Some(Started::Ok { venv: v }) => {
            return Err(Error::AlreadyStarted {
                venv: v.clone().unwrap_or_default(),
            });
        }
        Some(Started::Failed { failure }) => {
            return Err(Error::InterpreterInit {
                failure: InitFailure::EarlierStart {
                    earlier: Box::new(failure.clone()),
                },
            });
        }
        None => {}
    }
    let program = match venv {
        Some(v) => Some(check_venv(v)?),
        None => {
            Some(PathBuf::from(BUILD_PYTHON)).filter(|p| !BUILD_PYTHON.is_empty() && p.exists())
        }
    };
    // SAFETY: plain query.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Err(Error::InterpreterInit {
            failure: InitFailure::InitialisedElsewhere,
        });
    }
    let result = init(program.as_deref(), memtrack);
    *started = Some(match &result {
        Ok(()) => Started::Ok {
            venv: venv.map(Path::to_owned),
        },
        Err(failure) => Started::Failed {
            failure: failure.clone(),
        },
    });
    result.map_err(|failure| Error::InterpreterInit { failure })
}

fn init(program: Option<&Path>, memtrack: bool) -> Result<(), InitFailure> {
    crate::modules::register();
    // SAFETY: the pre-config is initialised by CPython before use; nothing else in the
    // process uses the Python API yet (checked by the caller under the STARTED lock).
    unsafe {
        let mut pre = MaybeUninit::<ffi::PyPreConfig>::uninit();
        ffi::PyPreConfig_InitPythonConfig(pre.as_mut_ptr());
        let mut pre = pre.assume_init();
        pre.utf8_mode = 1;
        pre.parse_argv = 0;
        let status = ffi::Py_PreInitialize(&pre);
        if let Some(failure) = status_error(&status) {
            return Err(failure);
        }
    }
    let program = program
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .transpose()
        .map_err(|_| InitFailure::NulInProgramPath)?;
    // SAFETY: the config is initialised by CPython, set through its API and cleared after
    // use; Py_InitializeFromConfig reports failures as a status instead of aborting.
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        config.configure_c_stdio = 0;
        config.parse_argv = 0;
        config.user_site_directory = 0;
        config.pathconfig_warnings = 0;
        if let Some(program) = &program {
            let status = ffi::PyConfig_SetBytesString(
                &mut config,
                &mut config.program_name,
                program.as_ptr(),
            );
            if let Some(failure) = status_error(&status) {
                ffi::PyConfig_Clear(&mut config);
                return Err(failure);
            }
        }
        if memtrack {
            // Memory tracking wraps the allocators now, so that no block of the domains it
            // wraps predates it (nothing has used them yet: the pre-initialisation and the
            // config only use the raw domain).
            crate::memtrack::install();
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if let Some(failure) = status_error(&status) {
            return Err(failure);
        }
        // Release the GIL taken by initialisation; every use attaches again.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// Reads [`PythonInfo`] from the running interpreter.
pub(crate) fn info(py: pyo3::Python<'_>, venv: Option<&Path>) -> pyo3::PyResult<PythonInfo> {
    use pyo3::prelude::*;
    let sys = py.import("sys")?;
    let vi = sys.getattr("version_info")?;
    let (major, minor, micro): (u32, u32, u32) = (
        vi.getattr("major")?.extract()?,
        vi.getattr("minor")?.extract()?,
        vi.getattr("micro")?.extract()?,
    );
    let path = |name: &str| -> PyResult<PathBuf> {
        Ok(PathBuf::from(sys.getattr(name)?.extract::<String>()?))
    };
    let checks_base_version = py
        .import("datadog_checks.base")
        .and_then(|m| m.getattr("__version__"))
        .and_then(|v| v.extract::<String>())
        .ok();
    Ok(PythonInfo {
        version: format!("{major}.{minor}.{micro}"),
        full_version: sys.getattr("version")?.extract()?,
        base_prefix: path("base_prefix")?,
        prefix: path("prefix")?,
        executable: path("executable")?,
        library: embedded_library(),
        venv: venv.map(Path::to_owned),
        checks_base_version,
    })
}

/// Describes the interpreter if it runs in this process (started by [`crate::Runtime::start`]
/// or [`probe_without_venv`]), even when the runtime itself then failed (for example when
/// `datadog_checks` is missing from the venv). `None` when it never started.
pub fn running_info() -> Option<PythonInfo> {
    let venv = match STARTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        Some(Started::Ok { venv }) => venv.clone(),
        _ => return None,
    };
    pyo3::Python::attach(|py| info(py, venv.as_deref()).ok())
}

/// Starts the bare interpreter (no venv, no memory tracking) and describes it. For
/// `outpost version` when no venv is configured; the process cannot start the check runtime
/// afterwards.
pub fn probe_without_venv() -> Result<PythonInfo, Error> {
    start(None, false)?;
    pyo3::Python::attach(|py| {
        info(py, None).map_err(|e| Error::Python {
            context: "reading the interpreter's details".into(),
            source: crate::pyutil::capture(py, &e),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_checks_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = check_venv(&tmp.path().join("nope")).unwrap_err();
        assert!(matches!(missing, Error::VenvMissing { .. }), "{missing}");
        assert!(missing.is_python_unavailable());

        let not_venv = check_venv(tmp.path()).unwrap_err();
        assert!(
            matches!(&not_venv, Error::NotAVenv { missing, .. } if missing.ends_with("pyvenv.cfg")),
            "{not_venv}"
        );

        fs_err::write(
            tmp.path().join("pyvenv.cfg"),
            "home = /usr/bin\nversion = 2.7.18\n",
        )
        .unwrap();
        let no_python = check_venv(tmp.path()).unwrap_err();
        assert!(
            matches!(&no_python, Error::NotAVenv { missing, .. } if missing.ends_with("bin/python")),
            "{no_python}"
        );

        fs_err::create_dir_all(tmp.path().join("bin")).unwrap();
        fs_err::write(tmp.path().join("bin/python"), "").unwrap();
        let wrong = check_venv(tmp.path()).unwrap_err();
        assert!(
            matches!(&wrong, Error::VenvVersionMismatch { venv_version, .. } if venv_version == "2.7.18"),
            "{wrong}"
        );
        assert!(
            wrong.to_string().contains(&embedded_major_minor()),
            "{wrong}"
        );

        let mm = embedded_major_minor();
        fs_err::write(
            tmp.path().join("pyvenv.cfg"),
            format!("home = /usr/bin\nversion = {mm}.99\n"),
        )
        .unwrap();
        assert_eq!(
            check_venv(tmp.path()).unwrap(),
            tmp.path().join("bin/python")
        );
    }

    #[test]
    fn embedded_version_is_known_without_starting() {
        let mm = embedded_major_minor();
        assert!(mm.starts_with("3."), "{mm}");
        assert!(embedded_version().starts_with(&mm));
    }
}
