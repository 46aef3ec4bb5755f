//! Signatures and acceptance of documents, with keys and signatures made by the real `minisign`
//! tool as well as by this crate.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{bytes, doc_value};
use outpost_fleet::{FleetError, SigningKey, Timestamp, TrustedKey, accept, verify};
use serde_json::json;
use tempfile::TempDir;

/// A key pair made by `minisign -G -W` (no password) in a temporary directory.
struct ToolKey {
    dir: TempDir,
}

impl ToolKey {
    fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("key.pub"))
            .arg("-s")
            .arg(dir.path().join("key.sec"))
            .output()
            .expect("the minisign tool runs (Debian package minisign)");
        assert!(
            out.status.success(),
            "minisign -G: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("key.pub")
    }

    fn secret(&self) -> PathBuf {
        self.dir.path().join("key.sec")
    }

    fn trusted(&self) -> TrustedKey {
        TrustedKey::from_file(&self.public()).expect("public key")
    }

    fn signing(&self) -> SigningKey {
        SigningKey::from_file(&self.secret(), None).expect("secret key")
    }

    /// Signs `data` with the tool; returns the signature file's bytes.
    fn tool_sign(&self, data: &[u8]) -> Vec<u8> {
        let doc = self.dir.path().join("doc.json");
        fs_err::write(&doc, data).expect("write");
        let out = Command::new("minisign")
            .args(["-S", "-s"])
            .arg(self.secret())
            .arg("-m")
            .arg(&doc)
            .output()
            .expect("minisign -S");
        assert!(
            out.status.success(),
            "minisign -S: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs_err::read(self.dir.path().join("doc.json.minisig")).expect("signature")
    }

    /// Verifies `sig` over `data` with the tool and this key; returns whether it succeeded and
    /// what it printed.
    fn tool_verify(&self, data: &[u8], sig: &[u8]) -> (bool, String) {
        let doc = self.dir.path().join("signed.json");
        let sig_path = self.dir.path().join("signed.json.minisig");
        fs_err::write(&doc, data).expect("write");
        fs_err::write(&sig_path, sig).expect("write");
        let out = Command::new("minisign")
            .arg("-Vm")
            .arg(&doc)
            .arg("-p")
            .arg(self.public())
            .arg("-x")
            .arg(&sig_path)
            .output()
            .expect("minisign -V");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn now() -> Timestamp {
    "2026-12-01T00:00:00Z".parse().expect("time")
}

#[test]
fn a_document_signed_by_the_minisign_tool_is_accepted() {
    let key = ToolKey::generate();
    let doc = bytes(&doc_value());
    let sig = key.tool_sign(&doc);
    let trusted = [key.trusted()];
    let accepted = accept(&doc, Some(&sig), &trusted, Some(6), now(), false).expect("accepted");
    assert_eq!(accepted.document.generation, 7);
    assert_eq!(accepted.signed_by.as_deref(), Some(trusted[0].key_id()));
    assert!(!accepted.is_unsigned());
    assert!(accepted.sha256.starts_with("sha256:") && accepted.sha256.len() == 71);
    // The key id is the one the tool prints in the public key's comment (the tool prints it
    // without leading zeros: `%llX`).
    let pub_text = fs_err::read_to_string(key.public()).expect("read");
    let printed = trusted[0].key_id().trim_start_matches('0');
    assert!(
        pub_text.to_uppercase().contains(&printed.to_uppercase()),
        "{pub_text}"
    );
}

#[test]
fn a_signature_made_by_the_crate_verifies_with_the_minisign_tool() {
    let key = ToolKey::generate();
    let doc = bytes(&doc_value());
    let (parsed, sig) = key.signing().sign_document(&doc).expect("signed");
    assert_eq!(parsed.generation, 7);
    let (ok, text) = key.tool_verify(&doc, &sig);
    assert!(ok, "minisign -V refused: {text}");
    assert!(text.contains("outpost fleet generation 7"), "{text}");
    // And the tool refuses it over other bytes.
    let mut tampered = doc.clone();
    tampered.extend_from_slice(b"\n");
    let (ok, text) = key.tool_verify(&tampered, &sig);
    assert!(!ok, "minisign -V accepted tampered bytes: {text}");
    // The crate accepts its own signature too.
    accept(&doc, Some(&sig), &[key.trusted()], None, now(), false).expect("accepted");
}

#[test]
fn a_tampered_document_is_refused_as_a_bad_signature() {
    let key = ToolKey::generate();
    let doc = bytes(&doc_value());
    let sig = key.tool_sign(&doc);
    let mut v = doc_value();
    v["packages"]["web"]["experiment"]["percent"] = json!(100);
    let tampered = bytes(&v);
    let err =
        accept(&tampered, Some(&sig), &[key.trusted()], None, now(), false).expect_err("refused");
    assert_eq!(err.reason(), "bad_signature", "{err}");
    assert!(err.is_refusal());
    // A flipped byte in the signature itself.
    let mut bad_sig = sig.clone();
    let line2 = bad_sig.iter().position(|b| *b == b'\n').expect("two lines") + 20;
    bad_sig[line2] = if bad_sig[line2] == b'A' { b'B' } else { b'A' };
    let err =
        accept(&doc, Some(&bad_sig), &[key.trusted()], None, now(), false).expect_err("refused");
    assert!(
        matches!(
            err,
            FleetError::BadSignature(_) | FleetError::UntrustedKey { .. }
        ),
        "{err}"
    );
    // Garbage instead of a signature.
    for garbage in [&b""[..], b"not a signature", &[0xff, 0x00, 0x01]] {
        let err =
            accept(&doc, Some(garbage), &[key.trusted()], None, now(), false).expect_err("refused");
        assert_eq!(err.reason(), "bad_signature", "{err}");
    }
}

#[test]
fn a_document_signed_by_another_key_is_refused_as_untrusted() {
    let signer = ToolKey::generate();
    let other = ToolKey::generate();
    let doc = bytes(&doc_value());
    let sig = signer.tool_sign(&doc);
    let err =
        accept(&doc, Some(&sig), &[other.trusted()], None, now(), false).expect_err("refused");
    match &err {
        FleetError::UntrustedKey { key_id } => assert_eq!(key_id, signer.trusted().key_id()),
        other => panic!("{other}"),
    }
    assert_eq!(err.reason(), "untrusted_key");
    // No trusted key at all: refused the same way.
    let err = accept(&doc, Some(&sig), &[], None, now(), false).expect_err("refused");
    assert_eq!(err.reason(), "untrusted_key");
    // One of several trusted keys is enough.
    let trusted = [other.trusted(), signer.trusted()];
    let key = verify(&doc, &sig, &trusted).expect("verified");
    assert_eq!(key.key_id(), signer.trusted().key_id());
    assert_eq!(key.origin(), signer.public().display().to_string());
}

#[test]
fn an_older_or_equal_generation_is_refused_as_stale() {
    let key = ToolKey::generate();
    let doc = bytes(&doc_value());
    let sig = key.tool_sign(&doc);
    for applied in [7, 8, u64::MAX] {
        let err = accept(
            &doc,
            Some(&sig),
            &[key.trusted()],
            Some(applied),
            now(),
            false,
        )
        .expect_err("refused");
        match err {
            FleetError::StaleGeneration {
                generation: 7,
                applied: a,
            } => assert_eq!(a, applied),
            other => panic!("{other}"),
        }
    }
    accept(&doc, Some(&sig), &[key.trusted()], None, now(), false).expect("nothing applied yet");
}

#[test]
fn an_expired_document_is_refused() {
    let key = ToolKey::generate();
    let doc = bytes(&doc_value());
    let sig = key.tool_sign(&doc);
    for at in ["2027-01-31T00:00:00Z", "2030-01-01T00:00:00Z"] {
        let err = accept(
            &doc,
            Some(&sig),
            &[key.trusted()],
            None,
            at.parse().expect("time"),
            false,
        )
        .expect_err("refused");
        assert_eq!(err.reason(), "expired", "{err}");
    }
    accept(
        &doc,
        Some(&sig),
        &[key.trusted()],
        None,
        "2027-01-30T23:59:59Z".parse().expect("time"),
        false,
    )
    .expect("one second before");
}

#[test]
fn an_unsigned_document_is_refused_unless_allowed() {
    let key = ToolKey::generate();
    let doc = bytes(&doc_value());
    let err = accept(&doc, None, &[key.trusted()], None, now(), false).expect_err("refused");
    assert_eq!(err.reason(), "unsigned");
    let accepted = accept(&doc, None, &[], None, now(), true).expect("allowed");
    assert!(accepted.is_unsigned());
    // allow_unsigned never lets a bad signature through.
    let other = ToolKey::generate();
    let sig = other.tool_sign(b"something else");
    let err = accept(&doc, Some(&sig), &[other.trusted()], None, now(), true).expect_err("refused");
    assert_eq!(err.reason(), "bad_signature");
    // Nor the other checks.
    let err = accept(&doc, None, &[], Some(7), now(), true).expect_err("refused");
    assert_eq!(err.reason(), "stale_generation");
}

#[test]
fn a_signed_but_malformed_document_is_refused_as_malformed() {
    let key = ToolKey::generate();
    let mut v = doc_value();
    v["packages"]["db"]["stable"] = json!("9.9.9");
    let doc = bytes(&v);
    let sig = key.tool_sign(&doc);
    let err = accept(&doc, Some(&sig), &[key.trusted()], None, now(), false).expect_err("refused");
    assert_eq!(err.reason(), "malformed", "{err}");
    assert!(err.to_string().contains("packages.db.stable"), "{err}");
    // The crate will not sign it either.
    let err = key.signing().sign_document(&doc).expect_err("refused");
    assert_eq!(err.reason(), "malformed");
}

#[test]
fn bad_key_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.pub");
    fs_err::write(&path, "untrusted comment: x\nbm90IGEga2V5\n").expect("write");
    let err = TrustedKey::from_file(&path).expect_err("refused");
    assert_eq!(err.reason(), "key");
    assert!(err.to_string().contains("garbage.pub"), "{err}");
    let missing = dir.path().join("missing.pub");
    let err = TrustedKey::from_file(&missing).expect_err("refused");
    assert_eq!(err.reason(), "io");
    assert!(err.to_string().contains("missing.pub"), "{err}");
    let err = SigningKey::from_file(&path, None).expect_err("refused");
    assert_eq!(err.reason(), "key");
    // A public key is not a secret key.
    let key = ToolKey::generate();
    assert!(SigningKey::from_file(&key.public(), None).is_err());
}

#[test]
fn an_encrypted_key_needs_its_password() {
    let pair = minisign::KeyPair::generate_encrypted_keypair(Some("correct horse".into()))
        .expect("keypair");
    let secret = pair.sk.to_box(None).expect("box").into_string();
    let public = pair.pk.to_box().expect("box").into_string();
    assert!(SigningKey::is_encrypted(&secret, "<test>").expect("a key"));
    let err = SigningKey::decode(&secret, "<test>", None).expect_err("needs a password");
    assert_eq!(err.reason(), "password_needed");
    let err = SigningKey::decode(&secret, "<test>", Some("wrong")).expect_err("wrong password");
    assert_eq!(err.reason(), "key", "{err}");
    let key = SigningKey::decode(&secret, "<test>", Some("correct horse")).expect("decrypted");
    let trusted = TrustedKey::decode(&public, "<test>").expect("public");
    assert_eq!(key.key_id(), trusted.key_id());
    let doc = bytes(&doc_value());
    let (_, sig) = key.sign_document(&doc).expect("signed");
    accept(&doc, Some(&sig), &[trusted], None, now(), false).expect("accepted");
}

#[test]
fn an_unencrypted_tool_key_is_not_encrypted() {
    let key = ToolKey::generate();
    let text = fs_err::read_to_string(key.secret()).expect("read");
    assert!(!SigningKey::is_encrypted(&text, "<test>").expect("a key"));
    assert_eq!(key.signing().key_id(), key.trusted().key_id());
    let err = key.signing().sign(b"x", "two\nlines").expect_err("refused");
    assert_eq!(err.reason(), "sign");
}

#[test]
fn a_password_protected_tool_key_signs_with_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (public, secret) = (dir.path().join("key.pub"), dir.path().join("key.sec"));
    // Without a terminal, minisign reads the password (twice) from its standard input.
    let mut child = Command::new("minisign")
        .args(["-G", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("minisign -G");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"s3cret\ns3cret\n").expect("password");
    }
    let out = child.wait_with_output().expect("minisign -G");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs_err::read_to_string(&secret).expect("read");
    assert!(SigningKey::is_encrypted(&text, "<test>").expect("a key"));
    let err = SigningKey::from_file(&secret, None).expect_err("needs a password");
    assert_eq!(err.reason(), "password_needed");
    let key = SigningKey::from_file(&secret, Some("s3cret")).expect("decrypted");
    let trusted = TrustedKey::from_file(&public).expect("public");
    assert_eq!(key.key_id(), trusted.key_id());
    let doc = bytes(&doc_value());
    let (_, sig) = key.sign_document(&doc).expect("signed");
    accept(&doc, Some(&sig), &[trusted], None, now(), false).expect("accepted");
}

#[test]
fn a_corrupt_unencrypted_key_is_refused() {
    let key = ToolKey::generate();
    let text = fs_err::read_to_string(key.secret()).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Flip one character inside the Ed25519 secret key (bytes 54.. of the decoded payload).
    let mut payload: Vec<char> = lines[1].chars().collect();
    payload[100] = if payload[100] == 'A' { 'B' } else { 'A' };
    lines[1] = payload.into_iter().collect();
    let err = SigningKey::decode(&lines.join("\n"), "<test>", None).expect_err("refused");
    assert_eq!(err.reason(), "key", "{err}");
}

#[test]
fn a_trusted_key_sharing_the_signers_key_id_does_not_hide_the_right_one() {
    use ct_codecs::{Base64, Decoder, Encoder};
    let signer = ToolKey::generate();
    let other = ToolKey::generate();
    let doc = bytes(&doc_value());
    let sig = signer.tool_sign(&doc);
    // `other`'s Ed25519 key under `signer`'s key id.
    let line = |path: PathBuf| {
        fs_err::read_to_string(path)
            .expect("read")
            .lines()
            .nth(1)
            .expect("two lines")
            .to_string()
    };
    let signer_bytes = Base64::decode_to_vec(line(signer.public()), None).expect("base64");
    let mut forged = Base64::decode_to_vec(line(other.public()), None).expect("base64");
    forged[2..10].copy_from_slice(&signer_bytes[2..10]);
    let forged_text = format!(
        "untrusted comment: forged\n{}\n",
        Base64::encode_to_string(&forged).expect("base64")
    );
    let impostor = TrustedKey::decode(&forged_text, "<forged>").expect("decodes");
    assert_eq!(impostor.key_id(), signer.trusted().key_id());
    let err = accept(
        &doc,
        Some(&sig),
        std::slice::from_ref(&impostor),
        None,
        now(),
        false,
    )
    .expect_err("refused");
    assert_eq!(err.reason(), "bad_signature", "{err}");
    let trusted = [impostor, signer.trusted()];
    let key = verify(&doc, &sig, &trusted).expect("the real key verifies");
    assert_eq!(key.origin(), signer.public().display().to_string());
}

#[test]
fn every_refusal_reason_is_listed_and_distinct() {
    let now = now();
    let refusals = [
        FleetError::Malformed("x".into()),
        FleetError::Unsigned,
        FleetError::BadSignature("x".into()),
        FleetError::UntrustedKey { key_id: "x".into() },
        FleetError::StaleGeneration {
            generation: 1,
            applied: 1,
        },
        FleetError::Expired { expires: now, now },
    ];
    let reasons: Vec<_> = refusals.iter().map(FleetError::reason).collect();
    assert_eq!(reasons, FleetError::REFUSAL_REASONS);
    assert!(refusals.iter().all(FleetError::is_refusal));
    assert!(!FleetError::Sign("x".into()).is_refusal());
    assert!(!FleetError::PasswordNeeded { origin: "x".into() }.is_refusal());
}
