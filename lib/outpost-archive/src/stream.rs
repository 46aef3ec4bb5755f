//! The source side of every unpack: a buffered reader that counts, bounds, hashes and reports
//! the raw stream in the same pass that feeds the decompressor.
//!
//! Bytes are read in large chunks. Each chunk is handed by reference count to a hashing thread
//! (for large sources) while the caller's thread decompresses and writes it, so the digest
//! costs no extra pass over the data and, on two cores, little wall time.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use outpost_types::wire::Phase;
use sha2::{Digest as _, Sha256};

use crate::control::{Cancel, Progress};
use crate::digest::Digest;
use crate::error::{ArchiveError, SizeSeen};

/// Bytes read from the source at a time.
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks that may wait for the hashing thread before the reader blocks.
const HASH_QUEUE: usize = 4;
/// Sources at least this large (or of unknown size) are hashed on their own thread.
const THREAD_HASH_MIN: u64 = 4 << 20;
/// Progress is reported after at least this many new bytes.
const REPORT_EVERY: u64 = 1 << 20;

/// Why the source stopped delivering bytes; kept so the final error names the real cause
/// rather than what the decompressor or tar reader made of the failed read.
#[derive(Debug)]
enum Failure {
    Cancelled,
    TooLong,
    Read(io::Error),
}

enum Hasher {
    None,
    Inline(Box<Sha256>),
    Threaded(HashThread),
    Broken,
}

/// The sending end of the hashing thread; dropping it ends and joins the thread.
struct HashThread {
    tx: Option<SyncSender<Bytes>>,
    handle: Option<JoinHandle<Sha256>>,
}

impl HashThread {
    fn finish(&mut self) -> Option<Sha256> {
        drop(self.tx.take());
        self.handle.take()?.join().ok()
    }
}

impl Drop for HashThread {
    fn drop(&mut self) {
        // The thread only hashes what is already queued, then ends; a panic there has no
        // effect left to report on a stream that is being abandoned.
        let _ = self.finish();
    }
}

impl Hasher {
    fn new(hash: bool, size_hint: Option<u64>) -> Self {
        if !hash {
            return Self::None;
        }
        if size_hint.is_some_and(|s| s < THREAD_HASH_MIN) {
            return Self::Inline(Box::default());
        }
        let (tx, rx): (SyncSender<Bytes>, Receiver<Bytes>) = sync_channel(HASH_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("outpost-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                h
            });
        match spawned {
            Ok(handle) => Self::Threaded(HashThread {
                tx: Some(tx),
                handle: Some(handle),
            }),
            Err(e) => {
                tracing::debug!(error = %e, "no hashing thread; hashing inline");
                Self::Inline(Box::default())
            }
        }
    }

    fn update(&mut self, chunk: &Bytes) {
        match self {
            Self::None | Self::Broken => {}
            Self::Inline(h) => h.update(chunk),
            Self::Threaded(t) => {
                let sent =
                    t.tx.as_ref()
                        .is_some_and(|tx| tx.send(chunk.clone()).is_ok());
                if !sent {
                    *self = Self::Broken;
                }
            }
        }
    }

    /// The digest, or `None` when hashing was off or the thread died.
    fn finish(&mut self) -> Option<Option<Digest>> {
        match std::mem::replace(self, Self::None) {
            Self::None => Some(None),
            Self::Broken => None,
            Self::Inline(h) => Some(Some(Digest::from_hasher(*h))),
            Self::Threaded(mut t) => Some(Some(Digest::from_hasher(t.finish()?))),
        }
    }
}

/// How a [`SourceReader`] checks and reports its stream.
pub(crate) struct SourceOptions<'a> {
    /// Names the source in errors: `tarball /x.tar.gz`, `blob sha256:...`.
    pub what: String,
    /// Hash the stream.
    pub hash: bool,
    /// Fail at once when the stream goes past this many bytes.
    pub max: Option<u64>,
    /// Checked before every read.
    pub cancel: &'a Cancel,
    /// Receives `Phase::Unpack` reports, offset by `progress_base`, out of `progress_total`.
    pub progress: Option<&'a dyn Progress>,
    pub progress_base: u64,
    pub progress_total: Option<u64>,
}

/// A counting, bounding, hashing, cancellable [`BufRead`] over a source.
pub(crate) struct SourceReader<'a, R> {
    inner: R,
    opts: SourceOptions<'a>,
    chunk: Bytes,
    pos: usize,
    count: u64,
    eof: bool,
    hasher: Hasher,
    failure: Option<Failure>,
    reported: u64,
}

impl<'a, R: Read> SourceReader<'a, R> {
    pub(crate) fn new(inner: R, opts: SourceOptions<'a>) -> Self {
        let hasher = Hasher::new(opts.hash, opts.max);
        Self {
            inner,
            opts,
            chunk: Bytes::new(),
            pos: 0,
            count: 0,
            eof: false,
            hasher,
            failure: None,
            reported: 0,
        }
    }

    /// Bytes read from the source so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn what(&self) -> &str {
        &self.opts.what
    }

    fn fail(&mut self, f: Failure) -> io::Error {
        let e = match &f {
            Failure::Cancelled => io::Error::new(io::ErrorKind::Interrupted, "cancelled"),
            Failure::TooLong => io::Error::new(io::ErrorKind::InvalidData, "source too long"),
            Failure::Read(e) => io::Error::new(e.kind(), "reading the source failed"),
        };
        self.failure = Some(f);
        e
    }

    /// Reads the next chunk: up to [`CHUNK`] bytes, stopping early only at the end.
    fn load(&mut self) -> io::Result<()> {
        if self.failure.is_some() {
            return Err(io::Error::other("the source already failed"));
        }
        let mut buf = BytesMut::zeroed(CHUNK);
        let mut n = 0;
        while n < CHUNK {
            if self.opts.cancel.is_cancelled() {
                return Err(self.fail(Failure::Cancelled));
            }
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(Failure::Read(e))),
            }
        }
        buf.truncate(n);
        self.count += n as u64;
        if self.opts.max.is_some_and(|max| self.count > max) {
            return Err(self.fail(Failure::TooLong));
        }
        let chunk = buf.freeze();
        self.hasher.update(&chunk);
        self.chunk = chunk;
        self.pos = 0;
        if let Some(p) = self.opts.progress
            && (self.count - self.reported >= REPORT_EVERY || self.eof)
        {
            self.reported = self.count;
            p.report(
                Phase::Unpack,
                self.opts.progress_base + self.count,
                self.opts.progress_total,
            );
        }
        Ok(())
    }

    /// Replaces an error that came out of the decoding pipeline by the source failure that
    /// caused it, if there was one.
    pub(crate) fn explain(&mut self, e: ArchiveError) -> ArchiveError {
        match self.failure.take() {
            None => e,
            Some(Failure::Cancelled) => ArchiveError::Cancelled,
            Some(Failure::TooLong) => ArchiveError::SizeMismatch {
                what: self.opts.what.clone(),
                expected: self.opts.max.unwrap_or_default(),
                actual: SizeSeen::MoreThan(self.opts.max.unwrap_or_default()),
            },
            Some(Failure::Read(source)) => ArchiveError::Read {
                what: self.opts.what.clone(),
                source,
            },
        }
    }

    /// Reads the source to its end, then returns its digest (when hashing) and length.
    pub(crate) fn finish(&mut self) -> Result<(Option<Digest>, u64), ArchiveError> {
        self.pos = self.chunk.len();
        while !self.eof {
            if let Err(e) = self.load() {
                let err = ArchiveError::Read {
                    what: self.opts.what.clone(),
                    source: e,
                };
                return Err(self.explain(err));
            }
        }
        match self.hasher.finish() {
            Some(d) => Ok((d, self.count)),
            None => Err(ArchiveError::HashThread {
                what: self.opts.what.clone(),
            }),
        }
    }

    /// Reads to the end and checks the stream against a digest and, when given, a size.
    pub(crate) fn verify(
        &mut self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<u64, ArchiveError> {
        let (actual, count) = self.finish()?;
        if let Some(expected) = size
            && expected != count
        {
            return Err(ArchiveError::SizeMismatch {
                what: self.opts.what.clone(),
                expected,
                actual: SizeSeen::Exactly(count),
            });
        }
        match actual {
            Some(actual) if actual == *digest => Ok(count),
            Some(actual) => Err(ArchiveError::DigestMismatch {
                what: self.opts.what.clone(),
                expected: digest.clone(),
                actual,
            }),
            None => Err(ArchiveError::HashThread {
                what: self.opts.what.clone(),
            }),
        }
    }
}

impl<R: Read> BufRead for SourceReader<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.chunk.len() && !self.eof {
            self.load()?;
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.chunk.len());
    }
}

impl<R: Read> Read for SourceReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}
