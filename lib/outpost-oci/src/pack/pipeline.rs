//! The layer-writing pipeline of `outpost pack`: the tar stream is cut into 1 MiB chunks that
//! threads hash (the uncompressed `diff_id`), compress and hash again while writing (the
//! layer's digest), so reading, hashing, compressing and writing overlap.

use std::io::{self, Read, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use outpost_archive::Digest;
use sha2::{Digest as _, Sha256};

use super::{GZIP_LEVEL, PackFormat, ZSTD_LEVEL};

/// Bytes handed at a time to the hashing and output threads.
const PACK_CHUNK: usize = 1 << 20;
/// Chunks that may wait for a thread before the producer blocks.
const PACK_QUEUE: usize = 4;

/// A thread that consumes 1 MiB chunks: `consume` sees each one in order; the thread's
/// result comes back from [`ChunkThread::finish`]. A chunk that cannot be sent means the
/// thread failed, and its error is returned.
pub(super) struct ChunkThread<T> {
    buf: BytesMut,
    tx: Option<SyncSender<Bytes>>,
    handle: Option<JoinHandle<io::Result<T>>>,
}

impl<T: Send + 'static> ChunkThread<T> {
    fn spawn(
        name: &str,
        mut state: impl FnMut(Option<&Bytes>) -> io::Result<Option<T>> + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Bytes>(PACK_QUEUE);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for chunk in rx {
                    state(Some(&chunk))?;
                }
                state(None)?.ok_or_else(|| io::Error::other("no result"))
            })?;
        Ok(Self {
            buf: BytesMut::with_capacity(PACK_CHUNK),
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Sends a whole chunk (bypassing the buffer, which must be empty).
    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if sent { Ok(()) } else { Err(self.failure()) }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(PACK_CHUNK));
        self.send(chunk.freeze())
    }

    /// The error the thread ended with.
    fn failure(&mut self) -> io::Error {
        drop(self.tx.take());
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("a packing thread panicked"),
            Some(Ok(Ok(_))) | None => io::Error::other("a packing thread stopped early"),
        }
    }

    pub(super) fn finish(mut self) -> io::Result<T> {
        self.send_buffered()?;
        drop(self.tx.take());
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("a packing thread panicked")),
            None => Err(io::Error::other("a packing thread stopped early")),
        }
    }
}

impl<T: Send + 'static> Write for ChunkThread<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PACK_CHUNK {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T> Drop for ChunkThread<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            // The pack failed elsewhere; this thread only ends its work.
            let _ = h.join();
        }
    }
}

/// Hashes and counts the chunks it is sent.
fn hash_thread() -> io::Result<ChunkThread<(Digest, u64)>> {
    let mut hasher = Some(Sha256::new());
    let mut count = 0u64;
    ChunkThread::spawn("outpost-pack-sha256", move |chunk| match chunk {
        Some(c) => {
            if let Some(h) = hasher.as_mut() {
                h.update(c);
            }
            count += c.len() as u64;
            Ok(None)
        }
        None => Ok(hasher.take().map(|h| (Digest::from_hasher(h), count))),
    })
}

/// Hashes the chunks it is sent and writes them to `file`.
fn output_thread(file: fs_err::File) -> io::Result<ChunkThread<(fs_err::File, Digest, u64)>> {
    let mut file = Some(file);
    let mut hasher = Some(Sha256::new());
    let mut count = 0u64;
    ChunkThread::spawn("outpost-pack-out", move |chunk| match chunk {
        Some(c) => {
            if let (Some(f), Some(h)) = (file.as_mut(), hasher.as_mut()) {
                f.write_all(c)?;
                h.update(c);
                start_writeback(f.file(), count, c.len() as u64);
                count += c.len() as u64;
            }
            Ok(None)
        }
        None => Ok(file
            .take()
            .zip(hasher.take())
            .map(|(f, h)| (f, Digest::from_hasher(h), count))),
    })
}

/// Starts writing a range of a file to the disk now, without waiting: the final `fsync`
/// then has little left to wait for, and the disk works while the rest is compressed.
/// (On Linux, `POSIX_FADV_DONTNEED` starts the writeback of the range's dirty pages; pages
/// still dirty or under writeback stay cached.) Only a hint: a failure changes nothing.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len)
        && let Err(e) = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed)
    {
        tracing::debug!(error = %e, "fadvise failed; the final fsync writes everything");
    }
}

/// The compressed layer's writer: each chunk of compressed bytes goes to the output thread.
pub(super) type Output = ChunkThread<(fs_err::File, Digest, u64)>;

/// The layer's compressor. zstd writes straight into 1 MiB chunks handed to the output
/// thread (no intermediate buffer); gzip goes through flate2's writer.
enum Compressor<T: Send + 'static = (fs_err::File, Digest, u64)> {
    Zstd {
        raw: zstd::stream::raw::Encoder<'static>,
        out: Vec<u8>,
        sink: ChunkThread<T>,
    },
    Gzip(flate2::write::GzEncoder<ChunkThread<T>>),
}

impl<T: Send + 'static> Compressor<T> {
    fn new(format: PackFormat, sink: ChunkThread<T>) -> io::Result<Self> {
        Ok(match format {
            PackFormat::Zstd => {
                let mut raw = zstd::stream::raw::Encoder::new(ZSTD_LEVEL)?;
                raw.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
                Self::Zstd {
                    raw,
                    out: Vec::with_capacity(PACK_CHUNK),
                    sink,
                }
            }
            PackFormat::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                sink,
                flate2::Compression::new(GZIP_LEVEL),
            )),
        })
    }

    /// Hands a full output chunk to the output thread.
    fn ship(out: &mut Vec<u8>, sink: &mut ChunkThread<T>, force: bool) -> io::Result<()> {
        if out.len() == out.capacity() || (force && !out.is_empty()) {
            let full = std::mem::replace(out, Vec::with_capacity(PACK_CHUNK));
            sink.send(Bytes::from(full))?;
        }
        Ok(())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation as _, OutBuffer};
        match self {
            Self::Zstd { raw, out, sink } => {
                let mut input = InBuffer::around(data);
                while input.pos() < data.len() {
                    let at = out.len();
                    raw.run(&mut input, &mut OutBuffer::around_pos(out, at))?;
                    Self::ship(out, sink, false)?;
                }
                Ok(())
            }
            Self::Gzip(e) => e.write_all(data),
        }
    }

    /// Ends the stream; returns the output thread.
    fn finish(self) -> io::Result<ChunkThread<T>> {
        use zstd::stream::raw::{Operation as _, OutBuffer};
        match self {
            Self::Zstd {
                mut raw,
                mut out,
                mut sink,
            } => loop {
                let at = out.len();
                let left = raw.finish(&mut OutBuffer::around_pos(&mut out, at), true)?;
                Self::ship(&mut out, &mut sink, left == 0)?;
                if left == 0 {
                    return Ok(sink);
                }
            },
            Self::Gzip(e) => e.finish(),
        }
    }
}

/// Compresses the chunks it is sent (on its own thread), handing the compressed bytes to
/// the output thread; returns the output thread at the end.
fn compress_thread(compressor: Compressor) -> io::Result<ChunkThread<Output>> {
    let mut compressor = Some(compressor);
    ChunkThread::spawn("outpost-pack-zstd", move |chunk| match chunk {
        Some(c) => {
            if let Some(z) = compressor.as_mut() {
                z.write_all(c)?;
            }
            Ok(None)
        }
        None => compressor.take().map(Compressor::finish).transpose(),
    })
}

/// Where the tar stream goes. Bytes gather in a 1 MiB chunk; a full chunk is handed to the
/// hashing thread (for the uncompressed digest, the config's `diff_id`) and to the
/// compressing thread, whose output thread hashes and writes the compressed layer. Reading
/// the files, hashing, compressing and writing thus overlap, and no byte is copied between
/// the file read and the compressor.
pub(super) struct TarSink {
    buf: BytesMut,
    compress: ChunkThread<Output>,
    diff: ChunkThread<(Digest, u64)>,
}

impl TarSink {
    /// A sink writing the `format`-compressed layer to `file`, with its hashing, compressing
    /// and output threads started.
    pub(super) fn new(format: PackFormat, file: fs_err::File) -> io::Result<Self> {
        Ok(Self {
            buf: BytesMut::with_capacity(PACK_CHUNK),
            compress: compress_thread(Compressor::new(format, output_thread(file)?)?)?,
            diff: hash_thread()?,
        })
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(PACK_CHUNK)).freeze();
        self.diff.send(chunk.clone())?;
        self.compress.send(chunk)
    }

    /// Appends exactly `size` bytes of `file` (read in large blocks straight into the
    /// chunk), then the zero padding that ends a tar entry's data.
    pub(super) fn copy_file(&mut self, file: &mut impl Read, size: u64) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            if self.buf.len() >= PACK_CHUNK {
                self.emit()?;
            }
            let start = self.buf.len();
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(PACK_CHUNK - start);
            self.buf.resize(start + want, 0);
            let n = loop {
                match file.read(&mut self.buf[start..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let n = match n {
                Ok(0) => {
                    self.buf.truncate(start);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file got shorter while it was being packed",
                    ));
                }
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            };
            self.buf.truncate(start + n);
            left -= n as u64;
        }
        let pad = (512 - size % 512) % 512;
        self.write_all(&[0u8; 512][..pad as usize])
    }

    pub(super) fn finish(mut self) -> io::Result<(Output, Digest)> {
        self.emit()?;
        let (diff_id, _tar_len) = self.diff.finish()?;
        Ok((self.compress.finish()?, diff_id))
    }
}

impl Write for TarSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PACK_CHUNK {
            self.emit()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data that compresses (so zstd does real work) and spans several jobs.
    fn data(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word: &[u8] = [b"layer ", b"index ", b"digest", b"stable"][(x & 3) as usize];
            out.extend_from_slice(word);
            out.push(if x & 0x30 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out
    }

    /// Compresses `input` through [`Compressor`], fed in pieces of the given sizes.
    fn compress(input: &[u8], pieces: &[usize]) -> Vec<u8> {
        let collected = ChunkThread::spawn("test", {
            let mut all = Some(Vec::new());
            move |chunk| match chunk {
                Some(c) => {
                    if let Some(a) = all.as_mut() {
                        a.extend_from_slice(c);
                    }
                    Ok(None)
                }
                None => Ok(all.take()),
            }
        })
        .unwrap();
        let mut c = Compressor::new(PackFormat::Zstd, collected).unwrap();
        let mut rest = input;
        for size in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*size).min(rest.len());
            c.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        c.finish().unwrap().finish().unwrap()
    }

    #[test]
    fn the_compressed_layer_does_not_depend_on_how_the_input_is_split() {
        let input = data(6 << 20);
        let one = compress(&input, &[PACK_CHUNK]);
        assert!(one.len() < input.len() / 2, "the data compresses");
        for pieces in [&[1usize][..], &[512, 8192, 100_000], &[3 << 20]] {
            if pieces == [1] {
                // Byte by byte over the first 64 KiB only: slow in a debug build otherwise.
                let small = &input[..64 << 10];
                assert!(compress(small, pieces) == compress(small, &[PACK_CHUNK]));
                continue;
            }
            assert!(compress(&input, pieces) == one, "{pieces:?}");
        }
        assert!(zstd::stream::decode_all(&one[..]).unwrap() == input);
    }

    #[test]
    fn a_failing_output_thread_reports_its_error() {
        let mut t = ChunkThread::<()>::spawn("test", |chunk| match chunk {
            Some(_) => Err(io::Error::other("disk on fire")),
            None => Ok(Some(())),
        })
        .unwrap();
        let mut err = None;
        for _ in 0..(PACK_QUEUE + 2) {
            if let Err(e) = t.write_all(&vec![0u8; PACK_CHUNK]) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("a write fails once the thread has failed");
        assert_eq!(err.to_string(), "disk on fire");
    }
}
