//! Fleet rollouts: the pure core.
//!
//! Every daemon of a fleet polls one signed **desired-state document** and converges to it on
//! its own; a staged rollout is a sequence of documents. This crate holds the document
//! ([`Document`]) and its validation.

pub mod document;
mod error;

pub use document::{
    Document, ExperimentPolicy, ExperimentSpec, HealthPolicy, MAX_DOCUMENT_BYTES, MEDIA_TYPE,
    PackageSpec, Percent, SIGNATURE_MEDIA_TYPE,
};
pub use error::{FleetError, Refusal};
pub use jiff::Timestamp;
