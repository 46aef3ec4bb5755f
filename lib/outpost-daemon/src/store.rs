//! The daemon's persistent state: the catalog, the last task of each package, the watch over
//! each running experiment and the history of past watches, in
//! `<root>/state.redb`. Package versions are not stored here: the repository on disk is their
//! only truth.
//!
//! redb holds an exclusive lock on the file, so a second daemon on the same root cannot open
//! it. Every write is a committed transaction, so a crash leaves either the old or the new
//! value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_config::ConfigCatalog;
use outpost_types::wire::{Catalog, Task, WatchSummary};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::error::DaemonError;
use crate::watch::WatchSpec;

mod extensions;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const WATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("experiment_watches");
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("experiment_history");
const CATALOG_KEY: &str = "catalog";
const CONFIG_CATALOG_KEY: &str = "config_catalog";
/// Past watches kept per package.
pub(crate) const HISTORY_LEN: usize = 20;
/// redb's page cache; the state is a few kilobytes, so keep the daemon small.
const CACHE_BYTES: usize = 256 * 1024;

/// Handle to `state.redb`.
#[derive(Debug)]
pub(crate) struct Store {
    db: redb::Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the state file.
    pub(crate) fn open(path: &Path) -> Result<Self, DaemonError> {
        let err = |e: redb::Error| DaemonError::state(path, e);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| err(e.into()))?;
        // Make sure both tables exist so readers never see "table does not exist".
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        txn.open_table(META).map_err(|e| err(e.into()))?;
        txn.open_table(TASKS).map_err(|e| err(e.into()))?;
        txn.open_table(WATCHES).map_err(|e| err(e.into()))?;
        txn.open_table(HISTORY).map_err(|e| err(e.into()))?;
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> DaemonError {
        DaemonError::state(&self.path, e.into())
    }

    /// The stored catalog (empty if none was ever set).
    pub(crate) fn catalog(&self) -> Result<Catalog, DaemonError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(META).map_err(|e| self.err(e))?;
        match table.get(CATALOG_KEY).map_err(|e| self.err(e))? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| DaemonError::corrupt(&self.path, e))
            }
            None => Ok(Catalog::default()),
        }
    }

    /// Replaces the stored catalog.
    pub(crate) fn set_catalog(&self, catalog: &Catalog) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(catalog).map_err(|e| DaemonError::corrupt(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| self.err(e))?;
            table
                .insert(CATALOG_KEY, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The stored config catalog (empty if none was ever set).
    pub(crate) fn config_catalog(&self) -> Result<ConfigCatalog, DaemonError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(META).map_err(|e| self.err(e))?;
        match table.get(CONFIG_CATALOG_KEY).map_err(|e| self.err(e))? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| DaemonError::corrupt(&self.path, e))
            }
            None => Ok(ConfigCatalog::default()),
        }
    }

    /// Replaces the stored config catalog.
    pub(crate) fn set_config_catalog(&self, catalog: &ConfigCatalog) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(catalog).map_err(|e| DaemonError::corrupt(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| self.err(e))?;
            table
                .insert(CONFIG_CATALOG_KEY, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Every stored task, by package name.
    pub(crate) fn tasks(&self) -> Result<BTreeMap<String, Task>, DaemonError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(TASKS).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let task: Task = serde_json::from_slice(v.value())
                .map_err(|e| DaemonError::corrupt(&self.path, e))?;
            out.insert(k.value().to_string(), task);
        }
        Ok(out)
    }

    /// Records the last task of a package.
    pub(crate) fn put_task(&self, package: &str, task: &Task) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(task).map_err(|e| DaemonError::corrupt(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            table
                .insert(package, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Forgets the last task of a package.
    pub(crate) fn delete_task(&self, package: &str) -> Result<(), DaemonError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            table.remove(package).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

impl Store {
    /// Every persisted experiment watch, by package name.
    pub(crate) fn watches(&self) -> Result<BTreeMap<String, WatchSpec>, DaemonError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(WATCHES).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let spec: WatchSpec = serde_json::from_slice(v.value())
                .map_err(|e| DaemonError::corrupt(&self.path, e))?;
            out.insert(k.value().to_string(), spec);
        }
        Ok(out)
    }

    /// Records (or replaces) the watch of a package.
    pub(crate) fn put_watch(&self, package: &str, spec: &WatchSpec) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(spec).map_err(|e| DaemonError::corrupt(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(WATCHES).map_err(|e| self.err(e))?;
            table
                .insert(package, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// In one transaction: forgets the watch of `package` if it is the one with `id`, and
    /// appends `summary` to its history (keeping the last [`HISTORY_LEN`]).
    pub(crate) fn end_watch(
        &self,
        package: &str,
        id: &str,
        summary: &WatchSummary,
    ) -> Result<(), DaemonError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut watches = txn.open_table(WATCHES).map_err(|e| self.err(e))?;
            let current = match watches.get(package).map_err(|e| self.err(e))? {
                Some(v) => serde_json::from_slice::<WatchSpec>(v.value()).ok(),
                None => None,
            };
            if current.is_some_and(|c| c.id == id) {
                watches.remove(package).map_err(|e| self.err(e))?;
            }
            let mut history = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
            let mut past: Vec<WatchSummary> = match history.get(package).map_err(|e| self.err(e))? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| DaemonError::corrupt(&self.path, e))?,
                None => Vec::new(),
            };
            past.push(summary.clone());
            if past.len() > HISTORY_LEN {
                past.drain(..past.len() - HISTORY_LEN);
            }
            let bytes =
                serde_json::to_vec(&past).map_err(|e| DaemonError::corrupt(&self.path, e))?;
            history
                .insert(package, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The past watches of a package, oldest first.
    pub(crate) fn history(&self, package: &str) -> Result<Vec<WatchSummary>, DaemonError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
        match table.get(package).map_err(|e| self.err(e))? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| DaemonError::corrupt(&self.path, e))
            }
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_types::wire::{CatalogEntry, TaskState};

    #[test]
    fn catalog_and_tasks_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let catalog = Catalog {
            packages: vec![CatalogEntry {
                package: "p".into(),
                version: "1".into(),
                url: "oci://r.io/p:1".into(),
                sha256: String::new(),
                size: 0,
                platform: String::new(),
                arch: String::new(),
                health: None,
            }],
        };
        let task = Task {
            id: "t".into(),
            operation: "install".into(),
            version: Some("1".into()),
            state: TaskState::Done,
            error: None,
            progress: None,
        };
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.catalog().unwrap(), Catalog::default());
            store.set_catalog(&catalog).unwrap();
            store.put_task("p", &task).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.catalog().unwrap(), catalog);
        assert_eq!(store.tasks().unwrap()["p"], task);
    }

    #[test]
    fn config_catalog_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let catalog: ConfigCatalog = serde_json::from_value(serde_json::json!({
            "d1": {"id": "d1", "file_operations": [
                {"file_op": "merge-patch", "file_path": "/a.yaml", "patch": {"k": "SEC[k]"}}
            ]}
        }))
        .unwrap();
        {
            let store = Store::open(&path).unwrap();
            assert!(store.config_catalog().unwrap().is_empty());
            store.set_config_catalog(&catalog).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.config_catalog().unwrap(), catalog);
        assert_eq!(store.catalog().unwrap(), Catalog::default());
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap_err();
        assert!(second.to_string().contains("state.redb"), "{second}");
    }
}
