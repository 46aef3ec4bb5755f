//! Fleet rollouts: the pure core.
//!
//! Every daemon of a fleet polls one signed **desired-state document** and converges to it on
//! its own; a staged rollout is a sequence of documents. This crate holds what needs no
//! network and no disk beyond reading keys: the document ([`Document`]), its signature and
//! acceptance ([`accept`]), cohorts ([`in_cohort`]) and the convergence plan ([`plan()`]).
//!
//! # The document
//!
//! A JSON object, media type [`MEDIA_TYPE`], pushed as an OCI artifact whose second blob
//! ([`SIGNATURE_MEDIA_TYPE`]) is a minisign signature of the document's exact bytes:
//!
//! ```json
//! {
//!   "generation": 7,
//!   "expires": "2027-01-31T00:00:00Z",
//!   "catalog": {"packages": [{"package": "web", "version": "1.2.0", "url": "oci://..."}]},
//!   "packages": {
//!     "web": {
//!       "stable": "1.2.0",
//!       "experiment": {
//!         "version": "1.3.0", "percent": 10, "selector": {"role": "web"},
//!         "health": {"command": ["/bin/check"], "interval": "10s", "timeout": "5s",
//!                    "failures": 3, "grace": "30s"},
//!         "max_duration": "1h", "auto_promote_after": "20m"
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! Unknown fields are refused with their path; see [`Document::from_json`] for every rule.
//!
//! # Use
//!
//! A daemon accepts a fetched document, then plans from its own state; each action is one
//! serialised operation. (Here unsigned, as a lab allows; production passes the signature blob
//! and the keys of `fleet.trusted_keys`.)
//!
//! ```
//! use std::collections::BTreeSet;
//! use outpost_fleet::{Action, Host, HostState, Timestamp, accept, plan};
//!
//! let bytes = br#"{"generation": 1, "expires": "2099-01-01T00:00:00Z",
//!   "catalog": {"packages": [{"package": "web", "version": "1.2.0", "url": "oci://registry.example/web:1.2.0"}]},
//!   "packages": {"web": {"stable": "1.2.0"}}}"#;
//! let now = Timestamp::from_second(1_800_000_000)?;
//! let accepted = accept(bytes, None, &[], None, now, true)?;
//! assert!(accepted.is_unsigned());
//! let host = Host { id: "host-1".into(), labels: Default::default() };
//! let p = plan(&accepted.document, &host, &HostState::default(), &BTreeSet::new());
//! assert!(matches!(&p.actions[..], [Action::Install { .. }]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - [`accept`] returns a document only when its signature verifies under a trusted key (or it
//!   is unsigned and unsigned documents are allowed), it is valid, its generation is above the
//!   applied one and it has not expired. Otherwise it returns a typed refusal with a stable
//!   [`FleetError::reason`].
//! - [`in_cohort`] is a pure function of the host id, labels, package, version, percent and
//!   selector; raising the percent only ever adds hosts (see [`cohort`] for the exact hash).
//! - [`plan()`] is pure and deterministic, touches only the packages the document names, and is
//!   idempotent: once its actions have run, the plan of the new state is empty.

pub mod cohort;
pub mod document;
mod error;
pub mod plan;
pub mod poll;
pub mod signature;

pub use cohort::{MACHINE_ID_PATH, bucket, host_id, in_cohort, read_machine_id};
pub use document::{
    Document, ExperimentPolicy, ExperimentSpec, HealthPolicy, MAX_DOCUMENT_BYTES, MEDIA_TYPE,
    PackageSpec, Percent, SIGNATURE_MEDIA_TYPE,
};
pub use error::{FleetError, Refusal};
pub use jiff::Timestamp;
pub use plan::{Action, Host, HostState, PackageLinks, Plan, RolledBack, Skip, plan};
pub use poll::{first_delay, poll_delay};
pub use signature::{Accepted, SigningKey, TrustedKey, accept, verify};
