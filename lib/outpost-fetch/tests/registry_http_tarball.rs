//! Tarballs over HTTP (`http://` catalog URLs), served by a real file server in the test:
//! streamed into the unpacker and verified against the catalog's sha256 and size; a
//! connection cut in the middle resumes with a range request; server errors are retried;
//! a missing file and a wrong digest fail with the right codes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_fetch::pack::{PackOptions, pack};
use outpost_fetch::{
    Digest, FetchContext, FetchError, Limits, Progress, RegistrySettings, RetryPolicy,
};
use outpost_testkit::{Fault, FaultProxy, FileServer, Rule, noise};
use outpost_types::ErrorCode;
use outpost_types::wire::{CatalogEntry, Phase, ResolvedPackage};
use outpost_types::{PackageName, Version};

/// A served directory holding `pkg.tar.zst` (a 4 MiB random file and a script).
struct Served {
    dir: tempfile::TempDir,
    tarball: PathBuf,
    sha256: String,
    size: u64,
    data: Vec<u8>,
}

impl Served {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir_all(tree.join("bin")).unwrap();
        let data = noise(4 << 20, 3);
        fs_err::write(tree.join("bin/data"), &data).unwrap();
        let packed = pack(
            &tree,
            &PackageName::new("tool").unwrap(),
            &Version::new("1.0").unwrap(),
            &PackOptions::default(),
            &dir.path().join("layout"),
        )
        .unwrap();
        let www = dir.path().join("www");
        fs_err::create_dir(&www).unwrap();
        let tarball = www.join("pkg.tar.zst");
        fs_err::copy(
            packed.layer.digest.blob_path(&dir.path().join("layout")),
            &tarball,
        )
        .unwrap();
        Self {
            sha256: packed.layer.digest.hex().to_owned(),
            size: packed.layer.size,
            tarball,
            dir,
            data,
        }
    }

    fn www(&self) -> &Path {
        self.tarball.parent().unwrap()
    }

    fn dest(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        fs_err::create_dir(&d).unwrap();
        d
    }
}

fn entry(url: &str, sha256: &str, size: u64) -> ResolvedPackage {
    CatalogEntry {
        package: "tool".into(),
        version: "1.0".into(),
        url: url.into(),
        sha256: sha256.into(),
        size,
        platform: String::new(),
        arch: String::new(),
        health: None,
    }
    .resolve()
    .unwrap()
}

fn ctx() -> FetchContext {
    FetchContext::new(
        RegistrySettings {
            retry: RetryPolicy {
                attempts: 3,
                first_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(100),
            },
            ..RegistrySettings::default()
        },
        Limits::default(),
    )
}

fn fetch(ctx: &FetchContext, resolved: &ResolvedPackage, dest: &Path) -> Result<(), FetchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(outpost_fetch::fetch(resolved, dest, ctx))
        .map(|_| ())
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Phase, u64, Option<u64>)>>);

impl Progress for Recorder {
    fn report(&self, phase: Phase, bytes_done: u64, bytes_total: Option<u64>) {
        self.0
            .lock()
            .unwrap()
            .push((phase, bytes_done, bytes_total));
    }
}

#[test]
fn a_tarball_is_streamed_verified_and_unpacked() {
    let s = Served::new();
    let server = FileServer::start(s.www());
    let recorder = Arc::new(Recorder::default());
    let ctx = ctx().with_progress(recorder.clone());
    let dest = s.dest("d");
    fetch(
        &ctx,
        &entry(&server.url("pkg.tar.zst"), &s.sha256, s.size),
        &dest,
    )
    .unwrap();
    assert!(fs_err::read(dest.join("bin/data")).unwrap() == s.data);
    let reports = recorder.0.lock().unwrap().clone();
    assert!(
        reports
            .iter()
            .all(|r| r.0 == Phase::Download && r.2 == Some(s.size)),
        "{reports:?}"
    );
    assert_eq!(reports.last().unwrap().1, s.size);
    // Without a size in the catalog the digest alone decides.
    fetch(
        &ctx,
        &entry(&server.url("pkg.tar.zst"), &s.sha256, 0),
        &s.dest("no-size"),
    )
    .unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_wrong_digest_or_size_is_an_integrity_failure() {
    let s = Served::new();
    let server = FileServer::start(s.www());
    let url = server.url("pkg.tar.zst");
    let other = Digest::of(b"other").hex().to_owned();
    let err = fetch(&ctx(), &entry(&url, &other, 0), &s.dest("digest")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Integrity, "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    let err = fetch(&ctx(), &entry(&url, &s.sha256, s.size - 1), &s.dest("size")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Integrity, "{err}");
    assert!(err.to_string().contains("size mismatch"), "{err}");
    // Integrity failures are not retried.
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_missing_file_fails_at_once() {
    let s = Served::new();
    let server = FileServer::start(s.www());
    let url = server.url("nope.tar.gz");
    let err = fetch(&ctx(), &entry(&url, &s.sha256, 0), &s.dest("d")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadFailed, "{err}");
    assert!(err.to_string().contains("not found (HTTP 404)"), "{err}");
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
}

#[test]
fn a_cut_connection_resumes_and_server_errors_are_retried() {
    let s = Served::new();
    let server = FileServer::start(s.www());
    let proxy = FaultProxy::start(
        server.addr(),
        vec![
            Rule::new("/pkg.tar.zst", Fault::Status(503), 1),
            Rule::new("/pkg.tar.zst", Fault::CutBody { after: 1 << 20 }, 1),
        ],
    );
    let url = format!("http://{}/pkg.tar.zst", proxy.host());
    let dest = s.dest("d");
    fetch(&ctx(), &entry(&url, &s.sha256, s.size), &dest).unwrap();
    assert!(fs_err::read(dest.join("bin/data")).unwrap() == s.data);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range, None);
    let from: u64 = seen[2]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a range request: {seen:?}"));
    assert!(from > 0 && from <= 1 << 20, "resumed from {from}");
}
