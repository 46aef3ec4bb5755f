//! The catalog side of managed packages: a local `POST /catalog` may not touch the entries of
//! a package the applied fleet document manages.
//!
//! A new catalog **touches** a managed package when the list of that package's entries, in
//! order, differs from the list the daemon holds: an entry added, an entry removed (leaving
//! the package out of the new catalog removes all of them), or an entry changed (any field,
//! or the order, which decides which entry a lookup takes). Entries of other packages may
//! change freely, and a catalog that carries the managed entries exactly as `GET /catalog`
//! shows them is accepted. The poller's own merge of the document's catalog is not a local
//! change and is not checked.

use outpost_types::wire::{Catalog, CatalogEntry};

use crate::error::DaemonError;
use crate::ops::{Daemon, Requester};

/// How `new` touches the entries of `package` compared to `old`: `None` when they are the
/// same list, else `adds`, `removes` or `changes`.
fn touch(old: &Catalog, new: &Catalog, package: &str) -> Option<&'static str> {
    let of = |c: &'_ Catalog| -> Vec<CatalogEntry> {
        c.packages
            .iter()
            .filter(|e| e.package == package)
            .cloned()
            .collect()
    };
    let (before, after) = (of(old), of(new));
    if before == after {
        None
    } else if after.iter().all(|e| before.contains(e)) && after.len() < before.len() {
        Some("removes")
    } else if before.iter().all(|e| after.contains(e)) && after.len() > before.len() {
        Some("adds")
    } else {
        Some("changes")
    }
}

impl Daemon {
    /// Refuses a local catalog that touches (see the module docs) a package the applied
    /// fleet document manages, with [`DaemonError::CatalogManagedByFleet`] naming the first
    /// such package, unless `force` (then logged as an override). Daemons without `fleet:`,
    /// or before a document is applied, are not concerned.
    ///
    /// # Errors
    /// [`DaemonError::CatalogManagedByFleet`].
    pub fn check_catalog_managed(
        &self,
        new: &Catalog,
        force: bool,
        who: Requester,
    ) -> Result<(), DaemonError> {
        let Some(fleet) = self.fleet() else {
            return Ok(());
        };
        let status = fleet.status();
        let Some(generation) = status.applied_generation else {
            return Ok(());
        };
        let old = self.catalog();
        let Some((package, change)) = status
            .managed
            .iter()
            .find_map(|p| touch(&old, new, p).map(|c| (p.clone(), c)))
        else {
            return Ok(());
        };
        if force {
            tracing::warn!(
                caller.uid = who.uid, caller.pid = who.pid, package.name = %package,
                operation = "set_catalog", change, fleet.generation = generation,
                "local override of a package managed by the fleet document (force)"
            );
            return Ok(());
        }
        tracing::info!(
            caller.uid = who.uid, caller.pid = who.pid, package.name = %package,
            operation = "set_catalog", change, fleet.generation = generation,
            "refused: the catalog touches a package managed by the fleet document"
        );
        Err(DaemonError::CatalogManagedByFleet {
            package,
            change,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(package: &str, version: &str) -> CatalogEntry {
        serde_json::from_value(serde_json::json!({
            "package": package, "version": version,
            "url": format!("oci://r.example/{package}:{version}"),
        }))
        .expect("a catalog entry")
    }

    fn catalog(entries: &[CatalogEntry]) -> Catalog {
        Catalog {
            packages: entries.to_vec(),
        }
    }

    #[test]
    fn touching_is_about_the_packages_own_entries_in_order() {
        let (w1, w2, l1) = (entry("web", "1"), entry("web", "2"), entry("local", "1"));
        let old = catalog(&[w1.clone(), w2.clone(), l1.clone()]);
        // Other packages change freely; the managed entries may move among them.
        assert_eq!(
            touch(&old, &catalog(&[w1.clone(), w2.clone()]), "web"),
            None
        );
        assert_eq!(
            touch(&old, &catalog(&[l1.clone(), w1.clone(), w2.clone()]), "web"),
            None
        );
        assert_eq!(
            touch(&old, &catalog(&[w1.clone(), l1.clone()]), "web"),
            Some("removes")
        );
        assert_eq!(
            touch(&old, &catalog(std::slice::from_ref(&l1)), "web"),
            Some("removes")
        );
        assert_eq!(
            touch(
                &old,
                &catalog(&[w1.clone(), w2.clone(), entry("web", "3")]),
                "web"
            ),
            Some("adds")
        );
        let mut moved = w2.clone();
        moved.url = "oci://elsewhere.example/web:2".into();
        assert_eq!(
            touch(&old, &catalog(&[w1.clone(), moved]), "web"),
            Some("changes")
        );
        assert_eq!(
            touch(&old, &catalog(&[w2.clone(), w1.clone()]), "web"),
            Some("changes")
        );
        // A package with no entry before gains one: an addition.
        assert_eq!(touch(&catalog(&[]), &old, "web"), Some("adds"));
    }
}
