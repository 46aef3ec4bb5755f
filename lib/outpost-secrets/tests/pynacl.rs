//! Sealed boxes against an independent implementation: PyNaCl (libsodium) of the test venv.

#![allow(clippy::unwrap_used)] // tests may unwrap (team rule)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ct_codecs::{Base64, Decoder, Encoder};
use outpost_secrets::{PublicKey, SecretKey, SecretsError};

fn python() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
        .join("bin/python")
}

/// Runs `script` with `input` on stdin; returns stdout, trimmed. Fails the test with Python's
/// stderr when the script fails.
fn py(script: &str, input: &str) -> String {
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (set OUTPOST_TEST_VENV)", python().display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const SEAL: &str = r#"
import sys, base64
from nacl.public import PublicKey, SealedBox
pub, msg = sys.stdin.read().split()
print(base64.b64encode(SealedBox(PublicKey(base64.b64decode(pub))).encrypt(base64.b64decode(msg))).decode())
"#;

const OPEN: &str = r#"
import sys, base64
from nacl.public import PrivateKey, SealedBox
from nacl.exceptions import CryptoError
sk, boxed = sys.stdin.read().split()
try:
    print(base64.b64encode(SealedBox(PrivateKey(bytes.fromhex(sk))).decrypt(base64.b64decode(boxed))).decode())
except CryptoError:
    print("REFUSED")
"#;

const KEYPAIR: &str = r#"
import base64
from nacl.public import PrivateKey
k = PrivateKey.generate()
print(bytes(k).hex(), base64.b64encode(bytes(k.public_key)).decode())
"#;

fn b64(bytes: &[u8]) -> String {
    Base64::encode_to_string(bytes).unwrap()
}

/// The daemon's key as made on disk, and its raw secret bytes in hex (read from the key file,
/// the way an operator could back it up).
fn disk_key() -> (tempfile::TempDir, SecretKey, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    let key = SecretKey::load_or_create(&path).unwrap();
    let hex: String = fs_err::read(&path)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (dir, key, hex)
}

#[test]
fn boxes_sealed_by_pynacl_open_in_rust() {
    let (_dir, key, _) = disk_key();
    let secret = "api-key-0123456789abcdef ünïcode";
    let sealed = py(
        SEAL,
        &format!(
            "{} {}",
            key.public_key().to_base64(),
            b64(secret.as_bytes())
        ),
    );
    assert_eq!(&*key.open_base64(&sealed).unwrap(), secret.as_bytes());
}

#[test]
fn boxes_sealed_in_rust_open_in_pynacl() {
    let (_dir, key, hex) = disk_key();
    let secret = b"rust-sealed secret";
    let sealed = key.public_key().seal_base64(secret);
    assert_eq!(py(OPEN, &format!("{hex} {sealed}")), b64(secret));
}

#[test]
fn a_box_sealed_to_another_key_is_refused_on_both_sides() {
    let (_dir, key, hex) = disk_key();
    let line = py(KEYPAIR, "");
    let (py_sk, py_pk) = line.split_once(' ').unwrap();
    let py_pub = PublicKey::from_base64(py_pk).unwrap();

    // Python seals to its own key: the daemon cannot open it.
    let theirs = py(SEAL, &format!("{py_pk} {}", b64(b"not for the daemon")));
    assert!(matches!(
        key.open_base64(&theirs),
        Err(SecretsError::Unseal)
    ));
    // Rust seals to Python's key: Python opens it with its key, not with the daemon's.
    let to_python = py_pub.seal_base64(b"for python");
    assert_eq!(
        py(OPEN, &format!("{py_sk} {to_python}")),
        b64(b"for python")
    );
    assert_eq!(py(OPEN, &format!("{hex} {to_python}")), "REFUSED");
}

#[test]
fn a_tampered_pynacl_box_is_refused() {
    let (_dir, key, hex) = disk_key();
    let sealed = py(
        SEAL,
        &format!("{} {}", key.public_key().to_base64(), b64(b"tamper me")),
    );
    let raw = Base64::decode_to_vec(&sealed, None).unwrap();
    // Flip one bit in the ephemeral key, the tag and the ciphertext in turn.
    for at in [0usize, 40, raw.len() - 1] {
        let mut bytes = raw.clone();
        bytes[at] ^= 0x80;
        assert!(
            matches!(key.open(&bytes), Err(SecretsError::Unseal)),
            "at {at}"
        );
        // And libsodium refuses the same box a Rust-side tamper makes.
        assert_eq!(py(OPEN, &format!("{hex} {}", b64(&bytes))), "REFUSED");
    }
}
