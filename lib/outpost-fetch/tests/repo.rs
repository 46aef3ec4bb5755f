//! With the real repository: unpack into a staging directory, install it; a hostile archive,
//! a digest mismatch or a disk that fills up midway leaves the previous stable version
//! intact and `tmp/` empty once the staging directory is dropped.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_fetch::pack::{PackOptions, pack};
use outpost_fetch::{
    ArchiveError, Cancel, Digest, Expected, FetchError, Limits, NoProgress, layout, unpack_tarball,
    unpack_tarball_file,
};
use outpost_repo::{PackageState, Repository};
use outpost_testkit::fixtures::{Node, TarBuilder, expected_for, snapshot, write_tree};
use outpost_types::{ErrorCode, PackageName, Version};
use tar::EntryType;

fn name() -> PackageName {
    PackageName::new("tool").unwrap()
}

fn v(s: &str) -> Version {
    Version::new(s).unwrap()
}

/// A repository root with a sentinel directory beside it for hostile archives to aim at.
struct World {
    tmp: tempfile::TempDir,
    repo: Repository,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::create_dir(tmp.path().join("sentinel")).unwrap();
        let repo = Repository::open(tmp.path().join("root")).unwrap();
        Self { tmp, repo }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn version_dir(&self, version: &str) -> PathBuf {
        self.root().join("packages/tool").join(version)
    }

    fn install_tarball(&self, version: &str, bytes: &[u8]) -> Result<(), FetchError> {
        let staged = self.repo.staging(&format!("tool-{version}")).unwrap();
        unpack_tarball(
            bytes,
            &expected_for(bytes),
            staged.path(),
            &Limits::default(),
            &Cancel::new(),
            &NoProgress,
        )?;
        self.repo.install(&name(), &v(version), staged).unwrap();
        Ok(())
    }

    fn stable(&self) -> Option<PackageState> {
        self.repo.state(&name()).unwrap()
    }

    /// `stable` is `version` with exactly `tree`, `tmp/` is empty, the sentinel untouched.
    fn assert_untouched(&self, version: &str, tree: &BTreeMap<String, Node>) {
        assert_eq!(
            self.stable(),
            Some(PackageState {
                stable: v(version),
                experiment: None
            })
        );
        assert_eq!(&snapshot(&self.version_dir(version)), tree);
        let leftovers: Vec<_> = fs_err::read_dir(self.root().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(leftovers.is_empty(), "tmp/ holds {leftovers:?}");
        assert_eq!(
            fs_err::read_dir(self.tmp.path().join("sentinel"))
                .unwrap()
                .count(),
            0
        );
        let versions: Vec<_> = fs_err::read_dir(self.root().join("packages/tool"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "stable")
            .collect();
        assert_eq!(versions, [version], "no other version directory appeared");
    }
}

fn v1_tar() -> Vec<u8> {
    TarBuilder::new()
        .file("bin/tool", b"#!/bin/sh\necho 1\n", 0o755)
        .file("etc/tool.conf", b"v: 1\n", 0o644)
        .symlink("current", "bin")
        .finish()
}

#[test]
fn unpack_then_install() {
    let w = World::new();
    w.install_tarball("1", &outpost_testkit::fixtures::zstd(&v1_tar()))
        .unwrap();
    assert_eq!(w.stable().unwrap().stable, v("1"));
    assert_eq!(
        fs_err::read(w.root().join("packages/tool/stable/current/tool")).unwrap(),
        b"#!/bin/sh\necho 1\n"
    );

    // Version 2 from an OCI layout made by `pack`.
    let src = w.tmp.path().join("src2");
    fs_err::create_dir(&src).unwrap();
    write_tree(&src, &[("bin/tool", b"#!/bin/sh\necho 2\n", 0o755)]);
    let out = w.tmp.path().join("layout2");
    pack(&src, &name(), &v("2"), &PackOptions::default(), &out).unwrap();
    let staged = w.repo.staging("tool-2").unwrap();
    let meta = layout::unpack(
        &out,
        &name(),
        &v("2"),
        staged.path(),
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(meta.version, v("2"));
    w.repo.install(&name(), &v("2"), staged).unwrap();
    assert_eq!(w.stable().unwrap().stable, v("2"));
    assert_eq!(
        fs_err::read(w.root().join("packages/tool/stable/bin/tool")).unwrap(),
        b"#!/bin/sh\necho 2\n"
    );
    assert_eq!(fs_err::read_dir(w.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn hostile_archives_install_nothing() {
    let w = World::new();
    w.install_tarball("1", &v1_tar()).unwrap();
    let tree = snapshot(&w.version_dir("1"));
    // Paths relative to the staging directory `<root>/tmp/<label>`.
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute path",
            TarBuilder::new()
                .raw(
                    w.tmp
                        .path()
                        .join("sentinel/pwned")
                        .to_str()
                        .unwrap()
                        .as_bytes(),
                    EntryType::Regular,
                    b"x",
                    0o644,
                )
                .finish(),
        ),
        (
            "parent component",
            TarBuilder::new()
                .file("ok", b"ok", 0o644)
                .raw(b"../../../sentinel/pwned", EntryType::Regular, b"x", 0o644)
                .finish(),
        ),
        (
            "escaping symlink then a file through it",
            TarBuilder::new()
                .raw_link(b"out", EntryType::Symlink, b"../../../sentinel")
                .raw(b"out/pwned", EntryType::Regular, b"x", 0o644)
                .finish(),
        ),
        (
            "symlink to the stable version",
            TarBuilder::new()
                .raw_link(b"s", EntryType::Symlink, b"../../packages/tool/stable")
                .finish(),
        ),
        (
            "absolute symlink",
            TarBuilder::new()
                .raw_link(b"s", EntryType::Symlink, b"/etc")
                .finish(),
        ),
        (
            "hard link",
            TarBuilder::new()
                .raw_link(b"h", EntryType::Link, b"../../packages/tool/1/bin/tool")
                .finish(),
        ),
        (
            "device",
            TarBuilder::new()
                .raw(b"d", EntryType::Block, b"", 0o644)
                .finish(),
        ),
        (
            "fifo",
            TarBuilder::new()
                .raw(b"f", EntryType::Fifo, b"", 0o644)
                .finish(),
        ),
        (
            "duplicate",
            TarBuilder::new()
                .file("a", b"1", 0o644)
                .file("a", b"2", 0o644)
                .finish(),
        ),
        (
            "NUL in a name",
            TarBuilder::new()
                .raw(b"a\0../../x", EntryType::Regular, b"1", 0o644)
                .finish(),
        ),
        (
            "below a file",
            TarBuilder::new()
                .file("a", b"1", 0o644)
                .file("a/b", b"2", 0o644)
                .finish(),
        ),
    ];
    for (case, tar) in hostile {
        for (enc, bytes) in outpost_testkit::fixtures::encodings(&tar) {
            let err = w.install_tarball("2", &bytes).unwrap_err();
            assert!(
                matches!(err, FetchError::Archive(ArchiveError::UnsafeEntry { .. })),
                "{case} ({enc}): {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::Integrity, "{case}");
            w.assert_untouched("1", &tree);
        }
    }
}

#[test]
fn digest_and_size_mismatch_install_nothing() {
    let w = World::new();
    w.install_tarball("1", &v1_tar()).unwrap();
    let tree = snapshot(&w.version_dir("1"));
    let v2 = TarBuilder::new().file("bin/tool", b"two", 0o755).finish();
    for (enc, bytes) in outpost_testkit::fixtures::encodings(&v2) {
        for expect in [
            Expected {
                digest: Digest::of(b"not it"),
                size: Some(bytes.len() as u64),
            },
            Expected {
                digest: Digest::of(&bytes),
                size: Some(bytes.len() as u64 + 7),
            },
        ] {
            let staged = w.repo.staging("tool-2").unwrap();
            let err = unpack_tarball(
                &bytes[..],
                &expect,
                staged.path(),
                &Limits::default(),
                &Cancel::new(),
                &NoProgress,
            )
            .unwrap_err();
            assert!(err.is_integrity(), "{enc}: {err:?}");
            drop(staged);
            w.assert_untouched("1", &tree);
        }
    }
}

#[test]
fn tampered_layout_installs_nothing() {
    let w = World::new();
    w.install_tarball("1", &v1_tar()).unwrap();
    let tree = snapshot(&w.version_dir("1"));
    let src = w.tmp.path().join("src2");
    fs_err::create_dir(&src).unwrap();
    write_tree(
        &src,
        &[
            ("bin/tool", &[b'x'; 100_000], 0o755),
            ("lib/a", &[b'y'; 50_000], 0o644),
        ],
    );
    let out = w.tmp.path().join("layout2");
    let packed = pack(&src, &name(), &v("2"), &PackOptions::default(), &out).unwrap();
    let blob = packed.layer.digest.blob_path(&out);
    let mut data = fs_err::read(&blob).unwrap();
    let last = data.len() - 3;
    data[last] ^= 1;
    fs_err::write(&blob, &data).unwrap();
    let staged = w.repo.staging("tool-2").unwrap();
    let err = layout::unpack(
        &out,
        &name(),
        &v("2"),
        staged.path(),
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.is_integrity(), "{err:?}");
    drop(staged);
    w.assert_untouched("1", &tree);
}

const CHILD_ENV: &str = "OUTPOST_FETCH_DISK_FULL_CHILD";
const CHILD_MARK: &str = "disk-full-child:";

/// Runs in the re-executed test binary: writes are capped by `RLIMIT_FSIZE` (with SIGXFSZ
/// ignored by the parent's shell, so they fail with EFBIG instead of killing the process).
fn disk_full_child(root: &Path, tarball: &Path, hex: &str) {
    let one_mib = rustix::process::Rlimit {
        current: Some(1 << 20),
        maximum: Some(1 << 20),
    };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, one_mib).unwrap();
    let repo = Repository::open(root).unwrap();
    let staged = repo.staging("tool-2").unwrap();
    let expect = Expected::sha256(hex, None).unwrap();
    let err = unpack_tarball_file(
        tarball,
        &expect,
        staged.path(),
        &Limits::default(),
        &Cancel::new(),
        &NoProgress,
    )
    .expect_err("the write past 1 MiB fails");
    drop(staged);
    let source = std::error::Error::source(&err).map(ToString::to_string);
    println!(
        "\n{CHILD_MARK} code={} source={source:?} error={err}",
        err.code()
    );
}

#[test]
fn disk_full_midway_installs_nothing() {
    if let Some(arg) = std::env::var_os(CHILD_ENV) {
        let arg = arg.into_string().unwrap();
        let mut parts = arg.splitn(3, '\n');
        let (root, tarball, hex) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        disk_full_child(Path::new(root), Path::new(tarball), hex);
        return;
    }
    let w = World::new();
    w.install_tarball("1", &v1_tar()).unwrap();
    let tree = snapshot(&w.version_dir("1"));
    // The cap is per file: the first file fits under it, the second does not, the third is
    // never reached.
    let v2 = TarBuilder::new()
        .file("small", &[1; 600 << 10], 0o644)
        .file("big", &vec![2; 3 << 20], 0o644)
        .file("after", b"never written", 0o644)
        .finish();
    let bytes = outpost_testkit::fixtures::zstd(&v2);
    let tarball = w.tmp.path().join("v2.tar.zst");
    fs_err::write(&tarball, &bytes).unwrap();

    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; exec "$0" "$@""#)
        .arg(&exe)
        .args([
            "--exact",
            "disk_full_midway_installs_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}\n{}\n{}",
                w.root().display(),
                tarball.display(),
                Digest::of(&bytes).hex()
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find(CHILD_MARK).map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no result line in {stdout}"));
    assert!(line.contains("code=filesystem"), "{line}");
    assert!(line.contains("File too large"), "{line}");
    assert!(line.contains("big"), "the error names the file: {line}");
    w.assert_untouched("1", &tree);
}
