//! Cohorts: which hosts run an experiment.
//!
//! A host is in the cohort of an experiment when its labels match the experiment's selector
//! and its bucket falls below the experiment's percent:
//!
//! ```text
//! digest = SHA-256( "outpost-fleet-cohort-v1" field, host_id field, package field, version field )
//!          where each field is its length in bytes as a u64 big-endian, then its UTF-8 bytes
//! x      = the first 8 bytes of digest, as a u64 big-endian
//! bucket = floor(x * 10_000 / 2^64)            in 0..10_000 (basis points)
//! in cohort  <=>  bucket < percent in basis points
//! ```
//!
//! The bucket depends on the host, the package and the experiment's version only; never on the
//! percent, the generation or the other hosts. Hence:
//! - raising the percent only adds hosts (monotonic by construction), lowering it only removes
//!   hosts; 0 % is no host and 100 % every matching host;
//! - a new experiment version draws a fresh, independent cohort, so the same hosts are not the
//!   first to try every release;
//! - the length prefixes make the encoding injective: `("ab", "c")` and `("a", "bc")` differ.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::document::Percent;
use crate::error::FleetError;

/// Where the host id comes from when `fleet.host_id` is not set.
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

const DOMAIN: &[u8] = b"outpost-fleet-cohort-v1";

/// The host's bucket for an experiment of `package` at `version`, in `0..10_000`.
pub fn bucket(host_id: &str, package: &str, version: &str) -> u16 {
    let mut h = Sha256::new();
    for field in [
        DOMAIN,
        host_id.as_bytes(),
        package.as_bytes(),
        version.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let x = u64::from_be_bytes(first);
    // floor(x * 10_000 / 2^64) < 10_000, so it fits in a u16.
    ((u128::from(x) * 10_000) >> 64) as u16
}

/// True when every label of `selector` is among `labels` with the same value. An empty
/// selector matches every host.
pub fn selector_matches(
    labels: &BTreeMap<String, String>,
    selector: &BTreeMap<String, String>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
}

/// True when the host is in the cohort of the experiment of `package` at `version` (see the
/// module documentation for the exact rule).
pub fn in_cohort(
    host_id: &str,
    labels: &BTreeMap<String, String>,
    package: &str,
    version: &str,
    percent: Percent,
    selector: &BTreeMap<String, String>,
) -> bool {
    selector_matches(labels, selector) && bucket(host_id, package, version) < percent.basis_points()
}

/// Reads the host id from a machine-id file (`/etc/machine-id`): its content, trimmed.
///
/// # Errors
/// [`FleetError::Io`] naming the path when it cannot be read, [`FleetError::HostId`] when it
/// is empty.
pub fn read_machine_id(path: &Path) -> Result<String, FleetError> {
    let text = fs_err::read_to_string(path)?;
    let id = text.trim();
    if id.is_empty() {
        return Err(FleetError::HostId(format!("{} is empty", path.display())));
    }
    Ok(id.to_string())
}

/// The host id: `configured` (`fleet.host_id`) when set and not blank, else the content of
/// [`MACHINE_ID_PATH`].
///
/// # Errors
/// Those of [`read_machine_id`].
pub fn host_id(configured: Option<&str>) -> Result<String, FleetError> {
    match configured.map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => read_machine_id(Path::new(MACHINE_ID_PATH)),
    }
}
