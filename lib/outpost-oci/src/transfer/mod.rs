//! What registry and HTTP downloads share: retries with backoff, resumption with a range
//! request, progress reports, and the bridge that carries a network body into the blocking
//! unpacker without a temporary file and without holding more than a few chunks in memory.
//!
//! A body is read on the async side and sent chunk by chunk through a bounded channel; the
//! unpacker, on a blocking thread, reads the channel through a [`ChunkReader`]. The end of a
//! body is an explicit message, so a download that stops for any other reason (an error, a
//! cancel) is never mistaken for the end of the blob: the reader then fails, and the caller
//! reports the download's own error.
//!
//! # One retry rule
//! Registries and HTTP tarballs decide what is worth another attempt in one place:
//! [`is_retryable_status`] for an answer (HTTP 5xx, 408, 429) and [`transport_problem`] for a
//! request that got none (a TLS failure and an invalid request are permanent, every other
//! network failure transient). [`with_retries`] then retries the transient ones under a
//! [`RetryPolicy`]. This module is public for `outpost-fetch`'s HTTP tarballs.
//!
//! # Hostile bodies
//! [`stream_resumable`] bounds every body: past the blob's expected size it stops at once
//! (`download_failed`, size exceeded, not retried; a body that announced another length is a
//! size mismatch, `integrity`), and a body delivering less than [`STALL_MIN_BYTES`] per
//! [`BlobSpec::stall_timeout`] of waiting for the network is a stall (transient; a stalled
//! attempt is not progress, so a trickle gives up after the policy's attempts).

use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use outpost_types::wire::Phase;
use tokio::sync::mpsc;

use outpost_archive::{ArchiveError, Cancel, Progress, UnpackStats};

use crate::error::{OciError, RemoteProblem};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("outpost/", env!("CARGO_PKG_VERSION"));

pub use crate::tls::ensure_provider;

/// Whether an HTTP answer with `status` is worth another attempt: a server error (5xx), a
/// request timeout (408) or too many requests (429). Every other refusal is permanent.
pub fn is_retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// What a request that got no HTTP answer means, for `host` (`insecure` when it is spoken to
/// over plain HTTP): a TLS failure with a host spoken to over TLS and an invalid request are
/// permanent, every other failure (refused, reset, timed out) is a transient network failure.
pub fn transport_problem(e: &reqwest::Error, host: &str, insecure: bool) -> Classified {
    if e.is_builder() {
        Classified {
            problem: RemoteProblem::Protocol {
                detail: "invalid request".into(),
            },
            transient: false,
        }
    } else if !insecure && crate::tls::is_tls_error(e) {
        Classified {
            problem: RemoteProblem::Tls {
                host: host.to_owned(),
            },
            transient: false,
        }
    } else {
        Classified {
            problem: RemoteProblem::Network { attempts: 1 },
            transient: true,
        }
    }
}

/// A failure classified by the retry rule, before its error is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What went wrong, for a person.
    pub problem: RemoteProblem,
    /// Whether another attempt may help.
    pub transient: bool,
}

impl Classified {
    /// The failed attempt, its error built by `error` from the problem.
    pub fn into_failure(self, error: impl FnOnce(RemoteProblem) -> OciError) -> Failure {
        Failure {
            error: error(self.problem),
            transient: self.transient,
        }
    }
}

/// The first line of a server's message, at most 200 characters.
pub fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push_str("...");
    }
    if out.is_empty() {
        out.push_str("(no message)");
    }
    out
}

/// Combines the outcome of a download and of the unpacker it fed: the download's own
/// failure wins (the unpacker then only saw its input stop), else the unpacker's.
pub fn finish(
    downloaded: Result<(), Stop>,
    unpacked: Result<UnpackStats, OciError>,
) -> Result<UnpackStats, OciError> {
    match (downloaded, unpacked) {
        (Err(Stop::Failed(e)), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(stats)) => Ok(stats),
        (Err(Stop::ReceiverGone), Ok(_)) => Err(ArchiveError::HashThread {
            what: "the unpacker stopped reading without an error".into(),
        }
        .into()),
    }
}

/// Chunks of a body that may wait for the unpacker. With HTTP/1 bodies a chunk is at most a
/// few hundred KiB (usually 8 to 64 KiB), so this bounds the memory in flight to a few MiB.
pub const QUEUE: usize = 8;

/// Progress is reported at least this often while bytes arrive (and at the end)...
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// ... and after at most this many bytes, so a report is never far behind when the
/// transfer stalls.
const REPORT_BYTES: u64 = 512 << 10;

/// How transient failures (connection refused or reset, timeouts, HTTP 5xx and 429) are
/// retried. Permanent failures (401, 403, 404, a digest mismatch) are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in a row that may fail before the operation gives up (at least 1). A blob
    /// download that resumes after receiving new bytes starts a fresh count, so a long
    /// download over a flaky link completes as long as it keeps making progress.
    pub attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    pub first_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, 250 ms then 500 ms apart.
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A failed attempt, and whether trying again may help.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: OciError,
    /// Whether another attempt may help.
    pub transient: bool,
}

impl Failure {
    /// A failure that another attempt would not mend.
    pub fn permanent(error: OciError) -> Self {
        Self {
            error,
            transient: false,
        }
    }

    /// A failure that another attempt may mend.
    pub fn transient(error: OciError) -> Self {
        Self {
            error,
            transient: true,
        }
    }

    /// `error` for an answer with HTTP `status`: transient when [`is_retryable_status`] says
    /// so, else permanent.
    pub fn for_status(status: u16, error: OciError) -> Self {
        if is_retryable_status(status) {
            Self::transient(error)
        } else {
            Self::permanent(error)
        }
    }

    /// The error to report after `attempts` attempts.
    fn give_up(self, attempts: u32) -> OciError {
        let mut error = self.error;
        if let OciError::Remote { what, problem, .. } = &mut error {
            match problem {
                RemoteProblem::Network { attempts: n } => *n = attempts,
                _ if attempts > 1 => {
                    what.push_str(&format!(" (gave up after {attempts} attempts)"))
                }
                _ => {}
            }
        }
        error
    }
}

/// A boxed future, for the closures that open requests.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs `attempt` until it succeeds, fails permanently, or has failed transiently
/// `policy.attempts` times in a row, pausing with exponential backoff in between.
pub async fn with_retries<T>(
    policy: &RetryPolicy,
    cancel: &Cancel,
    what: &str,
    mut attempt: impl FnMut() -> BoxFut<Result<T, Failure>>,
) -> Result<T, OciError> {
    let mut failures = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(OciError::Archive(ArchiveError::Cancelled));
        }
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(f) if f.transient && failures + 1 < policy.attempts.max(1) => {
                failures += 1;
                let pause = policy.backoff(failures);
                tracing::warn!(
                    what,
                    error = %f.error,
                    attempt = failures,
                    retry_in_ms = pause.as_millis() as u64,
                    "transient failure; retrying"
                );
                tokio::time::sleep(pause).await;
            }
            Err(f) => return Err(f.give_up(failures + 1)),
        }
    }
}

/// A message on a body channel.
#[derive(Debug)]
pub enum Msg {
    /// The next bytes of the body.
    Chunk(Bytes),
    /// The body is complete.
    End,
}

/// The receiving end of a body, as a blocking reader. Reading fails if the sender goes away
/// without sending [`Msg::End`].
#[derive(Debug)]
pub struct ChunkReader {
    rx: mpsc::Receiver<Msg>,
    current: Bytes,
    ended: bool,
}

impl ChunkReader {
    /// Reads the chunks sent to `rx`.
    pub fn new(rx: mpsc::Receiver<Msg>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Chunk(b)) => self.current = b,
                Some(Msg::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the download stopped before the end of the blob",
                    ));
                }
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _consumed = self.current.split_to(n);
        Ok(n)
    }
}

/// A response body that starts at byte `start` of the resource (0 for a full response).
#[allow(missing_debug_implementations)]
pub struct Body {
    /// The offset of the body's first byte in the resource.
    pub start: u64,
    /// The length the server announced for this body (`Content-Length`), when it did.
    pub declared: Option<u64>,
    /// The bytes.
    pub stream: BoxStream<'static, io::Result<Bytes>>,
}

/// Why [`stream_resumable`] stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The download failed (after its retries); the error says why.
    Failed(OciError),
    /// The unpacker stopped reading: its own error says why.
    ReceiverGone,
}

/// The least a blob body must deliver in each stall timeout's worth of waiting for the
/// network (`registry.stall_timeout`, [`BlobSpec::stall_timeout`]): a body that delivers less
/// is a stall (about 270 bytes a second at the default 60 s). Time spent waiting for the
/// unpacker to take a chunk is not counted.
pub const STALL_MIN_BYTES: u64 = 16 << 10;

/// Reports download progress at most every [`REPORT_EVERY`], and at the end.
#[allow(missing_debug_implementations)]
pub struct DownloadProgress {
    progress: Arc<dyn Progress>,
    /// Bytes of earlier blobs of the same package.
    base: u64,
    total: Option<u64>,
    last: Option<Instant>,
    last_done: u64,
}

impl DownloadProgress {
    /// Reports to `progress`, out of `total` bytes when known.
    pub fn new(progress: Arc<dyn Progress>, total: Option<u64>) -> Self {
        Self {
            progress,
            base: 0,
            total,
            last: None,
            last_done: 0,
        }
    }

    fn report(&mut self, done: u64, force: bool) {
        let now = Instant::now();
        if force
            || done.saturating_sub(self.last_done) >= REPORT_BYTES
            || self
                .last
                .is_none_or(|t| now.duration_since(t) >= REPORT_EVERY)
        {
            self.last = Some(now);
            self.last_done = done;
            self.progress
                .report(Phase::Download, self.base + done, self.total);
        }
    }

    /// Moves the base past a finished blob.
    fn advance(&mut self, bytes: u64) {
        self.base += bytes;
        self.last_done = 0;
    }
}

/// What [`stream_resumable`] needs to know about the blob.
#[allow(missing_debug_implementations)]
pub struct BlobSpec<'a> {
    /// Names the blob in logs.
    pub what: &'a str,
    /// Its size, when known: a body that ends cleanly before it is resumed, and a body that
    /// runs past it is refused at once (permanently: the server sends more than it said).
    pub size: Option<u64>,
    /// The stall timeout: a body that delivers less than [`STALL_MIN_BYTES`] in this much
    /// waiting (or nothing at all) fails transiently, as a stall.
    pub stall_timeout: Duration,
    /// Whether an error yielded by the stream is a verification error of the transport
    /// layer at the very end of the body (all bytes were delivered; the unpacker's own check
    /// reports the mismatch).
    pub is_end_check: fn(&io::Error) -> bool,
}

/// Downloads one blob into `tx`, resuming after transient failures.
///
/// `open(offset)` starts a request for the blob from `offset` (a range request when
/// `offset > 0`); a server that ignores the range answers from the start, and the bytes
/// already delivered are then skipped. The bytes delivered to the unpacker are never sent
/// twice, so its digest covers the whole blob exactly once. Ends with [`Msg::End`] and the
/// number of bytes delivered.
pub async fn stream_resumable(
    spec: &BlobSpec<'_>,
    mut open: impl FnMut(u64) -> BoxFut<Result<Body, Failure>>,
    tx: &mpsc::Sender<Msg>,
    policy: &RetryPolicy,
    cancel: &Cancel,
    progress: &mut DownloadProgress,
) -> Result<u64, Stop> {
    let mut delivered: u64 = 0;
    let mut failures: u32 = 0;
    let mut resumes: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(Stop::Failed(OciError::Archive(ArchiveError::Cancelled)));
        }
        let at_attempt = delivered;
        let (failure, stalled) = match open(delivered).await {
            Err(f) => (f, false),
            Ok(body) => match pump(spec, body, &mut delivered, tx, cancel, progress).await {
                Ok(()) => {
                    if tx.send(Msg::End).await.is_err() {
                        return Err(Stop::ReceiverGone);
                    }
                    progress.report(delivered, true);
                    progress.advance(delivered);
                    if resumes > 0 {
                        tracing::info!(
                            blob = spec.what,
                            bytes = delivered,
                            resumes,
                            "download completed after resuming"
                        );
                    }
                    return Ok(delivered);
                }
                Err(PumpError::Stop(stop)) => return Err(stop),
                Err(PumpError::Failure(f)) => (f, false),
                Err(PumpError::Stall(f)) => (f, true),
            },
        };
        // An attempt that made progress starts the count of failures in a row again, unless it
        // stalled: a trickle must not keep a download alive forever.
        if delivered > at_attempt && !stalled {
            failures = 0;
        }
        failures += 1;
        if !failure.transient || failures >= policy.attempts.max(1) {
            return Err(Stop::Failed(failure.give_up(failures)));
        }
        let pause = policy.backoff(failures);
        if delivered > 0 {
            resumes += 1;
        }
        tracing::warn!(
            blob = spec.what,
            error = %failure.error,
            offset = delivered,
            attempt = failures,
            retry_in_ms = pause.as_millis() as u64,
            "download interrupted; resuming"
        );
        tokio::time::sleep(pause).await;
    }
}

enum PumpError {
    Stop(Stop),
    Failure(Failure),
    /// A transient failure that is a stall: the bytes it delivered do not count as progress.
    Stall(Failure),
}

/// Counts the bytes a body delivers against the time spent waiting for them.
struct StallWatch {
    timeout: Duration,
    waited: Duration,
    bytes: u64,
}

impl StallWatch {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// How long the next wait may last before the window closes.
    fn left(&self) -> Duration {
        self.timeout.saturating_sub(self.waited)
    }

    /// Records a wait of `waited` that delivered `bytes`; `false` when the window closed with
    /// less than [`STALL_MIN_BYTES`] in it (a stall). A window that closed in time opens the
    /// next one.
    fn record(&mut self, waited: Duration, bytes: u64) -> bool {
        self.waited += waited;
        self.bytes += bytes;
        if self.waited < self.timeout {
            return true;
        }
        let ok = self.bytes >= STALL_MIN_BYTES;
        self.waited = Duration::ZERO;
        self.bytes = 0;
        ok
    }
}

/// Forwards one response body, skipping what was already delivered.
async fn pump(
    spec: &BlobSpec<'_>,
    body: Body,
    delivered: &mut u64,
    tx: &mpsc::Sender<Msg>,
    cancel: &Cancel,
    progress: &mut DownloadProgress,
) -> Result<(), PumpError> {
    if body.start > *delivered {
        return Err(PumpError::Failure(Failure::permanent(OciError::Remote {
            what: spec.what.to_owned(),
            problem: RemoteProblem::Protocol {
                detail: format!(
                    "the server answered from byte {} when byte {} was asked for",
                    body.start, delivered
                ),
            },
            source: None,
        })));
    }
    let mut skip = *delivered - body.start;
    if skip > 0 {
        tracing::info!(
            blob = spec.what,
            skip,
            "the server ignored the range request; skipping what was already received"
        );
    }
    let body_end = body.declared.map(|len| body.start + len);
    let mut stream = body.stream;
    let mut watch = StallWatch::new(spec.stall_timeout);
    loop {
        if cancel.is_cancelled() {
            return Err(PumpError::Stop(Stop::Failed(OciError::Archive(
                ArchiveError::Cancelled,
            ))));
        }
        let started = tokio::time::Instant::now();
        let next = tokio::time::timeout(watch.left(), stream.next()).await;
        let got = match &next {
            Ok(Some(Ok(chunk))) => chunk.len() as u64,
            _ => 0,
        };
        if !watch.record(started.elapsed(), got) {
            return Err(PumpError::Stall(Failure::transient(OciError::Remote {
                what: spec.what.to_owned(),
                problem: RemoteProblem::Stalled {
                    timeout: spec.stall_timeout,
                    min_bytes: STALL_MIN_BYTES,
                },
                source: None,
            })));
        }
        let Ok(next) = next else {
            // The window closed in time: wait again.
            continue;
        };
        match next {
            Some(Ok(mut chunk)) => {
                if skip > 0 {
                    let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                    let _skipped = chunk.split_to(n);
                    skip -= n as u64;
                }
                if chunk.is_empty() {
                    continue;
                }
                if let Some(size) = spec.size
                    && *delivered + chunk.len() as u64 > size
                {
                    return Err(PumpError::Failure(Failure::permanent(too_long(
                        spec, &body_end, size,
                    ))));
                }
                *delivered += chunk.len() as u64;
                if tx.send(Msg::Chunk(chunk)).await.is_err() {
                    return Err(PumpError::Stop(Stop::ReceiverGone));
                }
                progress.report(*delivered, false);
            }
            Some(Err(e)) if (spec.is_end_check)(&e) => return Ok(()),
            Some(Err(e)) => {
                return Err(PumpError::Failure(Failure::transient(OciError::Remote {
                    what: spec.what.to_owned(),
                    problem: RemoteProblem::Network { attempts: 1 },
                    source: Some(Box::new(e)),
                })));
            }
            None => {
                if let Some(size) = spec.size
                    && *delivered < size
                {
                    // A clean end before the expected size: the connection was cut between
                    // chunks. Resume like any other interruption.
                    return Err(PumpError::Failure(Failure::transient(OciError::Remote {
                        what: spec.what.to_owned(),
                        problem: RemoteProblem::Network { attempts: 1 },
                        source: Some(Box::new(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the body ended after {delivered} of {size} bytes"),
                        ))),
                    })));
                }
                return Ok(());
            }
        }
    }
}

/// The error for a body that runs past the expected `size`. When the server announced a body
/// ending elsewhere, it serves another content than the one expected: a size mismatch
/// (`integrity`), as the unpacker would report it. Otherwise (no length announced: an
/// endless or oversized stream) the download stops there: size exceeded (`download_failed`).
fn too_long(spec: &BlobSpec<'_>, body_end: &Option<u64>, size: u64) -> OciError {
    match body_end {
        Some(end) if *end != size => ArchiveError::SizeMismatch {
            what: spec.what.to_owned(),
            expected: size,
            actual: outpost_archive::SizeSeen::Exactly(*end),
        }
        .into(),
        _ => OciError::Remote {
            what: spec.what.to_owned(),
            problem: RemoteProblem::TooLong { size },
            source: None,
        },
    }
}

/// Never an end-of-body check: every stream error is a transport error.
pub fn no_end_check(_: &io::Error) -> bool {
    false
}

#[cfg(test)]
mod tests;
