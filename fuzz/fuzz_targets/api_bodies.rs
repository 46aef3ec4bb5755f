//! Arbitrary bytes as the body of every LocalAPI request that has one (`POST /catalog`,
//! `POST /{package}/install`, `POST /{package}/experiment/start`), decoded the way the routes
//! decode them: the JSON extractor reads a JSON object (`serde_json::from_slice` into a map),
//! then the route turns that object into the wire type (`serde_json::from_value`) and checks
//! names and versions with `PackageName::new` / `Version::new`.
//!
//! Asserted: nothing panics; every decoded body serialises and decodes again to an equal value;
//! a catalog that validates still validates after that round trip and every entry resolves to
//! the name, version and source it was written with; an accepted version is the text given.
//! The status body the CLI decodes is held to the same round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_types::source::PackageSource;
use outpost_types::wire::{Catalog, Empty, StatusResponse, TaskParams};
use outpost_types::{PackageName, Version};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The routes' decoding: a JSON object first, then the typed body.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let map: Map<String, Value> = serde_json::from_slice(bytes).ok()?;
    serde_json::from_value(Value::Object(map)).ok()
}

/// Serialises a decoded body and decodes it again through the same path.
fn round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(value).expect("a decoded body serialises");
    let again: T = decode(&bytes).unwrap_or_else(|| {
        panic!(
            "{} does not decode again: {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(
        &again,
        value,
        "round trip through {}",
        String::from_utf8_lossy(&bytes)
    );
}

/// The check of a version taken from a body (`install`, `experiment/start`).
fn check_version(text: &str) {
    if let Ok(version) = Version::new(text) {
        assert_eq!(version.as_str(), text);
        assert_eq!(version.to_string(), text);
        assert!(
            !Version::RESERVED.contains(&text),
            "reserved version {text:?} accepted"
        );
        assert!(!text.contains('/') && !text.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(catalog) = decode::<Catalog>(data) {
        round_trip(&catalog);
        if catalog.validate().is_ok() {
            for entry in &catalog.packages {
                let resolved = entry
                    .resolve()
                    .expect("an entry of a valid catalog resolves");
                assert_eq!(
                    resolved.name,
                    PackageName::new(entry.package.as_str()).expect("name")
                );
                assert_eq!(resolved.version.as_str(), entry.version);
                assert_eq!(PackageSource::parse(&entry.url).ok(), Some(resolved.source));
            }
        }
        for entry in &catalog.packages {
            check_version(&entry.version);
            let _ = catalog.lookup(&entry.package, &entry.version, "linux", "amd64");
            let _ = catalog.host_versions(&entry.package);
        }
    }
    if let Some(params) = decode::<TaskParams>(data) {
        round_trip(&params);
        check_version(&params.version);
    }
    if let Some(empty) = decode::<Empty>(data) {
        round_trip(&empty);
    }
    if let Some(status) = decode::<StatusResponse>(data) {
        round_trip(&status);
    }
});
