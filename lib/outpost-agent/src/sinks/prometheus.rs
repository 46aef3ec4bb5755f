//! The latest value of every series checks submitted, for the Prometheus endpoint.
//!
//! # Names
//! Metric and service check names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*` (every other
//! character becomes `_`, a leading digit gets a `_` prefix): `hello.world` is
//! `hello_world`. Names starting with `outpost_` or `rtloader__` belong to the agent's own
//! series; check submissions under them are dropped (counted as `reserved_name`).
//!
//! # Tags as labels
//! * A tag `key:value` (split at the first `:`) becomes the label `key="value"`; the value
//!   keeps its own colons (`url:http://x` is `url="http://x"`).
//! * A tag without a value (`canary`, or one with an empty key such as `:x`) is collected in
//!   the label `tags`: `tags="canary,primary"`.
//! * Label names are sanitised to `[a-zA-Z_][a-zA-Z0-9_]*` like metric names; a name starting
//!   with `__` (reserved by Prometheus) gets the prefix `tag`, and so do `le` on histograms and
//!   `quantile` on summaries (`tag_le`, `tag_quantile`).
//! * Several values for one label name (Datadog tags are a set: `team:a`, `team:b`; or two
//!   keys that sanitise alike) are sorted, deduplicated and joined with `,`: `team="a,b"`.
//! * A non-empty hostname the check passed is the label `host` (merged like a `host:` tag).
//! * The series is the name plus this label set: tag order does not matter.
//!
//! # Types
//! | submitted | exported as | value |
//! |---|---|---|
//! | gauge | gauge | the latest value |
//! | rate | gauge | the latest raw value (the rate itself is the consumer's to compute) |
//! | count | counter | running total of the counts submitted (negative or non-finite counts are dropped) |
//! | monotonic_count | counter | the latest value (already cumulative; a decrease is a counter reset) |
//! | counter (`increment`/`decrement`) | gauge | the sum of the deltas submitted in the latest run |
//! | histogram, historate | summary without quantiles | `_sum` and `_count` of every sample since the series appeared |
//! | histogram bucket | histogram | per upper bound: the latest value of a monotonic bucket, the running total of a non-monotonic one; exported cumulatively with a `+Inf` bucket and `_count` (no `_sum`: buckets do not carry one) |
//! | service check | gauge | the status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) |
//!
//! A family's type is fixed by its first submission; a later submission of the same name
//! with another type is dropped (`type_conflict`, logged once per name). Events, logs and
//! event-platform events have no Prometheus form (they go to `--output`).
//!
//! # Lifetime
//! Each series remembers the check instance that last wrote it; when an instance is
//! unscheduled its series are removed ([`SeriesStore::remove_owner`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use outpost_api::telemetry::{sanitize_label_name, sanitize_metric_name};
use outpost_checks::{MetricType, Submissions};

use outpost_api::telemetry::escape_label_value;

use super::exposition::Exposition;
use super::runs::RunMetrics;

/// Prefixes of the agent's own series; checks may not use them.
pub const RESERVED_PREFIXES: [&str; 2] = ["outpost_", "rtloader__"];

/// Why a submission did not make it to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its name is taken by a family of another type.
    TypeConflict,
    /// Its name is one of the agent's own.
    ReservedName,
    /// A count that is negative or not finite, or a sample that is not finite where one is
    /// required (summaries, buckets, monotonic counts).
    InvalidValue,
}

impl DropReason {
    const ALL: [DropReason; 3] = [Self::TypeConflict, Self::ReservedName, Self::InvalidValue];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TypeConflict => "type_conflict",
            Self::ReservedName => "reserved_name",
            Self::InvalidValue => "invalid_value",
        }
    }
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Summary,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Summary => "summary",
            Self::Histogram => "histogram",
        }
    }

    /// The label name this type reserves.
    fn reserved_label(self) -> Option<&'static str> {
        match self {
            Self::Summary => Some("quantile"),
            Self::Histogram => Some("le"),
            Self::Gauge | Self::Counter => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Set(f64),
    Add(f64),
    Observe(f64),
    Bucket {
        upper: f64,
        value: f64,
        monotonic: bool,
    },
}

#[derive(Debug)]
struct Update {
    family: String,
    kind: Kind,
    labels: String,
    op: Op,
}

#[derive(Debug)]
enum Value {
    Scalar(f64),
    Summary {
        sum: f64,
        count: u64,
    },
    /// Per upper bound (sorted, `+Inf` last): the bucket's own count.
    Histogram(Vec<(f64, f64)>),
}

#[derive(Debug)]
struct Series {
    owner: Arc<str>,
    value: Value,
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    series: BTreeMap<String, Series>,
}

#[derive(Debug, Default)]
struct Store {
    families: BTreeMap<String, Family>,
    /// Which series each owner wrote last: `(family, labels)`.
    owners: HashMap<Arc<str>, HashSet<(String, String)>>,
    /// Family names already warned about for a type conflict.
    warned: HashSet<String>,
}

/// The latest value of every series, by family then label set. Shared by the runner threads
/// (which commit) and the endpoint (which renders). See the module docs for the mapping.
#[derive(Debug, Default)]
pub struct SeriesStore {
    store: RwLock<Store>,
    dropped: [AtomicU64; 3],
    runs: RunMetrics,
}

/// Builds the label set of a submission (see the module docs).
fn label_set(tags: &[String], hostname: &str, reserved: Option<&str>) -> String {
    let mut pairs: Vec<(Cow<'_, str>, &str)> = Vec::with_capacity(tags.len() + 1);
    for tag in tags {
        match tag.split_once(':') {
            Some((key, value)) if !key.is_empty() => {
                pairs.push((sanitize_label_name(key), value));
            }
            _ => pairs.push((Cow::Borrowed("tags"), tag.as_str())),
        }
    }
    if !hostname.is_empty() {
        pairs.push((Cow::Borrowed("host"), hostname));
    }
    for (name, _) in &mut pairs {
        if name.starts_with("__") || reserved == Some(name.as_ref()) {
            *name = Cow::Owned(format!(
                "tag{}{name}",
                if name.starts_with('_') { "" } else { "_" }
            ));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut out = String::with_capacity(pairs.len() * 24);
    let mut previous: Option<&str> = None;
    for (name, value) in &pairs {
        if previous == Some(name.as_ref()) {
            // Another value of the same label: joined inside the open quotes.
            out.pop();
            out.push(',');
        } else {
            if previous.is_some() {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
        }
        escape_label_value(value, &mut out);
        out.push('"');
        previous = Some(name.as_ref());
    }
    out
}

fn reserved_name(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl SeriesStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn drop_one(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Submissions dropped so far, by reason.
    pub fn dropped(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.dropped[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    fn update(
        &self,
        updates: &mut Vec<Update>,
        name: &str,
        kind: Kind,
        tags: &[String],
        hostname: &str,
        op: Op,
    ) {
        let family = sanitize_metric_name(name);
        if reserved_name(&family) {
            self.drop_one(DropReason::ReservedName);
            return;
        }
        updates.push(Update {
            labels: label_set(tags, hostname, kind.reserved_label()),
            family: family.into_owned(),
            kind,
            op,
        });
    }

    /// Records one finished run (its duration and whether it failed, see
    /// [`RunMetrics`]) and commits what it submitted, under its check ID.
    pub fn commit_run(&self, report: &outpost_checks::RunReport) {
        let id = &report.check_id;
        self.runs.record(
            id.check_name(),
            id.as_str(),
            report.duration,
            report.error.is_some(),
        );
        self.commit(id.as_str(), &report.submissions);
    }

    /// The run counts and durations by instance.
    pub fn runs(&self) -> &RunMetrics {
        &self.runs
    }

    /// Commits what one run of `owner` submitted.
    pub fn commit(&self, owner: &str, submissions: &Submissions) {
        let mut updates = Vec::with_capacity(
            submissions.metrics.len()
                + submissions.service_checks.len()
                + submissions.histogram_buckets.len(),
        );
        // `counter` samples are summed within the run before they are set.
        let mut run_sums: Vec<(usize, f64)> = Vec::new();
        for m in &submissions.metrics {
            let (kind, op) = match m.metric_type {
                MetricType::Gauge | MetricType::Rate => (Kind::Gauge, Op::Set(m.value)),
                MetricType::Count if m.value.is_finite() && m.value >= 0.0 => {
                    (Kind::Counter, Op::Add(m.value))
                }
                MetricType::MonotonicCount if m.value.is_finite() && m.value >= 0.0 => {
                    (Kind::Counter, Op::Set(m.value))
                }
                MetricType::Histogram | MetricType::Historate if m.value.is_finite() => {
                    (Kind::Summary, Op::Observe(m.value))
                }
                MetricType::Counter => (Kind::Gauge, Op::Set(m.value)),
                MetricType::Count
                | MetricType::MonotonicCount
                | MetricType::Histogram
                | MetricType::Historate => {
                    self.drop_one(DropReason::InvalidValue);
                    continue;
                }
            };
            let before = updates.len();
            self.update(&mut updates, &m.name, kind, &m.tags, &m.hostname, op);
            if m.metric_type == MetricType::Counter && updates.len() > before {
                let last = updates.len() - 1;
                let same = run_sums.iter_mut().find(|(i, _)| {
                    let (a, b) = (&updates[*i], &updates[last]);
                    a.family == b.family && a.labels == b.labels
                });
                match same {
                    Some((i, sum)) => {
                        *sum += m.value;
                        let total = *sum;
                        updates[*i].op = Op::Set(total);
                        updates.pop();
                    }
                    None => run_sums.push((last, m.value)),
                }
            }
        }
        for sc in &submissions.service_checks {
            #[allow(clippy::cast_precision_loss)] // statuses are 0..3
            let status = sc.status as f64;
            self.update(
                &mut updates,
                &sc.name,
                Kind::Gauge,
                &sc.tags,
                &sc.hostname,
                Op::Set(status),
            );
        }
        for b in &submissions.histogram_buckets {
            #[allow(clippy::cast_precision_loss)] // bucket counts stay far below 2^53
            let value = b.value as f64;
            if b.upper_bound.is_nan() || b.value < 0 {
                self.drop_one(DropReason::InvalidValue);
                continue;
            }
            self.update(
                &mut updates,
                &b.name,
                Kind::Histogram,
                &b.tags,
                &b.hostname,
                Op::Bucket {
                    upper: b.upper_bound,
                    value,
                    monotonic: b.monotonic,
                },
            );
        }
        if updates.is_empty() {
            return;
        }
        self.apply(owner, updates);
    }

    /// Sets a gauge owned by `owner` (the agent's own series use an owner no check has, e.g.
    /// `""`).
    pub fn set_gauge(&self, owner: &str, name: &str, tags: &[String], value: f64) {
        let mut updates = Vec::with_capacity(1);
        self.update(&mut updates, name, Kind::Gauge, tags, "", Op::Set(value));
        if !updates.is_empty() {
            self.apply(owner, updates);
        }
    }

    fn apply(&self, owner: &str, updates: Vec<Update>) {
        let mut guard = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let store = &mut *guard;
        let owner: Arc<str> = match store.owners.get_key_value(owner) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(owner),
        };
        for u in updates {
            let family = store
                .families
                .entry(u.family.clone())
                .or_insert_with(|| Family {
                    kind: u.kind,
                    series: BTreeMap::new(),
                });
            if family.kind != u.kind {
                self.drop_one(DropReason::TypeConflict);
                if store.warned.insert(u.family.clone()) {
                    tracing::warn!(
                        metric.name = %u.family,
                        metric.kind = family.kind.as_str(),
                        submitted.kind = u.kind.as_str(),
                        check.id = %owner,
                        "a check submitted a series under a name another type already uses; dropped"
                    );
                }
                continue;
            }
            let (series, created) = match family.series.get_mut(&u.labels) {
                Some(s) => (s, false),
                None => {
                    let value = match u.op {
                        Op::Set(_) | Op::Add(_) => Value::Scalar(0.0),
                        Op::Observe(_) => Value::Summary { sum: 0.0, count: 0 },
                        Op::Bucket { .. } => Value::Histogram(Vec::new()),
                    };
                    let s = family.series.entry(u.labels.clone()).or_insert(Series {
                        owner: Arc::clone(&owner),
                        value,
                    });
                    (s, true)
                }
            };
            if created || series.owner != owner {
                if !created {
                    let previous = std::mem::replace(&mut series.owner, Arc::clone(&owner));
                    if let Some(set) = store.owners.get_mut(&previous) {
                        set.remove(&(u.family.clone(), u.labels.clone()));
                    }
                }
                store
                    .owners
                    .entry(Arc::clone(&owner))
                    .or_default()
                    .insert((u.family.clone(), u.labels.clone()));
            }
            match (&mut series.value, u.op) {
                (Value::Scalar(v), Op::Set(x)) => *v = x,
                (Value::Scalar(v), Op::Add(x)) => *v += x,
                (Value::Summary { sum, count }, Op::Observe(x)) => {
                    *sum += x;
                    *count += 1;
                }
                (
                    Value::Histogram(buckets),
                    Op::Bucket {
                        upper,
                        value,
                        monotonic,
                    },
                ) => match buckets.binary_search_by(|(b, _)| b.total_cmp(&upper)) {
                    Ok(i) if monotonic => buckets[i].1 = value,
                    Ok(i) => buckets[i].1 += value,
                    Err(i) => buckets.insert(i, (upper, value)),
                },
                // A family keeps one type, so the value kinds always match its updates.
                _ => self.drop_one(DropReason::TypeConflict),
            }
        }
    }

    /// Removes every series `owner` wrote last, and its run metrics. Returns how many
    /// submitted series.
    pub fn remove_owner(&self, owner: &str) -> usize {
        self.runs.remove(owner);
        self.remove_submitted(owner)
    }

    /// Removes the series `owner` submitted, and keeps its run counters (a disabled
    /// instance's stay until it is enabled or removed). Returns how many were removed.
    pub fn remove_submitted(&self, owner: &str) -> usize {
        let mut guard = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let store = &mut *guard;
        let Some(keys) = store.owners.remove(owner) else {
            return 0;
        };
        let mut removed = 0;
        for (family, labels) in keys {
            if let Some(f) = store.families.get_mut(&family) {
                removed += usize::from(f.series.remove(&labels).is_some());
                if f.series.is_empty() {
                    store.families.remove(&family);
                }
            }
        }
        removed
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        store.families.values().map(|f| f.series.len()).sum()
    }

    /// Renders every family not already in `out`.
    pub(crate) fn render(&self, out: &mut Exposition) {
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        for (name, family) in &store.families {
            if !out.family(name, family.kind.as_str(), "") {
                continue;
            }
            for (labels, series) in &family.series {
                match &series.value {
                    Value::Scalar(v) => out.sample(name, "", labels, None, *v),
                    Value::Summary { sum, count } => {
                        out.sample(name, "_sum", labels, None, *sum);
                        #[allow(clippy::cast_precision_loss)]
                        out.sample(name, "_count", labels, None, *count as f64);
                    }
                    Value::Histogram(buckets) => {
                        let mut cumulative = 0.0;
                        for (upper, count) in buckets {
                            cumulative += count;
                            out.sample(name, "_bucket", labels, Some(*upper), cumulative);
                        }
                        if buckets.last().is_none_or(|(u, _)| *u != f64::INFINITY) {
                            out.sample(name, "_bucket", labels, Some(f64::INFINITY), cumulative);
                        }
                        out.sample(name, "_count", labels, None, cumulative);
                    }
                }
            }
        }
    }

    /// Renders the store alone (tests, and callers without other series).
    pub fn render_text(&self) -> String {
        let mut out = Exposition::default();
        self.render(&mut out);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_checks::{HistogramBucket, Metric, ServiceCheck};

    fn metric(name: &str, t: MetricType, value: f64, tags: &[&str]) -> Metric {
        Metric {
            name: name.into(),
            metric_type: t,
            value,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            hostname: String::new(),
            flush_first_value: false,
        }
    }

    fn bucket(upper: f64, value: i64, monotonic: bool) -> HistogramBucket {
        HistogramBucket {
            name: "lat".into(),
            value,
            lower_bound: 0.0,
            upper_bound: upper,
            monotonic,
            hostname: String::new(),
            tags: vec!["svc:a".into()],
            flush_first_value: false,
            multiple_buckets: false,
        }
    }

    fn subs(metrics: Vec<Metric>) -> Submissions {
        Submissions {
            metrics,
            ..Submissions::default()
        }
    }

    #[test]
    fn tags_become_labels() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            label_set(&tags(&["env:prod", "url:http://x:80/a"]), "", None),
            r#"env="prod",url="http://x:80/a""#
        );
        // Order does not matter; duplicates are a sorted set.
        assert_eq!(
            label_set(&tags(&["team:b", "team:a", "team:b", "env:dev"]), "", None),
            r#"env="dev",team="a,b""#
        );
        // Valueless tags, an empty key, the hostname.
        assert_eq!(
            label_set(
                &tags(&["primary", "canary", ":odd", "host:x"]),
                "web-1",
                None
            ),
            r#"host="web-1,x",tags=":odd,canary,primary""#
        );
        // Invalid names are sanitised; names that collide merge; reserved ones are prefixed.
        assert_eq!(
            label_set(
                &tags(&["kube.pod:p", "kube-pod:q", "1st:y", "__name__:z"]),
                "",
                None
            ),
            r#"_1st="y",kube_pod="p,q",tag__name__="z""#
        );
        assert_eq!(
            label_set(&tags(&["le:1", "quantile:2"]), "", Some("le")),
            r#"quantile="2",tag_le="1""#
        );
        // Values are escaped; empty values are kept.
        assert_eq!(
            label_set(&tags(&["q:a\"b\\c", "empty:"]), "", None),
            r#"empty="",q="a\"b\\c""#
        );
        assert_eq!(label_set(&[], "", None), "");
    }

    #[test]
    fn types_map_to_prometheus_types() {
        let store = SeriesStore::new();
        let run = |m: Vec<Metric>| store.commit("c:1", &subs(m));
        run(vec![
            metric("g.v", MetricType::Gauge, 1.5, &["a:1"]),
            metric("g.v", MetricType::Gauge, 2.5, &["a:1"]),
            metric("r.v", MetricType::Rate, 10.0, &[]),
            metric("c.v", MetricType::Count, 3.0, &[]),
            metric("mc.v", MetricType::MonotonicCount, 100.0, &[]),
            metric("inc.v", MetricType::Counter, 2.0, &[]),
            metric("inc.v", MetricType::Counter, -0.5, &[]),
            metric("h.v", MetricType::Histogram, 4.0, &[]),
            metric("h.v", MetricType::Historate, 6.0, &[]),
        ]);
        run(vec![
            metric("c.v", MetricType::Count, 4.0, &[]),
            metric("mc.v", MetricType::MonotonicCount, 150.0, &[]),
            metric("inc.v", MetricType::Counter, 1.0, &[]),
            metric("h.v", MetricType::Histogram, 10.0, &[]),
            metric("c.v", MetricType::Count, -1.0, &[]),
            metric("c.v", MetricType::Count, f64::NAN, &[]),
            metric("g.v", MetricType::Gauge, f64::INFINITY, &["a:2"]),
        ]);
        assert_eq!(
            store.render_text(),
            "# TYPE c_v counter\nc_v 7\n\
             # TYPE g_v gauge\ng_v{a=\"1\"} 2.5\ng_v{a=\"2\"} +Inf\n\
             # TYPE h_v summary\nh_v_sum 20\nh_v_count 3\n\
             # TYPE inc_v gauge\ninc_v 1\n\
             # TYPE mc_v counter\nmc_v 150\n\
             # TYPE r_v gauge\nr_v 10\n"
        );
        assert_eq!(
            store.dropped()[2],
            (DropReason::InvalidValue, 2),
            "the negative and the NaN count"
        );
    }

    #[test]
    fn service_checks_are_gauges_of_their_status() {
        let store = SeriesStore::new();
        store.commit(
            "c:1",
            &Submissions {
                service_checks: vec![ServiceCheck {
                    name: "web.can_connect".into(),
                    status: 2,
                    tags: vec!["port:80".into()],
                    hostname: "h".into(),
                    message: "refused".into(),
                }],
                ..Submissions::default()
            },
        );
        assert_eq!(
            store.render_text(),
            "# TYPE web_can_connect gauge\nweb_can_connect{host=\"h\",port=\"80\"} 2\n"
        );
    }

    #[test]
    fn histogram_buckets_render_cumulatively() {
        let store = SeriesStore::new();
        let commit = |b: Vec<HistogramBucket>| {
            store.commit(
                "c:1",
                &Submissions {
                    histogram_buckets: b,
                    ..Submissions::default()
                },
            );
        };
        // Non-monotonic (per run) buckets accumulate; given out of order; no +Inf bucket.
        commit(vec![bucket(1.0, 3, false), bucket(0.5, 2, false)]);
        commit(vec![bucket(0.5, 1, false), bucket(1.0, 0, false)]);
        assert_eq!(
            store.render_text(),
            "# TYPE lat histogram\n\
             lat_bucket{svc=\"a\",le=\"0.5\"} 3\n\
             lat_bucket{svc=\"a\",le=\"1\"} 6\n\
             lat_bucket{svc=\"a\",le=\"+Inf\"} 6\n\
             lat_count{svc=\"a\"} 6\n"
        );
        // Monotonic buckets keep the latest value, +Inf included.
        let store = SeriesStore::new();
        let commit = |b: Vec<HistogramBucket>| {
            store.commit(
                "c:1",
                &Submissions {
                    histogram_buckets: b,
                    ..Submissions::default()
                },
            );
        };
        commit(vec![bucket(1.0, 5, true), bucket(f64::INFINITY, 1, true)]);
        commit(vec![bucket(1.0, 7, true), bucket(f64::INFINITY, 2, true)]);
        assert_eq!(
            store.render_text(),
            "# TYPE lat histogram\n\
             lat_bucket{svc=\"a\",le=\"1\"} 7\n\
             lat_bucket{svc=\"a\",le=\"+Inf\"} 9\n\
             lat_count{svc=\"a\"} 9\n"
        );
    }

    #[test]
    fn conflicts_and_reserved_names_are_dropped() {
        let store = SeriesStore::new();
        store.commit(
            "c:1",
            &subs(vec![
                metric("x", MetricType::Gauge, 1.0, &[]),
                metric("x", MetricType::Count, 1.0, &[]),
                metric("outpost.api.requests", MetricType::Gauge, 1.0, &[]),
                metric("rtloader..allocations", MetricType::Gauge, 1.0, &[]),
            ]),
        );
        assert_eq!(store.render_text(), "# TYPE x gauge\nx 1\n");
        let dropped: HashMap<&str, u64> = store
            .dropped()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        assert_eq!(dropped["type_conflict"], 1);
        assert_eq!(dropped["reserved_name"], 2);
        // A family of the rendered output already written elsewhere is left out.
        let api = outpost_api::Telemetry::new();
        api.add_counter("x", &[], 5.0).unwrap();
        let mut out = Exposition::default();
        out.append_telemetry(&api);
        store.render(&mut out);
        assert_eq!(out.finish(), "# TYPE x counter\nx 5\n");
    }

    #[test]
    fn series_go_away_with_the_instance_that_wrote_them() {
        let store = SeriesStore::new();
        store.commit(
            "a:1",
            &subs(vec![metric("m", MetricType::Gauge, 1.0, &["i:a"])]),
        );
        store.commit(
            "b:1",
            &subs(vec![metric("m", MetricType::Gauge, 2.0, &["i:b"])]),
        );
        store.commit(
            "b:1",
            &subs(vec![metric("only.b", MetricType::Gauge, 2.0, &[])]),
        );
        // a:1 takes over b's series by writing it last.
        store.commit(
            "a:1",
            &subs(vec![metric("m", MetricType::Gauge, 3.0, &["i:b"])]),
        );
        store.set_gauge("", "agent.up", &[], 1.0);
        assert_eq!(store.series_count(), 4);
        assert_eq!(store.remove_owner("b:1"), 1);
        assert_eq!(
            store.render_text(),
            "# TYPE agent_up gauge\nagent_up 1\n# TYPE m gauge\nm{i=\"a\"} 1\nm{i=\"b\"} 3\n"
        );
        assert_eq!(store.remove_owner("a:1"), 2);
        assert_eq!(store.remove_owner("a:1"), 0);
        assert_eq!(store.render_text(), "# TYPE agent_up gauge\nagent_up 1\n");
    }
}
