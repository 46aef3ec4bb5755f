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
    let mut h = Sha256::new();
    for field in [
        &b"outpost-fleet-poll-v1"[..],
        host_id.as_bytes(),
        &n.to_be_bytes()[..],
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 0 ..= 2 * JITTER_PERMILLE, then shifted to -JITTER ..= +JITTER per mille.
    let draw = u64::from_be_bytes(first) % (2 * JITTER_PERMILLE + 1);
    let permille = 1000 - JITTER_PERMILLE + draw;
    let nanos = interval.as_nanos() * u128::from(permille) / 1000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
