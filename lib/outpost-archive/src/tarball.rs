//! Tarballs: plain, gzip or zstd tar streams checked against a sha256 and size.

use std::io::{self, BufRead, Read};
use std::path::Path;

use crate::compress::Compression;
use crate::control::{Cancel, Limits, Progress, UnpackStats};
use crate::digest::{Digest, Expected};
use crate::error::ArchiveError;
use crate::stream::{SourceOptions, SourceReader};
use crate::unpack::TreeWriter;
use sha2::{Digest as _, Sha256};

/// Decompressed bytes accepted after a tar's end-of-archive marker (its padding to the
/// record size, usually under 10 KiB); the rest of a compressed stream must be read to check
/// the compressor's own checksum and the digest.
pub(crate) const MAX_TRAILING: u64 = 16 << 20;

/// Unpacks a plain tar stream into `dest`, an existing empty directory.
///
/// Every rule of safe unpacking applies (see the crate documentation). Reading stops at the
/// end-of-archive marker; nothing is hashed. On error, `dest` holds a partial tree that the
/// caller must discard; nothing is ever written outside `dest`.
///
/// # Errors
/// [`ArchiveError::UnsafeEntry`] and [`ArchiveError::LimitExceeded`] name the entry;
/// [`ArchiveError::CorruptArchive`] for a malformed tar; [`ArchiveError::Read`] when `reader`
/// fails; [`ArchiveError::Write`] for I/O in `dest`; [`ArchiveError::Cancelled`].
pub fn unpack_tar(
    reader: impl Read,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<UnpackStats, ArchiveError> {
    let mut tree = TreeWriter::create(dest, limits, cancel)?;
    let mut src = SourceReader::new(
        reader,
        SourceOptions {
            what: "tar stream".into(),
            hash: false,
            max: None,
            cancel,
            progress: None,
            progress_base: 0,
            progress_total: None,
        },
    );
    let result = tree.unpack_archive(&mut src);
    result.map_err(|e| src.explain(e))?;
    let mut stats = tree.stats();
    stats.source_bytes = src.count();
    Ok(stats)
}

/// Unpacks a tarball (a plain, gzip or zstd tar stream, recognised by its first bytes) into
/// `dest`, an existing empty directory, checking the raw stream's sha256 and size.
///
/// The stream is read once: hashing (on its own thread for large streams), decompression
/// and writing share the pass, and the stream is read to its end so that every byte is
/// covered by the digest. A stream longer than `expect.size` is refused as soon as it runs
/// past it. The digest can only be known at the end, so on any error `dest` holds a partial
/// tree that the caller must discard (an install stages it in a directory that is removed
/// on failure).
///
/// # Errors
/// Those of [`unpack_tar`], plus [`ArchiveError::SizeMismatch`] and
/// [`ArchiveError::DigestMismatch`] naming expected and actual values. When the archive turns
/// out to be corrupt, the rest of the stream is still read so that a wrong file is reported
/// as a digest mismatch rather than as corruption.
pub fn unpack_tarball(
    reader: impl Read,
    expect: &Expected,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<UnpackStats, ArchiveError> {
    unpack_tarball_named(
        reader,
        "tarball".into(),
        expect,
        dest,
        limits,
        cancel,
        progress,
    )
}

/// [`unpack_tarball`] of the file at `path`.
///
/// # Errors
/// Those of [`unpack_tarball`]; a file that cannot be opened is a [`ArchiveError::Read`].
pub fn unpack_tarball_file(
    path: &Path,
    expect: &Expected,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<UnpackStats, ArchiveError> {
    let what = format!("tarball {}", path.display());
    let file = fs_err::File::open(path).map_err(|source| ArchiveError::Read {
        what: what.clone(),
        source,
    })?;
    unpack_tarball_named(file, what, expect, dest, limits, cancel, progress)
}

/// [`unpack_tarball`] of a source named `what` in errors (`https://host/pkg.tar.gz`).
///
/// # Errors
/// Those of [`unpack_tarball`].
pub fn unpack_tarball_named(
    reader: impl Read,
    what: String,
    expect: &Expected,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<UnpackStats, ArchiveError> {
    let mut tree = TreeWriter::create(dest, limits, cancel)?;
    let mut src = SourceReader::new(
        reader,
        SourceOptions {
            what,
            hash: true,
            max: expect.size,
            cancel,
            progress: Some(progress),
            progress_base: 0,
            progress_total: expect.size,
        },
    );
    let result = decode_into(&mut src, &mut tree, None, None);
    if let Err(e) = result {
        let e = src.explain(e);
        return Err(prefer_integrity(&mut src, e, expect));
    }
    let count = src.verify(&expect.digest, expect.size)?;
    let mut stats = tree.stats();
    stats.source_bytes = count;
    Ok(stats)
}

/// For a corrupt archive, reads the rest of the source and reports a size or digest
/// mismatch instead when there is one: "this is not the file you asked for" says more than
/// "this file is broken".
pub(crate) fn prefer_integrity<R: Read>(
    src: &mut SourceReader<'_, R>,
    e: ArchiveError,
    expect: &Expected,
) -> ArchiveError {
    if !matches!(e, ArchiveError::CorruptArchive { .. }) {
        return e;
    }
    match src.verify(&expect.digest, expect.size) {
        Err(
            mismatch @ (ArchiveError::DigestMismatch { .. } | ArchiveError::SizeMismatch { .. }),
        ) => mismatch,
        _ => e,
    }
}

/// A reader that hashes what it reads, when asked to.
struct Hashing<'h, R> {
    inner: R,
    hasher: Option<&'h mut Sha256>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Sniffs (unless told) the compression, unpacks the tar, then reads the rest of the
/// decompressed stream (bounded by [`MAX_TRAILING`]) so the compressor's checks run. When
/// `diff` is given, the whole decompressed stream is hashed into it (an image layer's
/// `diff_id`).
pub(crate) fn decode_into<R: Read>(
    src: &mut SourceReader<'_, R>,
    tree: &mut TreeWriter<'_>,
    compression: Option<Compression>,
    diff: Option<&mut Sha256>,
) -> Result<(), ArchiveError> {
    let compression = match compression {
        Some(c) => c,
        None => match src.fill_buf() {
            Ok(head) => Compression::sniff(head),
            Err(source) => {
                let what = src.what().to_owned();
                return Err(src.explain(ArchiveError::Read { what, source }));
            }
        },
    };
    let mut decoder = Hashing {
        inner: compression
            .decoder(&mut *src)
            .map_err(|e| ArchiveError::CorruptArchive {
                entry: None,
                source: e,
            })?,
        hasher: diff,
    };
    tree.unpack_archive(&mut decoder)?;
    let trailing =
        io::copy(&mut (&mut decoder).take(MAX_TRAILING + 1), &mut io::sink()).map_err(|e| {
            ArchiveError::CorruptArchive {
                entry: None,
                source: e,
            }
        })?;
    if trailing > MAX_TRAILING {
        return Err(ArchiveError::CorruptArchive {
            entry: None,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_TRAILING} bytes follow the end of the archive"),
            ),
        });
    }
    Ok(())
}

/// Writes several tar streams (the layers of one image), in order, into one directory.
///
/// Each stream is unpacked under the rules of safe unpacking, sharing the [`Limits`] (they
/// bound the whole tree, not each stream); a directory may appear in several streams, any
/// other path in only one. Each stream is hashed while it is read and read to its end; a
/// digest or size mismatch fails it. On any error the directory holds a partial tree that the
/// caller must discard.
#[derive(Debug)]
pub struct LayerWriter<'a> {
    tree: TreeWriter<'a>,
    cancel: &'a Cancel,
    source_bytes: u64,
}

impl<'a> LayerWriter<'a> {
    /// Starts writing into `dest`, which must be an existing, empty directory.
    ///
    /// # Errors
    /// [`ArchiveError::DestinationNotEmpty`], or an I/O error opening `dest`.
    pub fn new(dest: &Path, limits: &Limits, cancel: &'a Cancel) -> Result<Self, ArchiveError> {
        Ok(Self {
            tree: TreeWriter::create(dest, limits, cancel)?,
            cancel,
            source_bytes: 0,
        })
    }

    /// Unpacks one tar stream read from `reader`, compressed as `compression`, named `what`
    /// in errors, checked against `expect`. Progress is reported as bytes of all streams so
    /// far out of `progress_total`.
    ///
    /// # Errors
    /// Every error of [`unpack_tarball`].
    pub fn unpack(
        &mut self,
        reader: impl Read,
        what: String,
        compression: Compression,
        expect: &Expected,
        progress: &dyn Progress,
        progress_total: Option<u64>,
    ) -> Result<u64, ArchiveError> {
        self.unpack_layer(
            reader,
            what,
            compression,
            expect,
            None,
            progress,
            progress_total,
        )
    }

    /// [`LayerWriter::unpack`], also checking the sha256 of the whole decompressed stream
    /// against `diff_id` when one is given (an image layer's entry in the config's
    /// `rootfs.diff_ids`). The compressed stream's digest and size are checked first: a
    /// blob that is not what its descriptor says is reported as such.
    ///
    /// # Errors
    /// Every error of [`unpack_tarball`]; [`ArchiveError::DigestMismatch`] naming the
    /// uncompressed content when it does not hash to `diff_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn unpack_layer(
        &mut self,
        reader: impl Read,
        what: String,
        compression: Compression,
        expect: &Expected,
        diff_id: Option<&Digest>,
        progress: &dyn Progress,
        progress_total: Option<u64>,
    ) -> Result<u64, ArchiveError> {
        let mut diff = diff_id.map(|_| Sha256::new());
        let mut src = SourceReader::new(
            reader,
            SourceOptions {
                what,
                hash: true,
                max: expect.size,
                cancel: self.cancel,
                progress: Some(progress),
                progress_base: self.source_bytes,
                progress_total,
            },
        );
        let result = decode_into(&mut src, &mut self.tree, Some(compression), diff.as_mut());
        if let Err(e) = result {
            let e = src.explain(e);
            return Err(prefer_integrity(&mut src, e, expect));
        }
        let read = src.verify(&expect.digest, expect.size)?;
        if let (Some(expected), Some(h)) = (diff_id, diff) {
            let actual = Digest::from_hasher(h);
            if &actual != expected {
                return Err(ArchiveError::DigestMismatch {
                    what: format!(
                        "the uncompressed content of {} (its rootfs.diff_ids entry in the image \
                         config)",
                        src.what()
                    ),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        self.source_bytes += read;
        Ok(read)
    }

    /// What was written so far.
    pub fn stats(&self) -> UnpackStats {
        let mut stats = self.tree.stats();
        stats.source_bytes = self.source_bytes;
        stats
    }
}

/// Reads a small blob (a manifest, an index) whole from `reader`, named `what` in errors,
/// verifying that it is exactly `size` bytes with the digest `digest`. Reading stops as soon as
/// the blob runs past `size`, so the caller bounds the memory by bounding `size`.
///
/// # Errors
/// [`ArchiveError::SizeMismatch`], [`ArchiveError::DigestMismatch`], [`ArchiveError::Read`],
/// [`ArchiveError::Cancelled`].
pub fn read_verified(
    reader: impl Read,
    what: String,
    digest: &Digest,
    size: u64,
    cancel: &Cancel,
) -> Result<Vec<u8>, ArchiveError> {
    let mut src = SourceReader::new(
        reader,
        SourceOptions {
            what,
            hash: true,
            max: Some(size),
            cancel,
            progress: None,
            progress_base: 0,
            progress_total: None,
        },
    );
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    if let Err(e) = src.read_to_end(&mut data) {
        let err = ArchiveError::Read {
            what: src.what().to_owned(),
            source: e,
        };
        return Err(src.explain(err));
    }
    src.verify(digest, Some(size))?;
    Ok(data)
}
