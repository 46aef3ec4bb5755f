//! Hostile archives: each is refused with an error naming the entry, and nothing is written
//! outside the destination.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use outpost_archive::{
    ArchiveError, Cancel, LimitKind, Limits, NoProgress, UnsafeReason, unpack_tar, unpack_tarball,
};
use outpost_testkit::fixtures::{Node, Sandbox, TarBuilder, encodings, expected_for, snapshot};
use outpost_types::ErrorCode;
use tar::EntryType;

/// Unpacks `tar` into a fresh sandbox, expecting a failure; checks containment.
fn refuse_with(tar: &[u8], limits: &Limits) -> (ArchiveError, Sandbox) {
    let sb = Sandbox::new();
    let err = unpack_tar(tar, &sb.dest, limits, &Cancel::new()).expect_err("must be refused");
    sb.assert_contained();
    (err, sb)
}

fn refuse(tar: &[u8]) -> (ArchiveError, Sandbox) {
    refuse_with(tar, &Limits::default())
}

#[track_caller]
fn assert_unsafe(err: &ArchiveError, want_entry: &str, want: impl Fn(&UnsafeReason) -> bool) {
    match err {
        ArchiveError::UnsafeEntry { entry, reason } => {
            assert_eq!(entry, want_entry, "{err}");
            assert!(want(reason), "unexpected reason: {err}");
        }
        other => panic!("expected an unsafe-entry error for {want_entry:?}, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("{want_entry:?}")),
        "the message names the entry: {err}"
    );
    assert_eq!(err.code(), ErrorCode::Integrity);
}

#[test]
fn absolute_path() {
    let sb = Sandbox::new();
    let target = sb.sentinel.join("pwned");
    let name = target.to_str().unwrap();
    let tar = TarBuilder::new()
        .file("ok", b"fine", 0o644)
        .raw(name.as_bytes(), EntryType::Regular, b"owned", 0o644)
        .finish();
    let err = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap_err();
    assert_unsafe(&err, name, |r| *r == UnsafeReason::AbsolutePath);
    sb.assert_contained();
    assert!(!target.exists());
}

#[test]
fn parent_components() {
    for name in ["../sentinel/pwned", "a/../../sentinel/pwned", "./../pwned"] {
        let tar = TarBuilder::new()
            .raw(name.as_bytes(), EntryType::Regular, b"owned", 0o644)
            .finish();
        let (err, _) = refuse(&tar);
        assert_unsafe(&err, name, |r| *r == UnsafeReason::ParentComponent);
    }
}

#[test]
fn parent_component_in_extension_paths() {
    let long = format!("{}/../../../sentinel/pwned", "d".repeat(120));
    let tar = TarBuilder::new()
        .gnu_long_name(long.as_bytes(), b"x")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, &long, |r| *r == UnsafeReason::ParentComponent);

    let tar = TarBuilder::new()
        .pax_file(&[("path", b"../sentinel/pwned")], "innocent", b"x")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "../sentinel/pwned", |r| {
        *r == UnsafeReason::ParentComponent
    });
}

#[test]
fn symlink_escaping_then_file_through_it() {
    let tar = TarBuilder::new()
        .raw_link(b"evil", EntryType::Symlink, b"../sentinel")
        .raw(b"evil/pwned", EntryType::Regular, b"owned", 0o644)
        .finish();
    let (err, sb) = refuse(&tar);
    assert_unsafe(
        &err,
        "evil",
        |r| matches!(r, UnsafeReason::SymlinkEscapes { target } if target == "../sentinel"),
    );
    assert!(!sb.dest.join("evil").exists());
}

#[test]
fn symlink_escaping_deeper() {
    let tar = TarBuilder::new()
        .dir("a/b/", 0o755)
        .raw_link(b"a/b/up", EntryType::Symlink, b"../../../sentinel")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "a/b/up", |r| {
        matches!(r, UnsafeReason::SymlinkEscapes { .. })
    });
}

#[test]
fn symlink_chain_through_another_link() {
    // `a/l1 -> ..` is the root, which is fine; `a/l2 -> l1/..` would be the root's parent
    // once `l1` is followed, which a lexical check alone would miss.
    let tar = TarBuilder::new()
        .raw_link(b"a/l1", EntryType::Symlink, b"..")
        .raw_link(b"a/l2", EntryType::Symlink, b"l1/../sentinel")
        .finish();
    let (err, sb) = refuse(&tar);
    assert_unsafe(&err, "a/l2", |r| {
        matches!(r, UnsafeReason::SymlinkInnerParent { .. })
    });
    assert_eq!(
        fs_err::read_link(sb.dest.join("a/l1")).unwrap().to_str(),
        Some("..")
    );
}

#[test]
fn symlink_to_absolute_path() {
    let sb = Sandbox::new();
    let target = sb.sentinel.to_str().unwrap().to_owned();
    let tar = TarBuilder::new()
        .raw_link(b"abs", EntryType::Symlink, target.as_bytes())
        .raw(b"abs/pwned", EntryType::Regular, b"owned", 0o644)
        .finish();
    let err = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap_err();
    assert_unsafe(
        &err,
        "abs",
        |r| matches!(r, UnsafeReason::SymlinkAbsolute { target: t } if *t == target),
    );
    sb.assert_contained();
}

#[test]
fn file_through_an_in_tree_symlink() {
    // Even a link that stays inside is never written through.
    let tar = TarBuilder::new()
        .dir("d/", 0o755)
        .symlink("l", "d")
        .file("l/x", b"x", 0o644)
        .finish();
    let (err, sb) = refuse(&tar);
    assert_unsafe(
        &err,
        "l/x",
        |r| matches!(r, UnsafeReason::BelowNonDirectory { parent } if parent == "l"),
    );
    assert!(!sb.dest.join("d/x").exists());
}

#[test]
fn hard_link() {
    let tar = TarBuilder::new()
        .file("a", b"a", 0o644)
        .raw_link(b"hl", EntryType::Link, b"a")
        .finish();
    let (err, sb) = refuse(&tar);
    assert_unsafe(
        &err,
        "hl",
        |r| matches!(r, UnsafeReason::HardLink { target } if target == "a"),
    );
    assert!(!sb.dest.join("hl").exists());

    let tar = TarBuilder::new()
        .raw_link(b"hl2", EntryType::Link, b"../sentinel/x")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "hl2", |r| matches!(r, UnsafeReason::HardLink { .. }));
}

#[test]
fn devices_and_fifos() {
    for (kind, name, word) in [
        (EntryType::Char, "null", "character device"),
        (EntryType::Block, "sda", "block device"),
        (EntryType::Fifo, "pipe", "fifo"),
        (EntryType::GNUSparse, "sparse", "sparse"),
        (EntryType::new(b'V'), "volume", "type 'V'"),
    ] {
        let tar = TarBuilder::new()
            .raw(name.as_bytes(), kind, b"", 0o644)
            .finish();
        let (err, sb) = refuse(&tar);
        assert_unsafe(&err, name, |r| {
            matches!(r, UnsafeReason::UnsupportedType { .. })
        });
        assert!(err.to_string().contains(word), "{err}");
        assert!(!sb.dest.join(name).exists());
    }
}

#[test]
fn duplicate_entries() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "same file twice",
            TarBuilder::new()
                .file("a", b"1", 0o644)
                .file("a", b"2", 0o644)
                .finish(),
        ),
        (
            "same directory twice",
            TarBuilder::new().dir("a/", 0o755).dir("a/", 0o755).finish(),
        ),
        (
            "file then directory",
            TarBuilder::new()
                .file("a", b"1", 0o644)
                .dir("a/", 0o755)
                .finish(),
        ),
        (
            "directory then file",
            TarBuilder::new()
                .dir("a/", 0o755)
                .file("a", b"1", 0o644)
                .finish(),
        ),
        (
            "symlink then file",
            TarBuilder::new()
                .symlink("a", "b")
                .file("a", b"1", 0o644)
                .finish(),
        ),
        (
            "file then symlink",
            TarBuilder::new()
                .file("a", b"1", 0o644)
                .symlink("a", "b")
                .finish(),
        ),
        (
            "same file spelled differently",
            TarBuilder::new()
                .file("d/a", b"1", 0o644)
                .raw(b"./d//a", EntryType::Regular, b"2", 0o644)
                .finish(),
        ),
    ];
    for (case, tar) in cases {
        let (err, sb) = refuse(&tar);
        match &err {
            ArchiveError::UnsafeEntry { reason, .. } => {
                assert_eq!(*reason, UnsafeReason::Duplicate, "{case}: {err}")
            }
            other => panic!("{case}: {other:?}"),
        }
        if case == "same file twice" {
            assert_eq!(
                fs_err::read(sb.dest.join("a")).unwrap(),
                b"1",
                "never overwritten"
            );
        }
    }
}

#[test]
fn nul_in_names() {
    let tar = TarBuilder::new()
        .raw(b"ok\0../../sentinel/pwned", EntryType::Regular, b"x", 0o644)
        .finish();
    let (err, sb) = refuse(&tar);
    assert_unsafe(&err, "ok", |r| *r == UnsafeReason::NulInHeaderField);
    assert!(!sb.dest.join("ok").exists());

    let tar = TarBuilder::new()
        .gnu_long_name(b"good\0../../x", b"x")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "good\0../../x", |r| {
        *r == UnsafeReason::ControlCharacter
    });

    let tar = TarBuilder::new()
        .pax_file(&[("path", b"pax\0name")], "stub", b"x")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "pax\0name", |r| *r == UnsafeReason::ControlCharacter);

    let tar = TarBuilder::new()
        .raw(b"esc\x1b[2Jape", EntryType::Regular, b"x", 0o644)
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "esc\x1b[2Jape", |r| {
        *r == UnsafeReason::ControlCharacter
    });

    let tar = TarBuilder::new()
        .raw_link(b"l", EntryType::Symlink, b"t\0../../x")
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "l", |r| *r == UnsafeReason::NulInHeaderField);
}

#[test]
fn entry_below_a_regular_file() {
    let tar = TarBuilder::new()
        .file("f", b"plain", 0o644)
        .file("f/x", b"below", 0o644)
        .finish();
    let (err, sb) = refuse(&tar);
    assert_unsafe(
        &err,
        "f/x",
        |r| matches!(r, UnsafeReason::BelowNonDirectory { parent } if parent == "f"),
    );
    assert_eq!(fs_err::read(sb.dest.join("f")).unwrap(), b"plain");

    let tar = TarBuilder::new()
        .file("f", b"plain", 0o644)
        .dir("f/sub/", 0o755)
        .finish();
    let (err, _) = refuse(&tar);
    assert_unsafe(&err, "f/sub/", |r| {
        matches!(r, UnsafeReason::BelowNonDirectory { .. })
    });
}

#[test]
fn over_the_entry_count() {
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let tar = TarBuilder::new()
        .dir("d/", 0o755)
        .file("d/e2", b"2", 0o644)
        .file("d/e3", b"3", 0o644)
        .file("d/e4", b"4", 0o644)
        .finish();
    let (err, sb) = refuse_with(&tar, &limits);
    assert!(
        matches!(&err, ArchiveError::LimitExceeded { entry, limit: LimitKind::Entries, max: 3 } if entry == "d/e4"),
        "{err:?}"
    );
    assert!(err.to_string().contains("d/e4"), "{err}");
    assert_eq!(err.code(), ErrorCode::Integrity);
    assert!(!sb.dest.join("d/e4").exists());

    // Exactly at the limit is fine.
    let sb = Sandbox::new();
    let tar = TarBuilder::new()
        .dir("d/", 0o755)
        .file("d/e2", b"2", 0o644)
        .file("d/e3", b"3", 0o644)
        .finish();
    let stats = unpack_tar(&tar[..], &sb.dest, &limits, &Cancel::new()).unwrap();
    assert_eq!(stats.entries, 3);
}

#[test]
fn over_the_per_file_limit() {
    let limits = Limits {
        max_file_bytes: 100,
        ..Limits::default()
    };
    let tar = TarBuilder::new()
        .file("small", &[1; 100], 0o644)
        .file("big", &[2; 101], 0o644)
        .finish();
    let (err, sb) = refuse_with(&tar, &limits);
    assert!(
        matches!(&err, ArchiveError::LimitExceeded { entry, limit: LimitKind::FileBytes, max: 100 } if entry == "big"),
        "{err:?}"
    );
    assert!(
        !sb.dest.join("big").exists(),
        "refused from the header, before writing"
    );
}

#[test]
fn header_claiming_less_than_its_data() {
    let limits = Limits {
        max_file_bytes: 100,
        ..Limits::default()
    };
    // The header says 10 bytes; 2000 follow. Only 10 are ever taken as the file, and the
    // rest is not a valid header.
    let mut tar = TarBuilder::new()
        .lying_size("liar", 10, &[b'A'; 2000])
        .unterminated();
    tar.extend_from_slice(&[0; 1024]);
    let (err, sb) = refuse_with(&tar, &limits);
    assert!(
        matches!(err, ArchiveError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::Integrity);
    assert_eq!(fs_err::metadata(sb.dest.join("liar")).unwrap().len(), 10);

    // A PAX size record that contradicts the header is refused outright.
    let tar = TarBuilder::new()
        .pax_file(&[("size", b"2000")], "liar", &[b'A'; 10])
        .finish();
    let (err, sb) = refuse_with(&tar, &limits);
    assert_unsafe(&err, "liar", |r| *r == UnsafeReason::PaxSizeMismatch);
    assert!(!sb.dest.join("liar").exists());
}

#[test]
fn header_claiming_more_than_the_archive_holds() {
    let tar = TarBuilder::new()
        .lying_size("short", 5000, &[b'B'; 100])
        .unterminated();
    let (err, _) = refuse(&tar);
    match &err {
        ArchiveError::CorruptArchive { entry, .. } => assert_eq!(entry.as_deref(), Some("short")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn over_the_total_limit() {
    let limits = Limits {
        max_total_bytes: 150,
        ..Limits::default()
    };
    let tar = TarBuilder::new()
        .file("a", &[1; 100], 0o644)
        .file("b", &[2; 100], 0o644)
        .finish();
    let (err, sb) = refuse_with(&tar, &limits);
    assert!(
        matches!(&err, ArchiveError::LimitExceeded { entry, limit: LimitKind::TotalBytes, max: 150 } if entry == "b"),
        "{err:?}"
    );
    assert!(!sb.dest.join("b").exists());
}

#[test]
fn oversized_extension_records() {
    let huge = vec![b'x'; 70 << 10];
    let tar = TarBuilder::new().gnu_long_name(&huge, b"x").finish();
    let (err, _) = refuse(&tar);
    assert!(
        matches!(err, ArchiveError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("extension header"), "{err}");
}

#[test]
fn dangling_extension_header() {
    let mut tar = TarBuilder::new().unterminated();
    let h =
        outpost_testkit::fixtures::raw_header(b"././@LongLink", EntryType::GNULongName, 4, 0o644);
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(b"abc\0");
    tar.extend_from_slice(&[0; 508]);
    tar.extend_from_slice(&[0; 1024]);
    let (err, _) = refuse(&tar);
    assert!(
        matches!(err, ArchiveError::CorruptArchive { .. }),
        "{err:?}"
    );
}

#[test]
fn setuid_setgid_sticky_dropped_exec_kept() {
    let sb = Sandbox::new();
    let tar = TarBuilder::new()
        .file("suid", b"s", 0o4755)
        .file("sgid", b"g", 0o2644)
        .file("owner-exec", b"o", 0o700)
        .file("group-exec", b"e", 0o610)
        .file("private", b"p", 0o600)
        .file("read-only", b"r", 0o444)
        .dir("sticky/", 0o1777)
        .dir("closed/", 0o700)
        .file("implied/parent/f", b"f", 0o644)
        .finish();
    unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap();
    let tree = snapshot(&sb.dest);
    let mode = |p: &str| match &tree[p] {
        Node::Dir { mode } | Node::File { mode, .. } => *mode,
        Node::Symlink { .. } => panic!("{p} is a symlink"),
    };
    for (p, m) in [
        ("suid", 0o755),
        ("sgid", 0o644),
        ("owner-exec", 0o755),
        ("group-exec", 0o755),
        ("private", 0o644),
        ("read-only", 0o644),
        ("sticky", 0o755),
        ("closed", 0o755),
        ("implied", 0o755),
        ("implied/parent", 0o755),
        ("implied/parent/f", 0o644),
    ] {
        assert_eq!(mode(p), m, "{p}: {:o}", mode(p));
    }
    sb.assert_contained();
}

#[test]
fn in_tree_symlinks_kept() {
    let sb = Sandbox::new();
    let tar = TarBuilder::new()
        .file("lib/libfoo.so.1", b"ELF", 0o755)
        .symlink("lib/libfoo.so", "libfoo.so.1")
        .symlink("bin/foo", "../lib/libfoo.so")
        .symlink("a/b/top", "../../")
        .symlink("here", ".")
        .symlink("dangling", "not/yet/there")
        .finish();
    let stats = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap();
    assert_eq!(stats.symlinks, 5);
    assert_eq!(fs_err::read(sb.dest.join("bin/foo")).unwrap(), b"ELF");
    assert_eq!(
        fs_err::read(sb.dest.join("a/b/top/lib/libfoo.so.1")).unwrap(),
        b"ELF"
    );
    let tree = snapshot(&sb.dest);
    assert_eq!(
        tree["bin/foo"],
        Node::Symlink {
            target: "../lib/libfoo.so".into()
        }
    );
    sb.assert_contained();
}

#[test]
fn root_entry_and_dot_prefixes() {
    let sb = Sandbox::new();
    let tar = TarBuilder::new()
        .raw(b"./", EntryType::Directory, b"", 0o755)
        .raw(b"./bin/", EntryType::Directory, b"", 0o755)
        .raw(b"./bin/tool", EntryType::Regular, b"#!/bin/sh\n", 0o755)
        .finish();
    let stats = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap();
    assert_eq!((stats.entries, stats.files, stats.directories), (3, 1, 1));
    assert_eq!(
        fs_err::read(sb.dest.join("bin/tool")).unwrap(),
        b"#!/bin/sh\n"
    );
}

#[test]
fn destination_must_be_empty() {
    let sb = Sandbox::new();
    fs_err::write(sb.dest.join("old"), b"x").unwrap();
    let tar = TarBuilder::new().file("a", b"1", 0o644).finish();
    let err = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DestinationNotEmpty { .. }),
        "{err:?}"
    );
    assert!(!sb.dest.join("a").exists());
}

#[test]
fn hostile_archives_refused_in_every_encoding() {
    let tars = [
        (
            "../x",
            TarBuilder::new()
                .raw(b"../x", EntryType::Regular, b"x", 0o644)
                .finish(),
        ),
        (
            "evil",
            TarBuilder::new()
                .raw_link(b"evil", EntryType::Symlink, b"../sentinel")
                .finish(),
        ),
        (
            "dev",
            TarBuilder::new()
                .raw(b"dev", EntryType::Char, b"", 0o644)
                .finish(),
        ),
    ];
    for (entry, tar) in tars {
        for (enc, bytes) in encodings(&tar) {
            let sb = Sandbox::new();
            let err = unpack_tarball(
                &bytes[..],
                &expected_for(&bytes),
                &sb.dest,
                &Limits::default(),
                &Cancel::new(),
                &NoProgress,
            )
            .unwrap_err();
            assert!(
                matches!(&err, ArchiveError::UnsafeEntry { entry: e, .. } if e == entry),
                "{enc}: {err:?}"
            );
            sb.assert_contained();
        }
    }
}

#[test]
fn directories_and_links_carry_no_data() {
    let tar = TarBuilder::new()
        .raw(b"d/", EntryType::Directory, &[0; 3000], 0o755)
        .finish();
    let (err, _) = refuse(&tar);
    assert!(
        matches!(&err, ArchiveError::CorruptArchive { entry: Some(e), .. } if e == "d/"),
        "{err:?}"
    );
}

#[test]
fn extension_records_count_against_the_total() {
    // Metadata that is never written still has to be decompressed; it is bounded by the
    // same limit as the files, so no archive expands without bound.
    let limits = Limits {
        max_total_bytes: 1000,
        ..Limits::default()
    };
    let comment = vec![b'c'; 2000];
    let tar = TarBuilder::new()
        .pax_file(&[("comment", &comment)], "f", b"x")
        .finish();
    let (err, _) = refuse_with(&tar, &limits);
    assert!(
        matches!(
            &err,
            ArchiveError::LimitExceeded {
                limit: LimitKind::TotalBytes,
                ..
            }
        ),
        "{err:?}"
    );

    let mut tar = TarBuilder::new().unterminated();
    let h = outpost_testkit::fixtures::raw_header(
        b"pax_global_header",
        EntryType::XGlobalHeader,
        2 << 20,
        0o644,
    );
    tar.extend_from_slice(h.as_bytes());
    tar.extend(std::iter::repeat_n(b'g', 2 << 20));
    tar.extend_from_slice(&[0; 1024]);
    let (err, _) = refuse(&tar);
    assert!(
        matches!(err, ArchiveError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("extension header"), "{err}");
}

#[test]
fn pax_global_header_is_skipped() {
    // `git archive` starts with one; it is metadata, not a file.
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let data = b"52 comment=0123456789012345678901234567890123456789\n";
        let h = outpost_testkit::fixtures::raw_header(
            b"pax_global_header",
            EntryType::XGlobalHeader,
            data.len() as u64,
            0o644,
        );
        b.append(&h, &data[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "file", &b"hi"[..]).unwrap();
        b.finish().unwrap();
    }
    let stats = unpack_tar(&tar[..], &sb.dest, &Limits::default(), &Cancel::new()).unwrap();
    assert_eq!((stats.entries, stats.files), (2, 1));
    assert_eq!(outpost_testkit::fixtures::snapshot(&sb.dest).len(), 1);
}
