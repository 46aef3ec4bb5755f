//! Poll spacing.

use std::collections::BTreeSet;
use std::time::Duration;

use outpost_fleet::{first_delay, poll_delay};

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

#[test]
fn first_delays_spread_a_fleet_over_the_whole_interval() {
    let interval = Duration::from_secs(5);
    let delays: Vec<Duration> = (0..200)
        .map(|host| first_delay(interval, &format!("sim-host-{host:04}")))
        .collect();
    assert!(delays.iter().all(|d| *d <= interval), "{delays:?}");
    // Every fifth of the interval holds some of the 200 hosts (about 40 each).
    for fifth in 0..5u32 {
        let (lo, hi) = (interval * fifth / 5, interval * (fifth + 1) / 5);
        let n = delays.iter().filter(|d| **d >= lo && **d < hi).count();
        assert!((20..=60).contains(&n), "{n} hosts in [{lo:?}, {hi:?})");
    }
    assert_eq!(first_delay(interval, "h"), first_delay(interval, "h"));
    assert_eq!(first_delay(Duration::ZERO, "h"), Duration::ZERO);
}
