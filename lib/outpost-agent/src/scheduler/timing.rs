//! The timing rules of the module docs of [`super`]: the spread of first runs and the due
//! time of the next run.

use std::time::Duration;

use tokio::time::Instant;

/// The shortest interval and timeout the loop uses (a zero interval would spin).
pub(super) const MIN_PERIOD: Duration = Duration::from_millis(1);

/// The offset of a job's first run when spreading: FNV-1a of its ID modulo the interval.
/// Deterministic: the same ID and interval always give the same offset, in `[0, interval)`.
pub fn spread_offset(id: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let period = interval.max(MIN_PERIOD).as_nanos();
    let offset = u128::from(hash) % period;
    Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// When a scheduled run that was due at `due` and ran from `started` to `finished` makes the
/// next one due (see the module docs).
pub(super) fn next_due(
    due: Instant,
    interval: Duration,
    started: Instant,
    finished: Instant,
) -> Instant {
    let mut next = due + interval;
    if next <= started {
        // It waited for a runner past its next due time: skip the missed slots instead of
        // catching up with back-to-back runs.
        next = started + interval;
    }
    // An overrun: the next run comes right after this one.
    next.max(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_offsets_are_stable_and_bounded() {
        let interval = Duration::from_secs(15);
        let a = spread_offset("hello:0123456789abcdef", interval);
        assert_eq!(a, spread_offset("hello:0123456789abcdef", interval));
        assert!(a < interval);
        let offsets: std::collections::BTreeSet<Duration> = (0..200)
            .map(|i| spread_offset(&format!("check:{i:016x}"), interval))
            .collect();
        assert!(offsets.len() > 190, "hash offsets barely collide");
        let early = offsets.iter().filter(|o| **o < interval / 2).count();
        assert!(
            (60..=140).contains(&early),
            "{early} of 200 in the first half"
        );
        assert!(
            spread_offset("x", Duration::ZERO) < MIN_PERIOD,
            "a zero interval is 1 ms"
        );
    }
}
