//! OCI image layouts: platform selection, annotations, verification of every blob, layers.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_archive::{ArchiveError, Cancel, Digest, Limits, NoProgress, UnsafeReason};
use outpost_oci::oci::{Descriptor, ImageIndex, ImageManifest, Platform, annotation, media_type};
use outpost_oci::pack::{PackFormat, PackOptions, pack};
use outpost_oci::{OciError, layout};
use outpost_testkit::fixtures::{Node, Sandbox, TarBuilder, snapshot, write_tree};
use outpost_types::{ErrorCode, PackageName, Version};

fn name() -> PackageName {
    PackageName::new("tool").unwrap()
}

fn version() -> Version {
    Version::new("1.2.3").unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    layout: PathBuf,
}

fn packed(opts: &PackOptions) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir(&src).unwrap();
    write_tree(
        &src,
        &[
            ("bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
            ("etc/tool.conf", b"level: info\n", 0o644),
            ("lib/", b"", 0o755),
            ("lib/current -> ../etc", b"", 0),
        ],
    );
    let layout = tmp.path().join("layout");
    pack(&src, &name(), &version(), opts, &layout).unwrap();
    Fixture { _tmp: tmp, layout }
}

fn unpack_into(layout: &Path, sb: &Sandbox) -> Result<outpost_oci::oci::PackageMeta, OciError> {
    layout::unpack(
        layout,
        &name(),
        &version(),
        &sb.dest,
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
}

fn read_index(dir: &Path) -> ImageIndex {
    serde_json::from_slice(&fs_err::read(dir.join("index.json")).unwrap()).unwrap()
}

fn write_index(dir: &Path, index: &ImageIndex) {
    fs_err::write(dir.join("index.json"), serde_json::to_vec(index).unwrap()).unwrap();
}

fn blob(dir: &Path, d: &Digest) -> PathBuf {
    d.blob_path(dir)
}

fn put_blob(dir: &Path, media_type: &str, data: &[u8]) -> Descriptor {
    let digest = Digest::of(data);
    fs_err::write(blob(dir, &digest), data).unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn manifest(dir: &Path) -> (Descriptor, ImageManifest) {
    let d = read_index(dir).manifests[0].clone();
    let m = serde_json::from_slice(&fs_err::read(blob(dir, &d.digest)).unwrap()).unwrap();
    (d, m)
}

/// Replaces the manifest of the index's first entry by `m`, keeping the entry's platform.
/// An edited manifest gets the empty config, which lists no `diff_ids`: these tests are
/// about the layers (the config's checks have their own tests).
fn set_manifest(dir: &Path, m: &ImageManifest) {
    let mut m = m.clone();
    m.config = put_blob(dir, media_type::OCI_EMPTY, b"{}");
    let fresh = put_blob(
        dir,
        media_type::OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    );
    let mut index = read_index(dir);
    index.manifests[0].digest = fresh.digest;
    index.manifests[0].size = fresh.size;
    write_index(dir, &index);
}

fn check_tree(dest: &Path) {
    let tree = snapshot(dest);
    assert_eq!(
        tree["bin/tool"],
        Node::File {
            mode: 0o755,
            data: b"#!/bin/sh\necho tool\n".to_vec()
        }
    );
    assert_eq!(
        tree["lib/current"],
        Node::Symlink {
            target: "../etc".into()
        }
    );
    assert_eq!(
        fs_err::read(dest.join("lib/current/tool.conf")).unwrap(),
        b"level: info\n"
    );
}

#[test]
fn packed_layouts_unpack() {
    for opts in [
        PackOptions::host(PackFormat::Zstd),
        PackOptions::host(PackFormat::Gzip),
        PackOptions::any(PackFormat::Zstd),
    ] {
        let f = packed(&opts);
        let sb = Sandbox::new();
        let meta = unpack_into(&f.layout, &sb).unwrap();
        assert_eq!((meta.name, meta.version), (name(), version()));
        assert_eq!(meta.size, Some(20 + 12), "{opts:?}");
        assert_eq!(
            meta.manifest_digest,
            read_index(&f.layout).manifests[0].digest
        );
        assert_eq!(meta.stats.files, 2);
        check_tree(&sb.dest);
        sb.assert_contained();
    }
}

#[test]
fn read_reports_the_image() {
    let f = packed(&PackOptions::default());
    let image = layout::read(&f.layout).unwrap();
    assert_eq!(image.meta.name, name());
    assert_eq!(image.meta.version, version());
    assert_eq!(image.layers().count(), 1);
    assert_eq!(
        image.descriptor.platform,
        Some(Platform {
            architecture: outpost_types::platform::host_arch().into(),
            os: outpost_types::platform::host_os().into(),
            variant: None
        })
    );
}

#[test]
fn tampered_layer() {
    let f = packed(&PackOptions::default());
    let (_, m) = manifest(&f.layout);
    let path = blob(&f.layout, &m.layers[0].digest);
    let mut data = fs_err::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs_err::write(&path, &data).unwrap();
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    match &err {
        OciError::Archive(ArchiveError::DigestMismatch {
            what,
            expected,
            actual,
        }) => {
            assert_eq!(*expected, m.layers[0].digest);
            assert_eq!(*actual, Digest::of(&data));
            assert!(what.contains(&m.layers[0].digest.to_string()), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), ErrorCode::Integrity);
    sb.assert_contained();
}

#[test]
fn tampered_layer_same_length_appended() {
    let f = packed(&PackOptions::default());
    let (_, m) = manifest(&f.layout);
    let path = blob(&f.layout, &m.layers[0].digest);
    let mut data = fs_err::read(&path).unwrap();
    data.extend_from_slice(b"tail");
    fs_err::write(&path, &data).unwrap();
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(err, OciError::Archive(ArchiveError::SizeMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn tampered_manifest() {
    let f = packed(&PackOptions::default());
    let (d, _) = manifest(&f.layout);
    let path = blob(&f.layout, &d.digest);
    let text = fs_err::read_to_string(&path).unwrap();
    let evil = text.replace("1.2.3", "1.2.4");
    assert_eq!(evil.len(), text.len());
    fs_err::write(&path, &evil).unwrap();
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(&err, OciError::Archive(ArchiveError::DigestMismatch { expected, .. }) if *expected == d.digest),
        "{err:?}"
    );
    assert_eq!(
        fs_err::read_dir(&sb.dest).unwrap().count(),
        0,
        "nothing unpacked"
    );
    let err = layout::read(&f.layout).unwrap_err();
    assert!(
        matches!(err, OciError::Archive(ArchiveError::DigestMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn layer_size_lies() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    m.layers[0].size -= 1;
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(
            err,
            OciError::Archive(ArchiveError::SizeMismatch {
                actual: outpost_archive::SizeSeen::MoreThan(_),
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn missing_blobs() {
    let f = packed(&PackOptions::default());
    let (d, m) = manifest(&f.layout);
    fs_err::remove_file(blob(&f.layout, &m.layers[0].digest)).unwrap();
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(&err, OciError::MissingBlob { digest, .. } if *digest == m.layers[0].digest),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::DownloadFailed);

    fs_err::remove_file(blob(&f.layout, &d.digest)).unwrap();
    let err = layout::read(&f.layout).unwrap_err();
    assert!(
        matches!(&err, OciError::MissingBlob { digest, .. } if *digest == d.digest),
        "{err:?}"
    );
}

#[test]
fn wrong_name_or_version() {
    let f = packed(&PackOptions::default());
    for (n, v) in [("tool", "9.9.9"), ("other", "1.2.3")] {
        let sb = Sandbox::new();
        let err = layout::unpack(
            &f.layout,
            &PackageName::new(n).unwrap(),
            &Version::new(v).unwrap(),
            &sb.dest,
            &Limits::default(),
            &Cancel::new(),
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, OciError::PackageMismatch { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("{n} {v} was asked")),
            "{err}"
        );
        assert_eq!(fs_err::read_dir(&sb.dest).unwrap().count(), 0);
    }
}

#[test]
fn missing_annotations() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    m.annotations.remove(annotation::DATADOG_VERSION);
    m.annotations.remove(annotation::OUTPOST_VERSION);
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(
            err,
            OciError::MissingAnnotation {
                field: "version",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn datadog_keys_and_layer_type() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    m.annotations.retain(|k, _| k.starts_with("com.datadoghq."));
    assert_eq!(m.annotations.len(), 3);
    m.layers[0].media_type = media_type::DATADOG_LAYER.into();
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let meta = unpack_into(&f.layout, &sb).unwrap();
    assert_eq!(meta.size, Some(32));
    check_tree(&sb.dest);

    // And outpost's keys alone.
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    m.annotations.retain(|k, _| k.starts_with("dev.outpost."));
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    unpack_into(&f.layout, &sb).unwrap();
}

fn other_arch() -> &'static str {
    if outpost_types::platform::host_arch() == "s390x" {
        "riscv64"
    } else {
        "s390x"
    }
}

#[test]
fn platform_not_available() {
    let opts = PackOptions {
        format: PackFormat::Zstd,
        platform: Some(("linux".into(), other_arch().into())),
    };
    let f = packed(&opts);
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(matches!(err, OciError::NoMatchingImage { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("no matching image found in the index"),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::DownloadFailed);
}

#[test]
fn nested_index() {
    // An outer index whose first entry is an index for another OS (skipped unopened), then a
    // nested index holding a manifest for another architecture and then the host's.
    let host = packed(&PackOptions::default());
    let dir = &host.layout;
    let (host_desc, _) = manifest(dir);
    let foreign = packed(&PackOptions {
        format: PackFormat::Zstd,
        platform: Some(("linux".into(), other_arch().into())),
    });
    let (foreign_desc, foreign_m) = manifest(&foreign.layout);
    for d in std::iter::once(&foreign_desc)
        .chain(foreign_m.layers.iter())
        .chain([&foreign_m.config])
    {
        fs_err::copy(blob(&foreign.layout, &d.digest), blob(dir, &d.digest)).unwrap();
    }
    let nested = ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![foreign_desc.clone(), host_desc.clone()],
        annotations: BTreeMap::new(),
    };
    let nested_desc = put_blob(
        dir,
        media_type::OCI_INDEX,
        &serde_json::to_vec(&nested).unwrap(),
    );
    let mut windows_only = nested_desc.clone();
    windows_only.digest = Digest::of(b"never opened");
    windows_only.platform = Some(Platform {
        architecture: "amd64".into(),
        os: "windows".into(),
        variant: None,
    });
    write_index(
        dir,
        &ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: vec![windows_only, nested_desc.clone()],
            annotations: BTreeMap::new(),
        },
    );
    let sb = Sandbox::new();
    let meta = unpack_into(dir, &sb).unwrap();
    assert_eq!(meta.manifest_digest, host_desc.digest);
    check_tree(&sb.dest);

    // The nested index is a blob like any other: tampering is caught.
    let mut data = fs_err::read(blob(dir, &nested_desc.digest)).unwrap();
    data.push(b' ');
    fs_err::write(blob(dir, &nested_desc.digest), &data).unwrap();
    let sb = Sandbox::new();
    let err = unpack_into(dir, &sb).unwrap_err();
    assert!(
        matches!(err, OciError::Archive(ArchiveError::SizeMismatch { .. })),
        "{err:?}"
    );
}

fn tar_layer(dir: &Path, tar: &[u8], kind: &str) -> Descriptor {
    let bytes = match kind {
        media_type::OCI_LAYER_GZIP => outpost_testkit::fixtures::gzip(tar),
        media_type::OCI_LAYER_TAR => tar.to_vec(),
        _ => outpost_testkit::fixtures::zstd(tar),
    };
    put_blob(dir, kind, &bytes)
}

#[test]
fn two_layers_share_directories() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    let second = TarBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/helper", b"helper", 0o755)
        .dir("share/", 0o755)
        .file("share/data", b"data", 0o644)
        .finish();
    m.layers
        .push(tar_layer(&f.layout, &second, media_type::OCI_LAYER_GZIP));
    let third = TarBuilder::new()
        .file("share/more", b"more", 0o644)
        .finish();
    m.layers
        .push(tar_layer(&f.layout, &third, media_type::OCI_LAYER_TAR));
    // A layer of another type is not the package's: ignored, never read.
    m.layers.push(Descriptor {
        media_type: "application/vnd.example.signature".into(),
        digest: Digest::of(b"absent"),
        size: 6,
        platform: None,
        annotations: BTreeMap::new(),
    });
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let meta = unpack_into(&f.layout, &sb).unwrap();
    check_tree(&sb.dest);
    assert_eq!(fs_err::read(sb.dest.join("bin/helper")).unwrap(), b"helper");
    assert_eq!(fs_err::read(sb.dest.join("share/more")).unwrap(), b"more");
    assert_eq!(meta.stats.files, 5);
}

#[test]
fn two_layers_with_the_same_file() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    let second = TarBuilder::new()
        .file("bin/tool", b"replaced!", 0o755)
        .finish();
    m.layers
        .push(tar_layer(&f.layout, &second, media_type::OCI_LAYER_ZSTD));
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(&err, OciError::Archive(ArchiveError::UnsafeEntry { entry, reason: UnsafeReason::Duplicate }) if entry == "bin/tool"),
        "{err:?}"
    );
    assert_eq!(
        fs_err::read(sb.dest.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
}

#[test]
fn hostile_layer() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    let evil = TarBuilder::new()
        .raw_link(b"lib/escape", tar::EntryType::Symlink, b"../../../sentinel")
        .finish();
    m.layers
        .push(tar_layer(&f.layout, &evil, media_type::DATADOG_LAYER));
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let err = unpack_into(&f.layout, &sb).unwrap_err();
    assert!(
        matches!(&err, OciError::Archive(ArchiveError::UnsafeEntry { entry, .. }) if entry == "lib/escape"),
        "{err:?}"
    );
    sb.assert_contained();
}

#[test]
fn limits_span_layers() {
    let f = packed(&PackOptions::default());
    let (_, mut m) = manifest(&f.layout);
    let second = TarBuilder::new().file("more", &[0; 40], 0o644).finish();
    m.layers
        .push(tar_layer(&f.layout, &second, media_type::OCI_LAYER_ZSTD));
    set_manifest(&f.layout, &m);
    let sb = Sandbox::new();
    let limits = Limits {
        max_total_bytes: 60,
        ..Limits::default()
    };
    let err = layout::unpack(
        &f.layout,
        &name(),
        &version(),
        &sb.dest,
        &limits,
        &Cancel::new(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(&err, OciError::Archive(ArchiveError::LimitExceeded { entry, .. }) if entry == "more"),
        "{err:?}"
    );
}

#[test]
fn not_a_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let err = layout::read(tmp.path()).unwrap_err();
    assert!(matches!(err, OciError::NotALayout { .. }), "{err:?}");
    assert!(err.to_string().contains("oci-layout"), "{err}");
    assert_eq!(err.code(), ErrorCode::BadRequest);

    fs_err::write(
        tmp.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = layout::read(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("2.0.0"), "{err}");

    fs_err::write(
        tmp.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let err = layout::read(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("index.json"), "{err}");

    fs_err::write(tmp.path().join("index.json"), b"{not json").unwrap();
    let err = layout::read(tmp.path()).unwrap_err();
    assert!(matches!(err, OciError::Json { .. }), "{err:?}");

    let bad_digest = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../etc/passwd","size":1}]}"#;
    fs_err::write(tmp.path().join("index.json"), bad_digest).unwrap();
    let err = layout::read(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("invalid digest"), "{err}");
}
