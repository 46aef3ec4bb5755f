//! Arbitrary bytes as a catalog body: decoding, validation and lookup never panic, and a
//! validated entry's URL parses to the same source again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_types::source::{OciReference, PackageSource};
use outpost_types::wire::Catalog;

fuzz_target!(|data: &[u8]| {
    if let Ok(catalog) = serde_json::from_slice::<Catalog>(data) {
        if catalog.validate().is_ok() {
            for entry in &catalog.packages {
                let resolved = entry.resolve().expect("validated entry resolves");
                assert_eq!(PackageSource::parse(&entry.url).ok(), Some(resolved.source));
            }
        }
        if let Some(first) = catalog.packages.first() {
            let _ = catalog.lookup(&first.package, &first.version, "linux", "amd64");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(reference) = OciReference::parse(text) {
            let again = OciReference::parse(&reference.to_string()).expect("display parses");
            assert_eq!(again, reference);
        }
        let _ = PackageSource::parse(text);
    }
});
