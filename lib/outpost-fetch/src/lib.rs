//! Package sources (OCI registries and layouts, tarballs), digest checks, safe unpacking, and packing.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod compress;
mod control;
mod digest;
mod error;
pub mod path;
mod stream;
mod tarball;
mod unpack;

pub use compress::Compression;
pub use control::{Cancel, Limits, NoProgress, Progress, UnpackStats};
pub use digest::{Digest, Expected};
pub use error::{FetchError, LimitKind, SizeSeen, UnsafeReason};
pub use tarball::{unpack_tar, unpack_tarball, unpack_tarball_file};
pub mod layout;
pub mod oci;
pub mod pack;
