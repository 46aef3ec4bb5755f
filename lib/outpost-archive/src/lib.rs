//! The hardened unpacker: tar streams, plain, gzip or zstd, written into a directory under
//! limits, with safe paths, verified against a sha256 and a size in the same pass.
//!
//! This crate has no network code and knows nothing of OCI images or of the repository: it
//! takes a blocking [`std::io::Read`]er and an existing, empty destination directory. The
//! image rules live in `outpost-oci`, the sources in `outpost-fetch`; the fuzzers target this
//! crate directly.
//!
//! # Entry points
//! - **Tarballs** ([`unpack_tarball`], [`unpack_tarball_file`], [`unpack_tarball_named`]): a
//!   tar stream, plain, gzip or zstd, recognised by its magic bytes (not by its name),
//!   checked against a sha256 (required) and a size (optional) ([`Expected`]).
//! - **Layers** ([`LayerWriter`]): several tar streams, each with its own digest, into one
//!   directory under shared limits (the layers of an image).
//! - **Plain tar streams** ([`unpack_tar`]), without a digest.
//! - **Small blobs** ([`read_verified`]): read whole, bounded by their expected size,
//!   verified.
//!
//! Either way the archive's root is the destination directory.
//!
//! # Safe unpacking
//! Every entry of every archive goes through the same rules; a violation fails the whole
//! unpack with an error naming the entry ([`ArchiveError::UnsafeEntry`],
//! [`ArchiveError::LimitExceeded`]).
//! - Only regular files, directories and symlinks are written. Hard links, character and
//!   block devices, fifos, sparse files and any other type are refused. PAX and GNU
//!   long-name records are honoured (bounded in size); PAX global headers are skipped.
//! - Paths reach the disk only as a [`path::SafeRelPath`]: absolute paths, `..` components,
//!   NUL and other control characters, backslashes, non-UTF-8 and over-long names are
//!   refused, as are header name fields with bytes after their NUL terminator.
//! - A symlink's target must be relative, with `..` only as leading components and no more
//!   of them than the link has parent directories ([`path::symlink_target`]); resolved from
//!   the link's directory it therefore stays inside the destination, whatever other links
//!   exist.
//! - Every path is created relative to the destination's file descriptor: parents are
//!   walked with `openat(O_DIRECTORY | O_NOFOLLOW)`, so nothing is ever written through a
//!   symlink (an entry below a file or a link is refused), and files are created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing is ever overwritten: a duplicate entry, in
//!   one archive or across layers, is refused (directories may repeat across layers).
//! - Modes are normalised ([`normalized_mode`]): 0755 for a file with any execute bit, else
//!   0644; directories 0755; setuid, setgid and sticky bits are dropped. Owners and times
//!   are not restored.
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
//!   mismatch.
//! - **Streaming, bounded memory.** Sources are read in 1 MiB chunks, at most four waiting
//!   for the hashing thread, and file data is copied through one 1 MiB buffer; with the
//!   decompressor's window, unpacking a 1 GiB tarball peaks at about 13 MiB of resident
//!   memory (see `BENCHMARKS.md`).
//! - **Cancellable.** A [`Cancel`] flag is checked before every source read and between
//!   entries and file writes; a cancelled unpack fails with [`ArchiveError::Cancelled`].
//! - **Not durable by itself.** Files are not fsynced; the repository makes the staged tree
//!   durable (one `syncfs`) before renaming it into place.
//!
//! [`ArchiveError::code`] maps every failure to the API's
//! [`ErrorCode`](outpost_types::ErrorCode).
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
pub use error::{ArchiveError, LimitKind, SizeSeen, UnsafeReason};
pub use tarball::{
    LayerWriter, read_verified, unpack_tar, unpack_tarball, unpack_tarball_file,
    unpack_tarball_named,
};
pub use unpack::normalized_mode;
