//! OCI registries: pulling a package image (`oci://host[:port]/repo:tag` or
//! `oci://host/repo@sha256:...`) and pushing an image layout, through `oci-client`.
//!
//! # Pulling
//! The reference is resolved to an image index (or a manifest, when the reference names one
//! directly), the index is walked with [`oci::select_manifest`](crate::oci::select_manifest)
//! (the first manifest for the host platform wins), the manifest's annotations must name the
//! package and version asked for ([`ImageMeta`]), and the payload layers are then streamed,
//! in order, straight into the unpacker: each response body goes chunk by chunk through a
//! bounded channel to a blocking thread, so no layer is ever written to a temporary file or
//! held whole in memory.
//!
//! Every document is verified: the top document against the reference's digest when it has
//! one, nested indexes and the manifest against their descriptors, the config blob against
//! the manifest's config descriptor (fetched before any layer), and every layer against its
//! descriptor while it streams (the unpacker hashes the whole blob once, across resumptions)
//! and its decompressed stream against the config's `rootfs.diff_ids`
//! ([`layer_diff_ids`](crate::oci::layer_diff_ids)). A corrupted or mismatched config fails
//! with `integrity`.
//!
//! # Network behaviour
//! - Plain HTTP is used only for hosts listed in `registry.insecure_hosts` (loopback is not
//!   special); every other host is spoken to over TLS. A TLS failure with a host that is not
//!   listed says how to list it.
//! - Credentials: `registry.auths."host"` (username and password file) when present, else
//!   the default `registry.username` / `registry.password_file`, else anonymous. The
//!   password file is read at each operation, one trailing newline stripped. Basic and
//!   bearer-token authentication are both handled (`oci-client` follows the registry's
//!   `WWW-Authenticate` challenge). Passwords never appear in logs or error messages.
//! - `registry.mirror` replaces the host of every pulled reference (credentials and the
//!   insecure list then apply to the mirror). Pushes go to the host named.
//! - Transient failures (connection refused or reset, timeouts, HTTP 5xx and 429) are
//!   retried with exponential backoff ([`RetryPolicy`]); an interrupted layer resumes with a
//!   range request from the byte it stopped at, or, when the registry ignores the range,
//!   from the start with the bytes already unpacked skipped. Permanent failures (401, 403,
//!   404, a digest mismatch, no image for the platform) fail at once.
//! - A blob body (layer or config) that runs past its descriptor's size without having
//!   announced another length (an endless or oversized body) is cut off at once: size
//!   exceeded, `download_failed`, not retried. A body that delivers less than
//!   [`STALL_MIN_BYTES`](crate::transfer::STALL_MIN_BYTES) per `registry.stall_timeout` of
//!   waiting stalls: it is resumed, a stalled attempt never counts as progress, and the
//!   download fails with `download_failed` once the retries are spent.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use outpost_types::config::RegistryConfig;
use outpost_types::source::OciReference;
use outpost_types::{PackageName, Version};
use serde::Deserialize;
use tokio::sync::mpsc;

use outpost_archive::{ArchiveError, Cancel, Digest, Limits, NoProgress, Progress, UnpackStats};

use crate::error::{OciError, RemoteProblem};
use crate::oci::{
    Descriptor, ImageIndex, ImageManifest, ImageMeta, LayerUnpacker, MAX_JSON_BYTES, media_type,
    parse_json, read_verified, select_manifest,
};
use crate::transfer::{
    BlobSpec, Body, BoxFut, ChunkReader, DownloadProgress, Failure, Msg, QUEUE, RetryPolicy, Stop,
    finish, short, stream_resumable, transport_problem, with_retries,
};

mod artifact;
mod classify;
mod extension;
mod pull;
mod push;
mod session;
mod settings;
#[cfg(test)]
mod tests;

use classify::*;
use session::*;

pub use artifact::{
    Artifact, ArtifactBlob, ArtifactPoll, ArtifactSource, EMPTY_CONFIG_MEDIA_TYPE, PushedArtifact,
    push_artifact,
};
pub use pull::RegistryImage;
pub use push::{PushedImage, push_layout};
pub use settings::{Login, RegistrySettings};
