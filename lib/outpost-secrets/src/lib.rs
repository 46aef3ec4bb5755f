//! The daemon's key pair for encrypted secrets.
//!
//! A remote controller encrypts each secret of a configuration to the daemon's public key with
//! a libsodium sealed box (`crypto_box_seal`: X25519, XSalsa20-Poly1305, an ephemeral sender
//! key); only the daemon, holding the secret key, opens it. The daemon publishes the public key
//! in `/status` as `secrets_pub_key` (standard base64).
//!
//! # Guarantees
//! - The key file `<root>/secrets.key` is made once, on the first start: 32 random bytes written
//!   to a temporary file of mode 0600 in the same directory, synced, then renamed into place
//!   without replacing anything, and the directory synced. A crash leaves either no key file or
//!   a whole one; two starts racing both end with the one key that won.
//! - A key file that is a symbolic link, not a regular file, readable or writable by others
//!   than its owner, owned by another user, or not exactly 32 bytes is refused with an error
//!   naming the fault. It is never replaced: secrets sealed to it would be lost.
//! - Secret key bytes and opened plaintexts live in memory that is wiped when dropped
//!   ([`zeroize`]); no `Debug` or `Display` prints them, and no error carries them.

mod error;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ct_codecs::{Base64, Decoder, Encoder};
use rustix::fs::{FileType, Mode, OFlags};
use zeroize::Zeroizing;

pub use error::SecretsError;
pub use zeroize;

/// The length of a key, public or secret, in bytes.
pub const KEY_SIZE: usize = 32;

/// The file name of the key under the daemon's root.
pub const KEY_FILE_NAME: &str = "secrets.key";

/// The daemon's X25519 secret key. Its bytes are wiped when it is dropped.
#[derive(Clone)]
pub struct SecretKey {
    inner: crypto_box::SecretKey,
}

/// An X25519 public key, to seal secrets to.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: crypto_box::PublicKey,
}

impl SecretKey {
    /// Loads the key file at `path`, or makes it when there is none (see the crate's
    /// guarantees). The parent directory must exist.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretsError> {
        match Self::load(path)? {
            Some(key) => Ok(key),
            None => Self::create(path),
        }
    }

    /// A new random key, kept in memory only (tests, and senders of sealed boxes).
    pub fn generate() -> SecretKey {
        SecretKey {
            inner: crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng),
        }
    }

    /// The public half of the key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.public_key(),
        }
    }

    /// Opens a sealed box (`crypto_box_seal_open`). The plaintext is wiped when dropped.
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        self.inner
            .unseal(sealed)
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::Unseal)
    }

    /// Opens a sealed box given in standard base64.
    pub fn open_base64(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let raw = Base64::decode_to_vec(sealed, None)
            .map_err(|_| SecretsError::Base64 { what: "sealed box" })?;
        self.open(&raw)
    }

    /// `Ok(None)` when there is no file at `path`.
    fn load(path: &Path) -> Result<Option<SecretKey>, SecretsError> {
        let fd = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(SecretsError::NotARegularFile { path: path.into() });
            }
            Err(e) => return Err(SecretsError::fs("open", path, e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| SecretsError::fs("stat", path, e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(SecretsError::NotARegularFile { path: path.into() });
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::WrongMode {
                path: path.into(),
                mode,
            });
        }
        let euid = rustix::process::geteuid().as_raw();
        if stat.st_uid != euid {
            return Err(SecretsError::WrongOwner {
                path: path.into(),
                owner: stat.st_uid,
                expected: euid,
            });
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size != KEY_SIZE as u64 {
            return Err(SecretsError::WrongSize {
                path: path.into(),
                size,
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_SIZE]);
        let mut file = std::fs::File::from(fd);
        file.read_exact(bytes.as_mut())
            .map_err(|e| SecretsError::fs("read", path, e))?;
        // A file that grew between fstat and read is not a key file either.
        let mut extra = [0u8; 1];
        if file
            .read(&mut extra)
            .map_err(|e| SecretsError::fs("read", path, e))?
            != 0
        {
            return Err(SecretsError::WrongSize {
                path: path.into(),
                size: KEY_SIZE as u64 + 1,
            });
        }
        Ok(Some(SecretKey {
            inner: crypto_box::SecretKey::from_bytes(*bytes),
        }))
    }

    fn create(path: &Path) -> Result<SecretKey, SecretsError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let key = Self::generate();
        let bytes = Zeroizing::new(key.inner.to_bytes());
        // tempfile makes its file with mode 0600 (O_EXCL, random name) in the same directory.
        let mut tmp = tempfile::Builder::new()
            .prefix(".secrets.key.")
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| SecretsError::fs("create a temporary key file in", dir, e))?;
        tmp.write_all(bytes.as_ref())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| SecretsError::fs("write", tmp.path().to_path_buf(), e))?;
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            // Another start made the key first: that one is the key.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                drop(e.file);
                return Self::load(path)?.ok_or_else(|| {
                    SecretsError::fs(
                        "open",
                        path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                });
            }
            Err(e) => return Err(SecretsError::fs("rename into", path, e.error)),
        }
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|d| rustix::fs::fsync(&d))
        .map_err(|e| SecretsError::fs("sync", dir, e.into()))?;
        Ok(key)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public_key", &self.public_key().to_base64())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// The key in standard base64 (44 characters), as `/status` publishes it.
    pub fn to_base64(&self) -> String {
        // 32 bytes always fit the buffer ct-codecs sizes for them.
        Base64::encode_to_string(self.inner.as_bytes()).unwrap_or_default()
    }

    /// Reads a key in standard base64.
    pub fn from_base64(text: &str) -> Result<PublicKey, SecretsError> {
        let raw = Base64::decode_to_vec(text.trim(), None)
            .map_err(|_| SecretsError::Base64 { what: "public key" })?;
        Self::from_bytes(&raw)
    }

    /// A key from its 32 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<PublicKey, SecretsError> {
        let bytes: [u8; KEY_SIZE] = raw
            .try_into()
            .map_err(|_| SecretsError::PublicKeyLength { len: raw.len() })?;
        Ok(PublicKey {
            inner: crypto_box::PublicKey::from_bytes(bytes),
        })
    }

    /// The key's 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_SIZE] {
        self.inner.as_bytes()
    }

    /// Seals `plaintext` to this key (`crypto_box_seal`): 48 bytes longer than the plaintext.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        // Encryption fails only for a plaintext over the cipher's limit (256 GiB), and the
        // system's random source failing aborts inside `OsRng` itself.
        #[allow(clippy::expect_used)]
        self.inner
            .seal(&mut crypto_box::aead::OsRng, plaintext)
            .expect("a sealed box of an in-memory plaintext")
    }

    /// Seals `plaintext` and gives the box in standard base64.
    pub fn seal_base64(&self, plaintext: &[u8]) -> String {
        Base64::encode_to_string(self.seal(plaintext)).unwrap_or_default()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.to_base64()).finish()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// Opens every sealed box of `sealed` (name -> base64 box) into its UTF-8 plaintext. The first
/// failure is reported with the entry's name; nothing of a secret is in any error.
pub fn open_map(
    key: &SecretKey,
    sealed: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Zeroizing<String>>, SecretsError> {
    let mut out = BTreeMap::new();
    for (name, boxed) in sealed {
        let named = |source| SecretsError::Secret {
            name: name.clone(),
            source: Box::new(source),
        };
        let plain = key.open_base64(boxed).map_err(named)?;
        let text = match std::str::from_utf8(&plain) {
            Ok(text) => Zeroizing::new(text.to_owned()),
            Err(_) => return Err(named(SecretsError::NotUtf8)),
        };
        out.insert(name.clone(), text);
    }
    Ok(out)
}
