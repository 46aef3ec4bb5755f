//! Tarballs: formats sniffed by magic bytes, digest and size checked in the same pass,
//! cancellation, progress and source failures.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read};
use std::sync::Mutex;

use outpost_archive::{
    ArchiveError, Cancel, Digest, Expected, Limits, NoProgress, Progress, SizeSeen, unpack_tar,
    unpack_tarball, unpack_tarball_file,
};
use outpost_testkit::fixtures::{Node, Sandbox, TarBuilder, encodings, expected_for, snapshot};
use outpost_types::ErrorCode;
use outpost_types::wire::Phase;

fn sample_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
        .file("share/doc/README", &b"read me\n".repeat(1000), 0o644)
        .symlink("bin/alias", "tool")
        .finish()
}

fn check_sample(dest: &std::path::Path) {
    let tree = snapshot(dest);
    assert_eq!(
        tree["bin/tool"],
        Node::File {
            mode: 0o755,
            data: b"#!/bin/sh\necho hi\n".to_vec()
        }
    );
    assert_eq!(
        tree["bin/alias"],
        Node::Symlink {
            target: "tool".into()
        }
    );
    assert_eq!(tree.len(), 6, "{tree:?}");
}

fn unpack(
    bytes: &[u8],
    expect: &Expected,
    sb: &Sandbox,
) -> Result<outpost_archive::UnpackStats, ArchiveError> {
    unpack_tarball(
        bytes,
        expect,
        &sb.dest,
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
}

#[test]
fn every_encoding_unpacks() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let sb = Sandbox::new();
        let stats =
            unpack(&bytes, &expected_for(&bytes), &sb).unwrap_or_else(|e| panic!("{enc}: {e}"));
        check_sample(&sb.dest);
        assert_eq!(stats.source_bytes, bytes.len() as u64, "{enc}");
        assert_eq!((stats.files, stats.symlinks), (2, 1), "{enc}");
        assert_eq!(stats.bytes, 18 + 8000, "{enc}");
        sb.assert_contained();
    }
}

#[test]
fn size_is_optional() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let sb = Sandbox::new();
        let expect = Expected {
            digest: Digest::of(&bytes),
            size: None,
        };
        unpack(&bytes, &expect, &sb).unwrap_or_else(|e| panic!("{enc}: {e}"));
        check_sample(&sb.dest);
    }
}

#[test]
fn digest_mismatch_names_both() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let sb = Sandbox::new();
        let wrong = Digest::of(b"something else");
        let expect = Expected {
            digest: wrong.clone(),
            size: Some(bytes.len() as u64),
        };
        let err = unpack(&bytes, &expect, &sb).unwrap_err();
        match &err {
            ArchiveError::DigestMismatch {
                expected, actual, ..
            } => {
                assert_eq!(*expected, wrong, "{enc}");
                assert_eq!(*actual, Digest::of(&bytes), "{enc}");
            }
            other => panic!("{enc}: {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&wrong.to_string()) && msg.contains(&Digest::of(&bytes).to_string()),
            "{msg}"
        );
        assert_eq!(err.code(), ErrorCode::Integrity);
    }
}

#[test]
fn size_mismatch_both_ways() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let n = bytes.len() as u64;
        let sb = Sandbox::new();
        let longer = Expected {
            digest: Digest::of(&bytes),
            size: Some(n + 1),
        };
        let err = unpack(&bytes, &longer, &sb).unwrap_err();
        assert!(
            matches!(err, ArchiveError::SizeMismatch { expected, actual: SizeSeen::Exactly(a), .. } if expected == n + 1 && a == n),
            "{enc}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::Integrity);

        let sb = Sandbox::new();
        let shorter = Expected {
            digest: Digest::of(&bytes),
            size: Some(n - 1),
        };
        let err = unpack(&bytes, &shorter, &sb).unwrap_err();
        assert!(
            matches!(err, ArchiveError::SizeMismatch { expected, actual: SizeSeen::MoreThan(_), .. } if expected == n - 1),
            "{enc}: {err:?}"
        );
        assert!(err.to_string().contains("more than"), "{err}");
    }
}

#[test]
fn a_flipped_byte_is_a_digest_mismatch() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let expect = expected_for(&bytes);
        for pos in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 2] {
            let mut bad = bytes.clone();
            bad[pos] ^= 0x55;
            let sb = Sandbox::new();
            let err = unpack(&bad, &expect, &sb).unwrap_err();
            assert!(
                matches!(err, ArchiveError::DigestMismatch { .. }),
                "{enc} at {pos}: {err:?}"
            );
            sb.assert_contained();
        }
    }
}

#[test]
fn read_to_the_end_trailing_bytes_count() {
    // Bytes after the compressed stream or the tar's end are part of what was downloaded:
    // they are hashed, so an appended tail is caught by the digest.
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(&[0u8; 4096]);
        let sb = Sandbox::new();
        let err = unpack(&with_tail, &expected_for(&bytes), &sb).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::SizeMismatch { .. } | ArchiveError::DigestMismatch { .. }
            ),
            "{enc}: {err:?}"
        );
    }
    // A plain tar padded with zeros (as tar(1) pads to its record size) is fine when the
    // digest covers the padding.
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 9216]);
    let sb = Sandbox::new();
    let stats = unpack(&padded, &expected_for(&padded), &sb).unwrap();
    assert_eq!(stats.source_bytes, padded.len() as u64);
}

#[test]
fn garbage_after_a_compressed_stream_is_corrupt() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar).into_iter().skip(1) {
        let mut bad = bytes.clone();
        bad.extend_from_slice(b"trailing garbage that is not a compressed stream");
        let sb = Sandbox::new();
        let err = unpack(&bad, &expected_for(&bad), &sb).unwrap_err();
        assert!(
            matches!(err, ArchiveError::CorruptArchive { .. }),
            "{enc}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::Integrity);
    }
}

#[test]
fn not_an_archive() {
    let junk = b"<html>404 not found</html>".repeat(40);
    let sb = Sandbox::new();
    let err = unpack(&junk, &expected_for(&junk), &sb).unwrap_err();
    assert!(
        matches!(err, ArchiveError::CorruptArchive { .. }),
        "{err:?}"
    );
    let empty: &[u8] = b"";
    let sb = Sandbox::new();
    let stats = unpack(empty, &expected_for(empty), &sb).unwrap();
    assert_eq!(stats.entries, 0, "an empty stream is an empty archive");
}

#[test]
fn from_a_file() {
    let tar = sample_tar();
    let dir = tempfile::tempdir().unwrap();
    for (enc, bytes) in encodings(&tar) {
        let path = dir.path().join(format!("pkg.{enc}"));
        fs_err::write(&path, &bytes).unwrap();
        let sb = Sandbox::new();
        unpack_tarball_file(
            &path,
            &expected_for(&bytes),
            &sb.dest,
            &Limits::default(),
            &Cancel::new(),
            &NoProgress,
        )
        .unwrap();
        check_sample(&sb.dest);
        let sb = Sandbox::new();
        let err = unpack_tarball_file(
            &path,
            &expected_for(b"other"),
            &sb.dest,
            &Limits::default(),
            &Cancel::new(),
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(&format!("pkg.{enc}")),
            "names the file: {err}"
        );
    }
    let sb = Sandbox::new();
    let missing = dir.path().join("missing.tar.gz");
    let err = unpack_tarball_file(
        &missing,
        &expected_for(b""),
        &sb.dest,
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Read { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::DownloadFailed);
    assert!(err.to_string().contains("missing.tar.gz"), "{err}");
}

/// A source that fails after `ok` bytes.
struct Failing<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            ));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn source_failure_keeps_its_cause() {
    let tar = sample_tar();
    for (enc, bytes) in encodings(&tar) {
        let sb = Sandbox::new();
        let src = Failing {
            data: &bytes,
            ok: bytes.len() / 2,
        };
        let err = unpack_tarball(
            src,
            &expected_for(&bytes),
            &sb.dest,
            &Limits::default(),
            &Cancel::new(),
            &NoProgress,
        )
        .unwrap_err();
        match &err {
            ArchiveError::Read { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset, "{enc}");
                assert!(source.to_string().contains("peer went away"), "{enc}");
            }
            other => panic!("{enc}: {other:?}"),
        }
        assert_eq!(err.code(), ErrorCode::DownloadFailed);
    }
}

/// A source that sets a cancel flag once `after` bytes were read.
struct CancelAfter<'a> {
    data: &'a [u8],
    after: usize,
    cancel: Cancel,
}

impl Read for CancelAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len()).min(4096);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.after = self.after.saturating_sub(n);
        if self.after == 0 {
            self.cancel.cancel();
        }
        Ok(n)
    }
}

#[test]
fn cancel_mid_stream() {
    let big = TarBuilder::new()
        .file("a", &vec![7u8; 3 << 20], 0o644)
        .file("b", &vec![8u8; 3 << 20], 0o644)
        .finish();
    for (enc, bytes) in encodings(&big) {
        let sb = Sandbox::new();
        let cancel = Cancel::new();
        let src = CancelAfter {
            data: &bytes,
            after: bytes.len() / 4,
            cancel: cancel.clone(),
        };
        let err = unpack_tarball(
            src,
            &expected_for(&bytes),
            &sb.dest,
            &Limits::default(),
            &cancel,
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, ArchiveError::Cancelled), "{enc}: {err:?}");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(!sb.dest.join("b").exists(), "{enc}: stopped before the end");
    }
}

#[test]
fn cancelled_before_start() {
    let tar = sample_tar();
    let sb = Sandbox::new();
    let cancel = Cancel::new();
    cancel.cancel();
    let err = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &cancel).unwrap_err();
    assert!(matches!(err, ArchiveError::Cancelled), "{err:?}");
    assert_eq!(fs_err::read_dir(&sb.dest).unwrap().count(), 0);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Phase, u64, Option<u64>)>>);

impl Progress for Recorder {
    fn report(&self, phase: Phase, done: u64, total: Option<u64>) {
        self.0.lock().unwrap().push((phase, done, total));
    }
}

#[test]
fn progress_reports_source_bytes() {
    let big = TarBuilder::new()
        .file(
            "a",
            &(0..5u32 << 20)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
            0o644,
        )
        .finish();
    let bytes = outpost_testkit::fixtures::zstd(&big);
    let sb = Sandbox::new();
    let rec = Recorder::default();
    unpack_tarball(
        &bytes[..],
        &expected_for(&bytes),
        &sb.dest,
        &Limits::default(),
        &Cancel::new(),
        &rec,
    )
    .unwrap();
    let reports = rec.0.into_inner().unwrap();
    assert!(!reports.is_empty());
    assert!(
        reports.windows(2).all(|w| w[0].1 <= w[1].1),
        "monotonic: {reports:?}"
    );
    let last = reports.last().unwrap();
    assert_eq!(
        *last,
        (Phase::Unpack, bytes.len() as u64, Some(bytes.len() as u64))
    );
}

#[test]
fn large_multi_chunk_round_trip() {
    // Several source chunks, hashed on the side thread, with files spanning chunk borders.
    let mut b = TarBuilder::new();
    for i in 0..6u8 {
        let data: Vec<u8> = (0..(1 << 20) + 12345 * usize::from(i))
            .map(|j| (j as u8) ^ i)
            .collect();
        b = b.file(&format!("f{i}"), &data, 0o644);
    }
    let tar = b.finish();
    for (enc, bytes) in encodings(&tar) {
        let sb = Sandbox::new();
        unpack(&bytes, &expected_for(&bytes), &sb).unwrap_or_else(|e| panic!("{enc}: {e}"));
        for i in 0..6u8 {
            let got = fs_err::read(sb.dest.join(format!("f{i}"))).unwrap();
            let want: Vec<u8> = (0..(1 << 20) + 12345 * usize::from(i))
                .map(|j| (j as u8) ^ i)
                .collect();
            assert!(got == want, "{enc}: f{i} differs");
        }
    }
}
