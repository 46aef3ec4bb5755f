//! Garbage collection of old versions: after each operation, once its answer is sent, and on
//! the `packages.gc_interval` timer; always in the operations' turn order.

use super::*;

impl Daemon {
    /// Collects garbage now, waiting for any running operation first.
    pub async fn gc(self: &Arc<Self>) {
        let _guard = self.op_lock.lock().await;
        let this = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || this.gc_now()).await {
            tracing::warn!(error = %e, "garbage collection task failed");
        }
    }

    pub(super) fn gc_now(&self) {
        match self.repo.gc() {
            Ok(report) => {
                tracing::debug!(report = %report, "garbage collected");
                self.metrics.gc(Some(report.removed_versions.len()));
                *self
                    .gc_stats
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report);
            }
            Err(e) => {
                self.metrics.gc(None);
                self.gc_stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "garbage collection failed; will retry");
            }
        }
        self.gc_stats.runs.fetch_add(1, Ordering::Relaxed);
        match self.repo.states() {
            Ok(states) => self.metrics.packages(states.len()),
            Err(e) => tracing::debug!(error = %e, "could not count the installed packages"),
        }
        // GC repairs links and removes empty packages: let /status look again.
        self.state_changed();
        // Every operation ends with a collection: hand back what it freed.
        crate::allocator::trim();
    }
}
