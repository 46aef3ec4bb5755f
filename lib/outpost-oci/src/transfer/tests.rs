use super::*;
use outpost_archive::NoProgress;

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff(1), Duration::from_millis(250));
    assert_eq!(p.backoff(2), Duration::from_millis(500));
    assert_eq!(p.backoff(10), Duration::from_secs(4));
}

fn net_error() -> OciError {
    OciError::Remote {
        what: "x".into(),
        problem: RemoteProblem::Network { attempts: 1 },
        source: None,
    }
}

#[tokio::test(start_paused = true)]
async fn retries_transient_failures_then_reports_the_attempts() {
    let mut calls = 0;
    let err = with_retries(&policy(), &Cancel::new(), "x", || {
        calls += 1;
        Box::pin(async { Err::<(), _>(Failure::transient(net_error())) })
    })
    .await
    .unwrap_err();
    assert_eq!(calls, 3);
    assert!(
        matches!(
            err,
            OciError::Remote {
                problem: RemoteProblem::Network { attempts: 3 },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("all 3 attempts"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_not_retried() {
    let mut calls = 0;
    let err = with_retries(&policy(), &Cancel::new(), "x", || {
        calls += 1;
        Box::pin(async {
            Err::<(), _>(Failure::permanent(OciError::Remote {
                what: "x".into(),
                problem: RemoteProblem::NotFound {
                    detail: "gone".into(),
                },
                source: None,
            }))
        })
    })
    .await
    .unwrap_err();
    assert_eq!(calls, 1);
    assert!(err.to_string().contains("not found"), "{err}");
}

fn body(start: u64, chunks: Vec<io::Result<Bytes>>) -> Body {
    Body {
        start,
        declared: None,
        stream: futures_util::stream::iter(chunks).boxed(),
    }
}

/// Collects what the unpacker side would read.
fn drain(rx: mpsc::Receiver<Msg>) -> std::thread::JoinHandle<io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        ChunkReader::new(rx).read_to_end(&mut out)?;
        Ok(out)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_at_the_offset_delivered_and_skips_ignored_ranges() {
    let data: Vec<u8> = (0..100u8).collect();
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = drain(rx);
    let mut offsets = Vec::new();
    let spec = BlobSpec {
        what: "blob",
        size: Some(100),
        stall_timeout: Duration::from_secs(60),
        is_end_check: no_end_check,
    };
    let d = data.clone();
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), Some(100));
    let n = stream_resumable(
        &spec,
        |offset| {
            offsets.push(offset);
            let d = d.clone();
            let attempt = offsets.len();
            Box::pin(async move {
                Ok(match attempt {
                    // Cut after 30 bytes.
                    1 => body(
                        0,
                        vec![
                            Ok(Bytes::copy_from_slice(&d[..30])),
                            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
                        ],
                    ),
                    // The server ignores the range: the full body again, then a clean
                    // early end after 60 bytes.
                    2 => body(0, vec![Ok(Bytes::copy_from_slice(&d[..60]))]),
                    // A proper partial answer.
                    _ => body(
                        offset,
                        vec![Ok(Bytes::copy_from_slice(&d[offset as usize..]))],
                    ),
                })
            })
        },
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap();
    drop(tx);
    assert_eq!(n, 100);
    assert_eq!(offsets, vec![0, 30, 60]);
    assert_eq!(reader.join().unwrap().unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_gives_up_fails_the_reader() {
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = drain(rx);
    let spec = BlobSpec {
        what: "blob",
        size: Some(10),
        stall_timeout: Duration::from_secs(60),
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let stop = stream_resumable(
        &spec,
        |_| {
            Box::pin(async {
                Ok(body(
                    0,
                    vec![Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))],
                ))
            })
        },
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(stop, Stop::Failed(OciError::Remote { .. })),
        "{stop:?}"
    );
    drop(tx);
    let err = reader.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_past_the_offset_is_refused() {
    let (tx, _rx) = mpsc::channel(QUEUE);
    let spec = BlobSpec {
        what: "blob",
        size: Some(10),
        stall_timeout: Duration::from_secs(60),
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let mut first = true;
    let stop = stream_resumable(
        &spec,
        |_| {
            let cut = std::mem::replace(&mut first, false);
            Box::pin(async move {
                Ok(if cut {
                    body(
                        0,
                        vec![Ok(Bytes::from_static(b"abc")), Err(io::Error::other("cut"))],
                    )
                } else {
                    body(5, vec![Ok(Bytes::from_static(b"fghij"))])
                })
            })
        },
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap_err();
    let Stop::Failed(err) = stop else {
        panic!("{stop:?}")
    };
    assert!(err.to_string().contains("from byte 5 when byte 3"), "{err}");
}

/// A body that yields `chunk` bytes every `every`, `count` times (endless when `None`).
fn trickle(every: Duration, chunk: usize, count: Option<usize>) -> Body {
    let stream = futures_util::stream::unfold(0usize, move |n| async move {
        if count.is_some_and(|c| n >= c) {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok(Bytes::from(vec![b'x'; chunk])), n + 1))
    });
    Body {
        start: 0,
        declared: None,
        stream: stream.boxed(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_trickle_stalls_on_every_attempt_and_gives_up() {
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = drain(rx);
    let spec = BlobSpec {
        what: "blob",
        size: Some(1 << 20),
        stall_timeout: Duration::from_millis(300),
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let mut opens = 0;
    let started = tokio::time::Instant::now();
    let stop = stream_resumable(
        &spec,
        |_| {
            opens += 1;
            // One byte every 100 ms, forever.
            Box::pin(async { Ok(trickle(Duration::from_millis(100), 1, None)) })
        },
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap_err();
    let Stop::Failed(err) = stop else {
        panic!("{stop:?}")
    };
    assert_eq!(opens, 3, "bytes of a stalled attempt are not progress");
    assert!(
        matches!(
            &err,
            OciError::Remote {
                problem: RemoteProblem::Stalled { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(
        err.to_string().contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(err.code(), outpost_types::ErrorCode::DownloadFailed);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(tx);
    assert!(reader.join().unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_silent_body_stalls() {
    let (tx, _rx) = mpsc::channel(QUEUE);
    let spec = BlobSpec {
        what: "blob",
        size: None,
        stall_timeout: Duration::from_millis(300),
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let stop = stream_resumable(
        &spec,
        |_| {
            Box::pin(async {
                Ok(Body {
                    start: 0,
                    declared: None,
                    stream: futures_util::stream::pending().boxed(),
                })
            })
        },
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            stop,
            Stop::Failed(OciError::Remote {
                problem: RemoteProblem::Stalled { .. },
                ..
            })
        ),
        "{stop:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_body_above_the_floor_completes() {
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = drain(rx);
    let chunk = usize::try_from(STALL_MIN_BYTES).unwrap();
    let spec = BlobSpec {
        what: "blob",
        size: Some(5 * chunk as u64),
        stall_timeout: Duration::from_millis(300),
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let n = stream_resumable(
        &spec,
        |_| Box::pin(async move { Ok(trickle(Duration::from_millis(250), chunk, Some(5))) }),
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap();
    drop(tx);
    assert_eq!(n, 5 * chunk as u64);
    assert_eq!(reader.join().unwrap().unwrap().len(), 5 * chunk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_its_size_is_cut_off_and_not_retried() {
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = drain(rx);
    let spec = BlobSpec {
        what: "blob",
        size: Some(10),
        stall_timeout: Duration::from_secs(60),
        is_end_check: no_end_check,
    };
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let mut opens = 0;
    let stop = stream_resumable(
        &spec,
        |_| {
            opens += 1;
            // An endless body: 8 bytes at a time, forever.
            let endless = futures_util::stream::repeat_with(|| Ok(Bytes::from(vec![0u8; 8])));
            Box::pin(async move {
                Ok(Body {
                    start: 0,
                    declared: None,
                    stream: endless.boxed(),
                })
            })
        },
        &tx,
        &policy(),
        &Cancel::new(),
        &mut progress,
    )
    .await
    .unwrap_err();
    let Stop::Failed(err) = stop else {
        panic!("{stop:?}")
    };
    assert_eq!(opens, 1);
    assert!(err.to_string().contains("size exceeded"), "{err}");
    assert_eq!(err.code(), outpost_types::ErrorCode::DownloadFailed);
    drop(tx);
    let err = reader.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
}
