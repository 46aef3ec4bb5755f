//! The spacing of polls: each host waits its poll interval scaled by a factor of its own, so
//! that a fleet started at once does not hit the registry at once.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// How far a delay strays from the interval: ±10 %.
pub const JITTER_PERMILLE: u64 = 100;

/// The delay before poll number `n` of the host `host_id`: `interval` times a factor in
/// `[0.9, 1.1]`, drawn from SHA-256 of a length-prefixed `("outpost-fleet-poll-v1", host_id, n)`.
///
/// Deterministic (a controllable clock can predict every poll in tests), different from host to
/// host and from poll to poll, never more than 10 % away from `interval`. A zero interval gives
/// zero.
pub fn poll_delay(interval: Duration, host_id: &str, n: u64) -> Duration {
    // 0 ..= 2 * JITTER_PERMILLE, then shifted to -JITTER ..= +JITTER per mille.
    let draw = draw(b"outpost-fleet-poll-v1", host_id, n) % (2 * JITTER_PERMILLE + 1);
    scaled(interval, 1000 - JITTER_PERMILLE + draw)
}

/// The delay between a host's start-up poll and its second one: `interval` times a factor in
/// `[0, 1]` (in thousandths), drawn from SHA-256 of a length-prefixed
/// `("outpost-fleet-phase-v1", host_id)`.
///
/// Hosts started together (a fleet rebooted, a simulation) would otherwise poll in step for
/// many intervals, the ±10 % of [`poll_delay`] drifting them apart only slowly, and fetch and
/// install a new document all at the same moment. This delay gives each host a phase of its
/// own, spread evenly over the interval, from its second poll on; it is never longer than the
/// interval.
pub fn first_delay(interval: Duration, host_id: &str) -> Duration {
    scaled(interval, draw(b"outpost-fleet-phase-v1", host_id, 0) % 1001)
}

/// The first 8 bytes, big-endian, of SHA-256 of the length-prefixed `(domain, host_id, n)`.
fn draw(domain: &[u8], host_id: &str, n: u64) -> u64 {
    let mut h = Sha256::new();
    for field in [domain, host_id.as_bytes(), &n.to_be_bytes()[..]] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// `interval * permille / 1000`, saturating.
fn scaled(interval: Duration, permille: u64) -> Duration {
    let nanos = interval.as_nanos() * u128::from(permille) / 1000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
