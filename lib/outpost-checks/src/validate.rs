//! Readiness of a check for the embedded interpreter (`outpost check validate`, and the
//! agent's `datadog.agent.check_ready` gauge).
//!
//! The modern stand-in for the agent's Python 3 linter. Under the embedded interpreter it:
//! 1. compiles every source file of the check (syntax errors make it `not_ready`);
//! 2. walks the AST for imports of modules the interpreter no longer has or will lose: the
//!    standard-library modules removed by Python 3.8 to 3.13 (`distutils`, `imp`,
//!    `asynchat`, `asyncore`, `smtpd`, `cgi`, `telnetlib`, ... flagged even when the
//!    embedded version still has them, since the next interpreter will not), Python 2 only
//!    modules, and any other module the interpreter cannot find. Imports guarded by a `try`
//!    that catches `ImportError` (compatibility fallbacks) are not flagged; imports inside
//!    functions are, since they fail only when the function runs;
//! 3. imports the check the way the loader does and requires exactly one check class (a
//!    leaf `AgentCheck` subclass; when the module holds several, one defined in the module
//!    itself is required).
//!
//! The result is `ready`, `not_ready` (with messages) or `unknown` (the validation itself
//! failed or timed out). Validation runs on its own thread. After the timeout, `unknown` is
//! returned and `TimeoutError` is raised asynchronously in that thread (a check whose import
//! takes that long is almost surely spinning in its own code, where the exception unwinds
//! cleanly; a blocking C call returns first). Python has no safe way to kill a thread: an
//! asynchronous exception landing inside the import machinery's own bookkeeping could
//! leave an import lock inconsistent, which is why the runtime never uses it on running
//! checks, only on a validation that has already overrun its deadline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::Serialize;

use crate::runtime::Runtime;

/// The gauge the agent exports for every custom check it validated.
pub const CHECK_READY_METRIC: &str = "datadog.agent.check_ready";

/// What to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationTarget {
    /// A check name, resolved as the loader does (`datadog_checks.<name>`, then `<name>`).
    Name(String),
    /// A check's `.py` file.
    File(PathBuf),
}

impl ValidationTarget {
    /// A path (contains `/` or ends with `.py`) is a file, anything else a check name.
    pub fn parse(target: &str) -> Self {
        if target.contains('/') || target.ends_with(".py") {
            Self::File(PathBuf::from(target))
        } else {
            Self::Name(target.to_owned())
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// Compiles, imports, one check class, no problematic import.
    Ready,
    /// Something in the check must change (see the messages).
    NotReady,
    /// The validation could not be completed.
    Unknown,
}

impl ReadyStatus {
    /// `ready`, `not_ready`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::NotReady => "not_ready",
            Self::Unknown => "unknown",
        }
    }
}

/// The result of validating one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// The check name (the file stem for a file).
    pub check: String,
    /// The main source file, when found.
    pub file: Option<PathBuf>,
    /// The verdict.
    pub status: ReadyStatus,
    /// Why it is not ready, or what went wrong for `unknown`.
    pub messages: Vec<String>,
}

impl Validation {
    /// The value of the `datadog.agent.check_ready` gauge: 1 for ready, else 0.
    pub fn metric_value(&self) -> f64 {
        if self.status == ReadyStatus::Ready {
            1.0
        } else {
            0.0
        }
    }

    /// The tags of the `datadog.agent.check_ready` gauge: `status:<...>`,
    /// `check_name:<...>`, `agent_version_major:<M>`, `agent_version_minor:<m>`,
    /// `agent_version_patch:<p>` (from `agent_version`, e.g. `7.52.0`; missing parts are 0).
    pub fn tags(&self, agent_version: &str) -> Vec<String> {
        let core = agent_version.split(['-', '+']).next().unwrap_or("");
        let mut parts = core.split('.').map(|p| p.trim());
        let mut next = || {
            parts
                .next()
                .filter(|p| !p.is_empty())
                .unwrap_or("0")
                .to_owned()
        };
        let (major, minor, patch) = (next(), next(), next());
        vec![
            format!("status:{}", self.status.as_str()),
            format!("check_name:{}", self.check),
            format!("agent_version_major:{major}"),
            format!("agent_version_minor:{minor}"),
            format!("agent_version_patch:{patch}"),
        ]
    }

    fn unknown(check: String, message: String) -> Self {
        Self {
            check,
            file: None,
            status: ReadyStatus::Unknown,
            messages: vec![message],
        }
    }
}

const VALIDATOR: &std::ffi::CStr = c"
import ast, importlib, importlib.util, os, sys

REMOVED = {
    'macpath': '3.8', 'dummy_threading': '3.9', '_dummy_thread': '3.9',
    'formatter': '3.10', 'parser': '3.10', 'symbol': '3.10', 'binhex': '3.11',
    'distutils': '3.12', 'imp': '3.12', 'asynchat': '3.12', 'asyncore': '3.12', 'smtpd': '3.12',
    'aifc': '3.13', 'audioop': '3.13', 'cgi': '3.13', 'cgitb': '3.13', 'chunk': '3.13',
    'crypt': '3.13', 'imghdr': '3.13', 'mailcap': '3.13', 'msilib': '3.13', 'nis': '3.13',
    'nntplib': '3.13', 'ossaudiodev': '3.13', 'pipes': '3.13', 'sndhdr': '3.13', 'spwd': '3.13',
    'sunau': '3.13', 'telnetlib': '3.13', 'uu': '3.13', 'xdrlib': '3.13', 'lib2to3': '3.13',
}
PY2_ONLY = {
    'urllib2', 'urlparse', 'ConfigParser', 'StringIO', 'cStringIO', 'cPickle', 'httplib',
    'Queue', 'HTMLParser', 'commands', 'sets', 'md5', 'sha', 'exceptions', '__builtin__',
    'thread', 'SocketServer', 'Cookie', 'cookielib', 'xmlrpclib', 'Tkinter', 'anydbm',
    'htmlentitydefs', 'robotparser', 'SimpleHTTPServer', 'BaseHTTPServer', 'CGIHTTPServer',
    'UserDict', 'UserList', 'UserString', 'copy_reg', 'popen2', 'mimetools', 'rfc822',
    'dircache', 'mhlib', 'mimify', 'multifile', 'posixfile', 'statvfs', 'compiler', 'new',
}
IMPORT_ERRORS = {'ImportError', 'ModuleNotFoundError', 'Exception', 'BaseException'}
HERE = tuple(sys.version_info[:2])


def _version(v):
    return tuple(int(x) for x in v.split('.'))


def _catches_import_error(handler):
    t = handler.type
    if t is None:
        return True
    types = t.elts if isinstance(t, ast.Tuple) else [t]
    for x in types:
        name = x.attr if isinstance(x, ast.Attribute) else getattr(x, 'id', None)
        if name in IMPORT_ERRORS:
            return True
    return False


def _guarded(node, parents):
    child = node
    parent = parents.get(child)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            if any(_catches_import_error(h) for h in parent.handlers):
                return True
        child, parent = parent, parents.get(parent)
    return False


def _findable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:
        return True


def _source_files(origin, package_dirs):
    if package_dirs:
        files = []
        for d in package_dirs:
            for root, _, names in os.walk(d):
                files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith('.py'))
        return sorted(files)
    if origin and origin.endswith('.py'):
        return [origin]
    return []


def _analyse(path, messages):
    try:
        with open(path, 'rb') as f:
            source = f.read()
    except OSError as e:
        messages.append('%s: cannot read: %s' % (path, e))
        return
    try:
        tree = compile(source, path, 'exec', ast.PyCF_ONLY_AST, dont_inherit=True)
        compile(tree, path, 'exec', dont_inherit=True)
    except SyntaxError as e:
        messages.append('%s:%s: %s: %s' % (path, e.lineno, type(e).__name__, e.msg))
        return
    except ValueError as e:
        messages.append('%s: cannot compile: %s' % (path, e))
        return
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    where = os.path.basename(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if _guarded(node, parents):
            continue
        for name in names:
            top = name.split('.')[0]
            if top == '__future__':
                continue
            if top in REMOVED:
                removed = REMOVED[top]
                if _version(removed) > HERE:
                    messages.append(\"%s:%d: imports '%s', which Python %s removes (deprecated in this Python %d.%d)\" % (where, node.lineno, name, removed, HERE[0], HERE[1]))
                    continue
                if not _findable(top):
                    messages.append(\"%s:%d: imports '%s', which Python %s removed\" % (where, node.lineno, name, removed))
                continue
            if _findable(top):
                continue
            if top in PY2_ONLY:
                messages.append(\"%s:%d: imports '%s', a Python 2 module that Python 3 does not have\" % (where, node.lineno, name))
            else:
                messages.append(\"%s:%d: imports '%s', which the embedded Python %d.%d cannot find\" % (where, node.lineno, name, HERE[0], HERE[1]))


def _leaves(module, base):
    found = []
    for attr in sorted(dir(module)):
        value = getattr(module, attr, None)
        if isinstance(value, type) and value is not base and issubclass(value, base) and not value.__subclasses__():
            found.append(value)
    return found


def validate(kind, target):
    from datadog_checks.base import AgentCheck
    messages = []
    added_path = None
    module_name = None
    if kind == 'file':
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise FileNotFoundError('no such check file: %s' % path)
        origin, package_dirs = path, None
        check = os.path.splitext(os.path.basename(path))[0]
        added_path = os.path.dirname(path)
        sys.path.insert(0, added_path)
    else:
        check = target
        origin = package_dirs = None
        for candidate in ('datadog_checks.' + target, target):
            try:
                spec = importlib.util.find_spec(candidate)
            except ModuleNotFoundError:
                spec = None
            if spec is not None:
                module_name = candidate
                origin = spec.origin
                package_dirs = list(spec.submodule_search_locations or []) or None
                break
        if module_name is None:
            return {'check': check, 'file': None, 'status': 'not_ready',
                    'messages': [\"no module 'datadog_checks.%s' or '%s' to import\" % (target, target)]}
    try:
        for f in _source_files(origin, package_dirs):
            _analyse(f, messages)
        try:
            if kind == 'file':
                unique = '_outpost_validate_' + check
                spec = importlib.util.spec_from_file_location(unique, origin)
                module = importlib.util.module_from_spec(spec)
                sys.modules[unique] = module
                try:
                    spec.loader.exec_module(module)
                finally:
                    sys.modules.pop(unique, None)
            else:
                module = importlib.import_module(module_name)
        except Exception as e:
            messages.append('importing the check fails: %s: %s' % (type(e).__name__, e))
            module = None
        if module is not None:
            leaves = _leaves(module, AgentCheck)
            own = [c for c in leaves if c.__module__ == module.__name__]
            if not leaves:
                messages.append('no check class: the module defines no subclass of AgentCheck')
            elif len(leaves) > 1 and len(own) != 1:
                names = ', '.join(c.__name__ for c in leaves)
                messages.append('%d check classes (%s): the loader would use %s; keep exactly one' % (len(leaves), names, leaves[0].__name__))
    finally:
        if added_path is not None:
            try:
                sys.path.remove(added_path)
            except ValueError:
                pass
    return {'check': check, 'file': origin, 'status': 'not_ready' if messages else 'ready', 'messages': messages}
";

fn run_validator(py: Python<'_>, target: &ValidationTarget) -> Result<Validation, String> {
    let module = PyModule::from_code(py, VALIDATOR, c"<outpost-validate>", c"_outpost_validate")
        .map_err(|e| {
            format!(
                "the validator does not load: {}",
                crate::pyutil::capture(py, &e)
            )
        })?;
    let (kind, value) = match target {
        ValidationTarget::Name(n) => ("name", n.clone()),
        ValidationTarget::File(p) => ("file", p.display().to_string()),
    };
    let result = module
        .getattr("validate")
        .and_then(|f| f.call1((kind, value)))
        .map_err(|e| crate::pyutil::capture(py, &e).to_string())?;
    let dict = result
        .cast::<PyDict>()
        .map_err(|_| "the validator returned no dict".to_owned())?;
    let get = |k: &str| dict.get_item(k).ok().flatten();
    let check: String = get("check")
        .and_then(|v| v.extract().ok())
        .unwrap_or_default();
    let file: Option<String> = get("file").and_then(|v| v.extract().ok());
    let status: String = get("status")
        .and_then(|v| v.extract().ok())
        .unwrap_or_default();
    let messages: Vec<String> = get("messages")
        .and_then(|v| v.extract().ok())
        .unwrap_or_default();
    Ok(Validation {
        check,
        file: file.map(PathBuf::from),
        status: if status == "ready" {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        messages,
    })
}

/// Raises `TimeoutError` in the Python thread whose ident is in `thread` (0: none).
fn interrupt_thread(thread: &AtomicU64) -> bool {
    let ident = thread.load(Ordering::SeqCst);
    let Ok(ident) = std::ffi::c_long::try_from(ident) else {
        return false;
    };
    if ident == 0 {
        return false;
    }
    Python::attach(|_py| {
        // SAFETY: the GIL is held; PyExc_TimeoutError is a valid exception type.
        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(ident, pyo3::ffi::PyExc_TimeoutError) > 0 }
    })
}

impl Runtime {
    /// Validates a check (module docs) within `timeout`. Never fails: problems with the
    /// validation itself give [`ReadyStatus::Unknown`] with the error as message.
    pub fn validate(&self, target: &ValidationTarget, timeout: Duration) -> Validation {
        let name = match target {
            ValidationTarget::Name(n) => n.clone(),
            ValidationTarget::File(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let (tx, rx) = mpsc::channel();
        let ident = Arc::new(AtomicU64::new(0));
        let thread_ident = Arc::clone(&ident);
        let owned_target = target.clone();
        let spawned = std::thread::Builder::new()
            .name("check-validate".into())
            .spawn(move || {
                let result = Python::attach(|py| {
                    // SAFETY: plain query with the GIL held.
                    let me = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
                    #[allow(clippy::useless_conversion)] // c_ulong is u32 on some targets
                    thread_ident.store(u64::from(me), Ordering::SeqCst);
                    let r = run_validator(py, &owned_target);
                    thread_ident.store(0, Ordering::SeqCst);
                    r
                });
                // The receiver is gone when the caller timed out; the result is then moot.
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Validation::unknown(name, format!("cannot start the validation thread: {e}"));
        }
        match rx.recv_timeout(timeout) {
            Ok(Ok(v)) => v,
            Ok(Err(message)) => Validation::unknown(name, message),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                interrupt_thread(&ident);
                Validation::unknown(
                    name,
                    format!("validation timed out after {}s", timeout.as_secs_f64()),
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Validation::unknown(
                name,
                "the validation thread ended without a result".to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            ValidationTarget::parse("hello"),
            ValidationTarget::Name("hello".into())
        );
        assert_eq!(
            ValidationTarget::parse("hello.py"),
            ValidationTarget::File("hello.py".into())
        );
        assert_eq!(
            ValidationTarget::parse("./checks.d/x"),
            ValidationTarget::File("./checks.d/x".into())
        );
    }

    #[test]
    fn metric_tags() {
        let v = Validation {
            check: "hello".into(),
            file: None,
            status: ReadyStatus::NotReady,
            messages: vec![],
        };
        assert_eq!(
            v.tags("7.52.1-rc.2"),
            vec![
                "status:not_ready",
                "check_name:hello",
                "agent_version_major:7",
                "agent_version_minor:52",
                "agent_version_patch:1"
            ]
        );
        assert_eq!(v.metric_value(), 0.0);
        assert!(v.tags("0.1").contains(&"agent_version_patch:0".to_string()));
    }
}
