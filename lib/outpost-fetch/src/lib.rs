//! Package sources to a staging directory: one entry point for every catalog URL, digests
//! checked as the payload streams, HTTP(S) tarballs.
//!
//! outpost installs a package by unpacking it into an empty staging directory and handing
//! that directory to the repository. This crate dispatches a catalog entry to its source and
//! takes a plain destination directory; it knows nothing of the repository. It sits on two
//! crates whose public items it re-exports for its callers:
//! - `outpost-archive`, the hardened unpacker (tar, gzip, zstd, limits, safe paths, digests;
//!   no network code). Its rules are this crate's: see its documentation.
//! - `outpost-oci`, OCI images: documents, layouts, packing ([`pack`]), registry sessions
//!   with one retry rule ([`registry`], [`push_layout`]).
//!
//! # Sources
//! One async entry point serves every catalog URL: [`prepare`] resolves the source without
//! downloading its payload (so the caller can check disk space against
//! [`Prepared::required_bytes`]), then [`Prepared::fetch`] downloads and unpacks it
//! ([`fetch`] does both). Network sources stream straight into the unpacker, a bounded
//! number of chunks at a time, with retries and resumption:
//! - `oci://host[:port]/repo:tag` or `@sha256:...`: an OCI registry ([`registry`]), with
//!   the `registry:` settings of the configuration ([`RegistrySettings`]: insecure hosts,
//!   mirror, basic or bearer-token credentials).
//! - `http(s)://` tarballs ([`http`]), retried by the registries' rule (one rule decides what
//!   is retryable, and a TLS failure is reported alike for both), `file://` tarballs and OCI
//!   layouts.
//!
//! # Guarantees
//! - **Nothing is written outside the destination**, which must be an existing, empty
//!   directory. On any error the destination holds a partial tree that the caller discards.
//! - **Every byte is verified in the same pass** against the catalog's sha256 and size or the
//!   image's descriptors; a tarball without a sha256 is refused ([`FetchError::MissingSha256`]).
//! - **Bounded downloads**: a network body past its expected size is cut off at once, and a
//!   transfer that stalls (less than 16 KiB per `registry.stall_timeout` of waiting) fails
//!   after its retries; both with `download_failed`.
//! - **Images verified end to end**: the config blob against the manifest, each layer's
//!   decompressed stream against the config's `rootfs.diff_ids`, from a registry and from a
//!   layout on disk alike (`integrity` otherwise).
//! - **Cancellable** through [`FetchContext::cancel`].
//!
//! [`FetchError::code`] maps every failure to the API's
//! [`ErrorCode`](outpost_types::ErrorCode).
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod error;
mod extensions;
pub mod http;
pub mod source;

pub use error::FetchError;
pub use outpost_archive::{
    ArchiveError, Cancel, Compression, Digest, Expected, LimitKind, Limits, NoProgress, Progress,
    SizeSeen, UnpackStats, UnsafeReason, path, unpack_tar, unpack_tarball, unpack_tarball_file,
};
pub use outpost_oci::{
    Login, OciError, PushedImage, RegistryImage, RegistrySettings, RemoteProblem, RetryPolicy,
    extension, layout, oci, pack, push_layout, registry,
};
pub use source::{FetchContext, FetchedMeta, Prepared, fetch, prepare, required_space};
