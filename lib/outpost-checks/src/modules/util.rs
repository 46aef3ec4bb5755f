//! The `util` and `_util` builtin modules for legacy checks: `headers` and
//! `get_subprocess_output(cmd, raise_on_empty=False, env=None)` (alias `subprocess_output`),
//! with the `SubprocessOutputEmptyError` exception. Both modules carry the same functions.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList};

use super::aggregator::as_string;

pyo3::create_exception!(
    _util,
    SubprocessOutputEmptyError,
    PyException,
    "The command printed nothing on stdout and the caller asked for output."
);

/// Runs `cmd` (a non-empty list of strings) without a shell, with the GIL released, and
/// returns `(stdout, stderr, returncode)`. `env` (a dict of strings) replaces the
/// environment when given. With `raise_on_empty` true, an empty stdout raises
/// `SubprocessOutputEmptyError`. A command that cannot be started raises `Exception`.
#[pyfunction]
#[pyo3(signature = (cmd, raise_on_empty = None, env = None))]
pub(crate) fn get_subprocess_output(
    py: Python<'_>,
    cmd: &Bound<'_, PyAny>,
    raise_on_empty: Option<&Bound<'_, PyAny>>,
    env: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, String, i32)> {
    let Ok(list) = cmd.cast::<PyList>() else {
        return Err(PyTypeError::new_err("command args not a list"));
    };
    if list.is_empty() {
        return Err(PyTypeError::new_err("invalid command: empty list"));
    }
    let mut argv = Vec::with_capacity(list.len());
    for item in list.iter() {
        match as_string(&item) {
            Some(a) => argv.push(a),
            None => {
                return Err(PyTypeError::new_err(
                    "command argument must be valid strings",
                ));
            }
        }
    }
    let raise = match raise_on_empty {
        None => false,
        Some(v) if v.is_none() => false,
        Some(v) => match v.cast::<PyBool>() {
            Ok(b) => b.is_true(),
            Err(_) => {
                return Err(PyTypeError::new_err(
                    "bad raise_on_empty argument: should be bool",
                ));
            }
        },
    };
    let env: Option<HashMap<String, String>> = match env {
        None => None,
        Some(e) if e.is_none() => None,
        Some(e) => {
            let Ok(d) = e.cast::<PyDict>() else {
                return Err(PyTypeError::new_err("env must be a dict of strings"));
            };
            let mut map = HashMap::new();
            for (k, v) in d.iter() {
                match (as_string(&k), as_string(&v)) {
                    (Some(k), Some(v)) => {
                        map.insert(k, v);
                    }
                    _ => return Err(PyTypeError::new_err("env must be a dict of strings")),
                }
            }
            Some(map)
        }
    };
    let output = py.detach(move || {
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(env) = env {
            command.env_clear().envs(env);
        }
        command.output().map_err(|e| (argv[0].clone(), e))
    });
    let output = match output {
        Ok(o) => o,
        Err((program, e)) => {
            return Err(PyException::new_err(format!(
                "internal error starting subprocess {program:?}: {e}"
            )));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if raise && stdout.is_empty() {
        return Err(SubprocessOutputEmptyError::new_err(
            "get_subprocess_output expected output but had none.",
        ));
    }
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Ok((stdout, stderr, output.status.code().unwrap_or(-1)))
}

/// The `util` module.
#[pymodule]
pub(crate) mod util {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::super::datadog_agent::headers;
    #[pymodule_export]
    use super::get_subprocess_output;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::add_common(m)
    }
}

/// The `_util` module.
#[pymodule(name = "_util")]
pub(crate) mod private_util {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::super::datadog_agent::headers;
    #[pymodule_export]
    use super::get_subprocess_output;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::add_common(m)
    }
}

fn add_common(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add(
        "SubprocessOutputEmptyError",
        py.get_type::<SubprocessOutputEmptyError>(),
    )?;
    m.add("subprocess_output", m.getattr("get_subprocess_output")?)?;
    Ok(())
}
