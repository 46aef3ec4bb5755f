//! Small conversions between Rust and Python values.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value as Json;

use crate::error::PythonException;

/// Converts a JSON value to the Python object `json.loads` would give.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Json) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Json::String(s) => s.into_pyobject(py)?.into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Captures a Python exception (type name, message, formatted traceback) so it can leave
/// the GIL.
pub(crate) fn capture(py: Python<'_>, err: &PyErr) -> PythonException {
    let value = err.value(py);
    let kind = value
        .get_type()
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    let message = value.str().map(|s| s.to_string()).unwrap_or_default();
    let traceback = format_traceback(py, err).unwrap_or_default();
    PythonException {
        kind,
        message,
        traceback,
    }
}

fn format_traceback(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let tb = py.import("traceback")?;
    let lines = tb.call_method1(
        "format_exception",
        (err.get_type(py), err.value(py), err.traceback(py)),
    )?;
    let parts: Vec<String> = lines.extract()?;
    Ok(parts.concat())
}

/// `str(obj)`, or a placeholder when even that fails.
pub(crate) fn display(obj: &Bound<'_, PyAny>) -> String {
    obj.str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("<unprintable {}>", type_name(obj)))
}

/// The name of `obj`'s type.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}
