//! How `outpost check run` shows what a check submitted: the `--json` document of
//! `spec/checks.md` and the readable table.
//!
//! JSON has no non-finite numbers: `+Inf`, `-Inf` and `NaN` are written as those strings
//! wherever a number is expected.

use std::collections::BTreeMap;

use outpost_checks::{
    CheckError, Event, EventPlatformEvent, ExternalTags, HistogramBucket, Metric, RunReport,
    ServiceCheck,
};
use outpost_cli::output::table;
use serde::{Serialize, Serializer};

/// A float that serialises as a JSON number when finite, else as `"+Inf"`/`"-Inf"`/`"NaN"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Num(pub(crate) f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v == f64::INFINITY {
            s.serialize_str("+Inf")
        } else if v == f64::NEG_INFINITY {
            s.serialize_str("-Inf")
        } else {
            s.serialize_f64(v)
        }
    }
}

/// The text of a float in the table, with the same spelling of non-finite values.
fn num_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The error shape of every `--json` document, the API's `{message, code}`, plus `traceback`
/// where Python raised (absent when there is none).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorOut {
    pub(crate) message: String,
    pub(crate) code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) traceback: String,
}

/// The code of an exception the check's own Python code raised (in its constructor or a run).
pub(crate) const CHECK_ERROR: &str = "check_error";

impl ErrorOut {
    /// A failure the checks runtime reports with its typed error: [`CHECK_ERROR`] where the
    /// check's Python raised (there is a traceback), else the runtime's API code
    /// (`unavailable` when Python cannot start, `not_found`, `bad_request`, ...).
    pub(crate) fn of(e: &outpost_checks::Error, message: String) -> Self {
        let traceback = e.traceback().unwrap_or_default().to_owned();
        let code = if traceback.is_empty() || e.is_python_unavailable() {
            e.code().as_str()
        } else {
            CHECK_ERROR
        };
        Self {
            message,
            code: code.to_owned(),
            traceback,
        }
    }
}

impl From<&CheckError> for ErrorOut {
    fn from(e: &CheckError) -> Self {
        Self {
            message: e.message.clone(),
            code: CHECK_ERROR.to_owned(),
            traceback: e.traceback.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct MetricOut<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    metric_type: &'static str,
    value: Num,
    tags: &'a [String],
    hostname: &'a str,
    flush_first_value: bool,
}

#[derive(Debug, Serialize)]
struct BucketOut<'a> {
    name: &'a str,
    value: i64,
    lower_bound: Num,
    upper_bound: Num,
    monotonic: bool,
    hostname: &'a str,
    tags: &'a [String],
    flush_first_value: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    multiple_buckets: bool,
}

/// `[hostname, {source_type: [tags]}]`, the shape checks pass to `set_external_tags`.
#[derive(Debug, Serialize)]
struct ExternalTagsOut<'a>(&'a str, BTreeMap<&'a str, &'a [String]>);

/// One instance entry of the `--json` document.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceOut<'a> {
    check_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<u32>,
    error: Option<ErrorOut>,
    warnings: &'a [String],
    metrics: Vec<MetricOut<'a>>,
    service_checks: &'a [ServiceCheck],
    events: &'a [Event],
    histogram_buckets: Vec<BucketOut<'a>>,
    event_platform_events: &'a [EventPlatformEvent],
    metadata: &'a BTreeMap<String, String>,
    external_tags: Vec<ExternalTagsOut<'a>>,
    duration_ms: Num,
}

/// What one instance entry is made from: a run, or an instance that failed to load.
#[derive(Debug)]
pub(crate) enum Entry {
    Ran {
        report: Box<RunReport>,
        run: u32,
    },
    Failed {
        check_id: String,
        error: ErrorOut,
        run: u32,
    },
}

impl Entry {
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self, Entry::Ran { report, .. } if report.error.is_none())
    }
}

const EMPTY_STRINGS: &[String] = &[];
const EMPTY_SC: &[ServiceCheck] = &[];
const EMPTY_EVENTS: &[Event] = &[];
const EMPTY_EP: &[EventPlatformEvent] = &[];

fn metric_out(m: &Metric) -> MetricOut<'_> {
    MetricOut {
        name: &m.name,
        metric_type: m.metric_type.as_str(),
        value: Num(m.value),
        tags: &m.tags,
        hostname: &m.hostname,
        flush_first_value: m.flush_first_value,
    }
}

fn bucket_out(b: &HistogramBucket) -> BucketOut<'_> {
    BucketOut {
        name: &b.name,
        value: b.value,
        lower_bound: Num(b.lower_bound),
        upper_bound: Num(b.upper_bound),
        monotonic: b.monotonic,
        hostname: &b.hostname,
        tags: &b.tags,
        flush_first_value: b.flush_first_value,
        multiple_buckets: b.multiple_buckets,
    }
}

fn external_out(t: &ExternalTags) -> ExternalTagsOut<'_> {
    ExternalTagsOut(
        &t.hostname,
        BTreeMap::from([(t.source_type.as_str(), t.tags.as_slice())]),
    )
}

impl<'a> InstanceOut<'a> {
    pub(crate) fn new(
        entry: &'a Entry,
        show_run: bool,
        empty: &'a BTreeMap<String, String>,
    ) -> Self {
        match entry {
            Entry::Ran { report, run } => {
                let s = &report.submissions;
                Self {
                    check_id: report.check_id.as_str(),
                    run: show_run.then_some(*run),
                    error: report.error.as_ref().map(ErrorOut::from),
                    warnings: &report.warnings,
                    metrics: s.metrics.iter().map(metric_out).collect(),
                    service_checks: &s.service_checks,
                    events: &s.events,
                    histogram_buckets: s.histogram_buckets.iter().map(bucket_out).collect(),
                    event_platform_events: &s.event_platform_events,
                    metadata: &report.metadata,
                    external_tags: report.external_tags.iter().map(external_out).collect(),
                    duration_ms: Num(report.duration.as_secs_f64() * 1000.0),
                }
            }
            Entry::Failed {
                check_id,
                error,
                run,
            } => Self {
                check_id,
                run: show_run.then_some(*run),
                error: Some(error.clone()),
                warnings: EMPTY_STRINGS,
                metrics: Vec::new(),
                service_checks: EMPTY_SC,
                events: EMPTY_EVENTS,
                histogram_buckets: Vec::new(),
                event_platform_events: EMPTY_EP,
                metadata: empty,
                external_tags: Vec::new(),
                duration_ms: Num(0.0),
            },
        }
    }
}

/// The whole `--json` document of a run.
#[derive(Debug, Serialize)]
pub(crate) struct CheckRunOut<'a> {
    pub(crate) check: &'a str,
    pub(crate) version: &'a str,
    pub(crate) instances: Vec<InstanceOut<'a>>,
}

/// The `--json` document of a check that failed to load.
#[derive(Debug, Serialize)]
pub(crate) struct LoadErrorOut<'a> {
    pub(crate) check: &'a str,
    pub(crate) error: ErrorOut,
    pub(crate) instances: [(); 0],
}

fn push_line(out: &mut String, text: std::fmt::Arguments<'_>) {
    out.push_str(&text.to_string());
    out.push('\n');
}

fn host(h: &str) -> String {
    if h.is_empty() {
        "(default)".into()
    } else {
        h.to_owned()
    }
}

/// The readable form of one entry.
pub(crate) fn render_entry(entry: &Entry, runs: u32) -> String {
    let mut out = String::new();
    let run_label = |run: u32| {
        if runs > 1 {
            format!(" (run {run} of {runs})")
        } else {
            String::new()
        }
    };
    match entry {
        Entry::Failed {
            check_id,
            error,
            run,
        } => {
            push_line(
                &mut out,
                format_args!("{check_id}{}: failed to load", run_label(*run)),
            );
            push_line(&mut out, format_args!("  error: {}", error.message));
            for l in error.traceback.lines() {
                push_line(&mut out, format_args!("    {l}"));
            }
        }
        Entry::Ran { report, run } => {
            let s = &report.submissions;
            let status = if report.error.is_some() {
                "error"
            } else {
                "ok"
            };
            push_line(
                &mut out,
                format_args!(
                    "{}{}: {status} in {:.1} ms",
                    report.check_id,
                    run_label(*run),
                    report.duration.as_secs_f64() * 1000.0
                ),
            );
            if !s.metrics.is_empty() {
                out.push_str("  metrics\n");
                let rows: Vec<Vec<String>> = s
                    .metrics
                    .iter()
                    .map(|m| {
                        vec![
                            m.metric_type.as_str().to_owned(),
                            m.name.clone(),
                            num_text(m.value),
                            host(&m.hostname),
                            m.tags.join(","),
                        ]
                    })
                    .collect();
                table(
                    &mut out,
                    "    ",
                    &["TYPE", "NAME", "VALUE", "HOST", "TAGS"],
                    &rows,
                );
            }
            if !s.service_checks.is_empty() {
                out.push_str("  service checks\n");
                let rows: Vec<Vec<String>> = s
                    .service_checks
                    .iter()
                    .map(|c| {
                        let status = match c.status {
                            0 => "OK".to_owned(),
                            1 => "WARNING".to_owned(),
                            2 => "CRITICAL".to_owned(),
                            3 => "UNKNOWN".to_owned(),
                            n => n.to_string(),
                        };
                        vec![
                            c.name.clone(),
                            status,
                            host(&c.hostname),
                            c.tags.join(","),
                            c.message.clone(),
                        ]
                    })
                    .collect();
                table(
                    &mut out,
                    "    ",
                    &["NAME", "STATUS", "HOST", "TAGS", "MESSAGE"],
                    &rows,
                );
            }
            if !s.events.is_empty() {
                out.push_str("  events\n");
                let rows: Vec<Vec<String>> = s
                    .events
                    .iter()
                    .map(|e| {
                        vec![
                            e.msg_title.clone().unwrap_or_default(),
                            e.alert_type.clone().unwrap_or_default(),
                            e.tags.as_deref().unwrap_or_default().join(","),
                            e.msg_text.clone().unwrap_or_default().replace('\n', " "),
                        ]
                    })
                    .collect();
                table(&mut out, "    ", &["TITLE", "ALERT", "TAGS", "TEXT"], &rows);
            }
            if !s.histogram_buckets.is_empty() {
                out.push_str("  histogram buckets\n");
                let rows: Vec<Vec<String>> = s
                    .histogram_buckets
                    .iter()
                    .map(|b| {
                        vec![
                            b.name.clone(),
                            b.value.to_string(),
                            num_text(b.lower_bound),
                            num_text(b.upper_bound),
                            b.monotonic.to_string(),
                            b.tags.join(","),
                        ]
                    })
                    .collect();
                table(
                    &mut out,
                    "    ",
                    &["NAME", "COUNT", "LOWER", "UPPER", "MONOTONIC", "TAGS"],
                    &rows,
                );
            }
            if !s.event_platform_events.is_empty() {
                out.push_str("  event platform events\n");
                let rows: Vec<Vec<String>> = s
                    .event_platform_events
                    .iter()
                    .map(|e| {
                        vec![
                            e.event_type.clone(),
                            String::from_utf8_lossy(&e.raw_event).into_owned(),
                        ]
                    })
                    .collect();
                table(&mut out, "    ", &["TYPE", "EVENT"], &rows);
            }
            if !report.metadata.is_empty() {
                out.push_str("  metadata\n");
                let rows: Vec<Vec<String>> = report
                    .metadata
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.clone()])
                    .collect();
                table(&mut out, "    ", &["NAME", "VALUE"], &rows);
            }
            if !report.external_tags.is_empty() {
                out.push_str("  external tags\n");
                let rows: Vec<Vec<String>> = report
                    .external_tags
                    .iter()
                    .map(|t| vec![t.hostname.clone(), t.source_type.clone(), t.tags.join(",")])
                    .collect();
                table(&mut out, "    ", &["HOST", "SOURCE", "TAGS"], &rows);
            }
            if s.is_empty() {
                out.push_str("  nothing submitted\n");
            }
            for w in &report.warnings {
                push_line(&mut out, format_args!("  warning: {w}"));
            }
            if let Some(e) = &report.error {
                push_line(&mut out, format_args!("  error: {}", e.message));
                for l in e.traceback.lines() {
                    push_line(&mut out, format_args!("    {l}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_are_strings() {
        let v = serde_json::to_value([
            Num(1.5),
            Num(f64::INFINITY),
            Num(f64::NEG_INFINITY),
            Num(f64::NAN),
        ])
        .unwrap();
        assert_eq!(v, serde_json::json!([1.5, "+Inf", "-Inf", "NaN"]));
    }

    #[test]
    fn tables_align() {
        let mut out = String::new();
        table(
            &mut out,
            "  ",
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(out, "  A    BB\n  xxx  y\n  z\n");
    }
}
