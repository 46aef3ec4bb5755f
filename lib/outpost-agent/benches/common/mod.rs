//! What the agent benchmarks share.

use std::path::{Path, PathBuf};

use outpost_agent::RunFormat;
use outpost_checks::{CheckError, RunReport};
use serde_json::Value;

/// The venv with `datadog-checks-base` (`OUTPOST_TEST_VENV`, or the repository's `.venv`).
#[allow(dead_code)] // the telemetry benchmark runs no Python
pub(crate) fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

/// Run results are not rendered: the benchmarks time the runs, not their JSON.
pub(crate) struct NoFormat;

impl RunFormat for NoFormat {
    fn run_entry(&self, _: &RunReport) -> Value {
        Value::Null
    }
    fn failed_entry(&self, _: &str, _: &CheckError) -> Value {
        Value::Null
    }
}
