//! Staging directories: where a version is unpacked before it is renamed into place.

use std::path::{Path, PathBuf};

use crate::error::RepoError;
use crate::fsutil;
use crate::repository::Inner;

/// An empty directory `tmp/<label>-<random>`, on the same filesystem as `packages/`, for one
/// version's payload. Hand it to [`crate::Repository::install`] or
/// [`crate::Repository::start_experiment`], which rename it into place.
///
/// While it lives, GC and [`crate::Repository::clean_staging`] in the same process (through any
/// handle) leave it alone. Dropped without being consumed by an operation (the caller gave
/// up, the unpack failed, the operation refused or was a no-op, or rolled back), it is deleted;
/// a failure to delete is logged, and the next GC deletes it.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    consumed: bool,
}

impl StagingDir {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            consumed: false,
        }
    }

    /// The directory to unpack into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the directory now, reporting a failure that dropping would only log.
    pub fn discard(mut self) -> Result<(), RepoError> {
        self.consumed = true;
        fsutil::remove_any(&self.path)
            .map_err(|e| RepoError::fs("delete the staging directory", &self.path, e))
    }

    /// Marks the tree as moved into the repository: nothing is left to delete.
    pub(crate) fn consume(mut self) {
        self.consumed = true;
    }

    pub(crate) fn belongs_to(&self, inner: &Inner) -> bool {
        self.path.parent() == Some(inner.tmp.as_path())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.consumed
            && let Err(e) = fsutil::remove_any(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e,
                "could not delete a staging directory; the next GC will");
        }
        live::unregister(&self.path);
    }
}

/// The staging directories alive in this process, whichever handle made them: GC and
/// `clean_staging` leave these alone.
pub(crate) mod live {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, PoisonError};

    static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

    fn set() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
        // The set is only ever inserted into or removed from; a panic elsewhere cannot leave
        // it half-updated.
        LIVE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `path`; false if it already was.
    pub(crate) fn register(path: &Path) -> bool {
        set().insert(path.to_path_buf())
    }

    pub(crate) fn unregister(path: &Path) {
        set().remove(path);
    }

    pub(crate) fn contains(path: &Path) -> bool {
        set().contains(path)
    }
}

/// Keeps a label usable as part of a file name: characters outside `[A-Za-z0-9._+~-]` become
/// `_`, at most 64 of them, never empty and never starting with a dot.
pub(crate) fn sanitize_label(label: &str) -> String {
    let mut out: String = label
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push_str("staging");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sanitized() {
        assert_eq!(
            sanitize_label("datadog-agent-7.50.0"),
            "datadog-agent-7.50.0"
        );
        assert_eq!(sanitize_label("../../etc"), "_._.._etc");
        assert_eq!(sanitize_label(""), "staging");
        assert_eq!(sanitize_label("a/b\0c"), "a_b_c");
        assert_eq!(sanitize_label(&"x".repeat(300)).len(), 64);
        assert_eq!(sanitize_label("é"), "_");
    }
}
