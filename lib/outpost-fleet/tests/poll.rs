//! Poll spacing.

use std::collections::BTreeSet;
use std::time::Duration;

use outpost_fleet::poll_delay;

#[test]
fn delays_stay_within_ten_percent_and_spread_hosts() {
    let interval = Duration::from_secs(30);
    let (lo, hi) = (Duration::from_secs(27), Duration::from_secs(33));
    let mut seen = BTreeSet::new();
    for host in 0..200 {
        for n in 0..20 {
            let d = poll_delay(interval, &format!("host-{host}"), n);
            assert!(d >= lo && d <= hi, "{d:?}");
            seen.insert(d);
        }
    }
    // 201 possible factors: a fleet spreads over most of them.
    assert!(seen.len() > 150, "{} distinct delays", seen.len());
    assert_eq!(poll_delay(interval, "h", 3), poll_delay(interval, "h", 3));
    assert_eq!(poll_delay(Duration::ZERO, "h", 3), Duration::ZERO);
    let huge = poll_delay(Duration::MAX, "h", 0);
    assert!(huge > Duration::ZERO);
}
