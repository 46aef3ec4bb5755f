//! The public snapshot types: counters as the `rtloader` expvar map shows them.

use serde::Serialize;

/// Memory counters, as exported in the `rtloader` expvar map. Blocks of up to 512 bytes are
/// counted at their size rounded up to 16 bytes, at least 32 (their real footprint in
/// pymalloc); larger ones at their requested size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryStats {
    /// Blocks allocated.
    pub allocations: u64,
    /// Blocks freed.
    pub frees: u64,
    /// Bytes allocated (requested sizes, headers excluded).
    pub allocated_bytes: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Bytes allocated and not yet freed.
    pub inuse_bytes: u64,
}

/// Memory attributed to one check instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckMemory {
    /// The instance's check ID.
    pub check_id: String,
    /// The check name.
    pub check_name: String,
    /// False once the instance was dropped (its blocks may still be alive).
    pub live: bool,
    /// Its counters.
    pub stats: MemoryStats,
}

/// A point-in-time copy of every counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemorySnapshot {
    /// Whether tracking is installed (`memtrack_enabled` and a GIL build).
    pub enabled: bool,
    /// Everything tracked.
    pub total: MemoryStats,
    /// Frees of blocks the tracker never saw allocated.
    pub untracked_frees: u64,
    /// Allocations made outside any check (imports, the runtime itself).
    pub unattributed: MemoryStats,
    /// Per instance.
    pub checks: Vec<CheckMemory>,
}

impl MemorySnapshot {
    /// The expvar-style `rtloader` map: `Allocations`, `Frees`, `AllocatedBytes`,
    /// `FreedBytes`, `InuseBytes`, `UntrackedFrees`, plus `Checks` keyed by check ID.
    pub fn rtloader_expvar(&self) -> serde_json::Value {
        let mut checks = serde_json::Map::new();
        for c in &self.checks {
            checks.insert(
                c.check_id.clone(),
                serde_json::to_value(c.stats).unwrap_or(serde_json::Value::Null),
            );
        }
        serde_json::json!({
            "Allocations": self.total.allocations,
            "Frees": self.total.frees,
            "AllocatedBytes": self.total.allocated_bytes,
            "FreedBytes": self.total.freed_bytes,
            "InuseBytes": self.total.inuse_bytes,
            "UntrackedFrees": self.untracked_frees,
            "Checks": checks,
        })
    }

    /// The counters of one check instance.
    pub fn check(&self, check_id: &str) -> Option<&CheckMemory> {
        self.checks.iter().find(|c| c.check_id == check_id)
    }
}
