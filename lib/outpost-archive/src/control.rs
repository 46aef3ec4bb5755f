//! What the caller controls about an unpack: limits, cancellation and progress reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use outpost_types::config::PackagesConfig;
use outpost_types::wire::Phase;

/// Bounds on what one unpack may write. Going over any of them fails the whole unpack with a
/// [`ArchiveError::LimitExceeded`](crate::ArchiveError::LimitExceeded) naming the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The sum of the sizes of all regular files (default 8 GiB).
    pub max_total_bytes: u64,
    /// The size of any one regular file (default 4 GiB).
    pub max_file_bytes: u64,
    /// The number of archive entries of every kind (default 1,000,000).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total_bytes: 8 << 30,
            max_file_bytes: 4 << 30,
            max_entries: 1_000_000,
        }
    }
}

impl From<&PackagesConfig> for Limits {
    fn from(c: &PackagesConfig) -> Self {
        Self {
            max_total_bytes: c.max_unpacked_bytes.0,
            max_file_bytes: c.max_file_bytes.0,
            max_entries: c.max_entries,
        }
    }
}

/// A cancellation flag shared between the caller and a running operation.
///
/// The operation checks it between reads of its source and between archive entries, so a
/// cancel takes effect within one buffer's worth of work; the operation then fails with
/// [`ArchiveError::Cancelled`](crate::ArchiveError::Cancelled) and leaves its partial output for the
/// caller to discard (as it does for any failure).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag; every clone sees it.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Receives progress reports from a running operation.
///
/// Reports come from the thread running the operation, at most about once per mebibyte of
/// source read, plus one at the end; implementations should be cheap and must not block.
pub trait Progress: Send + Sync {
    /// `bytes_done` bytes of the source (compressed, as stored) out of `bytes_total`, when known.
    fn report(&self, phase: Phase, bytes_done: u64, bytes_total: Option<u64>);
}

/// A [`Progress`] that ignores every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _phase: Phase, _bytes_done: u64, _bytes_total: Option<u64>) {}
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Archive entries seen (every kind, layers summed).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created (explicit entries and implied parents).
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Bytes read from the source (compressed, as stored).
    pub source_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_config() {
        assert_eq!(Limits::from(&PackagesConfig::default()), Limits::default());
        let cfg = PackagesConfig {
            max_unpacked_bytes: outpost_types::config::ByteSize(10),
            max_file_bytes: outpost_types::config::ByteSize(5),
            max_entries: 3,
            ..PackagesConfig::default()
        };
        assert_eq!(
            Limits::from(&cfg),
            Limits {
                max_total_bytes: 10,
                max_file_bytes: 5,
                max_entries: 3
            }
        );
    }

    #[test]
    fn cancel_is_shared() {
        let a = Cancel::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        a.cancel();
        assert!(b.is_cancelled());
    }
}
