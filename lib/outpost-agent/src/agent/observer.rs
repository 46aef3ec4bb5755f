//! The sinks, as the scheduler's observer: every finished run goes to the series store and
//! the `--output` file; a retired instance's series go away.

use std::sync::Arc;

use outpost_checks::RunReport;

use crate::check::PythonCheck;
use crate::scheduler::{Observer, RunInfo};
use crate::sinks::{JsonLines, RunFormat, SeriesStore, submission_lines};

/// The sinks, as the scheduler's observer.
pub(super) struct Sinks {
    pub(super) store: Arc<SeriesStore>,
    pub(super) output: Option<Arc<JsonLines>>,
    pub(super) format: Arc<dyn RunFormat>,
}

impl Observer<PythonCheck> for Sinks {
    fn completed(&self, _job: &Arc<PythonCheck>, report: &RunReport, _run: &RunInfo) {
        let id = report.check_id.as_str();
        if let Some(error) = &report.error {
            tracing::warn!(check.id = id, error = %error.message, "check run failed");
        }
        for w in &report.warnings {
            tracing::info!(check.id = id, warning = %w, "check warning");
        }
        self.store.commit_run(report);
        if let Some(output) = &self.output {
            let lines = submission_lines(&*self.format, report);
            if let Err(e) = output.write(&lines) {
                // One line per failure would flood the log on a full disk: 1, 2, 4, 8, ...
                let n = output.errors();
                if n.is_power_of_two() {
                    tracing::error!(error = %e, failures = n, "cannot write --output");
                }
            }
        }
    }

    fn retired(&self, job: &Arc<PythonCheck>) {
        let removed = self
            .store
            .remove_owner(<PythonCheck as crate::Job>::id(job));
        tracing::debug!(
            check.id = <PythonCheck as crate::Job>::id(job),
            series = removed,
            "series of an unscheduled instance removed"
        );
    }
}
