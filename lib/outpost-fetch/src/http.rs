//! Tarballs served over HTTP(S): streamed into the unpacker, verified against the catalog's
//! sha256 and size, resumed with a range request after a transient failure.

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::sync::mpsc;

use outpost_archive::{Cancel, Expected, Limits, NoProgress, Progress, UnpackStats};
use outpost_oci::transfer::{
    BlobSpec, Body, BoxFut, ChunkReader, DownloadProgress, Failure, QUEUE, USER_AGENT, finish,
    no_end_check, short, stream_resumable, transport_problem,
};
use outpost_oci::{OciError, RegistrySettings, RemoteProblem};

use crate::error::FetchError;

/// Downloads the tarball at `url` (`http://` or `https://`) and unpacks it into `dest`, an
/// existing empty directory, checking its sha256 and size as it streams.
///
/// Redirects are followed. TLS uses the system's trust store. Transient failures
/// (connection refused or reset, timeouts, HTTP 5xx, 408, 429: the registries' rule,
/// [`outpost_oci::transfer::is_retryable_status`]) are retried with the settings' policy; an interrupted body resumes with `Range: bytes=N-` (or, when the
/// server answers with the whole file, skips the first N bytes). Progress is reported as
/// `download`, bytes received out of the catalog's size when known.
///
/// # Errors
/// [`OciError::Remote`] (HTTP 404 and other refusals, a TLS failure, at once; network
/// failures after the retries); every error of
/// [`unpack_tarball`](outpost_archive::unpack_tarball), such as a digest mismatch, and
/// cancellation.
pub async fn fetch_tarball(
    url: &str,
    expect: &Expected,
    dest: &Path,
    settings: &RegistrySettings,
    limits: &Limits,
    cancel: &Cancel,
    progress: Arc<dyn Progress>,
) -> Result<UnpackStats, FetchError> {
    outpost_oci::transfer::ensure_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.stall_timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| OciError::Remote {
            what: url.to_owned(),
            problem: RemoteProblem::Protocol {
                detail: "the HTTP client cannot be set up".into(),
            },
            source: Some(Box::new(e)),
        })?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let worker = {
        let (dest, expect, limits, cancel, what) = (
            dest.to_owned(),
            expect.clone(),
            *limits,
            cancel.clone(),
            format!("tarball {url}"),
        );
        tokio::task::spawn_blocking(move || {
            outpost_archive::unpack_tarball_named(
                ChunkReader::new(rx),
                what,
                &expect,
                &dest,
                &limits,
                &cancel,
                &NoProgress,
            )
            .map_err(OciError::from)
        })
    };
    let spec = BlobSpec {
        what: url,
        size: expect.size,
        stall_timeout: settings.stall_timeout,
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(progress, expect.size);
    let open = |offset: u64| -> BoxFut<Result<Body, Failure>> {
        let (client, url) = (client.clone(), url.to_owned());
        Box::pin(async move { open(&client, &url, offset).await })
    };
    let downloaded = stream_resumable(&spec, open, &tx, &settings.retry, cancel, &mut progress)
        .await
        .map(|_| ());
    drop(tx);
    let unpacked = worker.await.map_err(|source| FetchError::TaskFailed {
        what: format!("unpacking {url}"),
        source,
    })?;
    let stats = finish(downloaded, unpacked)?;
    tracing::info!(
        url,
        bytes = stats.bytes,
        files = stats.files,
        "unpacked an HTTP tarball"
    );
    Ok(stats)
}

/// Sends `GET url`, from `offset` when it is not 0.
async fn open(client: &reqwest::Client, url: &str, offset: u64) -> Result<Body, Failure> {
    let remote =
        |problem, source: Option<Box<dyn std::error::Error + Send + Sync>>| OciError::Remote {
            what: url.to_owned(),
            problem,
            source,
        };
    let mut request = client.get(url);
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let host = e.url().and_then(|u| u.host_str()).unwrap_or(url).to_owned();
            let classified = transport_problem(&e, &host, false);
            return Err(classified.into_failure(|p| remote(p, Some(Box::new(e)))));
        }
    };
    let status = response.status();
    let start = match status {
        StatusCode::OK => 0,
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let range = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(range_start);
            match range {
                Some(start) => start,
                None => {
                    return Err(Failure::permanent(remote(
                        RemoteProblem::Protocol {
                            detail: "a partial answer without a valid Content-Range".into(),
                        },
                        None,
                    )));
                }
            }
        }
        s => {
            let text = response.text().await.unwrap_or_default();
            let detail = short(&text);
            let problem = if s == StatusCode::NOT_FOUND {
                RemoteProblem::NotFound { detail }
            } else {
                RemoteProblem::Status {
                    status: Some(s.as_u16()),
                    detail,
                }
            };
            return Err(Failure::for_status(s.as_u16(), remote(problem, None)));
        }
    };
    Ok(Body {
        start,
        declared: response.content_length(),
        stream: Box::pin(response.bytes_stream().map_err(std::io::Error::other)),
    })
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` value.
fn range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/*"), Some(0));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }
}
