//! The crate's one error type, and the owned form of a Python exception.

use std::fmt;
use std::path::PathBuf;

use outpost_types::ErrorCode;
use serde::Serialize;

/// A Python exception, captured while the GIL was held so that it can travel without it.
///
/// `traceback` is the text `traceback.format_exception` gives (empty when Python had none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonException {
    /// The exception's class name, e.g. `ModuleNotFoundError`.
    pub kind: String,
    /// `str(exception)`.
    pub message: String,
    /// The formatted traceback, `Traceback (most recent call last): ...`.
    pub traceback: String,
}

impl fmt::Display for PythonException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }
    }
}

impl std::error::Error for PythonException {}

/// What is wrong with a configuration file that is YAML but not a check configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The document is not a mapping.
    NotAMapping {
        /// What it is instead (`a list`, `a string`, ...).
        found: &'static str,
    },
    /// `init_config` is neither a mapping nor null.
    InitConfig {
        /// What it is instead.
        found: &'static str,
    },
    /// There is no `instances` key (and no `logs` key either).
    MissingInstances,
    /// `instances` is not a list.
    Instances {
        /// What it is instead.
        found: &'static str,
    },
    /// An entry of `instances` is not a mapping.
    Instance {
        /// 0-based index of the entry.
        index: usize,
        /// What it is instead.
        found: &'static str,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigProblem::NotAMapping { found } => write!(
                f,
                "the file must be a mapping with `init_config` and `instances`, not {found}"
            ),
            ConfigProblem::InitConfig { found } => {
                write!(f, "`init_config` must be a mapping or null, not {found}")
            }
            ConfigProblem::MissingInstances => {
                f.write_str("missing `instances` (a list of mappings)")
            }
            ConfigProblem::Instances { found } => {
                write!(f, "`instances` must be a list of mappings, not {found}")
            }
            ConfigProblem::Instance { index, found } => {
                write!(f, "instance {index} must be a mapping, not {found}")
            }
        }
    }
}

/// Why the embedded interpreter did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitFailure {
    /// CPython's start-up returned a failed `PyStatus`.
    Status {
        /// The CPython function that failed, when it says.
        function: Option<String>,
        /// CPython's message, when it gives one.
        message: Option<String>,
        /// The exit code it asked for (meaningful without a message).
        exit_code: i32,
    },
    /// A start earlier in this process failed; CPython cannot be started twice.
    EarlierStart {
        /// Why the earlier start failed.
        earlier: Box<InitFailure>,
    },
    /// Something else in the process initialised CPython first.
    InitialisedElsewhere,
    /// The interpreter path (from the venv) contains a NUL byte.
    NulInProgramPath,
}

impl fmt::Display for InitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitFailure::Status {
                function,
                message,
                exit_code,
            } => match (function, message) {
                (_, None) => write!(f, "exit with status {exit_code}"),
                (None, Some(msg)) => f.write_str(msg),
                (Some(func), Some(msg)) => write!(f, "{func}: {msg}"),
            },
            InitFailure::EarlierStart { earlier } => {
                write!(f, "an earlier start in this process failed: {earlier}")
            }
            InitFailure::InitialisedElsewhere => {
                f.write_str("the interpreter was initialised outside the check runtime")
            }
            InitFailure::NulInProgramPath => f.write_str("the venv path contains a NUL byte"),
        }
    }
}

/// Everything that can go wrong in the check runtime.
///
/// Variants carry the path, check or instance they concern. [`Error::code`] maps each to the
/// API's error code; [`Error::is_python_unavailable`] tells the start-up failures apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured virtual environment does not exist.
    #[error(
        "the Python virtual environment {} does not exist (set agent.python_venv or \
         --python-venv to a venv with datadog-checks-base)",
        venv.display()
    )]
    VenvMissing {
        /// The configured venv.
        venv: PathBuf,
    },
    /// The configured virtual environment cannot be read.
    #[error("cannot read the Python virtual environment: {source}")]
    VenvUnreadable {
        /// The configured venv.
        venv: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The configured directory is not a virtual environment.
    #[error(
        "{} is not a Python virtual environment: {} is missing",
        venv.display(),
        missing.display()
    )]
    NotAVenv {
        /// The configured venv.
        venv: PathBuf,
        /// The file that should be there (`pyvenv.cfg`, `bin/python`).
        missing: PathBuf,
    },
    /// The virtual environment was made with another Python than the embedded one.
    #[error(
        "the Python virtual environment {} is for Python {venv_version}, but outpost embeds \
         Python {embedded}; recreate it with Python {embedded}",
        venv.display()
    )]
    VenvVersionMismatch {
        /// The configured venv.
        venv: PathBuf,
        /// `version` from its `pyvenv.cfg`.
        venv_version: String,
        /// The embedded interpreter's `major.minor`.
        embedded: String,
    },
    /// CPython refused to initialise.
    #[error("the embedded Python interpreter failed to start: {failure}")]
    InterpreterInit {
        /// Why (CPython's status, or an earlier failed start).
        failure: InitFailure,
    },
    /// The interpreter started but `datadog_checks.base.AgentCheck` cannot be imported.
    #[error(
        "datadog-checks-base cannot be imported from {}: {source}",
        venv.display()
    )]
    BaseMissing {
        /// The configured venv.
        venv: PathBuf,
        /// The import error.
        #[source]
        source: PythonException,
    },
    /// The interpreter runs once per process and was already started.
    #[error(
        "the Python runtime already runs in this process (started with {}); it starts once",
        venv.display()
    )]
    AlreadyStarted {
        /// The venv it was started with.
        venv: PathBuf,
    },
    /// A check name that cannot be a module name or a configuration file name.
    #[error(
        "invalid check name {name:?}: use letters, digits and underscores, not starting with a digit"
    )]
    InvalidCheckName {
        /// The refused name.
        name: String,
    },
    /// Reading a configuration file or directory failed.
    #[error("reading {}: {source}", path.display())]
    ConfigRead {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not valid YAML.
    #[error("invalid YAML in {}{}: {}", path.display(), fmt_line(*line, *column), source.without_snippet())]
    ConfigYaml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<u64>,
        /// 1-based column of the error, when known.
        column: Option<u64>,
        /// The parser's error (boxed: it is large).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A configuration file is YAML but not shaped as a check configuration.
    #[error("invalid check configuration {}: {problem}", path.display())]
    ConfigShape {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        problem: ConfigProblem,
    },
    /// No configuration file exists for the check.
    #[error(
        "no configuration for check '{name}' in {} (looked for {name}.d/*.yaml and {name}.yaml)",
        conf_dir.display()
    )]
    NoConfig {
        /// The check.
        name: String,
        /// The configuration directory searched.
        conf_dir: PathBuf,
    },
    /// The check's module could not be imported.
    #[error("unable to import module '{module}': {source}")]
    Import {
        /// The module whose import failed (the last one tried when all failed).
        module: String,
        /// The import error, with its traceback.
        #[source]
        source: PythonException,
    },
    /// The module has no leaf subclass of `AgentCheck`.
    #[error("unable to find a subclass of the base check in module '{module}'")]
    NoCheckClass {
        /// The imported module.
        module: String,
    },
    /// The check class could not be instantiated for an instance. Shown as the check's own
    /// exception (`ConfigurationError: ...`), as a run error is: the check ID goes with the
    /// instance it concerns. The exception is the message, so it is not also the `source()`.
    #[error("{exception}")]
    Instantiate {
        /// The ID the instance would have had.
        check_id: String,
        /// The constructor's exception, with its traceback.
        exception: PythonException,
    },
    /// Two instances of one configuration file have the same configuration, hence the same ID.
    #[error(
        "instance {index} of {} duplicates instance {first} (same configuration, same ID {check_id})",
        path.display()
    )]
    DuplicateInstance {
        /// The configuration file.
        path: PathBuf,
        /// 0-based index of the duplicate.
        index: usize,
        /// 0-based index of the instance it repeats.
        first: usize,
        /// The shared ID.
        check_id: String,
    },
    /// Some other Python call failed.
    #[error("{context}: {source}")]
    Python {
        /// What was being done.
        context: String,
        /// The Python error.
        #[source]
        source: PythonException,
    },
    /// A check file given to validation cannot be read.
    #[error("reading check file {}: {source}", path.display())]
    CheckFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn fmt_line(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

impl Error {
    /// True for the failures that leave the process without a usable Python: missing or
    /// broken venv, interpreter start-up failure, datadog-checks-base not importable, or a
    /// second start. Everything else in the process keeps working.
    pub fn is_python_unavailable(&self) -> bool {
        matches!(
            self,
            Error::VenvMissing { .. }
                | Error::VenvUnreadable { .. }
                | Error::NotAVenv { .. }
                | Error::VenvVersionMismatch { .. }
                | Error::InterpreterInit { .. }
                | Error::BaseMissing { .. }
                | Error::AlreadyStarted { .. }
        )
    }

    /// The Python traceback behind this error, when there is one.
    pub fn traceback(&self) -> Option<&str> {
        match self {
            Error::BaseMissing { source, .. }
            | Error::Import { source, .. }
            | Error::Instantiate {
                exception: source, ..
            }
            | Error::Python { source, .. } => {
                Some(source.traceback.as_str()).filter(|t| !t.is_empty())
            }
            _ => None,
        }
    }

    /// The API error code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            _ if self.is_python_unavailable() => ErrorCode::Unavailable,
            Error::InvalidCheckName { .. }
            | Error::ConfigYaml { .. }
            | Error::ConfigShape { .. }
            | Error::DuplicateInstance { .. }
            | Error::Import { .. }
            | Error::NoCheckClass { .. }
            | Error::Instantiate { .. } => ErrorCode::BadRequest,
            Error::NoConfig { .. } => ErrorCode::NotFound,
            Error::ConfigRead { .. } | Error::CheckFile { .. } => ErrorCode::Filesystem,
            _ => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_failures_read_as_cpython_said() {
        let status = |function: Option<&str>, message: Option<&str>| InitFailure::Status {
            function: function.map(str::to_owned),
            message: message.map(str::to_owned),
            exit_code: 3,
        };
        let failed = |failure| Error::InterpreterInit { failure }.to_string();
        assert_eq!(
            failed(status(Some("init_fs_encoding"), Some("bad codec"))),
            "the embedded Python interpreter failed to start: init_fs_encoding: bad codec"
        );
        assert_eq!(status(None, Some("bad codec")).to_string(), "bad codec");
        assert_eq!(status(Some("f"), None).to_string(), "exit with status 3");
        let again = Error::InterpreterInit {
            failure: InitFailure::EarlierStart {
                earlier: Box::new(InitFailure::NulInProgramPath),
            },
        };
        assert_eq!(
            again.to_string(),
            "the embedded Python interpreter failed to start: an earlier start in this \
             process failed: the venv path contains a NUL byte"
        );
        assert!(again.is_python_unavailable());
        assert_eq!(again.code(), ErrorCode::Unavailable);
    }

    #[test]
    fn config_problems_name_the_key() {
        let e = Error::ConfigShape {
            path: PathBuf::from("/c/x.yaml"),
            problem: ConfigProblem::Instance {
                index: 2,
                found: "a string",
            },
        };
        assert_eq!(
            e.to_string(),
            "invalid check configuration /c/x.yaml: instance 2 must be a mapping, not a string"
        );
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(
            ConfigProblem::MissingInstances.to_string(),
            "missing `instances` (a list of mappings)"
        );
    }

    #[test]
    fn constructor_errors_read_as_the_checks_exception() {
        let e = Error::Instantiate {
            check_id: "x:1".into(),
            exception: PythonException {
                kind: "ConfigurationError".into(),
                message: "`p` is an invalid `port`".into(),
                traceback: "Traceback (most recent call last):\n...".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "ConfigurationError: `p` is an invalid `port`"
        );
        assert!(
            std::error::Error::source(&e).is_none(),
            "not repeated as a cause"
        );
        assert_eq!(
            e.traceback(),
            Some("Traceback (most recent call last):\n...")
        );
    }
}
