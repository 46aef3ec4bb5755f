//! Where runs go: the latest values for the Prometheus endpoint ([`SeriesStore`]) and, with
//! `--output`, every submission as JSON lines ([`JsonLines`]).

pub(crate) mod exposition;
mod jsonl;
mod prometheus;
mod runs;

use outpost_checks::{CheckError, RunReport};

pub use jsonl::{JsonLines, submission_lines};
pub use prometheus::{DropReason, RESERVED_PREFIXES, SeriesStore};
pub use runs::{DURATION_BOUNDS, RunMetrics};

/// How runs are shown as JSON: the instance entries of the `outpost check run --json`
/// document. The agent takes it from the command line's implementation so that
/// `POST /checks/{name}/run` and `--output` show exactly what `check run --json` shows.
pub trait RunFormat: Send + Sync + 'static {
    /// The instance entry of a run: an object with `check_id`, `error`, `warnings`,
    /// `metrics`, `service_checks`, `events`, `histogram_buckets`, `event_platform_events`,
    /// `metadata`, `external_tags`, `duration_ms`.
    fn run_entry(&self, report: &RunReport) -> serde_json::Value;

    /// The instance entry of an instance that failed to load (same keys, no submissions).
    fn failed_entry(&self, check_id: &str, error: &CheckError) -> serde_json::Value;
}
