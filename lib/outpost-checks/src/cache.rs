//! The persistent cache behind `datadog_agent.read/write_persistent_cache`: one file per key
//! under `<root>/run/checks-cache/`, so values survive restarts.
//!
//! File names are the key with every byte outside `[A-Za-z0-9_.-]` (and a leading `.`)
//! written as `%XX`: distinct keys always give distinct names and no key can leave the
//! directory. A name longer than 200 bytes keeps its first 180 bytes and ends with `~` and
//! the FNV-1 64 hash of the whole key. Writes go to a temporary file in the same directory,
//! are fsynced, renamed over the old value and the directory is fsynced, so a reader sees
//! the old or the new value, never a part.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::Fnv1_64;

const MAX_NAME: usize = 200;
const KEPT_PREFIX: usize = 180;

/// A directory of cached values.
#[derive(Debug, Clone)]
pub struct PersistentCache {
    dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PersistentCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`.
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(file_name_for(key))
    }

    /// The value stored for `key`; `""` when there is none (as the agent answers).
    pub fn read(&self, key: &str) -> std::io::Result<String> {
        match fs_err::read_to_string(self.path_for(key)) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        }
    }

    /// Stores `value` for `key`, atomically (see the module docs).
    pub fn write(&self, key: &str, value: &str) -> std::io::Result<()> {
        fs_err::create_dir_all(&self.dir)?;
        let target = self.path_for(key);
        let tmp = self.dir.join(format!(
            ".tmp.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = fs_err::File::create(&tmp)?;
            f.write_all(value.as_bytes())?;
            f.sync_all()?;
            fs_err::rename(&tmp, &target)?;
            fs_err::File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            // Best effort: the temporary file may not exist (create failed) or may already be
            // renamed; either way the original error is what the caller needs.
            let _ = fs_err::remove_file(&tmp);
        }
        result
    }
}

/// The file name of `key` (see the module docs).
pub fn file_name_for(key: &str) -> String {
    let mut name = String::with_capacity(key.len());
    for (i, b) in key.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.is_empty() {
        return "%".to_owned();
    }
    if name.len() > MAX_NAME {
        // Escaped names are ASCII, so any byte index is a char boundary.
        name.truncate(KEPT_PREFIX);
        name.push_str(&format!("~{:x}", Fnv1_64::hash(key.as_bytes())));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = PersistentCache::new(tmp.path().join("run/checks-cache"));
        assert_eq!(cache.read("hello:abc_k").unwrap(), "");
        cache.write("hello:abc_k", "v1").unwrap();
        assert_eq!(cache.read("hello:abc_k").unwrap(), "v1");
        cache.write("hello:abc_k", "v2").unwrap();
        assert_eq!(cache.read("hello:abc_k").unwrap(), "v2");
        // A new handle (a restart) reads the same value.
        let again = PersistentCache::new(tmp.path().join("run/checks-cache"));
        assert_eq!(again.read("hello:abc_k").unwrap(), "v2");
        // Nothing but the value file is left behind.
        let names: Vec<_> = fs_err::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("hello%3Aabc_k")]);
    }

    #[test]
    fn hostile_keys_stay_inside_and_do_not_collide() {
        let keys = [
            "../../etc/passwd",
            "..",
            ".",
            "",
            "a/b",
            "a%2Fb",
            "a:b",
            "a_b",
            ".hidden",
            "é",
            "nul\0byte",
        ];
        let names: Vec<String> = keys.iter().map(|k| file_name_for(k)).collect();
        for (k, n) in keys.iter().zip(&names) {
            assert!(
                !n.contains('/') && n != "." && n != ".." && !n.starts_with('.'),
                "{k:?} -> {n}"
            );
            assert!(!n.contains('\0'), "{k:?}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let tmp = tempfile::tempdir().unwrap();
        let cache = PersistentCache::new(tmp.path().join("c"));
        for k in keys {
            cache.write(k, k).unwrap();
        }
        for k in keys {
            assert_eq!(cache.read(k).unwrap(), k);
        }
        assert!(!tmp.path().join("etc").exists());
    }

    #[test]
    fn long_keys_are_shortened_but_distinct() {
        let a = "x".repeat(500);
        let b = format!("{}y", "x".repeat(499));
        let (na, nb) = (file_name_for(&a), file_name_for(&b));
        assert!(na.len() <= MAX_NAME && nb.len() <= MAX_NAME);
        assert_ne!(na, nb);
    }
}
