//! The `datadog_agent` builtin module, backed by the agent's real data ([`AgentContext`]).
//!
//! Every function of rtloader's module exists with the same arguments. The obfuscation
//! functions only normalise whitespace (like datadog-checks-base's stub: they do **not**
//! remove literals), and telemetry and issue reporting are accepted and logged at trace
//! level.
//!
//! [`AgentContext`]: crate::context::AgentContext

use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::aggregator::as_string;
use crate::collector::{with_collector, with_current};
use crate::context;
use crate::submission::ExternalTags;

fn ctx() -> PyResult<&'static std::sync::Arc<context::AgentContext>> {
    context::get()
        .ok_or_else(|| PyRuntimeError::new_err("the outpost check runtime is not started"))
}

/// External tags set outside any running check (no check to attribute them to).
pub(crate) static UNATTRIBUTED_EXTERNAL_TAGS: Mutex<Vec<ExternalTags>> = Mutex::new(Vec::new());

#[pyfunction]
pub(crate) fn get_version() -> PyResult<String> {
    Ok(ctx()?.version.clone())
}

#[pyfunction]
#[pyo3(signature = (key, /))]
pub(crate) fn get_config<'py>(py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    match ctx()?.get_config(key) {
        Some(v) => crate::pyutil::json_to_py(py, &v),
        None => Ok(py.None().into_bound(py)),
    }
}

#[pyfunction]
pub(crate) fn get_hostname() -> PyResult<String> {
    Ok(ctx()?.hostname.clone())
}

#[pyfunction]
pub(crate) fn get_host_tags() -> PyResult<String> {
    Ok(ctx()?.host_tags_json.clone())
}

#[pyfunction]
pub(crate) fn get_clustername() -> PyResult<String> {
    Ok(ctx()?.cluster_name())
}

#[pyfunction]
#[pyo3(signature = (*_args))]
pub(crate) fn tracemalloc_enabled(_args: &Bound<'_, PyTuple>) -> PyResult<bool> {
    Ok(ctx()?.tracemalloc_enabled())
}

#[pyfunction]
pub(crate) fn get_process_start_time() -> PyResult<f64> {
    Ok(ctx()?.process_start_time)
}

/// `headers(agentConfig=None, **kwargs)`: the Go agent's `HTTPHeaders()` map, plus `Host`
/// from `http_host`. Shared with `util.headers`.
#[pyfunction]
#[pyo3(signature = (*_args, **kwargs))]
pub(crate) fn headers<'py>(
    py: Python<'py>,
    _args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("User-Agent", format!("Datadog Agent/{}", ctx()?.version))?;
    d.set_item("Content-Type", "application/x-www-form-urlencoded")?;
    d.set_item("Accept", "text/html, */*")?;
    if let Some(kw) = kwargs
        && let Some(host) = kw.get_item("http_host")?
    {
        d.set_item("Host", host)?;
    }
    Ok(d)
}

/// `log(message, level)`: into the tracing log, with the running check's name and ID.
/// Python levels map as the agent maps them: <= 7 trace, <= 10 debug, <= 20 info,
/// <= 30 warn, above error.
#[pyfunction]
#[pyo3(signature = (message, level, /))]
pub(crate) fn log(message: &str, level: i32) {
    let (check_name, check_id) = with_current(|c| (c.check_name.clone(), c.check_id.clone()))
        .unwrap_or_else(|| ("-".to_owned(), "-".to_owned()));
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: "outpost_checks::python",
                $level,
                check.id = %check_id,
                check.name = %check_name,
                "{}",
                message
            )
        };
    }
    use tracing::Level;
    match level {
        ..=7 => emit!(Level::TRACE),
        8..=10 => emit!(Level::DEBUG),
        11..=20 => emit!(Level::INFO),
        21..=30 => emit!(Level::WARN),
        _ => emit!(Level::ERROR),
    }
}

#[pyfunction]
#[pyo3(signature = (log_line, check_id, /))]
pub(crate) fn send_log(log_line: &str, check_id: &str) {
    let line = log_line.to_owned();
    if with_collector(check_id, |c| c.push_log(line)).is_none() {
        tracing::warn!(
            check.id = check_id,
            "send_log for a check ID no loaded instance has; dropped"
        );
    }
}

#[pyfunction]
#[pyo3(signature = (check_id, name, value, /))]
pub(crate) fn set_check_metadata(check_id: &str, name: &str, value: &str) {
    let (n, v) = (name.to_owned(), value.to_owned());
    if with_collector(check_id, |c| c.set_metadata(n, v)).is_none() {
        tracing::warn!(
            check.id = check_id,
            metadata.name = name,
            "metadata for a check ID no loaded instance has; dropped"
        );
    }
}

/// `set_external_tags([(hostname, {source_type: [tags]}), ...])`, checked as rtloader does.
/// Only the first entry of each dict is read, as in the agent.
#[pyfunction]
#[pyo3(signature = (tags, /))]
pub(crate) fn set_external_tags(tags: &Bound<'_, PyAny>) -> PyResult<()> {
    let Ok(list) = tags.cast::<PyList>() else {
        return Err(PyTypeError::new_err("tags must be a list"));
    };
    let mut parsed = Vec::new();
    for item in list.iter() {
        let Ok(tuple) = item.cast::<PyTuple>() else {
            return Err(PyTypeError::new_err(
                "external host tags list must contain only tuples",
            ));
        };
        if tuple.len() < 2 {
            return Err(PyTypeError::new_err(
                "external host tags tuple must have at least 2 elements",
            ));
        }
        let Some(hostname) = as_string(&tuple.get_item(0)?) else {
            return Err(PyTypeError::new_err("hostname is not a valid string"));
        };
        let second = tuple.get_item(1)?;
        let Ok(dict) = second.cast::<PyDict>() else {
            return Err(PyTypeError::new_err(
                "second elem of the host tags tuple must be a dict",
            ));
        };
        let Some((key, value)) = dict.iter().next() else {
            continue;
        };
        let Some(source_type) = as_string(&key) else {
            return Err(PyTypeError::new_err("source_type is not a valid string"));
        };
        let Ok(tag_list) = value.cast::<PyList>() else {
            return Err(PyTypeError::new_err("dict value must be a list of tags"));
        };
        parsed.push(ExternalTags {
            hostname,
            source_type,
            tags: tag_list.iter().filter_map(|t| as_string(&t)).collect(),
        });
    }
    for t in parsed {
        let mut pending = Some(t);
        with_current(|c| {
            if let Some(t) = pending.take() {
                c.push_external_tags(t);
            }
        });
        if let Some(t) = pending {
            UNATTRIBUTED_EXTERNAL_TAGS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(t);
        }
    }
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (key, value, /))]
pub(crate) fn write_persistent_cache(py: Python<'_>, key: &str, value: &str) -> PyResult<()> {
    let cache = ctx()?.cache.clone();
    let (key, value) = (key.to_owned(), value.to_owned());
    // Like rtloader: the GIL is released during the I/O, and a failure is logged, not raised.
    let result = py.detach(|| {
        cache
            .write(&key, &value)
            .map_err(|e| (cache.path_for(&key), e))
    });
    if let Err((path, e)) = result {
        tracing::error!(cache.key = %key, path = %path.display(), error = %e, "writing the persistent cache failed");
    }
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (key, /))]
pub(crate) fn read_persistent_cache(py: Python<'_>, key: &str) -> PyResult<String> {
    let cache = ctx()?.cache.clone();
    let key = key.to_owned();
    match py.detach(|| cache.read(&key)) {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::error!(cache.key = %key, error = %e, "reading the persistent cache failed");
            Err(PyRuntimeError::new_err("failed to read data"))
        }
    }
}

fn normalise_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `obfuscate_sql(query, options=None)`: whitespace normalised; with `options` asking for
/// `return_json_metadata`, the JSON form with empty metadata.
#[pyfunction]
#[pyo3(signature = (query, options = None))]
pub(crate) fn obfuscate_sql(query: &str, options: Option<&str>) -> PyResult<String> {
    let q = normalise_whitespace(query);
    let wants_json = match options {
        Some(o) if !o.is_empty() => serde_json::from_str::<serde_json::Value>(o)
            .map_err(|e| PyRuntimeError::new_err(format!("invalid options: {e}")))?
            .get("return_json_metadata")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        _ => false,
    };
    if wants_json {
        Ok(serde_json::json!({
            "query": q,
            "metadata": {"tables_csv": "", "commands": [], "comments": []}
        })
        .to_string())
    } else {
        Ok(q)
    }
}

#[pyfunction]
#[pyo3(signature = (plan, /, normalize = None))]
pub(crate) fn obfuscate_sql_exec_plan(plan: &str, normalize: Option<&Bound<'_, PyAny>>) -> String {
    let _ = normalize; // accepted for compatibility; the plan is returned unchanged
    plan.to_owned()
}

#[pyfunction]
#[pyo3(signature = (command, /))]
pub(crate) fn obfuscate_mongodb_string(command: &str) -> String {
    command.to_owned()
}

#[pyfunction]
#[pyo3(signature = (check_name, metric_name, metric_value, metric_type, labels = None))]
pub(crate) fn emit_agent_telemetry(
    check_name: &str,
    metric_name: &str,
    metric_value: f64,
    metric_type: &str,
    labels: Option<&Bound<'_, PyAny>>,
) {
    let labels = labels.map(crate::pyutil::display).unwrap_or_default();
    tracing::trace!(
        check.name = check_name,
        telemetry.name = metric_name,
        telemetry.value = metric_value,
        telemetry.type = metric_type,
        telemetry.labels = %labels,
        "agent telemetry from a check"
    );
}

#[pyfunction]
#[pyo3(signature = (check_name, report_json = None))]
pub(crate) fn report_issue(check_name: &str, report_json: Option<&str>) {
    tracing::trace!(
        check.name = check_name,
        issue = report_json.unwrap_or(""),
        "issue reported by a check"
    );
}

#[pyfunction]
#[pyo3(signature = (issue_id))]
pub(crate) fn resolve_issue(issue_id: &str) {
    tracing::trace!(issue.id = issue_id, "issue resolved by a check");
}

/// The module.
#[pymodule]
pub(crate) mod datadog_agent {
    #[pymodule_export]
    use super::{
        emit_agent_telemetry, get_clustername, get_config, get_host_tags, get_hostname,
        get_process_start_time, get_version, headers, log, obfuscate_mongodb_string, obfuscate_sql,
        obfuscate_sql_exec_plan, read_persistent_cache, report_issue, resolve_issue, send_log,
        set_check_metadata, set_external_tags, tracemalloc_enabled, write_persistent_cache,
    };
}
