//! Hostile servers and images: a registry or an HTTP server that sends an endless body, a
//! body larger than the manifest or catalog says, or a trickle of bytes (the download fails
//! with `download_failed`, size exceeded or stalled under `registry.stall_timeout`), and
//! image integrity end to end (the config blob is verified against the manifest, each layer's
//! uncompressed digest against the config's `rootfs.diff_ids`; a corrupted or mismatched
//! config fails with `integrity`), from a real `docker-registry` and from a layout on disk.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outpost_fetch::oci::{ImageIndex, ImageManifest};
use outpost_fetch::pack::{PackFormat, PackOptions, PackedImage, pack};
use outpost_fetch::{
    Cancel, Digest, FetchContext, FetchError, Limits, RegistrySettings, RetryPolicy,
};
use outpost_testkit::fixtures::write_tree;
use outpost_testkit::{Fault, FaultProxy, FileServer, Registry, Rule, noise};
use outpost_types::ErrorCode;
use outpost_types::source::OciReference;
use outpost_types::wire::{CatalogEntry, ResolvedPackage};
use outpost_types::{PackageName, Version};

/// The stall timeout of these tests.
const STALL: Duration = Duration::from_millis(300);

/// A package (a script and 1 MiB of random data) packed for the host platform: its config
/// lists the layer's `diff_id`.
struct Fixture {
    dir: tempfile::TempDir,
    layout: PathBuf,
    packed: PackedImage,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let data = noise(1 << 20, 11);
        write_tree(
            &tree,
            &[
                ("bin/", b"", 0o755),
                ("bin/app", b"#!/bin/sh\necho hi\n", 0o755),
                ("share/data.bin", &data, 0o644),
            ],
        );
        let layout = dir.path().join("layout");
        let packed = pack(
            &tree,
            &PackageName::new("agent").unwrap(),
            &Version::new("1.0.0").unwrap(),
            &PackOptions::host(PackFormat::Zstd),
            &layout,
        )
        .unwrap();
        Self {
            dir,
            layout,
            packed,
        }
    }

    fn dest(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(format!("dest-{name}"));
        fs_err::create_dir(&d).unwrap();
        d
    }

    /// A copy of the layout whose config is `edit`ed (and re-hashed, so the manifest and
    /// index name the edited config by its right digest).
    fn with_config(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let out = self.dir.path().join(name);
        let blobs = out.join("blobs/sha256");
        fs_err::create_dir_all(&blobs).unwrap();
        fs_err::copy(self.layout.join("oci-layout"), out.join("oci-layout")).unwrap();
        let layer = &self.packed.layer.digest;
        fs_err::copy(layer.blob_path(&self.layout), layer.blob_path(&out)).unwrap();
        let mut config: serde_json::Value = serde_json::from_slice(
            &fs_err::read(self.packed.config.digest.blob_path(&self.layout)).unwrap(),
        )
        .unwrap();
        edit(&mut config);
        let config = serde_json::to_vec(&config).unwrap();
        let mut manifest: ImageManifest = serde_json::from_slice(
            &fs_err::read(self.packed.manifest.digest.blob_path(&self.layout)).unwrap(),
        )
        .unwrap();
        manifest.config.digest = Digest::of(&config);
        manifest.config.size = config.len() as u64;
        fs_err::write(manifest.config.digest.blob_path(&out), &config).unwrap();
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = Digest::of(&manifest);
        fs_err::write(manifest_digest.blob_path(&out), &manifest).unwrap();
        let mut index: ImageIndex =
            serde_json::from_slice(&fs_err::read(self.layout.join("index.json")).unwrap()).unwrap();
        index.manifests[0].digest = manifest_digest;
        index.manifests[0].size = manifest.len() as u64;
        fs_err::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        out
    }
}

fn settings(insecure: &[&str]) -> RegistrySettings {
    RegistrySettings {
        insecure_hosts: insecure.iter().map(|h| h.to_string()).collect(),
        retry: RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        stall_timeout: STALL,
        ..RegistrySettings::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn entry(url: &str, sha256: &str, size: u64) -> ResolvedPackage {
    CatalogEntry {
        package: "agent".into(),
        version: "1.0.0".into(),
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

fn fetch(s: RegistrySettings, resolved: &ResolvedPackage, dest: &Path) -> Result<(), FetchError> {
    let ctx = FetchContext::new(s, Limits::default());
    rt().block_on(outpost_fetch::fetch(resolved, dest, &ctx))
        .map(|_| ())
}

fn assert_error(err: &FetchError, code: ErrorCode, fragments: &[&str]) {
    let msg = err.to_string();
    assert_eq!(err.code(), code, "{msg}");
    for f in fragments {
        assert!(msg.contains(f), "{msg:?} should contain {f:?}");
    }
}

/// A registry holding `layout` as `agent:1.0.0`.
fn pushed(layout: &Path) -> Registry {
    let reg = Registry::start();
    let target = format!("{}/agent:1.0.0", reg.host());
    rt().block_on(outpost_fetch::push_layout(
        &settings(&[&reg.host()]),
        layout,
        &OciReference::parse(&target).unwrap(),
        &Cancel::new(),
    ))
    .unwrap();
    reg
}

/// Fetches `agent:1.0.0` through a proxy that applies `fault` to the blob `digest`.
fn fetch_through(
    reg: &Registry,
    digest: &Digest,
    fault: Fault,
    dest: &Path,
) -> (FetchError, FaultProxy) {
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![Rule::new(format!("/blobs/{digest}"), fault, 100)],
    );
    let host = proxy.host();
    let err = fetch(
        settings(&[&host]),
        &entry(&format!("oci://{host}/agent:1.0.0"), "", 0),
        dest,
    )
    .unwrap_err();
    (err, proxy)
}

#[test]
fn an_endless_layer_body_is_cut_off_at_its_size() {
    let fx = Fixture::new();
    let reg = pushed(&fx.layout);
    let layer = fx.packed.layer.digest.clone();
    let started = Instant::now();
    let (err, proxy) = fetch_through(&reg, &layer, Fault::PadBody { extra: None }, &fx.dest("d"));
    assert_error(
        &err,
        ErrorCode::DownloadFailed,
        &["size exceeded", &layer.to_string()],
    );
    assert_eq!(proxy.injected(), 1, "a body past its size is not retried");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn an_oversized_layer_or_config_body_is_refused() {
    let fx = Fixture::new();
    let reg = pushed(&fx.layout);
    for (what, digest) in [
        ("layer", &fx.packed.layer.digest),
        ("config", &fx.packed.config.digest),
    ] {
        let (err, proxy) = fetch_through(
            &reg,
            digest,
            Fault::PadBody {
                extra: Some(1 << 20),
            },
            &fx.dest(what),
        );
        assert_error(
            &err,
            ErrorCode::DownloadFailed,
            &["size exceeded", &digest.to_string()],
        );
        assert_eq!(proxy.injected(), 1, "{what}: not retried");
    }
}

#[test]
fn a_trickling_layer_or_config_stalls_and_fails() {
    let fx = Fixture::new();
    let reg = pushed(&fx.layout);
    for (what, digest) in [
        ("layer", &fx.packed.layer.digest),
        ("config", &fx.packed.config.digest),
    ] {
        let started = Instant::now();
        let (err, proxy) = fetch_through(
            &reg,
            digest,
            Fault::Trickle { every_ms: 20 },
            &fx.dest(what),
        );
        assert_error(
            &err,
            ErrorCode::DownloadFailed,
            &[
                "stalled",
                "registry.stall_timeout",
                "gave up after 3 attempts",
            ],
        );
        assert_eq!(proxy.injected(), 3, "{what}: each attempt stalls");
        // Three stall windows and two short pauses, with room for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
    }
}

#[test]
fn a_corrupted_config_is_an_integrity_failure() {
    let fx = Fixture::new();
    let reg = pushed(&fx.layout);
    let config = fx.packed.config.digest.clone();
    let (err, proxy) = fetch_through(&reg, &config, Fault::FlipBodyByte { at: 3 }, &fx.dest("d"));
    assert_error(
        &err,
        ErrorCode::Integrity,
        &["digest mismatch", &config.to_string()],
    );
    assert_eq!(proxy.injected(), 1, "an integrity failure is not retried");
    let layer = fx.packed.layer.digest.to_string();
    assert!(
        !proxy.requests().iter().any(|r| r.path.contains(&layer)),
        "no layer is downloaded before the config is verified"
    );
}

/// The config's `diff_ids` name another uncompressed layer: refused from the registry and
/// from the layout on disk alike, with nothing left in the destination but a partial tree.
#[test]
fn a_config_whose_diff_ids_do_not_match_the_layer_is_refused() {
    let fx = Fixture::new();
    let other = Digest::of(b"another layer");
    let wrong = fx.with_config("wrong-diff", |c| {
        c["rootfs"]["diff_ids"] = serde_json::json!([other.to_string()]);
    });
    let reg = pushed(&wrong);
    let host = reg.host();
    let err = fetch(
        settings(&[&host]),
        &entry(&format!("oci://{host}/agent:1.0.0"), "", 0),
        &fx.dest("reg"),
    )
    .unwrap_err();
    assert_error(
        &err,
        ErrorCode::Integrity,
        &["uncompressed", "diff_ids", &other.to_string()],
    );
    let url = format!("file://{}", wrong.display());
    let err = fetch(settings(&[]), &entry(&url, "", 0), &fx.dest("file")).unwrap_err();
    assert_error(
        &err,
        ErrorCode::Integrity,
        &["uncompressed", "diff_ids", &other.to_string()],
    );

    // A config that lists no layer, or two for one.
    for (name, diff_ids) in [
        ("none", serde_json::json!([])),
        (
            "two",
            serde_json::json!([fx.packed.diff_id.to_string(), other.to_string()]),
        ),
    ] {
        let layout = fx.with_config(name, |c| c["rootfs"]["diff_ids"] = diff_ids);
        let url = format!("file://{}", layout.display());
        let err = fetch(settings(&[]), &entry(&url, "", 0), &fx.dest(name)).unwrap_err();
        assert_error(&err, ErrorCode::Integrity, &["rootfs.diff_ids", "layers"]);
    }
    let layout = fx.with_config("no-rootfs", |c| {
        c.as_object_mut().unwrap().remove("rootfs");
    });
    let url = format!("file://{}", layout.display());
    let err = fetch(settings(&[]), &entry(&url, "", 0), &fx.dest("no-rootfs")).unwrap_err();
    assert_error(&err, ErrorCode::Integrity, &["no rootfs"]);

    // The untouched image passes both ways.
    let url = format!("file://{}", fx.layout.display());
    fetch(settings(&[]), &entry(&url, "", 0), &fx.dest("ok")).unwrap();
}

#[test]
fn a_layout_with_a_corrupted_config_is_refused() {
    let fx = Fixture::new();
    let config = fx.packed.config.digest.blob_path(&fx.layout);
    let mut bytes = fs_err::read(&config).unwrap();
    bytes[3] ^= 0xff;
    fs_err::write(&config, &bytes).unwrap();
    let url = format!("file://{}", fx.layout.display());
    let err = fetch(settings(&[]), &entry(&url, "", 0), &fx.dest("d")).unwrap_err();
    assert_error(
        &err,
        ErrorCode::Integrity,
        &["digest mismatch", &fx.packed.config.digest.to_string()],
    );
}

/// An HTTP tarball server: an endless body, an oversized one and a trickle fail with
/// `download_failed`.
#[test]
fn http_tarballs_endless_oversized_or_trickling_fail() {
    let fx = Fixture::new();
    let www = fx.dir.path().join("www");
    fs_err::create_dir(&www).unwrap();
    fs_err::copy(
        fx.packed.layer.digest.blob_path(&fx.layout),
        www.join("pkg.tar.zst"),
    )
    .unwrap();
    let server = FileServer::start(&www);
    let (sha, size) = (
        fx.packed.layer.digest.hex().to_owned(),
        fx.packed.layer.size,
    );
    for (name, fault, want) in [
        ("endless", Fault::PadBody { extra: None }, "size exceeded"),
        (
            "oversized",
            Fault::PadBody { extra: Some(4096) },
            "size exceeded",
        ),
        ("trickle", Fault::Trickle { every_ms: 20 }, "stalled"),
    ] {
        let proxy = FaultProxy::start(server.addr(), vec![Rule::new("/pkg", fault, 100)]);
        let url = format!("http://{}/pkg.tar.zst", proxy.host());
        let started = Instant::now();
        let err = fetch(settings(&[]), &entry(&url, &sha, size), &fx.dest(name)).unwrap_err();
        assert_error(&err, ErrorCode::DownloadFailed, &[want, "pkg.tar.zst"]);
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
}
