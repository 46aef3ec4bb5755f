//! A metrics registry rendered in the Prometheus text exposition format 0.0.4.
//!
//! Both processes share one [`Telemetry`]: the API counts every request in it
//! (`outpost_api_requests_total{module,route,method,status}`), the daemon adds its own series,
//! and the check agent exports thousands of dynamic series whose names and labels are only
//! known at run time. Series are addressed by name plus a label set:
//!
//! * [`Telemetry::add_counter`], [`Telemetry::set_gauge`], [`Telemetry::observe`] look the series
//!   up (creating it on first use) and update it: the API for dynamic series;
//! * [`Telemetry::counter`], [`Telemetry::gauge`], [`Telemetry::histogram`] return a handle to
//!   keep for hot paths (an update is then one atomic operation, no lookup);
//! * [`Telemetry::remove_series`] / [`Telemetry::remove_family`] drop series that went away.
//!
//! Names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*` and label names to `[a-zA-Z_][a-zA-Z0-9_]*`
//! (every other character becomes `_`, a leading digit gets a `_` prefix), label values are
//! escaped, label sets are sorted by name, so `{b,a}` and `{a,b}` are the same series.
//! Families and series render in name order, so the output is stable.
//!
//! A handle kept after its series was removed still works but is no longer rendered.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use crate::error::Error;
use crate::module::Module;

/// The `Content-Type` of the exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Default histogram bucket upper bounds (seconds), as Prometheus' client libraries use.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A value that only goes up (`# TYPE x counter`).
    Counter,
    /// A value that goes up and down (`# TYPE x gauge`).
    Gauge,
    /// Observations counted into buckets (`# TYPE x histogram`).
    Histogram,
}

impl MetricKind {
    /// The word used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// An `f64` updated atomically.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn add(&self, v: f64) {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

#[derive(Debug)]
struct HistogramState {
    /// Per-bucket (not cumulative) counts; one more than the bounds, for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
enum Series {
    Scalar(AtomicF64),
    Histogram {
        bounds: Arc<[f64]>,
        state: Mutex<HistogramState>,
    },
}

impl Series {
    fn new(kind: MetricKind, bounds: &Arc<[f64]>) -> Self {
        match kind {
            MetricKind::Counter | MetricKind::Gauge => Self::Scalar(AtomicF64::default()),
            MetricKind::Histogram => Self::Histogram {
                bounds: Arc::clone(bounds),
                state: Mutex::new(HistogramState {
                    counts: vec![0; bounds.len() + 1],
                    sum: 0.0,
                    count: 0,
                }),
            },
        }
    }

    fn scalar(&self) -> Option<&AtomicF64> {
        match self {
            Self::Scalar(v) => Some(v),
            Self::Histogram { .. } => None,
        }
    }

    fn observe(&self, value: f64) {
        if let Self::Histogram { bounds, state } = self {
            let idx = bounds.partition_point(|b| *b < value);
            let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = st.counts.get_mut(idx) {
                *c += 1;
            }
            st.sum += value;
            st.count += 1;
        }
    }
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: MetricKind,
    buckets: Arc<[f64]>,
    /// Keyed by the rendered, escaped, sorted label list without braces (`a="x",b="y"`).
    series: BTreeMap<String, Arc<Series>>,
}

/// A handle to one counter series. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Counter(Arc<Series>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        if let Some(v) = self.0.scalar() {
            // Precision loss only above 2^53 increments.
            #[allow(clippy::cast_precision_loss)]
            v.add(n as f64);
        }
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.scalar().map_or(0.0, AtomicF64::get)
    }
}

/// A handle to one gauge series. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<Series>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        if let Some(v) = self.0.scalar() {
            v.set(value);
        }
    }

    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: f64) {
        if let Some(v) = self.0.scalar() {
            v.add(delta);
        }
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.scalar().map_or(0.0, AtomicF64::get)
    }
}

/// A handle to one histogram series. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Series>);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }
}

/// The shared metrics registry. Cheap to clone (all clones share one registry).
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    families: Arc<RwLock<BTreeMap<String, Family>>>,
}

/// A metric or label name made valid for the exposition format.
fn sanitize(name: &str, allow_colon: bool) -> Cow<'_, str> {
    let valid_char = |i: usize, c: char| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (allow_colon && c == ':')
            || (i > 0 && c.is_ascii_digit())
    };
    if !name.is_empty() && name.chars().enumerate().all(|(i, c)| valid_char(i, c)) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        out.push('_');
    }
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        out.push(if ok { c } else { '_' });
    }
    Cow::Owned(out)
}

/// Sanitises a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn sanitize_metric_name(name: &str) -> Cow<'_, str> {
    sanitize(name, true)
}

/// Sanitises a label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn sanitize_label_name(name: &str) -> Cow<'_, str> {
    sanitize(name, false)
}

/// Appends a label value escaped for the text format (`\`, `"`, newline).
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a `# HELP` text escaped for the text format (`\`, newline).
pub fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name="value"` to a label list (`out` holds the pairs so far, without braces),
/// after a comma unless it is the first; the value is escaped, the name must be valid.
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(value, out);
    out.push('"');
}

/// The canonical series key: label names sanitised, sorted, de-duplicated (last value wins),
/// values escaped, without braces.
fn label_key(labels: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(Cow<'_, str>, &str)> = labels
        .iter()
        .map(|(k, v)| (sanitize_label_name(k), *v))
        .collect();
    // Stable sort keeps caller order among equal names, so the last one wins below.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(labels.len() * 24);
    for (i, (k, v)) in sorted.iter().enumerate() {
        if sorted.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        push_label(&mut out, k, v);
    }
    out
}

/// Appends a sample value: `NaN`, `+Inf`, `-Inf` or the shortest float that round-trips.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    }
}

fn validate_buckets(name: &str, buckets: &[f64]) -> Result<Arc<[f64]>, Error> {
    let invalid = |reason| Error::InvalidBuckets {
        name: name.to_owned(),
        reason,
    };
    if buckets.is_empty() {
        return Err(invalid("no bucket bounds"));
    }
    if buckets.iter().any(|b| !b.is_finite()) {
        return Err(invalid("bounds must be finite (+Inf is implicit)"));
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid("bounds must be strictly increasing"));
    }
    Ok(Arc::from(buckets))
}

impl Telemetry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Family>> {
        self.families.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Family>> {
        self.families
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares a family's help text and type (creating it if needed). Counters and gauges
    /// used without being described render without a `# HELP` line.
    ///
    /// # Errors
    /// [`Error::MetricKindConflict`] if the family exists with another type.
    pub fn describe(&self, name: &str, help: &str, kind: MetricKind) -> Result<(), Error> {
        let name = sanitize_metric_name(name);
        let mut families = self.write();
        let family = Self::family_entry(&mut families, &name, kind, None)?;
        help.clone_into(&mut family.help);
        Ok(())
    }

    /// Declares a histogram family with its bucket upper bounds (strictly increasing, finite;
    /// `+Inf` is implicit). Histograms observed without being described use
    /// [`DEFAULT_BUCKETS`].
    ///
    /// # Errors
    /// [`Error::InvalidBuckets`], or [`Error::MetricKindConflict`] if the name is taken by a
    /// counter or gauge.
    pub fn describe_histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<(), Error> {
        let name = sanitize_metric_name(name);
        let buckets = validate_buckets(&name, buckets)?;
        let mut families = self.write();
        let family =
            Self::family_entry(&mut families, &name, MetricKind::Histogram, Some(&buckets))?;
        help.clone_into(&mut family.help);
        Ok(())
    }

    fn family_entry<'a>(
        families: &'a mut BTreeMap<String, Family>,
        name: &str,
        kind: MetricKind,
        buckets: Option<&Arc<[f64]>>,
    ) -> Result<&'a mut Family, Error> {
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: String::new(),
            kind,
            buckets: buckets
                .cloned()
                .unwrap_or_else(|| Arc::from(DEFAULT_BUCKETS)),
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            return Err(Error::MetricKindConflict {
                name: name.to_owned(),
                existing: family.kind.as_str(),
                requested: kind.as_str(),
            });
        }
        if let Some(b) = buckets
            && family.series.is_empty()
        {
            family.buckets = Arc::clone(b);
        }
        Ok(family)
    }

    /// Finds or creates a series.
    fn series(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        kind: MetricKind,
    ) -> Result<Arc<Series>, Error> {
        let name = sanitize_metric_name(name);
        let key = label_key(labels);
        {
            let families = self.read();
            if let Some(family) = families.get(name.as_ref()) {
                if family.kind != kind {
                    return Err(Error::MetricKindConflict {
                        name: name.into_owned(),
                        existing: family.kind.as_str(),
                        requested: kind.as_str(),
                    });
                }
                if let Some(series) = family.series.get(&key) {
                    return Ok(Arc::clone(series));
                }
            }
        }
        let mut families = self.write();
        let family = Self::family_entry(&mut families, &name, kind, None)?;
        let buckets = Arc::clone(&family.buckets);
        let series = family
            .series
            .entry(key)
            .or_insert_with(|| Arc::new(Series::new(kind, &buckets)));
        Ok(Arc::clone(series))
    }

    /// A handle to the counter series `name{labels}`, created at 0 if new.
    ///
    /// # Errors
    /// [`Error::MetricKindConflict`] if `name` is not a counter.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Result<Counter, Error> {
        self.series(name, labels, MetricKind::Counter).map(Counter)
    }

    /// A handle to the gauge series `name{labels}`, created at 0 if new.
    ///
    /// # Errors
    /// [`Error::MetricKindConflict`] if `name` is not a gauge.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Result<Gauge, Error> {
        self.series(name, labels, MetricKind::Gauge).map(Gauge)
    }

    /// A handle to the histogram series `name{labels}`, created empty if new.
    ///
    /// # Errors
    /// [`Error::MetricKindConflict`] if `name` is not a histogram.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Result<Histogram, Error> {
        self.series(name, labels, MetricKind::Histogram)
            .map(Histogram)
    }

    /// Adds `value` to the counter `name{labels}` (created at 0 if new).
    ///
    /// # Errors
    /// [`Error::InvalidCounterIncrement`] for a negative or non-finite value (nothing changes),
    /// [`Error::MetricKindConflict`] if `name` is not a counter.
    pub fn add_counter(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), Error> {
        if !value.is_finite() || value < 0.0 {
            return Err(Error::InvalidCounterIncrement {
                name: sanitize_metric_name(name).into_owned(),
                value,
            });
        }
        let series = self.series(name, labels, MetricKind::Counter)?;
        if let Some(v) = series.scalar() {
            v.add(value);
        }
        Ok(())
    }

    /// Sets the gauge `name{labels}` (created if new).
    ///
    /// # Errors
    /// [`Error::MetricKindConflict`] if `name` is not a gauge.
    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) -> Result<(), Error> {
        let series = self.series(name, labels, MetricKind::Gauge)?;
        if let Some(v) = series.scalar() {
            v.set(value);
        }
        Ok(())
    }

    /// Records one observation in the histogram `name{labels}` (created if new).
    ///
    /// # Errors
    /// [`Error::MetricKindConflict`] if `name` is not a histogram.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], value: f64) -> Result<(), Error> {
        self.series(name, labels, MetricKind::Histogram)?
            .observe(value);
        Ok(())
    }

    /// Removes one series; returns whether it existed. The family stays (with its help text).
    pub fn remove_series(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let name = sanitize_metric_name(name);
        let key = label_key(labels);
        self.write()
            .get_mut(name.as_ref())
            .is_some_and(|f| f.series.remove(&key).is_some())
    }

    /// Removes a whole family and its series; returns whether it existed.
    pub fn remove_family(&self, name: &str) -> bool {
        self.write()
            .remove(sanitize_metric_name(name).as_ref())
            .is_some()
    }

    /// The number of series across all families.
    pub fn series_count(&self) -> usize {
        self.read().values().map(|f| f.series.len()).sum()
    }

    /// Renders every family in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, |_| {});
        out
    }

    /// Appends every family to `out` in the text exposition format 0.0.4, and calls
    /// `written` with the name of each family written (one `# TYPE` line each, in order),
    /// so that an exposition assembled from several sources can keep one `# TYPE` per
    /// family without reading the text back.
    pub fn render_into(&self, out: &mut String, mut written: impl FnMut(&str)) {
        let families = self.read();
        let estimate: usize = families
            .iter()
            .map(|(name, f)| 64 + f.help.len() + f.series.len() * (name.len() + 48))
            .sum();
        out.reserve(estimate);
        for (name, family) in families.iter() {
            if family.series.is_empty() {
                continue;
            }
            written(name);
            if !family.help.is_empty() {
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                escape_help(&family.help, out);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(family.kind.as_str());
            out.push('\n');
            for (labels, series) in &family.series {
                match series.as_ref() {
                    Series::Scalar(v) => {
                        write_sample(out, name, "", labels, None, v.get());
                    }
                    Series::Histogram { bounds, state } => {
                        let st = state.lock().unwrap_or_else(PoisonError::into_inner);
                        let mut cumulative = 0u64;
                        for (bound, count) in bounds.iter().zip(&st.counts) {
                            cumulative += count;
                            #[allow(clippy::cast_precision_loss)]
                            write_sample(
                                out,
                                name,
                                "_bucket",
                                labels,
                                Some(*bound),
                                cumulative as f64,
                            );
                        }
                        #[allow(clippy::cast_precision_loss)]
                        {
                            write_sample(
                                out,
                                name,
                                "_bucket",
                                labels,
                                Some(f64::INFINITY),
                                st.count as f64,
                            );
                            write_sample(out, name, "_sum", labels, None, st.sum);
                            write_sample(out, name, "_count", labels, None, st.count as f64);
                        }
                    }
                }
            }
        }
    }

    /// The ready-made `telemetry` module: `GET /telemetry` answers [`Telemetry::render`] with
    /// `Content-Type: text/plain; version=0.0.4; charset=utf-8`.
    pub fn module(&self) -> Module {
        let telemetry = self.clone();
        Module::new("telemetry").get("/", move || {
            let telemetry = telemetry.clone();
            async move { Exposition(telemetry.render()) }
        })
    }
}

/// Appends one sample line, `name<suffix>{labels[,le="..."]} value`, where `labels` is the
/// already escaped `a="x",b="y"` form (possibly empty).
pub fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    le: Option<f64>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            write_value(out, le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    out.push('\n');
}

/// A rendered exposition as an HTTP response.
#[derive(Debug)]
struct Exposition(String);

impl IntoResponse for Exposition {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.0));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(
            sanitize_metric_name("http.requests-total"),
            "http_requests_total"
        );
        assert_eq!(sanitize_metric_name("ns:sub_total"), "ns:sub_total");
        assert_eq!(sanitize_metric_name("9lives"), "_9lives");
        assert_eq!(sanitize_metric_name(""), "_");
        assert_eq!(sanitize_metric_name("café"), "caf_");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("0x"), "_0x");
        assert!(matches!(sanitize_metric_name("ok_name"), Cow::Borrowed(_)));
    }

    #[test]
    fn exposition_has_help_type_escaping_and_sorted_labels() {
        let t = Telemetry::new();
        t.describe(
            "requests_total",
            "Requests served.\nSecond \\ line",
            MetricKind::Counter,
        )
        .unwrap();
        t.add_counter("requests_total", &[("route", "/a"), ("method", "GET")], 2.0)
            .unwrap();
        t.add_counter("requests_total", &[("method", "GET"), ("route", "/a")], 1.5)
            .unwrap();
        t.set_gauge("check.value", &[("tag", "quote\"back\\slash\nnl")], -3.25)
            .unwrap();
        t.set_gauge("up", &[], 1.0).unwrap();
        let text = t.render();
        assert_eq!(
            text,
            "# TYPE check_value gauge\n\
             check_value{tag=\"quote\\\"back\\\\slash\\nnl\"} -3.25\n\
             # HELP requests_total Requests served.\\nSecond \\\\ line\n\
             # TYPE requests_total counter\n\
             requests_total{method=\"GET\",route=\"/a\"} 3.5\n\
             # TYPE up gauge\n\
             up 1\n"
        );
    }

    #[test]
    fn duplicate_label_names_keep_the_last_value() {
        let t = Telemetry::new();
        t.set_gauge("g", &[("a.b", "1"), ("a_b", "2")], 5.0)
            .unwrap();
        assert_eq!(t.render(), "# TYPE g gauge\ng{a_b=\"2\"} 5\n");
    }

    #[test]
    fn special_values() {
        let t = Telemetry::new();
        t.set_gauge("g", &[("v", "nan")], f64::NAN).unwrap();
        t.set_gauge("g", &[("v", "pinf")], f64::INFINITY).unwrap();
        t.set_gauge("g", &[("v", "ninf")], f64::NEG_INFINITY)
            .unwrap();
        let text = t.render();
        assert!(text.contains("g{v=\"nan\"} NaN\n"), "{text}");
        assert!(text.contains("g{v=\"pinf\"} +Inf\n"), "{text}");
        assert!(text.contains("g{v=\"ninf\"} -Inf\n"), "{text}");
    }

    #[test]
    fn kind_conflicts_and_bad_counter_increments_are_refused() {
        let t = Telemetry::new();
        t.set_gauge("x", &[], 1.0).unwrap();
        let err = t.add_counter("x", &[], 1.0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MetricKindConflict {
                    existing: "gauge",
                    requested: "counter",
                    ..
                }
            ),
            "{err}"
        );
        assert!(t.observe("x", &[], 1.0).is_err());
        assert!(matches!(
            t.add_counter("c", &[], -1.0).unwrap_err(),
            Error::InvalidCounterIncrement { .. }
        ));
        assert!(t.add_counter("c", &[], f64::NAN).is_err());
        // The refused increments created nothing.
        assert_eq!(t.series_count(), 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let t = Telemetry::new();
        t.describe_histogram("latency_seconds", "Latency.", &[0.1, 1.0])
            .unwrap();
        for v in [0.0625, 0.1, 0.5, 3.0] {
            t.observe("latency_seconds", &[("op", "x")], v).unwrap();
        }
        let h = t.histogram("latency_seconds", &[]).unwrap();
        h.observe(0.25);
        assert_eq!(
            t.render(),
            "# HELP latency_seconds Latency.\n\
             # TYPE latency_seconds histogram\n\
             latency_seconds_bucket{le=\"0.1\"} 0\n\
             latency_seconds_bucket{le=\"1\"} 1\n\
             latency_seconds_bucket{le=\"+Inf\"} 1\n\
             latency_seconds_sum 0.25\n\
             latency_seconds_count 1\n\
             latency_seconds_bucket{op=\"x\",le=\"0.1\"} 2\n\
             latency_seconds_bucket{op=\"x\",le=\"1\"} 3\n\
             latency_seconds_bucket{op=\"x\",le=\"+Inf\"} 4\n\
             latency_seconds_sum{op=\"x\"} 3.6625\n\
             latency_seconds_count{op=\"x\"} 4\n"
        );
        assert!(t.describe_histogram("h2", "", &[1.0, 1.0]).is_err());
        assert!(t.describe_histogram("h2", "", &[]).is_err());
        assert!(t.describe_histogram("h2", "", &[f64::INFINITY]).is_err());
    }

    #[test]
    fn handles_and_removal() {
        let t = Telemetry::new();
        let c = t.counter("hits_total", &[("k", "v")]).unwrap();
        c.inc();
        c.inc_by(4);
        assert!((c.get() - 5.0).abs() < f64::EPSILON);
        let g = t.gauge("temp", &[]).unwrap();
        g.set(10.0);
        g.add(-2.5);
        assert!((g.get() - 7.5).abs() < f64::EPSILON);
        assert!(t.render().contains("hits_total{k=\"v\"} 5\n"));
        assert!(t.remove_series("hits_total", &[("k", "v")]));
        assert!(!t.remove_series("hits_total", &[("k", "v")]));
        assert!(!t.render().contains("hits_total"));
        assert!(t.remove_family("temp"));
        assert_eq!(t.render(), "");
    }
}
