//! What checks submit, as the agent commits it: the `service:<x>` tag is already appended,
//! `hostname` is what the check passed (`""` means the agent's default hostname unless the
//! instance set `empty_default_hostname`), and tags keep the check's order.

use serde::Serialize;

/// The metric types of the `aggregator` module (`aggregator.GAUGE` ... `aggregator.HISTORATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    /// `GAUGE` (0)
    Gauge,
    /// `RATE` (1)
    Rate,
    /// `COUNT` (2)
    Count,
    /// `MONOTONIC_COUNT` (3)
    MonotonicCount,
    /// `COUNTER` (4)
    Counter,
    /// `HISTOGRAM` (5)
    Histogram,
    /// `HISTORATE` (6)
    Historate,
}

impl MetricType {
    /// The type for the integer constant Python passes, if it is one of the seven.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Gauge,
            1 => Self::Rate,
            2 => Self::Count,
            3 => Self::MonotonicCount,
            4 => Self::Counter,
            5 => Self::Histogram,
            6 => Self::Historate,
            _ => return None,
        })
    }

    /// The lowercase name used in output (`gauge`, `monotonic_count`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Rate => "rate",
            Self::Count => "count",
            Self::MonotonicCount => "monotonic_count",
            Self::Counter => "counter",
            Self::Histogram => "histogram",
            Self::Historate => "historate",
        }
    }
}

/// One metric sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Metric name, namespace included.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub metric_type: MetricType,
    /// The value (may be non-finite).
    pub value: f64,
    /// Tags, in the check's order, then `service:<x>`.
    pub tags: Vec<String>,
    /// Hostname as passed by the check (`""`: the default).
    pub hostname: String,
    /// Whether the first value of a monotonic count is flushed.
    pub flush_first_value: bool,
}

/// One service check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceCheck {
    /// Service check name.
    pub name: String,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (as passed).
    pub status: i64,
    /// Tags, then `service:<x>`.
    pub tags: Vec<String>,
    /// Hostname as passed (`""`: the default).
    pub hostname: String,
    /// Message.
    pub message: String,
}

/// One event: the keys the agent reads from the event dict. Absent keys stay `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Event {
    /// `msg_title`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_title: Option<String>,
    /// `msg_text`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_text: Option<String>,
    /// `timestamp` (seconds; a present non-integer becomes 0, meaning "now", as in the agent)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// `priority`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// `host`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `alert_type`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_type: Option<String>,
    /// `aggregation_key`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation_key: Option<String>,
    /// `source_type_name`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_type_name: Option<String>,
    /// `event_type`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// `tags` then `service:<x>`; `None` when the dict has no `tags` and there is no service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// One histogram bucket (OpenMetrics histograms sent as distributions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramBucket {
    /// Metric name.
    pub name: String,
    /// Count of the bucket.
    pub value: i64,
    /// Lower bound (kept as the 64-bit float Python passed).
    pub lower_bound: f64,
    /// Upper bound (`+Inf` for the last bucket).
    pub upper_bound: f64,
    /// Whether the count is cumulative over time.
    pub monotonic: bool,
    /// Hostname as passed.
    pub hostname: String,
    /// Tags, then `service:<x>`.
    pub tags: Vec<String>,
    /// Whether the first value is flushed.
    pub flush_first_value: bool,
    /// Sent through `submit_histogram_bucket_multi` (buckets told apart by bounds too).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub multiple_buckets: bool,
}

/// One event-platform event (DBM samples and the like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventPlatformEvent {
    /// The track, e.g. `dbm-samples`.
    pub event_type: String,
    /// The raw event (JSON text for most tracks; bytes are kept as given).
    #[serde(serialize_with = "lossy_utf8")]
    pub raw_event: Vec<u8>,
}

fn lossy_utf8<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// One log line sent with `datadog_agent.send_log` (a JSON object as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckLog {
    /// The JSON text the check passed.
    pub line: String,
}

/// Everything one instance submitted between two commits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Submissions {
    /// Metric samples.
    pub metrics: Vec<Metric>,
    /// Service checks.
    pub service_checks: Vec<ServiceCheck>,
    /// Events.
    pub events: Vec<Event>,
    /// Histogram buckets.
    pub histogram_buckets: Vec<HistogramBucket>,
    /// Event-platform events.
    pub event_platform_events: Vec<EventPlatformEvent>,
    /// Logs from `send_log`.
    pub logs: Vec<CheckLog>,
}

impl Submissions {
    /// True when nothing was submitted.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
            && self.service_checks.is_empty()
            && self.events.is_empty()
            && self.histogram_buckets.is_empty()
            && self.event_platform_events.is_empty()
            && self.logs.is_empty()
    }
}

/// Tags `set_external_tags` attached to a host for one source type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalTags {
    /// The host.
    pub hostname: String,
    /// The source type (e.g. `vsphere`).
    pub source_type: String,
    /// The tags (non-string items skipped).
    pub tags: Vec<String>,
}
