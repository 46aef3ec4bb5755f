//! Arbitrary bytes as a fleet document, optionally followed by a NUL byte and the text of a
//! signature: parsing, validation, signature checking and acceptance
//! (`outpost_fleet::Document::from_json`, `outpost_fleet::accept`).
//!
//! The trusted key is a fixed key made for fuzzing only (`fuzz/keys/`), so that a seed can
//! carry a real signature. Asserted: nothing panics; a parsed document's `to_json` parses back
//! to an equal document; an unsigned document is refused unless unsigned documents are
//! allowed, and then accepted exactly when it parses and has not expired; a given signature is
//! only ever accepted as the trusted key's, and never for one byte more of the document; a
//! fresh signature by the trusted key is accepted exactly when the unsigned document is; an
//! accepted document's generation, once applied, makes it stale.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use outpost_fleet::{Document, FleetError, SigningKey, Timestamp, TrustedKey, accept};

struct Keys {
    trusted: Vec<TrustedKey>,
    signing: SigningKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    trusted: vec![
        TrustedKey::decode(include_str!("../keys/fleet.pub"), "fuzz/keys/fleet.pub")
            .expect("the fuzzing public key decodes"),
    ],
    signing: SigningKey::decode(
        include_str!("../keys/fleet.sec"),
        "fuzz/keys/fleet.sec",
        None,
    )
    .expect("the fuzzing secret key decodes"),
});

/// 2026-01-01T00:00:00Z: the "now" of every acceptance.
fn now() -> Timestamp {
    Timestamp::from_second(1_767_225_600).expect("a valid time")
}

fuzz_target!(|data: &[u8]| {
    let keys = &*KEYS;
    let now = now();
    let (bytes, signature) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };

    let parsed = Document::from_json(bytes);
    if let Ok(doc) = &parsed {
        let again = Document::from_json(&doc.to_json()).expect("to_json parses back");
        assert_eq!(&again, doc);
    }
    let acceptable = parsed.as_ref().is_ok_and(|d| !d.is_expired(now));

    assert!(matches!(
        accept(bytes, None, &keys.trusted, None, now, false),
        Err(FleetError::Unsigned)
    ));
    let unsigned = accept(bytes, None, &keys.trusted, None, now, true);
    assert_eq!(unsigned.is_ok(), acceptable, "{unsigned:?}");
    match &unsigned {
        Ok(accepted) => {
            assert!(accepted.is_unsigned());
            assert_eq!(Some(&accepted.document), parsed.as_ref().ok());
            assert!(accepted.sha256.starts_with("sha256:") && accepted.sha256.len() == 71);
            let stale = accept(
                bytes,
                None,
                &[],
                Some(accepted.document.generation),
                now,
                true,
            );
            assert!(
                matches!(stale, Err(FleetError::StaleGeneration { .. })),
                "{stale:?}"
            );
        }
        Err(e) => assert!(e.is_refusal(), "{e:?}"),
    }

    if let Some(signature) = signature {
        match accept(bytes, Some(signature), &keys.trusted, None, now, false) {
            Ok(accepted) => {
                assert_eq!(
                    accepted.signed_by.as_deref(),
                    Some(keys.trusted[0].key_id())
                );
                assert!(acceptable);
                let mut longer = bytes.to_vec();
                longer.push(b' ');
                let forged = accept(&longer, Some(signature), &keys.trusted, None, now, false);
                assert!(
                    matches!(forged, Err(FleetError::BadSignature(_))),
                    "{forged:?}"
                );
            }
            Err(e) => assert!(e.is_refusal(), "{e:?}"),
        }
        // Whatever the signature, no key is trusted: never accepted.
        assert!(accept(bytes, Some(signature), &[], None, now, true).is_err());
    }

    let fresh = keys
        .signing
        .sign(bytes, "fuzz")
        .expect("the fuzzing key signs");
    let signed = accept(bytes, Some(&fresh), &keys.trusted, None, now, false);
    assert_eq!(signed.is_ok(), acceptable, "{signed:?}");
});
