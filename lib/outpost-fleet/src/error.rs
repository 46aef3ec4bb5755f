//! The crate's one error type: the refusals of a fleet document, and the failures of key
//! handling and signing.

use jiff::Timestamp;

/// Why a fleet document was refused, or why a key could not be used.
///
/// The first six variants are the refusals of [`crate::accept`]; each has a stable
/// [`reason`](FleetError::reason), meant as a Prometheus label value and a `/status` field.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The document is not valid JSON, breaks the format, or fails its validation. The message
    /// names the field at fault (`packages.web.experiment.percent: ...`).
    #[error("malformed fleet document: {0}")]
    Malformed(String),
    /// The document came without a signature and `fleet.allow_unsigned` is off.
    #[error("the fleet document is not signed, and unsigned documents are not allowed")]
    Unsigned,
    /// The signature could not be decoded, or does not match the document's bytes.
    #[error("bad signature of the fleet document: {0}")]
    BadSignature(String),
    /// The signature is well formed but made by a key that is not among the trusted ones.
    #[error("the fleet document is signed by key {key_id}, which is not trusted")]
    UntrustedKey {
        /// The minisign key id of the signature (16 hex digits, as `minisign` prints it).
        key_id: String,
    },
    /// The document's generation is not above the one already applied.
    #[error(
        "stale fleet document: generation {generation} is not above the applied generation {applied}"
    )]
    StaleGeneration {
        /// The document's generation.
        generation: u64,
        /// The generation this host has applied.
        applied: u64,
    },
    /// The document's `expires` is not in the future.
    #[error("the fleet document expired at {expires} (now {now})")]
    Expired {
        /// The document's expiry.
        expires: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// A public or secret key could not be read or decoded.
    #[error("key {origin}: {reason}")]
    Key {
        /// Where the key came from (a path, or `<text>`).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The secret key is encrypted and no password was given.
    #[error("the secret key {origin} is encrypted: a password is needed")]
    PasswordNeeded {
        /// Where the key came from.
        origin: String,
    },
    /// Signing failed (wrong password, corrupt key, no randomness).
    #[error("signing failed: {0}")]
    Sign(String),
    /// The host id could not be read or is empty.
    #[error("host id: {0}")]
    HostId(String),
    /// A file could not be read (the message names it).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FleetError {
    /// The [`reason`](FleetError::reason) of every refusal, for metrics that register each
    /// label value up front (a counter at zero is a fact too).
    pub const REFUSAL_REASONS: [&'static str; 6] = [
        "malformed",
        "unsigned",
        "bad_signature",
        "untrusted_key",
        "stale_generation",
        "expired",
    ];

    /// A stable, lowercase, snake_case name of the variant, for metrics labels, logs and
    /// `/status`: `malformed`, `unsigned`, `bad_signature`, `untrusted_key`,
    /// `stale_generation`, `expired`, `key`, `password_needed`, `sign`, `host_id`, `io`.
    /// These strings never change meaning.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Unsigned => "unsigned",
            Self::BadSignature(_) => "bad_signature",
            Self::UntrustedKey { .. } => "untrusted_key",
            Self::StaleGeneration { .. } => "stale_generation",
            Self::Expired { .. } => "expired",
            Self::Key { .. } => "key",
            Self::PasswordNeeded { .. } => "password_needed",
            Self::Sign(_) => "sign",
            Self::HostId(_) => "host_id",
            Self::Io(_) => "io",
        }
    }

    /// True for the refusals of a document ([`crate::accept`]), false for key, signing and
    /// I/O failures.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_)
                | Self::Unsigned
                | Self::BadSignature(_)
                | Self::UntrustedKey { .. }
                | Self::StaleGeneration { .. }
                | Self::Expired { .. }
        )
    }
}

/// The refusal of a document by [`crate::accept`]: one of the refusal variants of
/// [`FleetError`] (see [`FleetError::is_refusal`]).
pub type Refusal = FleetError;
