//! OCI images: the documents and their rules, on-disk image layouts, packing a directory into
//! a layout, and registry sessions that pull and push them.
//!
//! The rules of an image are in [`oci`], independent of where blobs come from
//! ([`oci::select_manifest`], [`oci::ImageMeta`], [`oci::read_verified`],
//! [`oci::LayerUnpacker`]); [`layout`] reads them from a directory, [`registry`] from a
//! registry, and [`pack::pack`] writes them. Unpacking is `outpost-archive`'s: a layer reaches
//! the disk only through its [`LayerWriter`](outpost_archive::LayerWriter).
//!
//! # Images
//! - The index is walked in order, one level of nested index deep, and the first manifest
//!   whose platform is absent or the host's is used (else `no matching image found in the
//!   index`).
//! - The package name and version come from the manifest annotations
//!   `com.datadoghq.package.{name,version}` or `dev.outpost.package.{name,version}` and must
//!   be the ones asked for; `...package.size` is optional.
//! - Layers of media type `application/vnd.datadog.package.layer.v1.tar+zstd` and
//!   `application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]` are unpacked in order into the
//!   same directory; other layers are ignored.
//!
//! # Guarantees
//! - **Every blob is verified against its descriptor** (nested index, manifest, layers, and
//!   the top document against the reference's digest when it has one); blob paths in a layout
//!   are built from validated digests only.
//! - **Streaming.** Layers stream from the registry into the unpacker, a bounded number of
//!   chunks at a time; no layer is written to a temporary file or held whole in memory.
//! - **One retry rule** ([`transfer`]): HTTP 5xx, 408 and 429 and network failures are
//!   retried with exponential backoff ([`RetryPolicy`]); 401, 403, 404, a TLS failure with a
//!   host that is not listed as insecure, and a digest mismatch fail at once. An interrupted
//!   layer resumes from the byte it stopped at. `outpost-fetch`'s HTTP tarballs use the same
//!   rule.
//! - **Credentials never leak**: passwords are read from their file at each operation and
//!   never appear in logs or error messages.
//! - **Deterministic packing**: the same directory, name and version give the same digests.
//!
//! [`OciError::code`] maps every failure to the API's [`ErrorCode`](outpost_types::ErrorCode).
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod error;
pub mod extension;
pub mod layout;
pub mod oci;
pub mod pack;
pub mod registry;
mod tls;
pub mod transfer;

pub use error::{OciError, RemoteProblem};
pub use registry::{
    Artifact, ArtifactPoll, ArtifactSource, Login, PushedArtifact, PushedImage, RegistryImage,
    RegistrySettings, push_artifact, push_layout,
};
pub use transfer::RetryPolicy;
