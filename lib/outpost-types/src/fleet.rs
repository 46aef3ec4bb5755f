//! The `fleet` object of `GET /status`: what the daemon's fleet poller last did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `"fleet"` in `GET /status`, present when `fleet:` is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The polled artifact, `oci://host/repo:tag`.
    pub source: String,
    /// The generation of the document applied; `null` before the first one.
    pub applied_generation: Option<u64>,
    /// The manifest digest of the artifact applied.
    pub applied_digest: Option<String>,
    /// When the last poll ended (RFC 3339).
    pub last_poll_at: Option<String>,
    /// Why the last poll or convergence failed, or the last document was refused; `null` when
    /// the last poll went well.
    pub last_error: Option<String>,
    /// A stable name of that failure: a refusal (`unsigned`, `bad_signature`,
    /// `untrusted_key`, `malformed`, `stale_generation`, `expired`), `registry`, `apply` or
    /// `key`.
    #[serde(default)]
    pub last_error_reason: Option<String>,
    /// True when the host is in the applied document's desired state (its plan is empty).
    pub converged: bool,
    /// `fleet.allow_unsigned` is on: unsigned documents are accepted.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// The document applied came without a signature.
    #[serde(default)]
    pub unsigned: bool,
    /// The key id of the trusted key that signed the applied document.
    #[serde(default)]
    pub signed_by: Option<String>,
    /// The packages the applied document manages.
    #[serde(default)]
    pub managed: Vec<String>,
    /// Experiments of the document this host does not run, and why (`selector_mismatch`,
    /// `outside_percent`, `rolled_back`).
    #[serde(default)]
    pub skipped: BTreeMap<String, String>,
}
