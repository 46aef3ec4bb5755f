//! Extensions from an OCI layout on disk: chosen before anything is unpacked (their sizes
//! count in the space required, a missing one is `extension_not_found`), then unpacked after
//! the payload into `ext/<name>/`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use outpost_fetch::pack::{PackFormat, PackOptions, pack_with_extensions};
use outpost_fetch::{FetchContext, Limits, RegistrySettings, prepare};
use outpost_testkit::fixtures::write_tree;
use outpost_types::wire::{CatalogEntry, ResolvedPackage};
use outpost_types::{ErrorCode, PackageName, Version};

fn entry(layout: &Path) -> ResolvedPackage {
    CatalogEntry {
        package: "agent".into(),
        version: "1.0".into(),
        url: format!("file://{}", layout.display()),
        sha256: String::new(),
        size: 0,
        platform: String::new(),
        arch: String::new(),
        health: None,
    }
    .resolve()
    .unwrap()
}

fn layout(dir: &Path) -> (PathBuf, outpost_fetch::pack::PackedImage) {
    let payload = dir.join("payload");
    write_tree(&payload, &[("bin/agent", b"agent", 0o755)]);
    let python = dir.join("python");
    write_tree(&python, &[("lib/python.so", b"python", 0o644)]);
    let out = dir.join("layout");
    let packed = pack_with_extensions(
        &payload,
        &PackageName::new("agent").unwrap(),
        &Version::new("1.0").unwrap(),
        &PackOptions::host(PackFormat::Zstd),
        &[("python".into(), python)],
        &out,
    )
    .unwrap();
    (out, packed)
}

#[tokio::test]
async fn extensions_count_in_the_space_required_and_land_in_ext() {
    let dir = tempfile::tempdir().unwrap();
    let (out, packed) = layout(dir.path());
    let ctx = FetchContext::new(RegistrySettings::default(), Limits::default());
    let resolved = entry(&out);

    let plain = prepare(&resolved, &ctx).await.unwrap();
    assert_eq!(plain.required_bytes(), Some(packed.unpacked_size));
    let with = prepare(&resolved, &ctx)
        .await
        .unwrap()
        .with_extensions(&["python".into()])
        .unwrap();
    assert_eq!(
        with.required_bytes(),
        Some(packed.unpacked_size + packed.extensions[0].size)
    );
    let dest = dir.path().join("dest");
    fs_err::create_dir(&dest).unwrap();
    with.fetch(&dest, &ctx).await.unwrap();
    assert_eq!(fs_err::read(dest.join("bin/agent")).unwrap(), b"agent");
    assert_eq!(
        fs_err::read(dest.join("ext/python/lib/python.so")).unwrap(),
        b"python"
    );

    // Without extensions, the extension layer is not unpacked.
    let dest = dir.path().join("plain");
    fs_err::create_dir(&dest).unwrap();
    plain.fetch(&dest, &ctx).await.unwrap();
    assert!(!dest.join("ext").exists());

    let err = prepare(&resolved, &ctx)
        .await
        .unwrap()
        .with_extensions(&["gpu".into()])
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ExtensionNotFound);
}
