//! Parsing and validation of desired-state documents.

mod common;

use std::time::Duration;

use common::{bytes, doc_value};
use outpost_fleet::{Document, FleetError, Percent, Timestamp};
use serde_json::json;

fn refused(v: serde_json::Value) -> String {
    match Document::from_json(&bytes(&v)) {
        Ok(doc) => panic!("accepted: {doc:?}"),
        Err(e) => {
            assert_eq!(e.reason(), "malformed", "{e}");
            e.to_string()
        }
    }
}

#[test]
fn a_valid_document_parses_into_its_typed_form() {
    let doc = Document::from_json(&bytes(&doc_value())).expect("valid");
    assert_eq!(doc.generation, 7);
    assert_eq!(
        doc.expires,
        "2027-01-31T00:00:00Z".parse::<Timestamp>().expect("time")
    );
    assert_eq!(doc.catalog.packages.len(), 3);
    let web = &doc.packages[&"web".parse().expect("name")];
    assert_eq!(web.stable.as_str(), "1.2.0");
    let exp = web.experiment.as_ref().expect("experiment");
    assert_eq!(exp.version.as_str(), "1.3.0");
    assert_eq!(exp.percent.basis_points(), 1000);
    assert_eq!(exp.selector.get("role").map(String::as_str), Some("web"));
    let policy = exp.policy();
    let health = policy.health.expect("health");
    assert_eq!(
        health.command,
        Some(vec!["/bin/true".to_string(), "arg".to_string()])
    );
    assert_eq!(health.interval, Some(Duration::from_secs(10)));
    assert_eq!(health.timeout, Some(Duration::from_secs(5)));
    assert_eq!(health.failures, Some(3));
    assert_eq!(health.grace, Some(Duration::from_secs(30)));
    assert_eq!(policy.max_duration, Some(Duration::from_secs(3600)));
    assert_eq!(policy.auto_promote_after, Some(Duration::from_secs(1200)));
    let db = &doc.packages[&"db".parse().expect("name")];
    assert!(db.experiment.is_none());
    assert!(doc.is_managed(&"db".parse().expect("name")));
    assert!(!doc.is_managed(&"other".parse().expect("name")));
}

#[test]
fn durations_take_numbers_of_seconds_and_milliseconds() {
    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["health"]["interval"] = json!(1.5);
    v["packages"]["web"]["experiment"]["health"]["timeout"] = json!("250ms");
    v["packages"]["web"]["experiment"]["max_duration"] = json!(90);
    let doc = Document::from_json(&bytes(&v)).expect("valid");
    let exp = doc.packages[&"web".parse().expect("name")]
        .experiment
        .clone()
        .expect("exp");
    let health = exp.health.expect("health");
    assert_eq!(health.interval, Some(Duration::from_millis(1500)));
    assert_eq!(health.timeout, Some(Duration::from_millis(250)));
    assert_eq!(exp.max_duration, Some(Duration::from_secs(90)));
}

#[test]
fn percent_takes_two_decimals_and_refuses_finer_or_out_of_range() {
    for (p, bp) in [
        (0.0, 0),
        (0.01, 1),
        (2.5, 250),
        (12.34, 1234),
        (100.0, 10_000),
    ] {
        assert_eq!(
            Percent::from_percent(p).expect("valid").basis_points(),
            bp,
            "{p}"
        );
    }
    for p in [-1.0, 100.01, 0.001, 12.345, f64::NAN, f64::INFINITY] {
        assert!(Percent::from_percent(p).is_err(), "{p} accepted");
    }
    assert_eq!(
        Percent::from_percent(2.5).expect("valid").to_string(),
        "2.50%"
    );
    assert_eq!(Percent::ALL.to_string(), "100%");
    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["percent"] = json!(101);
    let msg = refused(v);
    assert!(msg.contains("packages.web.experiment.percent"), "{msg}");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let mut v = doc_value();
    v["colour"] = json!("blue");
    assert!(refused(v).contains("colour"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["percentage"] = json!(5);
    let msg = refused(v);
    assert!(
        msg.contains("packages.web.experiment") && msg.contains("percentage"),
        "{msg}"
    );

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["health"]["retries"] = json!(5);
    let msg = refused(v);
    assert!(
        msg.contains("packages.web.experiment.health") && msg.contains("retries"),
        "{msg}"
    );

    let mut v = doc_value();
    v["packages"]["db"]["version"] = json!("2.0.0");
    let msg = refused(v);
    assert!(
        msg.contains("packages.db") && msg.contains("version"),
        "{msg}"
    );
}

#[test]
fn missing_fields_are_refused() {
    for field in ["generation", "expires", "catalog", "packages"] {
        let mut v = doc_value();
        v.as_object_mut().expect("object").remove(field);
        let msg = refused(v);
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let mut v = doc_value();
    v["packages"]["db"]
        .as_object_mut()
        .expect("object")
        .remove("stable");
    assert!(refused(v).contains("stable"));
}

#[test]
fn invalid_names_versions_and_times_are_refused() {
    let mut v = doc_value();
    v["packages"]["../etc"] = json!({"stable": "2.0.0"});
    assert!(refused(v).contains("invalid package name"));

    let mut v = doc_value();
    v["packages"]["db"]["stable"] = json!("../2.0.0");
    assert!(refused(v).contains("packages.db.stable"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["version"] = json!("experiment");
    assert!(refused(v).contains("packages.web.experiment.version"));

    for bad in [
        "2027-01-31",
        "2027-01-31T00:00:00",
        "tomorrow",
        "2027-13-01T00:00:00Z",
    ] {
        let mut v = doc_value();
        v["expires"] = json!(bad);
        assert!(refused(v).contains("expires"), "{bad}");
    }

    let mut v = doc_value();
    v["generation"] = json!(-1);
    assert!(refused(v).contains("generation"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["max_duration"] = json!("1 fortnight");
    assert!(refused(v).contains("packages.web.experiment.max_duration"));
}

#[test]
fn a_version_missing_from_the_catalog_is_refused() {
    let mut v = doc_value();
    v["packages"]["db"]["stable"] = json!("2.1.0");
    let msg = refused(v);
    assert!(
        msg.contains("packages.db.stable") && msg.contains("2.1.0") && msg.contains("catalog"),
        "{msg}"
    );

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["version"] = json!("1.4.0");
    let msg = refused(v);
    assert!(
        msg.contains("packages.web.experiment.version") && msg.contains("1.4.0"),
        "{msg}"
    );

    // An entry of another package with that version does not count.
    let mut v = doc_value();
    v["packages"]["db"]["stable"] = json!("1.2.0");
    assert!(refused(v).contains("packages.db.stable"));
}

#[test]
fn an_invalid_catalog_entry_is_refused() {
    let mut v = doc_value();
    v["catalog"]["packages"][2]["url"] = json!("https://example.test/db.tar.gz");
    let msg = refused(v);
    assert!(msg.contains("catalog") && msg.contains("sha256"), "{msg}");
}

#[test]
fn inconsistent_policies_are_refused() {
    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["version"] = json!("1.2.0");
    assert!(refused(v).contains("is the stable version"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["health"]["command"] = json!([]);
    assert!(refused(v).contains("health.command"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["health"]["interval"] = json!("0s");
    assert!(refused(v).contains("health.interval"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["health"]["failures"] = json!(0);
    assert!(refused(v).contains("health.failures"));

    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["selector"] = json!({"": "x"});
    assert!(refused(v).contains("selector"));
}

#[test]
fn a_package_named_twice_is_refused() {
    let text = r#"{"generation": 1, "expires": "2027-01-31T00:00:00Z",
        "catalog": {"packages": [{"package": "db", "version": "2.0.0", "url": "oci://r.test/db:2"},
                                 {"package": "db", "version": "2.1.0", "url": "oci://r.test/db:2.1"}]},
        "packages": {"db": {"stable": "2.0.0"}, "db": {"stable": "2.1.0"}}}"#;
    let err = Document::from_json(text.as_bytes()).expect_err("refused");
    assert!(err.to_string().contains("db is given twice"), "{err}");
}

#[test]
fn hostile_bytes_are_refused_without_panicking() {
    let inputs: [&[u8]; 6] = [
        b"",
        b"null",
        b"[]",
        b"{",
        &[0xff, 0xfe, 0x00],
        b"{\"generation\": 1e400}",
    ];
    for input in inputs {
        let err = Document::from_json(input).expect_err("refused");
        assert!(matches!(err, FleetError::Malformed(_)), "{err}");
    }
    let mut trailing = bytes(&doc_value());
    trailing.extend_from_slice(b" {}");
    assert!(Document::from_json(&trailing).is_err());
    let big = vec![b' '; outpost_fleet::MAX_DOCUMENT_BYTES + 1];
    assert!(
        Document::from_json(&big)
            .expect_err("too big")
            .to_string()
            .contains("limit")
    );
}

#[test]
fn expiry_is_at_the_instant() {
    let doc = Document::from_json(&bytes(&doc_value())).expect("valid");
    let at: Timestamp = "2027-01-31T00:00:00Z".parse().expect("time");
    assert!(doc.is_expired(at));
    assert!(!doc.is_expired("2027-01-30T23:59:59Z".parse().expect("time")));
    // Offsets other than Z are understood.
    let mut v = doc_value();
    v["expires"] = json!("2027-01-31T01:00:00+01:00");
    assert_eq!(Document::from_json(&bytes(&v)).expect("valid").expires, at);
}

#[test]
fn messages_name_the_full_path() {
    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["health"]["retries"] = json!(5);
    let msg = refused(v);
    assert!(
        msg.starts_with("malformed fleet document: packages.web.experiment.health"),
        "{msg}"
    );
    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["percent"] = json!("ten");
    let msg = refused(v);
    assert!(
        msg.starts_with("malformed fleet document: packages.web.experiment.percent: "),
        "{msg}"
    );
}

#[test]
fn a_document_reads_back_what_it_writes() {
    let doc = Document::from_json(&bytes(&doc_value())).expect("valid");
    let again = Document::from_json(&doc.to_json()).expect("its own output is valid");
    assert_eq!(doc, again);
    let text = String::from_utf8(doc.to_json()).expect("UTF-8");
    assert!(
        text.contains("\"expires\": \"2027-01-31T00:00:00Z\""),
        "{text}"
    );
    assert!(text.contains("\"max_duration\": \"3600s\""), "{text}");
    assert!(!text.contains("null"), "{text}");
}

proptest::proptest! {
    #[test]
    fn percents_and_durations_survive_a_round_trip(bp in 0u16..=10_000, ms in 1u64..10_000_000, frac in 1u32..1_000_000) {
        let mut v = doc_value();
        v["packages"]["web"]["experiment"]["percent"] = json!(f64::from(bp) / 100.0);
        v["packages"]["web"]["experiment"]["max_duration"] = json!(format!("{ms}ms"));
        v["packages"]["web"]["experiment"]["health"]["grace"] = json!(f64::from(frac) / 1_000_000.0);
        let doc = Document::from_json(&bytes(&v)).expect("valid");
        let exp = doc.packages[&"web".parse().expect("name")].experiment.clone().expect("exp");
        proptest::prop_assert_eq!(exp.percent.basis_points(), bp);
        proptest::prop_assert_eq!(exp.max_duration, Some(Duration::from_millis(ms)));
        proptest::prop_assert_eq!(Document::from_json(&doc.to_json()).expect("valid"), doc);
    }
}
