//! `pack`: deterministic layouts, the right documents, refusals, atomic output.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs::FileTimes;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use outpost_archive::Digest;
use outpost_oci::OciError;
use outpost_oci::oci::{ImageIndex, ImageManifest, annotation, media_type};
use outpost_oci::pack::{PackFormat, PackOptions, PackedImage, pack};
use outpost_testkit::fixtures::write_tree;
use outpost_types::{ErrorCode, PackageName, Version};

fn name() -> PackageName {
    PackageName::new("tool").unwrap()
}

fn version() -> Version {
    Version::new("2.0.0-rc.1").unwrap()
}

const TREE: &[(&str, &[u8], u32)] = &[
    ("bin/tool", b"#!/bin/sh\n", 0o755),
    ("etc/a.conf", b"a", 0o644),
    ("etc/b.conf", b"b", 0o600),
    ("lib/", b"", 0o700),
    ("lib/link -> ../etc/a.conf", b"", 0),
    ("empty/", b"", 0o755),
];

fn pack_tree(
    entries: &[(&str, &[u8], u32)],
    opts: &PackOptions,
) -> (tempfile::TempDir, PackedImage) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir(&src).unwrap();
    write_tree(&src, entries);
    let out = tmp.path().join("out");
    let packed = pack(&src, &name(), &version(), opts, &out).unwrap();
    (tmp, packed)
}

fn digests(p: &PackedImage) -> (Digest, Digest, Digest, Digest) {
    (
        p.index_digest.clone(),
        p.manifest.digest.clone(),
        p.config.digest.clone(),
        p.layer.digest.clone(),
    )
}

fn touch_all(dir: &Path, when: SystemTime) {
    for e in fs_err::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            touch_all(&e.path(), when);
        }
        if !ft.is_symlink() {
            let f = fs_err::File::open(e.path()).unwrap();
            f.file()
                .set_times(FileTimes::new().set_modified(when).set_accessed(when))
                .unwrap();
        }
    }
}

#[test]
fn same_input_same_digests() {
    for format in [PackFormat::Zstd, PackFormat::Gzip] {
        let opts = PackOptions::host(format);
        let (_a, first) = pack_tree(TREE, &opts);
        let (_b, second) = pack_tree(TREE, &opts);
        assert_eq!(digests(&first), digests(&second), "{format:?}");

        // Touch every mtime, change a mode within its class, create in another order.
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs_err::create_dir(&src).unwrap();
        let mut reversed = TREE.to_vec();
        reversed.reverse();
        reversed.retain(|e| !e.0.contains(" -> "));
        write_tree(&src, &reversed);
        write_tree(&src, &[("lib/link -> ../etc/a.conf", b"", 0)]);
        fs_err::set_permissions(
            src.join("etc/a.conf"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        fs_err::set_permissions(
            src.join("bin/tool"),
            std::fs::Permissions::from_mode(0o4711),
        )
        .unwrap();
        touch_all(
            &src,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890),
        );
        let third = pack(&src, &name(), &version(), &opts, &tmp.path().join("out")).unwrap();
        assert_eq!(
            digests(&first),
            digests(&third),
            "{format:?} after touching"
        );
    }
}

#[test]
fn content_changes_change_digests() {
    let opts = PackOptions::default();
    let (_a, base) = pack_tree(TREE, &opts);
    let mut changed = TREE.to_vec();
    changed[1] = ("etc/a.conf", b"A", 0o644);
    let (_b, other) = pack_tree(&changed, &opts);
    assert_ne!(base.layer.digest, other.layer.digest);
    let mut exec = TREE.to_vec();
    exec[1] = ("etc/a.conf", b"a", 0o744);
    let (_c, other) = pack_tree(&exec, &opts);
    assert_ne!(
        base.layer.digest, other.layer.digest,
        "the exec bit is content"
    );
}

#[test]
fn documents() {
    let (tmp, p) = pack_tree(TREE, &PackOptions::default());
    let out = tmp.path().join("out");
    assert_eq!(
        fs_err::read_to_string(out.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index_bytes = fs_err::read(out.join("index.json")).unwrap();
    assert_eq!(Digest::of(&index_bytes), p.index_digest);
    let index: ImageIndex = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let entry = &index.manifests[0];
    assert_eq!(entry.media_type, media_type::OCI_MANIFEST);
    assert_eq!(entry.annotations[annotation::REF_NAME], "2.0.0-rc.1");
    let platform = entry.platform.as_ref().unwrap();
    assert_eq!(platform.os, outpost_types::platform::host_os());
    assert_eq!(platform.architecture, outpost_types::platform::host_arch());

    let m_bytes = fs_err::read(entry.digest.blob_path(&out)).unwrap();
    assert_eq!(Digest::of(&m_bytes), entry.digest);
    assert_eq!(m_bytes.len() as u64, entry.size);
    let m: ImageManifest = serde_json::from_slice(&m_bytes).unwrap();
    for (k, v) in [
        (annotation::DATADOG_NAME, "tool"),
        (annotation::DATADOG_VERSION, "2.0.0-rc.1"),
        (annotation::DATADOG_SIZE, "12"),
        (annotation::OUTPOST_NAME, "tool"),
        (annotation::OUTPOST_VERSION, "2.0.0-rc.1"),
        (annotation::OUTPOST_SIZE, "12"),
    ] {
        assert_eq!(m.annotations[k], v, "{k}");
    }
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, media_type::OCI_LAYER_ZSTD);
    let layer = fs_err::read(m.layers[0].digest.blob_path(&out)).unwrap();
    assert_eq!(layer.len() as u64, m.layers[0].size);
    assert_eq!(m.config.media_type, media_type::OCI_CONFIG);
    let config: serde_json::Value =
        serde_json::from_slice(&fs_err::read(m.config.digest.blob_path(&out)).unwrap()).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], p.diff_id.to_string());
    assert_eq!(config["architecture"], outpost_types::platform::host_arch());

    // The layer itself: sorted, owner-less, time-less, normalised modes.
    let tar = zstd::decode_all(&layer[..]).unwrap();
    assert_eq!(Digest::of(&tar), p.diff_id);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut seen = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username_bytes().unwrap_or_default(), b"");
        assert_eq!(h.groupname_bytes().unwrap_or_default(), b"");
        seen.push((
            String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            h.mode().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("bin/".to_owned(), 0o755),
            ("bin/tool".into(), 0o755),
            ("empty/".into(), 0o755),
            ("etc/".into(), 0o755),
            ("etc/a.conf".into(), 0o644),
            ("etc/b.conf".into(), 0o644),
            ("lib/".into(), 0o755),
            ("lib/link".into(), 0o777),
        ]
    );
    assert_eq!(p.entries, 8);
    assert_eq!(p.unpacked_size, 12);
}

#[test]
fn any_platform_and_gzip() {
    let (tmp, p) = pack_tree(TREE, &PackOptions::any(PackFormat::Gzip));
    let out = tmp.path().join("out");
    let index: ImageIndex =
        serde_json::from_slice(&fs_err::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests[0].platform, None);
    assert_eq!(p.layer.media_type, media_type::OCI_LAYER_GZIP);
    assert_eq!(p.config.media_type, media_type::OCI_EMPTY);
    assert_eq!(
        fs_err::read(p.config.digest.blob_path(&out)).unwrap(),
        b"{}"
    );
}

#[test]
fn long_names_round_trip() {
    let deep = format!("{}/{}/file", "d".repeat(120), "e".repeat(100));
    let link = format!("{}/link -> ../{}", "d".repeat(120), "t".repeat(150));
    let (tmp, _) = pack_tree(
        &[(&deep, b"deep", 0o644), (&link, b"", 0)],
        &PackOptions::default(),
    );
    let sb = outpost_testkit::fixtures::Sandbox::new();
    outpost_oci::layout::unpack(
        &tmp.path().join("out"),
        &name(),
        &version(),
        &sb.dest,
        &outpost_archive::Limits::default(),
        &outpost_archive::Cancel::new(),
        &outpost_archive::NoProgress,
    )
    .unwrap();
    assert_eq!(fs_err::read(sb.dest.join(&deep)).unwrap(), b"deep");
    let (l, t) = link.split_once(" -> ").unwrap();
    assert_eq!(
        fs_err::read_link(sb.dest.join(l))
            .unwrap()
            .to_str()
            .unwrap(),
        t
    );
}

fn refuse(entries: &[(&str, &[u8], u32)], extra: impl FnOnce(&Path)) -> OciError {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir(&src).unwrap();
    write_tree(&src, entries);
    extra(&src);
    let out = tmp.path().join("out");
    let err = pack(&src, &name(), &version(), &PackOptions::default(), &out).unwrap_err();
    assert!(!out.exists(), "nothing at the output");
    let left: Vec<_> = fs_err::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["src"], "no temporary directory left behind");
    err
}

#[test]
fn refuses_escaping_symlinks() {
    for (link, want) in [
        ("out -> ../../etc/passwd", "leaves the package directory"),
        ("sub/out -> ../../x", "leaves the package directory"),
        ("abs -> /etc/passwd", "absolute path"),
        ("inner -> sub/../../x", "after a name"),
    ] {
        let err = refuse(&[("sub/f", b"f", 0o644), (link, b"", 0)], |_| {});
        assert!(matches!(err, OciError::PackInput { .. }), "{link}: {err:?}");
        assert!(err.to_string().contains(want), "{link}: {err}");
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }
}

#[test]
fn refuses_special_files() {
    let err = refuse(&[("f", b"f", 0o644)], |src| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    });
    assert!(err.to_string().contains("fifo"), "{err}");
    let err = refuse(&[("f", b"f", 0o644)], |src| {
        let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        drop(sock);
    });
    assert!(err.to_string().contains("sock"), "{err}");
}

#[test]
fn refuses_names_unpacking_would_refuse() {
    let err = refuse(&[("ok", b"f", 0o644)], |src| {
        fs_err::write(src.join("tab\tname"), b"x").unwrap();
    });
    assert!(err.to_string().contains("control character"), "{err}");
    let err = refuse(&[("ok", b"f", 0o644)], |src| {
        fs_err::write(src.join("back\\slash"), b"x").unwrap();
    });
    assert!(err.to_string().contains("backslash"), "{err}");
}

#[test]
fn output_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir(&src).unwrap();
    write_tree(&src, TREE);

    // An existing empty directory is replaced.
    let empty = tmp.path().join("empty");
    fs_err::create_dir(&empty).unwrap();
    pack(&src, &name(), &version(), &PackOptions::default(), &empty).unwrap();
    assert!(empty.join("index.json").exists());
    assert_eq!(
        fs_err::metadata(&empty).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // A non-empty one, or a file, is refused and left alone.
    let err = pack(&src, &name(), &version(), &PackOptions::default(), &empty).unwrap_err();
    assert!(matches!(err, OciError::OutputExists { .. }), "{err:?}");
    let file = tmp.path().join("file");
    fs_err::write(&file, b"keep").unwrap();
    let err = pack(&src, &name(), &version(), &PackOptions::default(), &file).unwrap_err();
    assert!(matches!(err, OciError::OutputExists { .. }), "{err:?}");
    assert_eq!(fs_err::read(&file).unwrap(), b"keep");

    // Inside the input: refused before anything is written there.
    let err = pack(
        &src,
        &name(),
        &version(),
        &PackOptions::default(),
        &src.join("out"),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::PackInput { .. }), "{err:?}");
    assert!(!src.join("out").exists());

    // Not a directory.
    let err = pack(
        &file,
        &name(),
        &version(),
        &PackOptions::default(),
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::PackInput { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot pack {}: not a directory", file.display())
    );

    // Missing: the message names the directory and says what is wrong with it.
    let missing = tmp.path().join("missing");
    let err = pack(
        &missing,
        &name(),
        &version(),
        &PackOptions::default(),
        &tmp.path().join("o3"),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::PackInput { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot pack {}: No such file", missing.display())),
        "{err}"
    );
    assert!(!tmp.path().join("o3").exists());

    let names: Vec<_> = fs_err::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".outpost-pack")),
        "no temporary directories left: {names:?}"
    );
}
