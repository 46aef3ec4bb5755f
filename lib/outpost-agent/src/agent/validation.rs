//! The validation of custom checks: once each, on a thread of its own, off the scheduling
//! path, exported as `datadog.agent.check_ready`.

use std::sync::{Arc, PoisonError};

use outpost_checks::{CHECK_READY_METRIC, Runtime, Validation, ValidationTarget};

use super::Agent;

impl Agent {
    /// Sends custom checks to the validation thread (started on first use): each is
    /// validated once, off the scheduling path, and its `datadog.agent.check_ready` gauge
    /// set.
    pub(super) fn validate_in_background(&self, runtime: &Runtime, names: Vec<String>) {
        let mut validator = self
            .inner
            .validator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if validator.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let runtime = runtime.clone();
            let store = Arc::clone(&self.inner.store);
            let results = Arc::clone(&self.inner.validations);
            let timeout = self.inner.options.validation_timeout;
            let spawned = std::thread::Builder::new()
                .name("check-validator".into())
                .spawn(move || {
                    for name in rx {
                        let v = runtime.validate(&ValidationTarget::Name(name.clone()), timeout);
                        let tags = v.tags(runtime.reported_version());
                        store.set_gauge("", CHECK_READY_METRIC, &tags, v.metric_value());
                        tracing::info!(
                            check.name = %name,
                            status = v.status.as_str(),
                            messages = %v.messages.join("; "),
                            "custom check validated"
                        );
                        results
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(name, v);
                    }
                });
            match spawned {
                Ok(_) => *validator = Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the validation thread; custom checks are not validated");
                    return;
                }
            }
        }
        if let Some(tx) = validator.as_ref() {
            for name in names {
                if tx.send(name).is_err() {
                    tracing::error!(
                        "the validation thread is gone; custom checks are not validated"
                    );
                    break;
                }
            }
        }
    }

    /// Validation results so far, by check name.
    pub fn validations(&self) -> Vec<Validation> {
        self.inner
            .validations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}
