//! Packages from a real OCI registry (Debian's `docker-registry` on loopback): push a packed
//! layout, then fetch it by tag and by digest through [`outpost_fetch::fetch`], the entry
//! point the daemon uses; refusals (missing tag, wrong digest, wrong platform, another
//! package); integrity (a corrupted layer or manifest); transient failures (5xx, a
//! connection cut in the middle of a blob, resumed with a range request); a mirror; plain
//! HTTP refused unless listed; limits, cancellation and progress.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_fetch::pack::{PackFormat, PackOptions, PackedImage, pack};
use outpost_fetch::{
    ArchiveError, Cancel, Digest, FetchContext, FetchError, FetchedMeta, Limits, Progress,
    RegistrySettings, RetryPolicy,
};
use outpost_testkit::fixtures::{Node, snapshot, write_tree};
use outpost_testkit::{Fault, FaultProxy, Registry, Rule, noise};
use outpost_types::ErrorCode;
use outpost_types::source::OciReference;
use outpost_types::wire::{CatalogEntry, Phase, ResolvedPackage};
use outpost_types::{PackageName, Version};

struct Fixture {
    dir: tempfile::TempDir,
    tree: PathBuf,
    layout: PathBuf,
    packed: PackedImage,
}

impl Fixture {
    /// A package with a script, a data file of `big` random bytes and a symlink, packed for
    /// the host platform (or `platform`).
    fn new(name: &str, version: &str, big: usize, platform: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let data = noise(big, 7);
        let script = format!("#!/bin/sh\necho {name} {version}\n");
        write_tree(
            &tree,
            &[
                ("bin/", b"", 0o755),
                ("bin/app", script.as_bytes(), 0o755),
                ("share/data.bin", &data, 0o644),
                ("current -> bin/app", b"", 0),
            ],
        );
        let opts = PackOptions {
            format: PackFormat::Zstd,
            platform: match platform {
                Some((os, arch)) => Some((os.into(), arch.into())),
                None => PackOptions::host(PackFormat::Zstd).platform,
            },
        };
        let layout = dir.path().join("layout");
        let packed = pack(
            &tree,
            &PackageName::new(name).unwrap(),
            &Version::new(version).unwrap(),
            &opts,
            &layout,
        )
        .unwrap();
        Self {
            dir,
            tree,
            layout,
            packed,
        }
    }

    fn dest(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        fs_err::create_dir(&d).unwrap();
        d
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
        ..RegistrySettings::default()
    }
}

fn reference(s: &str) -> OciReference {
    OciReference::parse(s).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn push(settings: &RegistrySettings, fx: &Fixture, target: &str) -> outpost_fetch::PushedImage {
    rt().block_on(outpost_fetch::push_layout(
        settings,
        &fx.layout,
        &reference(target),
        &Cancel::new(),
    ))
    .unwrap()
}

fn entry(name: &str, version: &str, url: &str) -> ResolvedPackage {
    CatalogEntry {
        package: name.into(),
        version: version.into(),
        url: url.into(),
        sha256: String::new(),
        size: 0,
        platform: String::new(),
        arch: String::new(),
        health: None,
    }
    .resolve()
    .unwrap()
}

fn fetch(
    ctx: &FetchContext,
    resolved: &ResolvedPackage,
    dest: &Path,
) -> Result<FetchedMeta, FetchError> {
    rt().block_on(outpost_fetch::fetch(resolved, dest, ctx))
}

fn ctx(settings: RegistrySettings) -> FetchContext {
    FetchContext::new(settings, Limits::default())
}

/// The tree a package must unpack to.
fn assert_same_tree(fx: &Fixture, dest: &Path) {
    let want = snapshot(&fx.tree);
    let got = snapshot(dest);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        match (v, &got[k]) {
            (Node::File { data: a, .. }, Node::File { data: b, .. }) => {
                assert!(a == b, "{k} differs")
            }
            (a, b) => assert_eq!(a, b, "{k}"),
        }
    }
}

#[test]
fn push_then_fetch_by_tag_by_index_digest_and_by_manifest_digest() {
    let reg = Registry::start();
    let host = reg.host();
    let s = settings(&[&host]);
    let fx = Fixture::new("agent", "7.50.0", 3 << 20, None);
    let pushed = push(&s, &fx, &format!("{host}/pkgs/agent:7.50.0"));
    assert_eq!(pushed.index_digest, fx.packed.index_digest);
    assert_eq!(pushed.manifests, vec![fx.packed.manifest.digest.clone()]);
    assert_eq!((pushed.blobs_pushed, pushed.blobs_present), (2, 0));

    let ctx = ctx(s.clone());
    let by_tag = entry(
        "agent",
        "7.50.0",
        &format!("oci://{host}/pkgs/agent:7.50.0"),
    );
    let dest = fx.dest("by-tag");
    let meta = fetch(&ctx, &by_tag, &dest).unwrap();
    assert_same_tree(&fx, &dest);
    assert_eq!(meta.index_digest.as_ref(), Some(&fx.packed.index_digest));
    assert_eq!(
        meta.manifest_digest.as_ref(),
        Some(&fx.packed.manifest.digest)
    );
    assert_eq!(meta.size, Some(fx.packed.unpacked_size));
    assert_eq!(meta.stats.source_bytes, fx.packed.layer.size);

    let by_index = entry(
        "agent",
        "7.50.0",
        &format!("oci://{host}/pkgs/agent@{}", fx.packed.index_digest),
    );
    let dest = fx.dest("by-index-digest");
    let meta = fetch(&ctx, &by_index, &dest).unwrap();
    assert_same_tree(&fx, &dest);
    assert_eq!(meta.index_digest.as_ref(), Some(&fx.packed.index_digest));

    let by_manifest = entry(
        "agent",
        "7.50.0",
        &format!("oci://{host}/pkgs/agent@{}", fx.packed.manifest.digest),
    );
    let dest = fx.dest("by-manifest-digest");
    let meta = fetch(&ctx, &by_manifest, &dest).unwrap();
    assert_same_tree(&fx, &dest);
    assert_eq!(
        meta.index_digest, None,
        "the reference named the manifest itself"
    );

    // Pushing again uploads nothing new.
    let again = push(&s, &fx, &format!("{host}/pkgs/agent:latest"));
    assert_eq!((again.blobs_pushed, again.blobs_present), (0, 2));
}

/// Asserts the error's API code and that its message holds every fragment.
#[track_caller]
fn assert_error(err: &FetchError, code: ErrorCode, fragments: &[&str]) {
    let msg = err.to_string();
    assert_eq!(err.code(), code, "{msg}");
    for f in fragments {
        assert!(msg.contains(f), "{msg:?} should contain {f:?}");
    }
}

/// A registry holding `agent` `1.0.0` (a 2 MiB layer), pushed with its tag.
struct Pushed {
    reg: Registry,
    fx: Fixture,
}

fn pushed_agent() -> Pushed {
    let reg = Registry::start();
    let fx = Fixture::new("agent", "1.0.0", 2 << 20, None);
    push(
        &settings(&[&reg.host()]),
        &fx,
        &format!("{}/agent:1.0.0", reg.host()),
    );
    Pushed { reg, fx }
}

#[test]
fn a_missing_tag_or_repository_is_not_found_at_once() {
    let p = pushed_agent();
    let host = p.reg.host();
    let ctx = ctx(settings(&[&host]));
    for url in [
        format!("oci://{host}/agent:9.9.9"),
        format!("oci://{host}/no-such-repo:1.0.0"),
    ] {
        let err = fetch(
            &ctx,
            &entry("agent", "1.0.0", &url),
            &p.fx.dest(&Digest::of(url.as_bytes()).hex()[..8]),
        )
        .unwrap_err();
        assert_error(
            &err,
            ErrorCode::DownloadFailed,
            &[&url, "not found (HTTP 404)", "UNKNOWN"],
        );
    }
}

#[test]
fn a_digest_the_registry_does_not_have_is_not_found() {
    let p = pushed_agent();
    let host = p.reg.host();
    let other = Digest::of(b"something else");
    let url = format!("oci://{host}/agent@{other}");
    let err = fetch(
        &ctx(settings(&[&host])),
        &entry("agent", "1.0.0", &url),
        &p.fx.dest("d"),
    )
    .unwrap_err();
    assert_error(
        &err,
        ErrorCode::DownloadFailed,
        &[&url, "not found (HTTP 404)", "MANIFEST_UNKNOWN"],
    );
}

#[test]
fn a_registry_answering_other_content_for_a_pinned_digest_is_an_integrity_failure() {
    let p = pushed_agent();
    // The proxy corrupts one byte of the index it serves: its digest no longer matches the
    // reference.
    let proxy = FaultProxy::start(
        p.reg.addr(),
        vec![Rule::new(
            format!("/manifests/{}", p.fx.packed.index_digest),
            Fault::FlipBodyByte { at: 40 },
            10,
        )],
    );
    let host = proxy.host();
    let url = format!("oci://{host}/agent@{}", p.fx.packed.index_digest);
    let dest = p.fx.dest("d");
    let err = fetch(
        &ctx(settings(&[&host])),
        &entry("agent", "1.0.0", &url),
        &dest,
    )
    .unwrap_err();
    assert_error(
        &err,
        ErrorCode::Integrity,
        &["digest", &p.fx.packed.index_digest.to_string()],
    );
    assert_eq!(
        fs_err::read_dir(&dest).unwrap().count(),
        0,
        "nothing was unpacked"
    );
}

#[test]
fn a_corrupted_layer_is_an_integrity_failure() {
    let p = pushed_agent();
    let layer = p.fx.packed.layer.digest.to_string();
    let proxy = FaultProxy::start(
        p.reg.addr(),
        vec![Rule::new(
            format!("/blobs/{layer}"),
            Fault::FlipBodyByte { at: 1 << 20 },
            10,
        )],
    );
    let host = proxy.host();
    let url = format!("oci://{host}/agent:1.0.0");
    let err = fetch(
        &ctx(settings(&[&host])),
        &entry("agent", "1.0.0", &url),
        &p.fx.dest("d"),
    )
    .unwrap_err();
    // Flipping a byte in the middle of a zstd frame is caught by the digest (the decoder may
    // or may not notice first; the digest mismatch is what is reported either way).
    assert_error(&err, ErrorCode::Integrity, &["digest mismatch", &layer]);
    assert_eq!(proxy.injected(), 1, "an integrity failure is not retried");
}

#[test]
fn an_index_without_the_host_platform_is_refused_before_any_download() {
    let reg = Registry::start();
    let host = reg.host();
    let s = settings(&[&host]);
    let fx = Fixture::new(
        "agent",
        "2.0.0",
        1 << 20,
        Some(("linux", "s390x-not-this-host")),
    );
    push(&s, &fx, &format!("{host}/agent:2.0.0"));
    let proxy = FaultProxy::start(reg.addr(), vec![]);
    let url = format!("oci://{}/agent:2.0.0", proxy.host());
    let err = fetch(
        &ctx(settings(&[&proxy.host()])),
        &entry("agent", "2.0.0", &url),
        &fx.dest("d"),
    )
    .unwrap_err();
    assert_error(
        &err,
        ErrorCode::DownloadFailed,
        &[
            "no matching image found in the index",
            outpost_types::platform::host_arch(),
        ],
    );
    assert!(
        proxy.requests().iter().all(|r| !r.path.contains("/blobs/")),
        "no blob was fetched: {:?}",
        proxy.requests()
    );
}

#[test]
fn an_image_of_another_package_or_version_is_refused_before_any_download() {
    let p = pushed_agent();
    let proxy = FaultProxy::start(p.reg.addr(), vec![]);
    let host = proxy.host();
    let ctx = ctx(settings(&[&host]));
    let url = format!("oci://{host}/agent:1.0.0");
    for (name, version) in [("agent", "1.0.1"), ("other", "1.0.0")] {
        let err = fetch(
            &ctx,
            &entry(name, version, &url),
            &p.fx.dest(&format!("{name}-{version}")),
        )
        .unwrap_err();
        assert_error(
            &err,
            ErrorCode::DownloadFailed,
            &[
                "the image is agent 1.0.0",
                &format!("but {name} {version} was asked for"),
            ],
        );
    }
    assert!(proxy.requests().iter().all(|r| !r.path.contains("/blobs/")));
}

#[test]
fn a_plain_http_registry_not_listed_as_insecure_is_refused_with_a_hint() {
    let reg = Registry::start();
    let host = reg.host();
    let url = format!("oci://{host}/agent:1.0.0");
    let dir = tempfile::tempdir().unwrap();
    // Loopback is not special: only the insecure list allows plain HTTP.
    let err = fetch(
        &ctx(settings(&[])),
        &entry("agent", "1.0.0", &url),
        dir.path(),
    )
    .unwrap_err();
    assert_error(
        &err,
        ErrorCode::DownloadFailed,
        &[
            &url,
            "TLS",
            &format!("list \"{host}\" in registry.insecure_hosts"),
        ],
    );
}

#[test]
fn transient_server_errors_are_retried() {
    let p = pushed_agent();
    let layer = p.fx.packed.layer.digest.to_string();
    let proxy = FaultProxy::start(
        p.reg.addr(),
        vec![
            Rule::new("/manifests/1.0.0", Fault::Status(503), 1),
            Rule::new(format!("/blobs/{layer}"), Fault::Status(502), 2),
        ],
    );
    let host = proxy.host();
    let url = format!("oci://{host}/agent:1.0.0");
    let dest = p.fx.dest("d");
    fetch(
        &ctx(settings(&[&host])),
        &entry("agent", "1.0.0", &url),
        &dest,
    )
    .unwrap();
    assert_same_tree(&p.fx, &dest);
    assert_eq!(proxy.injected(), 3);
    let count = |needle: &str| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(needle))
            .count()
    };
    assert_eq!(count("/manifests/1.0.0"), 2);
    assert_eq!(count(&format!("/blobs/{layer}")), 3);
}

#[test]
fn a_server_failing_every_attempt_fails_after_three_tries() {
    let p = pushed_agent();
    let proxy = FaultProxy::start(
        p.reg.addr(),
        vec![Rule::new("/manifests/1.0.0", Fault::Status(503), 100)],
    );
    let host = proxy.host();
    let url = format!("oci://{host}/agent:1.0.0");
    let err = fetch(
        &ctx(settings(&[&host])),
        &entry("agent", "1.0.0", &url),
        &p.fx.dest("d"),
    )
    .unwrap_err();
    assert_error(
        &err,
        ErrorCode::DownloadFailed,
        &[&url, "gave up after 3 attempts", "HTTP 503"],
    );
    assert_eq!(proxy.injected(), 3);
}

#[test]
fn a_connection_cut_in_the_middle_of_a_blob_resumes_with_a_range_request() {
    let reg = Registry::start();
    let s = settings(&[&reg.host()]);
    let fx = Fixture::new("agent", "3.0.0", 6 << 20, None);
    push(&s, &fx, &format!("{}/agent:3.0.0", reg.host()));
    let layer = fx.packed.layer.digest.to_string();
    let cut_at: u64 = 2 << 20;
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![Rule::new(
            format!("/blobs/{layer}"),
            Fault::CutBody { after: cut_at },
            1,
        )],
    );
    let host = proxy.host();
    let url = format!("oci://{host}/agent:3.0.0");
    let dest = fx.dest("d");
    let meta = fetch(
        &ctx(settings(&[&host])),
        &entry("agent", "3.0.0", &url),
        &dest,
    )
    .unwrap();
    assert_same_tree(&fx, &dest);
    assert_eq!(
        meta.stats.source_bytes, fx.packed.layer.size,
        "each byte unpacked once"
    );
    let blob_gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&layer))
        .collect();
    assert_eq!(blob_gets.len(), 2, "{blob_gets:?}");
    let resumed_from: u64 = blob_gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second request is not a range request: {blob_gets:?}"));
    // The client may not have passed on the last bytes before the cut, never more.
    assert!(
        resumed_from > 0 && resumed_from <= cut_at,
        "resumed from {resumed_from}"
    );
}

#[test]
fn a_mirror_replaces_the_registry_host() {
    let p = pushed_agent();
    let mut s = settings(&[&p.reg.host()]);
    s.mirror = Some(p.reg.host());
    // Nothing answers at this name: only the mirror can serve the package.
    let url = "oci://registry.invalid:5000/agent:1.0.0";
    let dest = p.fx.dest("d");
    fetch(&ctx(s), &entry("agent", "1.0.0", url), &dest).unwrap();
    assert_same_tree(&p.fx, &dest);
}

#[test]
fn the_unpack_limits_apply_to_registry_packages() {
    let p = pushed_agent();
    let host = p.reg.host();
    let url = format!("oci://{host}/agent:1.0.0");
    let limits = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    let ctx = FetchContext::new(settings(&[&host]), limits);
    let err = fetch(&ctx, &entry("agent", "1.0.0", &url), &p.fx.dest("d")).unwrap_err();
    assert_error(
        &err,
        ErrorCode::Integrity,
        &["share/data.bin", "total unpacked size"],
    );
}

#[test]
fn a_cancelled_fetch_stops() {
    let p = pushed_agent();
    let host = p.reg.host();
    let url = format!("oci://{host}/agent:1.0.0");
    let cancel = Cancel::new();
    cancel.cancel();
    let ctx = ctx(settings(&[&host])).with_cancel(cancel);
    let err = fetch(&ctx, &entry("agent", "1.0.0", &url), &p.fx.dest("d")).unwrap_err();
    assert!(
        matches!(err, FetchError::Archive(ArchiveError::Cancelled)),
        "{err}"
    );
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
fn progress_counts_downloaded_bytes_and_required_space_is_known_before() {
    let p = pushed_agent();
    let host = p.reg.host();
    let resolved = entry("agent", "1.0.0", &format!("oci://{host}/agent:1.0.0"));
    let recorder = Arc::new(Recorder::default());
    let ctx = ctx(settings(&[&host])).with_progress(recorder.clone());
    let rt = rt();
    let prepared = rt
        .block_on(outpost_fetch::prepare(&resolved, &ctx))
        .unwrap();
    assert_eq!(prepared.required_bytes(), Some(p.fx.packed.unpacked_size));
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "nothing downloaded yet"
    );
    assert_eq!(
        rt.block_on(outpost_fetch::required_space(&resolved, &ctx))
            .unwrap(),
        Some(p.fx.packed.unpacked_size)
    );
    rt.block_on(prepared.fetch(&p.fx.dest("d"), &ctx)).unwrap();
    let reports = recorder.0.lock().unwrap().clone();
    let total = p.fx.packed.layer.size;
    assert!(!reports.is_empty());
    assert!(
        reports
            .iter()
            .all(|(phase, _, t)| *phase == Phase::Download && *t == Some(total)),
        "{reports:?}"
    );
    assert!(
        reports.windows(2).all(|w| w[0].1 <= w[1].1),
        "monotonic: {reports:?}"
    );
    assert_eq!(reports.last().unwrap().1, total);
}

#[test]
fn a_package_with_several_layers_unpacks_them_in_order_and_refuses_duplicates() {
    // Two layouts packed separately give two layers; a manifest listing both is pushed by
    // hand (raw layout surgery), then fetched.
    let reg = Registry::start();
    let host = reg.host();
    let s = settings(&[&host]);
    let a = Fixture::new("multi", "1.0.0", 1 << 20, None);
    let dir = tempfile::tempdir().unwrap();
    let tree_b = dir.path().join("b");
    write_tree(&tree_b, &[("extra/readme.txt", b"second layer\n", 0o644)]);
    let b_layout = dir.path().join("b-layout");
    let b = pack(
        &tree_b,
        &PackageName::new("multi").unwrap(),
        &Version::new("1.0.0").unwrap(),
        &PackOptions::host(PackFormat::Gzip),
        &b_layout,
    )
    .unwrap();
    let layout = two_layer_layout(&a, &b_layout, &b, dir.path(), "two");
    let target = format!("{host}/multi:1.0.0");
    rt().block_on(outpost_fetch::push_layout(
        &s,
        &layout,
        &reference(&target),
        &Cancel::new(),
    ))
    .unwrap();
    let dest = a.dest("d");
    fetch(
        &ctx(s.clone()),
        &entry("multi", "1.0.0", &format!("oci://{target}")),
        &dest,
    )
    .unwrap();
    let got = snapshot(&dest);
    assert!(
        got.contains_key("share/data.bin") && got.contains_key("extra/readme.txt"),
        "{:?}",
        got.keys()
    );

    // The same layer twice: every file appears in two layers.
    let layout = two_layer_layout(&a, &a.layout, &a.packed, dir.path(), "dup");
    let target = format!("{host}/multi:dup");
    rt().block_on(outpost_fetch::push_layout(
        &s,
        &layout,
        &reference(&target),
        &Cancel::new(),
    ))
    .unwrap();
    let err = fetch(
        &ctx(s),
        &entry("multi", "1.0.0", &format!("oci://{target}")),
        &a.dest("dup"),
    )
    .unwrap_err();
    assert_error(&err, ErrorCode::Integrity, &["duplicate entry"]);
}

/// A layout whose one manifest has `a`'s layer then `b`'s.
fn two_layer_layout(
    a: &Fixture,
    b_layout: &Path,
    b: &PackedImage,
    base: &Path,
    name: &str,
) -> PathBuf {
    use outpost_fetch::oci::{ImageIndex, ImageManifest};
    let out = base.join(name);
    let blobs = out.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).unwrap();
    for (layout, d) in [
        (&a.layout, &a.packed.layer.digest),
        (&b_layout.to_path_buf(), &b.layer.digest),
    ] {
        fs_err::copy(d.blob_path(layout), d.blob_path(&out)).unwrap();
    }
    let mut manifest: ImageManifest = serde_json::from_slice(
        &fs_err::read(a.packed.manifest.digest.blob_path(&a.layout)).unwrap(),
    )
    .unwrap();
    manifest.layers.push(b.layer.clone());
    // The config lists the uncompressed digest of both layers, in order.
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs_err::read(a.packed.config.digest.blob_path(&a.layout)).unwrap())
            .unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(b.diff_id.to_string().into());
    let config = serde_json::to_vec(&config).unwrap();
    manifest.config.digest = Digest::of(&config);
    manifest.config.size = config.len() as u64;
    fs_err::write(manifest.config.digest.blob_path(&out), &config).unwrap();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = Digest::of(&bytes);
    fs_err::write(digest.blob_path(&out), &bytes).unwrap();
    let mut index: ImageIndex =
        serde_json::from_slice(&fs_err::read(a.layout.join("index.json")).unwrap()).unwrap();
    index.manifests[0].digest = digest;
    index.manifests[0].size = bytes.len() as u64;
    fs_err::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs_err::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    out
}

#[test]
fn push_refuses_targets_without_a_tag_and_broken_layouts() {
    let reg = Registry::start();
    let host = reg.host();
    let s = settings(&[&host]);
    let fx = Fixture::new("agent", "1.0.0", 1024, None);
    let rt = rt();
    let digest_target = reference(&format!("{host}/agent@{}", fx.packed.index_digest));
    let err: FetchError = rt
        .block_on(outpost_fetch::push_layout(
            &s,
            &fx.layout,
            &digest_target,
            &Cancel::new(),
        ))
        .unwrap_err()
        .into();
    assert_error(&err, ErrorCode::BadRequest, &["a tag is required"]);
    // A layout missing its layer blob.
    fs_err::remove_file(fx.packed.layer.digest.blob_path(&fx.layout)).unwrap();
    let err: FetchError = rt
        .block_on(outpost_fetch::push_layout(
            &s,
            &fx.layout,
            &reference(&format!("{host}/agent:1")),
            &Cancel::new(),
        ))
        .unwrap_err()
        .into();
    assert_error(
        &err,
        ErrorCode::DownloadFailed,
        &["blob", &fx.packed.layer.digest.to_string(), "missing"],
    );
}
