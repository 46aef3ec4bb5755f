//! The key file and sealed boxes, on a real filesystem.

#![allow(clippy::unwrap_used)] // tests may unwrap (team rule)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use fs_err::os::unix::fs::symlink;
use std::path::Path;

use outpost_secrets::{KEY_SIZE, PublicKey, SecretKey, SecretsError, open_map};
use outpost_types::ErrorCode;

fn mode(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn first_start_makes_a_0600_key_file_and_later_starts_load_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    let made = SecretKey::load_or_create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs_err::metadata(&path).unwrap().len(), KEY_SIZE as u64);
    let bytes = fs_err::read(&path).unwrap();

    let loaded = SecretKey::load_or_create(&path).unwrap();
    assert_eq!(loaded.public_key(), made.public_key());
    assert_eq!(
        fs_err::read(&path).unwrap(),
        bytes,
        "a loaded key file is not rewritten"
    );
    // Only the key file: no temporary file left behind.
    let names: Vec<_> = fs_err::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["secrets.key"]);
}

#[test]
fn racing_first_starts_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    let keys: Vec<PublicKey> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| SecretKey::load_or_create(&path).unwrap().public_key()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let on_disk = SecretKey::load_or_create(&path).unwrap().public_key();
    assert!(
        keys.iter().all(|k| *k == on_disk),
        "{keys:?} vs {on_disk:?}"
    );
    assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_key_file_readable_by_others_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    SecretKey::load_or_create(&path).unwrap();
    let bytes = fs_err::read(&path).unwrap();
    for bad in [0o644, 0o640, 0o604, 0o660, 0o602] {
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = SecretKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, SecretsError::WrongMode { mode, .. } if mode == bad),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::Filesystem);
        let msg = err.to_string();
        assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
        assert!(
            msg.contains("secrets.key") && msg.contains("chmod 600"),
            "{msg}"
        );
        assert_eq!(
            fs_err::read(&path).unwrap(),
            bytes,
            "a refused key file is kept"
        );
    }
    // 0400 is stricter than 0600: accepted.
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    SecretKey::load_or_create(&path).unwrap();
}

#[test]
fn a_key_file_of_the_wrong_size_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    for len in [0usize, 1, 31, 33, 64] {
        fs_err::write(&path, vec![7u8; len]).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = SecretKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, SecretsError::WrongSize { size, .. } if size == len as u64),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("{len} bytes")), "{err}");
        assert_eq!(fs_err::read(&path).unwrap().len(), len, "never replaced");
    }
}

#[test]
fn a_symlink_or_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.key");
    SecretKey::load_or_create(&real).unwrap();
    let link = dir.path().join("secrets.key");
    symlink(&real, &link).unwrap();
    let err = SecretKey::load_or_create(&link).unwrap_err();
    assert!(
        matches!(err, SecretsError::NotARegularFile { .. }),
        "{err:?}"
    );

    let dangling = dir.path().join("dangling.key");
    symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let err = SecretKey::load_or_create(&dangling).unwrap_err();
    assert!(
        matches!(err, SecretsError::NotARegularFile { .. }),
        "{err:?}"
    );
    assert!(
        !dir.path().join("nowhere").exists(),
        "nothing made through a link"
    );

    let sub = dir.path().join("dir.key");
    fs_err::create_dir(&sub).unwrap();
    fs_err::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = SecretKey::load_or_create(&sub).unwrap_err();
    assert!(
        matches!(err, SecretsError::NotARegularFile { .. }),
        "{err:?}"
    );
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SecretKey::load_or_create(&dir.path().join("missing/secrets.key")).unwrap_err();
    assert!(matches!(err, SecretsError::Filesystem { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn sealed_boxes_open_with_their_key_only() {
    let key = SecretKey::generate();
    let other = SecretKey::generate();
    let sealed = key.public_key().seal(b"hunter2");
    assert_eq!(sealed.len(), b"hunter2".len() + 48);
    assert_eq!(&*key.open(&sealed).unwrap(), b"hunter2");
    assert!(matches!(other.open(&sealed), Err(SecretsError::Unseal)));

    for i in 0..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[i] ^= 0x01;
        assert!(
            matches!(key.open(&tampered), Err(SecretsError::Unseal)),
            "byte {i}"
        );
    }
    for len in [0, 1, 32, 47, sealed.len() - 1] {
        assert!(
            matches!(key.open(&sealed[..len]), Err(SecretsError::Unseal)),
            "{len}"
        );
    }
    // An empty secret seals and opens too.
    assert!(key.open(&key.public_key().seal(b"")).unwrap().is_empty());
}

#[test]
fn public_keys_round_trip_through_base64() {
    let key = SecretKey::generate();
    let text = key.public_key().to_base64();
    assert_eq!(text.len(), 44);
    assert_eq!(PublicKey::from_base64(&text).unwrap(), key.public_key());
    assert_eq!(key.public_key().to_string(), text);

    let err = PublicKey::from_base64("not base64!").unwrap_err();
    assert!(
        matches!(err, SecretsError::Base64 { what: "public key" }),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::BadRequest);
    let err = PublicKey::from_base64("AAAA").unwrap_err();
    assert!(
        matches!(err, SecretsError::PublicKeyLength { len: 3 }),
        "{err:?}"
    );
}

#[test]
fn open_map_opens_every_secret_and_names_the_one_that_fails() {
    let key = SecretKey::generate();
    let public = key.public_key();
    let mut sealed = BTreeMap::new();
    sealed.insert("api_key".to_owned(), public.seal_base64(b"s3cr3t-api"));
    sealed.insert(
        "password".to_owned(),
        public.seal_base64("pässwörd".as_bytes()),
    );
    let open = open_map(&key, &sealed).unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open["api_key"].as_str(), "s3cr3t-api");
    assert_eq!(open["password"].as_str(), "pässwörd");

    // Sealed to another key.
    let mut bad = sealed.clone();
    bad.insert(
        "token".to_owned(),
        SecretKey::generate()
            .public_key()
            .seal_base64(b"tok-plaintext"),
    );
    let err = open_map(&key, &bad).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
    let msg = err.detail();
    assert!(
        msg.contains("\"token\"") && msg.contains("could not be opened"),
        "{msg}"
    );
    assert!(
        !msg.contains("tok-plaintext") && !msg.contains("s3cr3t"),
        "{msg}"
    );

    // Not base64.
    let mut bad = sealed.clone();
    bad.insert("token".to_owned(), "%%%".to_owned());
    let msg = open_map(&key, &bad).unwrap_err().detail();
    assert!(msg.contains("\"token\"") && msg.contains("base64"), "{msg}");

    // Not UTF-8.
    let mut bad = sealed;
    bad.insert("blob".to_owned(), public.seal_base64(&[0xff, 0xfe, 0x00]));
    let err = open_map(&key, &bad).unwrap_err();
    assert!(
        err.detail().contains("\"blob\"") && err.detail().contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn debug_output_shows_no_secret_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    let key = SecretKey::load_or_create(&path).unwrap();
    let raw = fs_err::read(&path).unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains(&key.public_key().to_base64()), "{debug}");
    // Neither the raw bytes as Rust prints arrays, nor in hex.
    let as_array = format!("{raw:?}");
    let as_hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !debug.contains(&as_array[1..20]) && !debug.contains(&as_hex),
        "{debug}"
    );
}
