//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use outpost_types::ErrorCode;

/// Why a key could not be loaded or made, or why a sealed secret could not be opened.
///
/// No variant carries a secret: neither key bytes nor a plaintext ever reach a message.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A filesystem operation on the key file failed.
    #[error("{op} {}: {source}", path.display())]
    Filesystem {
        /// What was being done (`open`, `write`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The key file is a symbolic link or not a regular file.
    #[error(
        "key file {}: not a regular file (a symbolic link or a special file is refused)",
        path.display()
    )]
    NotARegularFile {
        /// The key file.
        path: PathBuf,
    },
    /// The key file can be read or written by others than its owner.
    #[error(
        "key file {}: mode {mode:04o} is refused, the key must be readable by its owner only \
         (chmod 600 it)",
        path.display()
    )]
    WrongMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user than the one running the daemon.
    #[error("key file {}: owned by uid {owner}, not by uid {expected} running the daemon", path.display())]
    WrongOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        expected: u32,
    },
    /// The key file does not hold exactly one key.
    #[error(
        "key file {}: {size} bytes, a key file holds exactly {} bytes (a damaged key file is \
         not replaced: secrets sealed to it could not be opened any more)",
        path.display(),
        crate::KEY_SIZE
    )]
    WrongSize {
        /// The key file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A text that should be standard base64 (RFC 4648, padded) is not.
    #[error("{what} is not valid base64")]
    Base64 {
        /// What the text was (`public key`, `sealed box`).
        what: &'static str,
    },
    /// A public key of the wrong length.
    #[error("a public key is {} bytes, not {len}", crate::KEY_SIZE)]
    PublicKeyLength {
        /// The length found.
        len: usize,
    },
    /// A sealed box could not be opened: sealed to another key, tampered with, or truncated.
    #[error(
        "the sealed box could not be opened: sealed to another key, tampered with or truncated"
    )]
    Unseal,
    /// An opened secret is not UTF-8 text.
    #[error("the secret is not UTF-8 text")]
    NotUtf8,
    /// One entry of a map of sealed secrets failed; `name` is the entry's key (a name, never
    /// the secret).
    #[error("secret {name:?}: {source}")]
    Secret {
        /// The entry's key.
        name: String,
        /// Why it failed.
        #[source]
        source: Box<SecretsError>,
    },
}

impl SecretsError {
    /// The API error code: a bad input is `bad_request`, a key file problem `filesystem`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Filesystem { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                    ErrorCode::NotEnoughDiskSpace
                }
                _ => ErrorCode::Filesystem,
            },
            Self::NotARegularFile { .. }
            | Self::WrongMode { .. }
            | Self::WrongOwner { .. }
            | Self::WrongSize { .. } => ErrorCode::Filesystem,
            Self::Base64 { .. } | Self::PublicKeyLength { .. } | Self::Unseal | Self::NotUtf8 => {
                ErrorCode::BadRequest
            }
            Self::Secret { source, .. } => source.code(),
        }
    }

    /// The message followed by every cause, joined with `": "`.
    pub fn detail(&self) -> String {
        outpost_types::error_chain(self)
    }

    pub(crate) fn fs(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Filesystem {
            op,
            path: path.into(),
            source,
        }
    }
}
