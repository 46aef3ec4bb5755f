//! Content digests: the validated [`Digest`] newtype and what a tarball is expected to be.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::ArchiveError;

/// A sha256 content digest, `sha256:<64 lowercase hex digits>`.
///
/// Only sha256 is supported. Blob paths in an image layout are built from this type alone,
/// so a descriptor can never name a path of its own choosing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>` (64 lowercase hex digits).
    pub fn parse(s: &str) -> Result<Self, ArchiveError> {
        match outpost_types::source::validate_digest(s) {
            Ok(()) => Ok(Self {
                hex: s["sha256:".len()..].to_owned(),
            }),
            Err(_) => Err(ArchiveError::InvalidDigest {
                value: s.to_owned(),
            }),
        }
    }

    /// Parses a bare hex sha256 (64 hex digits, either case), as a catalog's `sha256` field
    /// holds it; a `sha256:` prefix is accepted too.
    pub fn from_hex(s: &str) -> Result<Self, ArchiveError> {
        let bare = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
        if outpost_types::source::is_sha256_hex(&bare) {
            Ok(Self { hex: bare })
        } else {
            Err(ArchiveError::InvalidDigest {
                value: s.to_owned(),
            })
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished sha256 hasher holds.
    pub fn from_hasher(h: Sha256) -> Self {
        Self {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Where an OCI image layout rooted at `layout` keeps this blob: `blobs/sha256/<hex>`.
    pub fn blob_path(&self, layout: &Path) -> PathBuf {
        layout.join("blobs").join("sha256").join(&self.hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = ArchiveError;

    fn from_str(s: &str) -> Result<Self, ArchiveError> {
        Self::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a tarball must be: its sha256 (required) and its size in bytes (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The sha256 of the raw (compressed) stream.
    pub digest: Digest,
    /// The length of the raw stream, when known. A stream that runs past it is cut off and
    /// refused at once.
    pub size: Option<u64>,
}

impl Expected {
    /// From a catalog entry's hex `sha256` and optional `size`.
    pub fn sha256(hex: &str, size: Option<u64>) -> Result<Self, ArchiveError> {
        Ok(Self {
            digest: Digest::from_hex(hex)?,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::parse(&format!("sha256:{empty}")).unwrap();
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.to_string(), format!("sha256:{empty}"));
        assert_eq!(Digest::from_hex(&empty.to_uppercase()).unwrap(), d);
        assert_eq!(Digest::from_hex(&format!("sha256:{empty}")).unwrap(), d);
        assert_eq!(
            d.blob_path(Path::new("/l")),
            Path::new("/l/blobs/sha256").join(empty)
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert!(
                matches!(&err, ArchiveError::InvalidDigest { value } if value == bad),
                "{bad:?}: {err}"
            );
            assert_eq!(err.code(), outpost_types::ErrorCode::BadRequest);
        }
        assert!(Digest::from_hex("xyz").is_err());
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
