//! The `aggregator` builtin module: where `AgentCheck` sends metrics, service checks, events,
//! histogram buckets and event-platform events.
//!
//! Arguments are positional-only and checked as rtloader's `PyArg_ParseTuple` formats check
//! them, raising the same Python exceptions (`TypeError` for a wrong type, `TypeError("tags
//! must be a sequence")`, `TypeError("event must be a dict")`); non-string tags are skipped.
//! Deliberate leniencies: `hostname` and `message` may be `None` (meaning `""`), and histogram
//! bounds keep their 64-bit value (rtloader narrows them to a C `float`).

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::collector::with_collector;
use crate::submission::{
    Event, EventPlatformEvent, HistogramBucket, Metric, MetricType, ServiceCheck,
};

/// rtloader's `as_string`: `str` (UTF-8) or `bytes`; anything else is not a string.
pub(crate) fn as_string(obj: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().ok().map(str::to_owned);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Some(String::from_utf8_lossy(b.as_bytes()).into_owned());
    }
    None
}

/// rtloader's `py_tag_to_c`: any sequence; items that are not strings are skipped.
pub(crate) fn tags_from(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(list) = obj.cast::<PyList>() {
        return Ok(list.iter().filter_map(|t| as_string(&t)).collect());
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return Ok(tuple.iter().filter_map(|t| as_string(&t)).collect());
    }
    // SAFETY: `obj` is a valid object and we hold the GIL.
    if unsafe { pyo3::ffi::PySequence_Check(obj.as_ptr()) } != 1 {
        return Err(PyTypeError::new_err("tags must be a sequence"));
    }
    let mut tags = Vec::new();
    for item in obj.try_iter()? {
        if let Some(t) = as_string(&item?) {
            tags.push(t);
        }
    }
    Ok(tags)
}

/// rtloader's `b` format: an integer in 0..=255.
fn flag_byte(v: i64, what: &str) -> PyResult<bool> {
    if !(0..=255).contains(&v) {
        return Err(PyOverflowError::new_err(format!(
            "{what}: unsigned byte integer is out of range"
        )));
    }
    Ok(v != 0)
}

fn route(check_id: &str, what: &str, f: impl FnOnce(&crate::collector::Collector)) {
    if with_collector(check_id, f).is_none() {
        tracing::warn!(
            check.id = check_id,
            "{what} submitted for a check ID no loaded instance has; dropped"
        );
    }
}

#[pyfunction]
#[pyo3(signature = (_check, check_id, mtype, name, value, tags, hostname, flush_first_value = 0, /))]
#[allow(clippy::too_many_arguments)] // the Python signature
pub(crate) fn submit_metric(
    _check: &Bound<'_, PyAny>,
    check_id: &str,
    mtype: i32,
    name: &str,
    value: f64,
    tags: &Bound<'_, PyAny>,
    hostname: Option<&str>,
    flush_first_value: i64,
) -> PyResult<()> {
    let tags = tags_from(tags)?;
    let flush_first_value = flag_byte(flush_first_value, "flush_first_value")?;
    let Some(metric_type) = MetricType::from_code(mtype.into()) else {
        // The Go agent ignores unknown types the same way.
        tracing::warn!(
            check.id = check_id,
            metric.name = name,
            metric.type_code = mtype,
            "unknown metric type; sample dropped"
        );
        return Ok(());
    };
    let metric = Metric {
        name: name.to_owned(),
        metric_type,
        value,
        tags,
        hostname: hostname.unwrap_or_default().to_owned(),
        flush_first_value,
    };
    route(check_id, "metric", |c| c.push_metric(metric));
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (_check, check_id, name, status, tags, hostname, message, /))]
pub(crate) fn submit_service_check(
    _check: &Bound<'_, PyAny>,
    check_id: &str,
    name: &str,
    status: i32,
    tags: &Bound<'_, PyAny>,
    hostname: Option<&str>,
    message: Option<&str>,
) -> PyResult<()> {
    let sc = ServiceCheck {
        name: name.to_owned(),
        status: status.into(),
        tags: tags_from(tags)?,
        hostname: hostname.unwrap_or_default().to_owned(),
        message: message.unwrap_or_default().to_owned(),
    };
    route(check_id, "service check", |c| c.push_service_check(sc));
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (_check, check_id, event, /))]
pub(crate) fn submit_event(
    _check: &Bound<'_, PyAny>,
    check_id: &str,
    event: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let Ok(dict) = event.cast::<PyDict>() else {
        return Err(PyTypeError::new_err("event must be a dict"));
    };
    let field = |key: &str| -> PyResult<Option<String>> {
        Ok(dict.get_item(key)?.and_then(|v| as_string(&v)))
    };
    // PyLong_AsLong: ints (and __index__); anything else, or -1, is "now" (0).
    let timestamp = dict
        .get_item("timestamp")?
        .map(|ts| match ts.extract::<i64>() {
            Ok(-1) | Err(_) => 0,
            Ok(t) => t,
        });
    let tags = match dict.get_item("tags")? {
        Some(t) => Some(tags_from(&t)?),
        None => None,
    };
    let ev = Event {
        msg_title: field("msg_title")?,
        msg_text: field("msg_text")?,
        timestamp,
        priority: field("priority")?,
        host: field("host")?,
        alert_type: field("alert_type")?,
        aggregation_key: field("aggregation_key")?,
        source_type_name: field("source_type_name")?,
        event_type: field("event_type")?,
        tags,
    };
    route(check_id, "event", |c| c.push_event(ev));
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the Python signature
fn bucket(
    check_id: &str,
    name: &str,
    value: i64,
    lower_bound: f64,
    upper_bound: f64,
    monotonic: i32,
    hostname: Option<&str>,
    tags: &Bound<'_, PyAny>,
    flush_first_value: i64,
    multiple_buckets: bool,
) -> PyResult<()> {
    let b = HistogramBucket {
        name: name.to_owned(),
        value,
        lower_bound,
        upper_bound,
        monotonic: monotonic != 0,
        hostname: hostname.unwrap_or_default().to_owned(),
        tags: tags_from(tags)?,
        flush_first_value: flag_byte(flush_first_value, "flush_first_value")?,
        multiple_buckets,
    };
    route(check_id, "histogram bucket", |c| c.push_histogram_bucket(b));
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (_check, check_id, name, value, lower_bound, upper_bound, monotonic, hostname, tags, flush_first_value = 0, /))]
#[allow(clippy::too_many_arguments)] // the Python signature
pub(crate) fn submit_histogram_bucket(
    _check: &Bound<'_, PyAny>,
    check_id: &str,
    name: &str,
    value: i64,
    lower_bound: f64,
    upper_bound: f64,
    monotonic: i32,
    hostname: Option<&str>,
    tags: &Bound<'_, PyAny>,
    flush_first_value: i64,
) -> PyResult<()> {
    bucket(
        check_id,
        name,
        value,
        lower_bound,
        upper_bound,
        monotonic,
        hostname,
        tags,
        flush_first_value,
        false,
    )
}

/// Like `submit_histogram_bucket`, for buckets whose tags do not identify them (base >= 38.5
/// uses it when the agent provides it).
#[pyfunction]
#[pyo3(signature = (_check, check_id, name, value, lower_bound, upper_bound, monotonic, hostname, tags, flush_first_value = 0, /))]
#[allow(clippy::too_many_arguments)] // the Python signature
pub(crate) fn submit_histogram_bucket_multi(
    _check: &Bound<'_, PyAny>,
    check_id: &str,
    name: &str,
    value: i64,
    lower_bound: f64,
    upper_bound: f64,
    monotonic: i32,
    hostname: Option<&str>,
    tags: &Bound<'_, PyAny>,
    flush_first_value: i64,
) -> PyResult<()> {
    bucket(
        check_id,
        name,
        value,
        lower_bound,
        upper_bound,
        monotonic,
        hostname,
        tags,
        flush_first_value,
        true,
    )
}

#[pyfunction]
#[pyo3(signature = (_check, check_id, raw_event, event_type, /))]
pub(crate) fn submit_event_platform_event(
    _check: &Bound<'_, PyAny>,
    check_id: &str,
    raw_event: &Bound<'_, PyAny>,
    event_type: &str,
) -> PyResult<()> {
    // `s#`: str (as UTF-8) or a bytes-like object.
    let raw: Vec<u8> = if let Ok(s) = raw_event.cast::<PyString>() {
        s.to_str()?.as_bytes().to_vec()
    } else if let Ok(b) = raw_event.cast::<PyBytes>() {
        b.as_bytes().to_vec()
    } else if let Ok(v) = raw_event.extract::<Vec<u8>>() {
        v
    } else {
        return Err(PyTypeError::new_err(format!(
            "argument 3 must be str or read-only bytes-like object, not {}",
            crate::pyutil::type_name(raw_event)
        )));
    };
    let ev = EventPlatformEvent {
        event_type: event_type.to_owned(),
        raw_event: raw,
    };
    route(check_id, "event platform event", |c| {
        c.push_event_platform_event(ev)
    });
    Ok(())
}

/// The module.
#[pymodule]
pub(crate) mod aggregator {
    #[pymodule_export]
    const GAUGE: i64 = 0;
    #[pymodule_export]
    const RATE: i64 = 1;
    #[pymodule_export]
    const COUNT: i64 = 2;
    #[pymodule_export]
    const MONOTONIC_COUNT: i64 = 3;
    #[pymodule_export]
    const COUNTER: i64 = 4;
    #[pymodule_export]
    const HISTOGRAM: i64 = 5;
    #[pymodule_export]
    const HISTORATE: i64 = 6;

    #[pymodule_export]
    use super::{
        submit_event, submit_event_platform_event, submit_histogram_bucket,
        submit_histogram_bucket_multi, submit_metric, submit_service_check,
    };
}
