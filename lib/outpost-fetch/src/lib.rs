//! Package sources, digest checks, safe unpacking, and packing.
//!
//! outpost installs a package by unpacking it into an empty staging directory and handing
//! that directory to the repository. This crate does the unpacking, for every format a
//! package comes in, and builds packages with [`pack::pack`]. It takes a plain destination
//! directory and knows nothing of the repository.
//!
//! # Sources
//! One async entry point serves every catalog URL: [`prepare`] resolves the source without
//! downloading its payload (so the caller can check disk space against
//! [`Prepared::required_bytes`]), then [`Prepared::fetch`] downloads and unpacks it
//! ([`fetch`] does both). Network sources stream straight into the unpacker, a bounded
//! number of chunks at a time, with retries and resumption ([`registry`], [`http`]):
//! - `oci://host[:port]/repo:tag` or `@sha256:...`: an OCI registry ([`registry`]), with
//!   the `registry:` settings of the configuration ([`RegistrySettings`]: insecure hosts,
//!   mirror, basic or bearer-token credentials). [`push_layout`] pushes a layout.
//! - `http(s)://` tarballs ([`http`]), `file://` tarballs and OCI layouts.
//!
//! The `testkit` feature adds real servers for tests and benchmarks (`docker-registry` on
//! loopback, a fault-injecting proxy, a file server, a token server).
//!
//! # Formats
//! - **Tarballs** ([`unpack_tarball`], [`unpack_tarball_file`]): a tar stream, plain, gzip
//!   or zstd, recognised by its magic bytes (not by its name), checked against a sha256
//!   (required) and a size (optional) as given by a catalog entry.
//! - **OCI image layouts** ([`layout`]): a directory holding `oci-layout` and `index.json`.
//!   The index is walked in order, one level of nested index deep, and the first manifest
//!   whose platform is absent or the host's is used (else `no matching image found in the
//!   index`). The package name and version come from the manifest annotations
//!   `com.datadoghq.package.{name,version}` or `dev.outpost.package.{name,version}` and must
//!   be the ones asked for; `...package.size` is optional. Layers of media type
//!   `application/vnd.datadog.package.layer.v1.tar+zstd` and
//!   `application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]` are unpacked in order into the
//!   same directory; other layers are ignored. The rules are in [`oci`], independent of where
//!   blobs come from, for the registry layer to reuse ([`oci::select_manifest`],
//!   [`oci::ImageMeta`], [`oci::read_verified`], [`oci::LayerUnpacker`]).
//! - **Plain tar streams** ([`unpack_tar`]), without a digest.
//! - **Packing** ([`pack::pack`]): a deterministic OCI image layout from a directory.
//!
//! Either way the archive's root is the package's version directory.
//!
//! # Safe unpacking
//! Every entry of every archive goes through the same rules; a violation fails the whole
//! unpack with an error naming the entry ([`FetchError::UnsafeEntry`], [`FetchError::LimitExceeded`]).
//! - Only regular files, directories and symlinks are written. Hard links, character and
//!   block devices, fifos, sparse files and any other type are refused. PAX and GNU
//!   long-name records are honoured (bounded in size); PAX global headers are skipped.
//! - Paths reach the disk only as a [`path::SafeRelPath`]: absolute paths, `..` components,
//!   NUL and other control characters, backslashes, non-UTF-8 and over-long names are
//!   refused, as are header name fields with bytes after their NUL terminator.
//! - A symlink's target must be relative, with `..` only as leading components and no more
//!   of them than the link has parent directories ([`path::symlink_target`]); resolved from
//!   the link's directory it therefore stays inside the version directory, whatever other
//!   links exist.
//! - Every path is created relative to the destination's file descriptor: parents are
//!   walked with `openat(O_DIRECTORY | O_NOFOLLOW)`, so nothing is ever written through a
//!   symlink (an entry below a file or a link is refused), and files are created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing is ever overwritten: a duplicate entry, in
//!   one archive or across layers, is refused (directories may repeat across layers).
//! - Modes are normalised: 0755 for a file with any execute bit, else 0644; directories
//!   0755; setuid, setgid and sticky bits are dropped. Owners and times are not restored.
//! - [`Limits`] bound the total size of the files, the size of any one file (checked from
//!   the header before writing and again on the bytes written), and the number of entries.
//!   Extension records count against the total, and at most 16 MiB may follow the end of
//!   the archive, so no input makes the unpacker decompress without bound.
//!
//! # Guarantees
//! - **Nothing is written outside the destination**, which must be an existing, empty
//!   directory. On any error the destination holds a partial tree: the caller discards it
//!   (a repository staging directory does so when dropped) and nothing is installed.
//! - **Every byte is verified in the same pass.** The raw stream is hashed while it is
//!   decompressed and written (on a separate thread for large streams), read to its very
//!   end, and its digest and size compared; a stream longer than its expected size is cut
//!   off at once. Since the digest is known only at the end, a mismatch is reported after
//!   the tree was written, which is why the caller must discard it. An archive that turns
//!   out corrupt is still read to the end, so that a wrong file is reported as a digest
//!   mismatch. Every blob of a layout (nested index, manifest, layers) is checked against
//!   its descriptor; blob paths are built from validated digests only.
//! - **Streaming, bounded memory.** Sources are read in 1 MiB chunks, at most four waiting
//!   for the hashing thread, and file data is copied through one 1 MiB buffer; with the
//!   decompressor's window, unpacking a 1 GiB tarball peaks at about 13 MiB of resident
//!   memory (see `BENCHMARKS.md`).
//! - **Cancellable.** A [`Cancel`] flag is checked before every source read and between
//!   entries and file writes; a cancelled unpack fails with [`FetchError::Cancelled`].
//! - **Not durable by itself.** Files are not fsynced; the repository makes the staged tree
//!   durable (one `syncfs`) before renaming it into place.
//!
//! Readers are blocking [`std::io::Read`]ers; an async source is bridged into one and the
//! unpack run on a blocking thread. [`FetchError::code`] maps every failure to the API's
//! [`ErrorCode`](outpost_types::ErrorCode).
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod compress;
mod control;
mod digest;
mod error;
pub mod http;
pub mod layout;
pub mod oci;
pub mod pack;
pub mod path;
pub mod registry;
mod remote;
pub mod source;
mod stream;
mod tarball;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tls;
mod unpack;

pub use compress::Compression;
pub use control::{Cancel, Limits, NoProgress, Progress, UnpackStats};
pub use digest::{Digest, Expected};
pub use error::{FetchError, LimitKind, RemoteProblem, SizeSeen, UnsafeReason};
pub use registry::{Login, PushedImage, RegistryImage, RegistrySettings, push_layout};
pub use remote::RetryPolicy;
pub use source::{FetchContext, FetchedMeta, Prepared, fetch, prepare, required_space};
pub use tarball::{unpack_tar, unpack_tarball, unpack_tarball_file};
