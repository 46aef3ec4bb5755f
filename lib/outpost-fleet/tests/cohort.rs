//! Cohorts: the documented hash, monotonicity in percent, selectors, host ids.

use std::collections::BTreeMap;

use outpost_fleet::{FleetError, Percent, bucket, host_id, in_cohort, read_machine_id};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The rule as the documentation states it, written independently of the crate.
fn documented_bucket(host: &str, package: &str, version: &str) -> u16 {
    let mut h = Sha256::new();
    for field in ["outpost-fleet-cohort-v1", host, package, version] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    let d = h.finalize();
    let x = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    u16::try_from((u128::from(x) * 10_000) >> 64).expect("below 10 000")
}

#[test]
fn the_bucket_is_the_documented_hash() {
    for (h, p, v) in [
        ("host-a", "web", "1.3.0"),
        ("", "", ""),
        ("ab", "c", "1"),
        ("a", "bc", "1"),
    ] {
        assert_eq!(bucket(h, p, v), documented_bucket(h, p, v), "{h} {p} {v}");
    }
    // Pinned: a change of these values reshuffles every fleet's cohorts.
    let pinned = [
        bucket("0123456789abcdef0123456789abcdef", "web", "1.3.0"),
        bucket("0123456789abcdef0123456789abcdef", "web", "1.4.0"),
    ];
    assert_eq!(pinned, PINNED);
    // The length prefixes keep ("ab", "c") apart from ("a", "bc").
    assert_ne!(bucket("ab", "c", "1"), bucket("a", "bc", "1"));
}

/// Computed once with Python's hashlib from the documented rule.
const PINNED: [u16; 2] = [8523, 4425];

#[test]
fn zero_percent_is_no_host_and_hundred_every_matching_host() {
    let sel = labels(&[("role", "web")]);
    let web = labels(&[("role", "web"), ("zone", "a")]);
    let db = labels(&[("role", "db")]);
    for i in 0..500 {
        let host = format!("host-{i}");
        assert!(!in_cohort(&host, &web, "web", "1.3.0", Percent::NONE, &sel));
        assert!(in_cohort(&host, &web, "web", "1.3.0", Percent::ALL, &sel));
        assert!(!in_cohort(&host, &db, "web", "1.3.0", Percent::ALL, &sel));
        assert!(!in_cohort(
            &host,
            &BTreeMap::new(),
            "web",
            "1.3.0",
            Percent::ALL,
            &sel
        ));
        assert!(in_cohort(
            &host,
            &BTreeMap::new(),
            "web",
            "1.3.0",
            Percent::ALL,
            &BTreeMap::new()
        ));
    }
}

#[test]
fn the_share_of_hosts_follows_the_percent() {
    let none = BTreeMap::new();
    let ten = Percent::from_percent(10.0).expect("percent");
    let half = Percent::from_percent(0.5).expect("percent");
    let (mut in_ten, mut in_half, mut both_versions) = (0, 0, 0);
    for i in 0..20_000 {
        let host = format!("{i:032x}");
        let a = in_cohort(&host, &none, "web", "1.3.0", ten, &none);
        in_ten += usize::from(a);
        in_half += usize::from(in_cohort(&host, &none, "web", "1.3.0", half, &none));
        both_versions += usize::from(a && in_cohort(&host, &none, "web", "1.4.0", ten, &none));
    }
    assert!(
        (1_800..=2_200).contains(&in_ten),
        "{in_ten} of 20000 at 10%"
    );
    assert!((60..=140).contains(&in_half), "{in_half} of 20000 at 0.5%");
    // Another version draws another cohort: about 10% of 10% overlap, not all of it.
    assert!(both_versions < 400, "{both_versions} hosts in both cohorts");
}

proptest! {
    #[test]
    fn raising_the_percent_only_adds_hosts(
        host in "[a-z0-9-]{0,40}",
        package in "[a-z0-9][a-z0-9._-]{0,20}",
        version in "[A-Za-z0-9._+~-]{1,20}",
        a in 0u16..=10_000,
        b in 0u16..=10_000,
    ) {
        let (lo, hi) = (a.min(b), a.max(b));
        let none = BTreeMap::new();
        let lo = Percent::from_basis_points(lo).expect("in range");
        let hi = Percent::from_basis_points(hi).expect("in range");
        if in_cohort(&host, &none, &package, &version, lo, &none) {
            prop_assert!(in_cohort(&host, &none, &package, &version, hi, &none));
        }
        prop_assert!(bucket(&host, &package, &version) < 10_000);
    }
}

#[test]
fn the_host_id_comes_from_the_configuration_or_the_machine_id_file() {
    assert_eq!(host_id(Some(" web-17 ")).expect("configured"), "web-17");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("machine-id");
    fs_err::write(&path, "0123456789abcdef0123456789abcdef\n").expect("write");
    assert_eq!(
        read_machine_id(&path).expect("read"),
        "0123456789abcdef0123456789abcdef"
    );
    fs_err::write(&path, " \n").expect("write");
    let err = read_machine_id(&path).expect_err("empty");
    assert!(matches!(err, FleetError::HostId(_)), "{err}");
    let err = read_machine_id(&dir.path().join("missing")).expect_err("missing");
    assert_eq!(err.reason(), "io");
    assert!(err.to_string().contains("missing"), "{err}");
}
