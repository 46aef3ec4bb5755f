//! Fleet rollouts: the pure core.
//!
//! Every daemon of a fleet polls one signed **desired-state document** and converges to it on
//! its own; a staged rollout is a sequence of documents. This crate holds the document
//! ([`Document`]) and its validation, and its signature and acceptance ([`accept`]).

pub mod document;
mod error;
pub mod signature;

pub use document::{
    Document, ExperimentPolicy, ExperimentSpec, HealthPolicy, MAX_DOCUMENT_BYTES, MEDIA_TYPE,
    PackageSpec, Percent, SIGNATURE_MEDIA_TYPE,
};
pub use error::{FleetError, Refusal};
pub use jiff::Timestamp;
pub use signature::{Accepted, SigningKey, TrustedKey, accept, verify};
