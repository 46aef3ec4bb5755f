//! The extensions installed with each package: the list the last install asked for, installed
//! again into every new version (experiment start) so that a promote keeps them.

use std::collections::BTreeMap;

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::Store;
use crate::error::DaemonError;

const EXTENSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("extensions");

impl Store {
    /// The extensions of every package that has some.
    pub(crate) fn all_extensions(&self) -> Result<BTreeMap<String, Vec<String>>, DaemonError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(EXTENSIONS) {
            Ok(t) => t,
            // Never written yet (a state file from before extensions).
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let names: Vec<String> = serde_json::from_slice(v.value())
                .map_err(|e| DaemonError::corrupt(&self.path, e))?;
            out.insert(k.value().to_string(), names);
        }
        Ok(out)
    }

    /// The extensions of `package` (empty when none).
    pub(crate) fn extensions(&self, package: &str) -> Result<Vec<String>, DaemonError> {
        Ok(self.all_extensions()?.remove(package).unwrap_or_default())
    }

    /// Records the extensions of `package` (an empty list forgets them).
    pub(crate) fn set_extensions(
        &self,
        package: &str,
        names: &[String],
    ) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(names).map_err(|e| DaemonError::corrupt(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(EXTENSIONS).map_err(|e| self.err(e))?;
            if names.is_empty() {
                table.remove(package).map_err(|e| self.err(e))?;
            } else {
                table
                    .insert(package, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_survive_reopen_and_an_empty_list_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            assert!(store.all_extensions().unwrap().is_empty());
            store
                .set_extensions("demo", &["a".into(), "b".into()])
                .unwrap();
            store.set_extensions("other", &["c".into()]).unwrap();
            store.set_extensions("other", &[]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.extensions("demo").unwrap(), ["a", "b"]);
        assert!(store.extensions("other").unwrap().is_empty());
        assert_eq!(store.all_extensions().unwrap().len(), 1);
    }
}
