//! The daemon's key of encrypted secrets, through the real binary and its socket: made once
//! at the first start (0600), published in `/status`, kept across restarts, never logged, and
//! a damaged key file stops the daemon with an error that names it.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::PermissionsExt;

use outpost_secrets::{PublicKey, SecretKey};
use support::*;

fn key_path(s: &Scratch) -> std::path::PathBuf {
    s.root().join("secrets.key")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_first_start_makes_the_key_and_status_publishes_its_public_half() {
    let s = Scratch::new();
    let verbose = DaemonOptions {
        env: vec![("OUTPOST_LOG".into(), "trace".into())],
        ..Default::default()
    };
    let mut d = Daemon::start_with(&s.root(), verbose.clone());
    let path = key_path(&s);
    let meta = fs_err::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.len(), 32);
    let raw = fs_err::read(&path).unwrap();

    let published = d.status()["secrets_pub_key"].as_str().unwrap().to_owned();
    let on_disk = SecretKey::load_or_create(&path).unwrap();
    assert_eq!(published, on_disk.public_key().to_base64());
    // A secret sealed to the published key opens with the key on disk.
    let sealed = PublicKey::from_base64(&published)
        .unwrap()
        .seal(b"sealed-to-status");
    assert_eq!(&*on_disk.open(&sealed).unwrap(), b"sealed-to-status");

    // A restart loads the same key and leaves the file as it was.
    d.stop();
    let d = Daemon::start_with(&s.root(), verbose);
    assert_eq!(d.status()["secrets_pub_key"], published.as_str());
    assert_eq!(fs_err::read(&path).unwrap(), raw);

    // The secret half appears in no log line, in any spelling.
    let log = d.log();
    assert!(
        log.contains("listening") || !log.is_empty(),
        "the daemon logged: {log}"
    );
    let b64_secret = {
        // The secret key in standard base64, as a careless log line would print it.
        let secret = PublicKey::from_bytes(&raw).unwrap();
        secret.to_base64()
    };
    for spelling in [hex(&raw), format!("{raw:?}"), b64_secret] {
        assert!(
            !log.contains(&spelling),
            "the secret key is in the log: {spelling}"
        );
    }
}

#[test]
fn a_key_file_readable_by_others_stops_the_daemon_and_is_kept() {
    let s = Scratch::new();
    let mut d = Daemon::start(&s.root());
    let published = d.status()["secrets_pub_key"].as_str().unwrap().to_owned();
    d.stop();
    let path = key_path(&s);
    let raw = fs_err::read(&path).unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut d = Daemon::spawn(&s.root(), DaemonOptions::default());
    let status = d.wait_exit();
    assert!(!status.success(), "{status}");
    let log = d.log();
    assert!(
        log.contains("secrets.key") && log.contains("0644") && log.contains("chmod 600"),
        "{log}"
    );
    assert_eq!(
        fs_err::read(&path).unwrap(),
        raw,
        "the key file is never replaced"
    );

    // Fixed by hand, the daemon starts with the same key.
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(&s.root());
    assert_eq!(d.status()["secrets_pub_key"], published.as_str());
}

#[test]
fn a_truncated_key_file_stops_the_daemon_with_its_size() {
    let s = Scratch::new();
    let mut d = Daemon::start(&s.root());
    d.stop();
    let path = key_path(&s);
    fs_err::write(&path, [1u8; 16]).unwrap();

    let mut d = Daemon::spawn(&s.root(), DaemonOptions::default());
    assert!(!d.wait_exit().success());
    let log = d.log();
    assert!(
        log.contains("secrets.key") && log.contains("16 bytes"),
        "{log}"
    );
    assert_eq!(fs_err::read(&path).unwrap(), [1u8; 16]);
}
