//! minisign signatures of documents: trusted public keys, verification, acceptance, and the
//! secret key that signs for `fleet push`.
//!
//! The signature is a minisign signature file (the text `minisign -S` writes) of the exact
//! bytes of the document. Both the pre-hashed form (`ED`, the default of minisign 0.10 and
//! later) and the legacy form (`Ed`) verify; outpost signs in the pre-hashed form, which every
//! current `minisign -V` accepts.

use std::path::Path;

use ct_codecs::{Base64, Decoder};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::document::Document;
use crate::error::FleetError;

/// Decodes the base64 line of a minisign key or signature and returns its key id, printed the
/// way `minisign` prints it: the 8 bytes after the algorithm, little-endian, 16 upper-case hex
/// digits.
fn key_id_of(base64_line: &str) -> Option<String> {
    let bytes = Base64::decode_to_vec(base64_line.trim(), None).ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

/// The second line of a minisign file: the base64 payload after the untrusted comment.
fn payload_line(text: &str) -> Option<&str> {
    text.lines().nth(1)
}

/// A public key trusted to sign documents (`fleet.trusted_keys`): a minisign public key file,
/// an untrusted comment line then the base64 key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: minisign_verify::PublicKey,
    key_id: String,
    origin: String,
}

impl TrustedKey {
    /// Decodes the text of a public key file; `origin` names it in messages.
    ///
    /// # Errors
    /// [`FleetError::Key`] when the text is not a minisign Ed25519 public key.
    pub fn decode(text: &str, origin: &str) -> Result<Self, FleetError> {
        let bad = |reason: String| FleetError::Key {
            origin: origin.to_string(),
            reason,
        };
        let key = minisign_verify::PublicKey::decode(text)
            .map_err(|e| bad(format!("not a minisign public key: {e}")))?;
        let key_id = payload_line(text)
            .and_then(key_id_of)
            .ok_or_else(|| bad("not a minisign public key: no key id".into()))?;
        Ok(Self {
            key,
            key_id,
            origin: origin.to_string(),
        })
    }

    /// Reads and decodes a public key file.
    ///
    /// # Errors
    /// [`FleetError::Io`] naming the path when it cannot be read, [`FleetError::Key`] when it
    /// is not a public key.
    pub fn from_file(path: &Path) -> Result<Self, FleetError> {
        let text = fs_err::read_to_string(path)?;
        Self::decode(&text, &path.display().to_string())
    }

    /// The key id, 16 upper-case hex digits as `minisign` prints it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Where the key came from (its path), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Checks that `signature` (the text of a minisign signature file) signs `bytes` with one of
/// `trusted`, and returns the key that did.
///
/// # Errors
/// [`FleetError::BadSignature`] when the signature cannot be decoded or does not match the
/// bytes under the key it names; [`FleetError::UntrustedKey`] when no trusted key has its key
/// id.
pub fn verify<'k>(
    bytes: &[u8],
    signature: &[u8],
    trusted: &'k [TrustedKey],
) -> Result<&'k TrustedKey, FleetError> {
    let text = std::str::from_utf8(signature)
        .map_err(|_| FleetError::BadSignature("the signature is not UTF-8 text".into()))?;
    let sig = minisign_verify::Signature::decode(text)
        .map_err(|e| FleetError::BadSignature(format!("cannot decode the signature: {e}")))?;
    let sig_key_id = payload_line(text)
        .and_then(key_id_of)
        .ok_or_else(|| FleetError::BadSignature("the signature has no key id".into()))?;
    // Key ids are 8 random bytes: two trusted keys could share one, so each is tried.
    let mut last = None;
    for key in trusted.iter().filter(|k| k.key_id == sig_key_id) {
        match key.key.verify(bytes, &sig, true) {
            Ok(()) => return Ok(key),
            Err(e) => last = Some(e),
        }
    }
    match last {
        None => Err(FleetError::UntrustedKey { key_id: sig_key_id }),
        Some(e) => Err(FleetError::BadSignature(format!("key {sig_key_id}: {e}"))),
    }
}

/// A document this host may apply.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The validated document.
    pub document: Document,
    /// The key id of the trusted key that signed it; `None` for an unsigned document accepted
    /// because `allow_unsigned` is on.
    pub signed_by: Option<String>,
    /// `sha256:<hex>` of the document's bytes.
    pub sha256: String,
}

impl Accepted {
    /// True when the document was accepted without a signature.
    pub fn is_unsigned(&self) -> bool {
        self.signed_by.is_none()
    }
}

/// Decides whether a fetched document may be applied.
///
/// In order: the signature (when `signature` is `None`, the document is refused as
/// [`FleetError::Unsigned`] unless `allow_unsigned`; a signature that is present is always
/// checked, `allow_unsigned` or not), then the document's format and validation, then its
/// generation (it must be above `applied_generation`, `None` meaning nothing applied yet),
/// then its expiry (`expires` must be after `now`). The signature is checked before the JSON
/// is parsed, so that untrusted bytes meet the parser only in labs that allow unsigned
/// documents.
///
/// # Errors
/// One refusal of [`FleetError`] (see [`FleetError::is_refusal`]); the host keeps its state.
pub fn accept(
    bytes: &[u8],
    signature: Option<&[u8]>,
    trusted: &[TrustedKey],
    applied_generation: Option<u64>,
    now: Timestamp,
    allow_unsigned: bool,
) -> Result<Accepted, FleetError> {
    let signed_by = match signature {
        Some(sig) => Some(verify(bytes, sig, trusted)?.key_id.clone()),
        None if allow_unsigned => None,
        None => return Err(FleetError::Unsigned),
    };
    let document = Document::from_json(bytes)?;
    if let Some(applied) = applied_generation
        && document.generation <= applied
    {
        return Err(FleetError::StaleGeneration {
            generation: document.generation,
            applied,
        });
    }
    if document.is_expired(now) {
        return Err(FleetError::Expired {
            expires: document.expires,
            now,
        });
    }
    Ok(Accepted {
        document,
        signed_by,
        sha256: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
    })
}

/// A minisign secret key that signs documents (`outpost fleet push --sign-key`).
///
/// Keys made by `minisign -G` load, with a password (scrypt-encrypted, the default) or
/// without (`-W`). This type never prompts: the caller asks for the password when
/// [`SigningKey::is_encrypted`] says so, and passes it in.
pub struct SigningKey {
    key: minisign::SecretKey,
    public: minisign::PublicKey,
    key_id: String,
}

/// Size of a decoded secret key: algorithm, KDF algorithm, checksum algorithm, KDF salt,
/// opslimit, memlimit, key id, Ed25519 secret key, checksum.
const UNENCRYPTED_SECRET_KEY_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Tells whether the text of a secret key file is encrypted with a password.
    ///
    /// # Errors
    /// [`FleetError::Key`] when the text is not a minisign secret key.
    pub fn is_encrypted(text: &str, origin: &str) -> Result<bool, FleetError> {
        let bytes = payload_line(text)
            .and_then(|l| Base64::decode_to_vec(l.trim(), None).ok())
            .filter(|b| b.len() >= 4 && b[..2] == *b"Ed")
            .ok_or_else(|| FleetError::Key {
                origin: origin.to_string(),
                reason: "not a minisign secret key".into(),
            })?;
        Ok(bytes[2..4] != [0, 0])
    }

    /// Decodes the text of a secret key file, decrypting it with `password` when it is
    /// encrypted; `origin` names it in messages.
    ///
    /// # Errors
    /// [`FleetError::PasswordNeeded`] when the key is encrypted and `password` is `None`;
    /// [`FleetError::Key`] when the text is not a secret key, the password is wrong or the
    /// key is corrupt.
    pub fn decode(text: &str, origin: &str, password: Option<&str>) -> Result<Self, FleetError> {
        let bad = |reason: String| FleetError::Key {
            origin: origin.to_string(),
            reason,
        };
        let key = if Self::is_encrypted(text, origin)? {
            let Some(password) = password else {
                return Err(FleetError::PasswordNeeded {
                    origin: origin.to_string(),
                });
            };
            let boxed =
                minisign::SecretKeyBox::from_string(text).map_err(|e| bad(e.to_string()))?;
            minisign::SecretKey::from_box(boxed, Some(password.to_string()))
                .map_err(|e| bad(e.to_string()))?
        } else {
            // Decoded by hand: `minisign -G -W` (0.11) leaves the checksum of an unencrypted
            // key zeroed, which the crate's own loader refuses. The key's consistency is
            // checked below by a signature that must verify under its public half.
            let bytes = payload_line(text)
                .and_then(|l| Base64::decode_to_vec(l.trim(), None).ok())
                .filter(|b| b.len() == UNENCRYPTED_SECRET_KEY_BYTES)
                .ok_or_else(|| bad("not a minisign secret key".into()))?;
            minisign::SecretKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?
        };
        let public = minisign::PublicKey::from_secret_key(&key).map_err(|e| bad(e.to_string()))?;
        minisign::sign(Some(&public), &key, &b""[..], Some("self-test"), None)
            .map_err(|e| bad(format!("the key does not sign consistently: {e}")))?;
        // The key id sits in the encrypted part of the file: read it from the decoded key.
        let id: [u8; 8] = key
            .keynum()
            .try_into()
            .map_err(|_| bad("a key id that is not 8 bytes".into()))?;
        let key_id = format!("{:016X}", u64::from_le_bytes(id));
        Ok(Self {
            key,
            public,
            key_id,
        })
    }

    /// Reads and decodes a secret key file (see [`SigningKey::decode`]).
    ///
    /// # Errors
    /// [`FleetError::Io`] naming the path, or those of [`SigningKey::decode`].
    pub fn from_file(path: &Path, password: Option<&str>) -> Result<Self, FleetError> {
        let text = fs_err::read_to_string(path)?;
        Self::decode(&text, &path.display().to_string(), password)
    }

    /// The key id, 16 upper-case hex digits as `minisign` prints it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `bytes`; returns the text of a minisign signature file. `trusted_comment` is
    /// covered by the signature (minisign's default is a timestamp); it must be one line.
    ///
    /// # Errors
    /// [`FleetError::Sign`] when the comment has a line break or no randomness is available.
    pub fn sign(&self, bytes: &[u8], trusted_comment: &str) -> Result<Vec<u8>, FleetError> {
        if trusted_comment.contains(['\n', '\r']) {
            return Err(FleetError::Sign(
                "the trusted comment must be one line".into(),
            ));
        }
        let sig = minisign::sign(
            Some(&self.public),
            &self.key,
            bytes,
            Some(trusted_comment),
            Some(&format!("signature from outpost fleet key {}", self.key_id)),
        )
        .map_err(|e| FleetError::Sign(e.to_string()))?;
        Ok(sig.into_string().into_bytes())
    }

    /// Validates the bytes of a document, then signs them with the trusted comment
    /// `outpost fleet generation <N>`. Returns the document and the signature's text.
    ///
    /// # Errors
    /// [`FleetError::Malformed`] when the document is refused by [`Document::from_json`];
    /// those of [`SigningKey::sign`].
    pub fn sign_document(&self, bytes: &[u8]) -> Result<(Document, Vec<u8>), FleetError> {
        let doc = Document::from_json(bytes)?;
        let sig = self.sign(
            bytes,
            &format!("outpost fleet generation {}", doc.generation),
        )?;
        Ok((doc, sig))
    }
}
