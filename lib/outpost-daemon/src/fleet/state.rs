//! `<root>/fleet-state.json`: what the fleet poller applied, kept across restarts.
//!
//! Written whole to a temporary file, synced, then renamed over the old one and the directory
//! synced: a crash leaves the old state or the new one, never a mix.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// The file's name under the root.
pub const FILE_NAME: &str = "fleet-state.json";

/// An experiment rolled back on this host by its health watch under one generation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RolledBackEntry {
    /// The generation applied when it was rolled back.
    pub generation: u64,
    /// The package.
    pub package: String,
    /// The experiment's version.
    pub version: String,
}

/// The applied document and what happened under it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    /// The generation applied.
    pub applied_generation: Option<u64>,
    /// The manifest digest of the applied artifact.
    pub applied_digest: Option<String>,
    /// When it was applied, in milliseconds since the Unix epoch.
    pub applied_at_ms: u64,
    /// The key id that signed it; `None` for an unsigned document.
    pub signed_by: Option<String>,
    /// The document's text, exactly as signed.
    pub document: Option<String>,
    /// The experiments rolled back under the applied generation: not started again until a
    /// new generation is applied.
    pub rolled_back: BTreeSet<RolledBackEntry>,
}

/// The path of the state file under `root`.
pub fn path(root: &Path) -> PathBuf {
    root.join(FILE_NAME)
}

/// Reads the state; a missing file is the empty state.
///
/// # Errors
/// [`DaemonError::Io`] when it cannot be read, [`DaemonError::Corrupt`] when it is not a
/// state.
pub fn load(root: &Path) -> Result<PersistedState, DaemonError> {
    let path = path(root);
    let text = match fs_err::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PersistedState::default()),
        Err(e) => return Err(DaemonError::Io(e)),
    };
    serde_json::from_slice(&text).map_err(|source| DaemonError::Corrupt { path, source })
}

/// Replaces the state file atomically (temporary file, fsync, rename, fsync of the directory).
///
/// # Errors
/// [`DaemonError::Io`] naming the file.
pub fn save(root: &Path, state: &PersistedState) -> Result<(), DaemonError> {
    let path = path(root);
    let tmp = root.join(format!("{FILE_NAME}.tmp"));
    let text = serde_json::to_vec_pretty(state).map_err(DaemonError::EncodeFleetState)?;
    {
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    fs_err::rename(&tmp, &path)?;
    fs_err::File::open(root)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("empty"), PersistedState::default());
        let mut state = PersistedState {
            applied_generation: Some(3),
            applied_digest: Some("sha256:00".into()),
            applied_at_ms: 12,
            signed_by: Some("ABCD".into()),
            document: Some("{}".into()),
            ..PersistedState::default()
        };
        state.rolled_back.insert(RolledBackEntry {
            generation: 3,
            package: "web".into(),
            version: "1.3.0".into(),
        });
        save(dir.path(), &state).expect("save");
        assert_eq!(load(dir.path()).expect("load"), state);
        assert!(!dir.path().join("fleet-state.json.tmp").exists());
        fs_err::write(path(dir.path()), b"{not json").expect("write");
        assert!(matches!(load(dir.path()), Err(DaemonError::Corrupt { .. })));
    }
}
