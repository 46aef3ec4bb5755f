//! Extensions in the package operations: which ones a new version gets, and the record of
//! them (see `docs/packages.md`, "Extension layers").
//!
//! * `install` with `"extensions": [...]` installs exactly those (an empty list: none); without
//!   the field, the ones recorded for the package, so an upgrade by install keeps them.
//! * `experiment/start` installs the recorded ones into the new version: an extension the new
//!   version lacks fails the start (`extension_not_found`, 422) before anything is switched.
//! * `experiment/promote` keeps the record (the experiment already has them), `remove` forgets
//!   it.
//!
//! Extensions are unpacked into the staging tree with the payload, so the version appears with
//! them or not at all. The record is written after the switch.

use std::collections::BTreeMap;

use super::*;

impl Daemon {
    /// The extensions a new version of `name` gets: `requested` (sorted, duplicates dropped)
    /// or, when absent, those recorded.
    pub(super) fn extensions_for(
        &self,
        name: &PackageName,
        requested: Option<&[String]>,
    ) -> Result<Vec<String>, DaemonError> {
        let mut names = match requested {
            Some(r) => r.to_vec(),
            None => self.store.extensions(name.as_str())?,
        };
        names.sort();
        names.dedup();
        for n in &names {
            outpost_fetch::extension::validate_name(n)?;
        }
        Ok(names)
    }

    /// The extensions recorded for every package.
    pub(super) fn recorded_extensions(&self) -> BTreeMap<String, Vec<String>> {
        self.store.all_extensions().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the recorded extensions");
            BTreeMap::new()
        })
    }

    /// Records the extensions of `name` after a switch to a version that has them.
    pub(super) fn record_extensions(
        &self,
        name: &PackageName,
        names: &[String],
    ) -> Result<(), DaemonError> {
        self.store.set_extensions(name.as_str(), names)?;
        self.state_changed();
        Ok(())
    }
}
