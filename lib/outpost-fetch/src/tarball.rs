//! Tarballs: plain, gzip or zstd tar streams checked against a sha256 and size.

use std::io::{self, BufRead, Read};
use std::path::Path;

use crate::compress::Compression;
use crate::control::{Cancel, Limits, Progress, UnpackStats};
use crate::digest::Expected;
use crate::error::FetchError;
use crate::stream::{SourceOptions, SourceReader};
use crate::unpack::TreeWriter;

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
/// [`FetchError::UnsafeEntry`] and [`FetchError::LimitExceeded`] name the entry;
/// [`FetchError::CorruptArchive`] for a malformed tar; [`FetchError::Read`] when `reader`
/// fails; [`FetchError::Write`] for I/O in `dest`; [`FetchError::Cancelled`].
pub fn unpack_tar(
    reader: impl Read,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<UnpackStats, FetchError> {
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
/// Those of [`unpack_tar`], plus [`FetchError::SizeMismatch`] and
/// [`FetchError::DigestMismatch`] naming expected and actual values. When the archive turns
/// out to be corrupt, the rest of the stream is still read so that a wrong file is reported
/// as a digest mismatch rather than as corruption.
pub fn unpack_tarball(
    reader: impl Read,
    expect: &Expected,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<UnpackStats, FetchError> {
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
/// Those of [`unpack_tarball`]; a file that cannot be opened is a [`FetchError::Read`].
pub fn unpack_tarball_file(
    path: &Path,
    expect: &Expected,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<UnpackStats, FetchError> {
    let what = format!("tarball {}", path.display());
    let file = fs_err::File::open(path).map_err(|source| FetchError::Read {
        what: what.clone(),
        source,
    })?;
    unpack_tarball_named(file, what, expect, dest, limits, cancel, progress)
}

pub(crate) fn unpack_tarball_named(
    reader: impl Read,
    what: String,
    expect: &Expected,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<UnpackStats, FetchError> {
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
    let result = decode_into(&mut src, &mut tree, None);
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
    e: FetchError,
    expect: &Expected,
) -> FetchError {
    if !matches!(e, FetchError::CorruptArchive { .. }) {
        return e;
    }
    match src.verify(&expect.digest, expect.size) {
        Err(mismatch @ (FetchError::DigestMismatch { .. } | FetchError::SizeMismatch { .. })) => {
            mismatch
        }
        _ => e,
    }
}

/// Sniffs (unless told) the compression, unpacks the tar, then reads the rest of the
/// decompressed stream (bounded by [`MAX_TRAILING`]) so the compressor's checks run.
pub(crate) fn decode_into<R: Read>(
    src: &mut SourceReader<'_, R>,
    tree: &mut TreeWriter<'_>,
    compression: Option<Compression>,
) -> Result<(), FetchError> {
    let compression = match compression {
        Some(c) => c,
        None => match src.fill_buf() {
            Ok(head) => Compression::sniff(head),
            Err(source) => {
                let what = src.what().to_owned();
                return Err(src.explain(FetchError::Read { what, source }));
            }
        },
    };
    let mut decoder = compression
        .decoder(&mut *src)
        .map_err(|e| FetchError::CorruptArchive {
            entry: None,
            source: e,
        })?;
    tree.unpack_archive(&mut decoder)?;
    let trailing =
        io::copy(&mut (&mut decoder).take(MAX_TRAILING + 1), &mut io::sink()).map_err(|e| {
            FetchError::CorruptArchive {
                entry: None,
                source: e,
            }
        })?;
    if trailing > MAX_TRAILING {
        return Err(FetchError::CorruptArchive {
            entry: None,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_TRAILING} bytes follow the end of the archive"),
            ),
        });
    }
    Ok(())
}
