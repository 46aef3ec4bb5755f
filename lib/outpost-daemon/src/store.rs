//! The daemon's persistent state: the catalog and the last task of each package, in
//! `<root>/state.redb`. Package versions are not stored here: the repository on disk is their
//! only truth.
//!
//! redb holds an exclusive lock on the file, so a second daemon on the same root cannot open
//! it. Every write is a committed transaction, so a crash leaves either the old or the new
//! value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_types::wire::{Catalog, Task};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::error::DaemonError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const CATALOG_KEY: &str = "catalog";
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
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap_err();
        assert!(second.to_string().contains("state.redb"), "{second}");
    }
}
