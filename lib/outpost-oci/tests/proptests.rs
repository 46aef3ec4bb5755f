//! Property tests: random trees round-trip through pack and unpack; random corruptions of
//! valid archives never panic and never write outside the destination.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use outpost_archive::{Cancel, Digest, Expected, Limits, NoProgress, unpack_tar, unpack_tarball};
use outpost_oci::layout;
use outpost_oci::pack::{PackFormat, PackOptions, pack};
use outpost_testkit::fixtures::{Node, Sandbox, TarBuilder, snapshot};
use outpost_types::{PackageName, Version};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link { ups: usize, name: String },
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("lib".to_owned()),
        Just(".hidden".to_owned()),
        Just("with space".to_owned()),
        Just("caf\u{e9}".to_owned()),
        "[a-z0-9_.-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != ".."),
        Just("n".repeat(120)),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..4000), 0u32..0o10000)
            .prop_map(|(data, mode)| Kind::File { data, mode }),
        2 => (0o700u32..0o1000).prop_map(|mode| Kind::Dir { mode }),
        1 => (0usize..3, component()).prop_map(|(ups, name)| Kind::Link { ups, name }),
    ]
}

fn tree() -> impl Strategy<Value = Vec<(Vec<String>, Kind)>> {
    proptest::collection::vec(
        (proptest::collection::vec(component(), 1..4), kind()),
        0..24,
    )
}

/// Writes the entries that fit together (no entry below a file or a link, no path twice)
/// and returns what unpacking must give back.
fn materialise(root: &Path, entries: &[(Vec<String>, Kind)]) -> BTreeMap<String, Node> {
    let mut want: BTreeMap<String, Node> = BTreeMap::new();
    'entries: for (comps, kind) in entries {
        for i in 1..comps.len() {
            let parent = comps[..i].join("/");
            match want.get(&parent) {
                None | Some(Node::Dir { .. }) => {}
                Some(_) => continue 'entries,
            }
        }
        let rel = comps.join("/");
        if want.contains_key(&rel) {
            continue;
        }
        for i in 1..comps.len() {
            let parent = comps[..i].join("/");
            if let std::collections::btree_map::Entry::Vacant(slot) = want.entry(parent) {
                fs_err::create_dir(root.join(slot.key())).unwrap();
                slot.insert(Node::Dir { mode: 0o755 });
            }
        }
        let path = root.join(&rel);
        match kind {
            Kind::File { data, mode } => {
                fs_err::write(&path, data).unwrap();
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                want.insert(
                    rel,
                    Node::File {
                        mode,
                        data: data.clone(),
                    },
                );
            }
            Kind::Dir { mode } => {
                fs_err::create_dir(&path).unwrap();
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
                want.insert(rel, Node::Dir { mode: 0o755 });
            }
            Kind::Link { ups, name } => {
                let ups = (*ups).min(comps.len() - 1);
                let target = format!("{}{name}", "../".repeat(ups));
                fs_err::os::unix::fs::symlink(&target, &path).unwrap();
                want.insert(rel, Node::Symlink { target });
            }
        }
    }
    want
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pack_then_unpack_round_trips(entries in tree(), gzip in any::<bool>(), any_platform in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs_err::create_dir(&src).unwrap();
        let want = materialise(&src, &entries);
        let format = if gzip { PackFormat::Gzip } else { PackFormat::Zstd };
        let opts = if any_platform { PackOptions::any(format) } else { PackOptions::host(format) };
        let name = PackageName::new("prop").unwrap();
        let version = Version::new("1").unwrap();
        let out = tmp.path().join("layout");
        let packed = pack(&src, &name, &version, &opts, &out).unwrap();
        let sb = Sandbox::new();
        let meta = layout::unpack(&out, &name, &version, &sb.dest, &Limits::default(), &Cancel::new(), &NoProgress).unwrap();
        prop_assert_eq!(snapshot(&sb.dest), want);
        prop_assert_eq!(meta.stats.entries, packed.entries);
        sb.assert_contained();
    }
}

/// A valid archive exercising every path the reader has: directories, files, long names
/// (GNU), PAX records, in-tree symlinks.
fn seed_archive() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/tool", b"#!/bin/sh\nexit 0\n", 0o755)
        .symlink("bin/alias", "tool")
        .file(
            &format!("share/{}/doc", "x".repeat(110)),
            &[b'd'; 700],
            0o644,
        )
        .symlink("share/link", "../bin")
        .pax_file(&[("path", b"pax/named/file")], "stub", b"pax data")
        .file("etc/conf", b"k: v\n", 0o600)
        .finish()
}

/// Nothing resolves outside `dest`, and modes are normalised.
fn check_dest(dest: &Path) {
    let root = fs_err::canonicalize(dest).unwrap();
    for (rel, node) in snapshot(dest) {
        if let Ok(real) = fs_err::canonicalize(dest.join(&rel)) {
            assert!(
                real.starts_with(&root),
                "{rel} resolves to {}",
                real.display()
            );
        }
        match node {
            Node::Dir { mode } => assert_eq!(mode, 0o755, "{rel}"),
            Node::File { mode, .. } => assert!(mode == 0o644 || mode == 0o755, "{rel}: {mode:o}"),
            Node::Symlink { target } => assert!(!target.starts_with('/'), "{rel} -> {target}"),
        }
    }
}

fn small_limits() -> Limits {
    Limits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 1 << 19,
        max_entries: 64,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_tars_stay_inside(
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut tar = seed_archive();
        for (at, byte) in &mutations {
            let i = at.index(tar.len());
            tar[i] = *byte;
        }
        if let Some(cut) = cut {
            tar.truncate(cut.index(tar.len()));
        }
        let sb = Sandbox::new();
        // Success or failure are both fine; escaping or panicking is not.
        let _outcome = unpack_tar(&tar[..], &sb.dest, &small_limits(), &Cancel::new());
        sb.assert_contained();
        check_dest(&sb.dest);
    }

    #[test]
    fn mutated_compressed_tarballs_stay_inside(
        zstd in any::<bool>(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let tar = seed_archive();
        let mut bytes = if zstd { outpost_testkit::fixtures::zstd(&tar) } else { outpost_testkit::fixtures::gzip(&tar) };
        for (at, byte) in &mutations {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        // The digest is of the mutated bytes, so the decoders and the tar reader see them.
        let expect = Expected { digest: Digest::of(&bytes), size: Some(bytes.len() as u64) };
        let sb = Sandbox::new();
        let _outcome = unpack_tarball(&bytes[..], &expect, &sb.dest, &small_limits(), &Cancel::new(), &NoProgress);
        sb.assert_contained();
        check_dest(&sb.dest);
    }
}
