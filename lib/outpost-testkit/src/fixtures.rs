//! Archive fixtures built in code: tar archives (well-formed and hostile), compressed tarballs, trees
//! on disk and their snapshots, and a sandbox that shows whether anything was written outside
//! the destination.
// Test support: a fixture that cannot be built fails the test that asked for it.
#![allow(clippy::unwrap_used, clippy::new_without_default)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use outpost_archive::{Digest, Expected};
/// The entry types of [`TarBuilder::raw`], for tests that build hostile archives.
pub use tar::EntryType;
use tar::Header;

/// A scratch directory holding `dest/` (where unpacking goes) and `sentinel/` (which hostile
/// archives aim at). `assert_contained` checks nothing outside `dest/` changed.
#[derive(Debug)]
pub struct Sandbox {
    pub base: tempfile::TempDir,
    pub dest: PathBuf,
    pub sentinel: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let dest = base.path().join("dest");
        let sentinel = base.path().join("sentinel");
        fs_err::create_dir(&dest).unwrap();
        fs_err::create_dir(&sentinel).unwrap();
        Self {
            base,
            dest,
            sentinel,
        }
    }

    /// Nothing but `dest/` and an empty `sentinel/` in the base directory, and nothing in
    /// the base's parent named like a planted file.
    pub fn assert_contained(&self) {
        let mut names: Vec<_> = fs_err::read_dir(self.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dest", "sentinel"],
            "something was written beside dest"
        );
        assert_eq!(
            fs_err::read_dir(&self.sentinel).unwrap().count(),
            0,
            "something was written into the sentinel directory"
        );
        let parent = self.base.path().parent().unwrap();
        assert!(
            !parent.join("pwned").exists(),
            "something was written above the sandbox"
        );
    }
}

/// What a path in a tree is, for comparing trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// Every path below `root` (relative, `/`-separated) and what it is.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
    for e in fs_err::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = e.path();
        let meta = fs_err::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs_err::read_link(&path).unwrap();
            out.insert(
                rel,
                Node::Symlink {
                    target: target.to_str().unwrap().to_owned(),
                },
            );
        } else if meta.is_dir() {
            out.insert(rel.clone(), Node::Dir { mode });
            walk(&path, &rel, out);
        } else {
            let data = fs_err::read(&path).unwrap();
            out.insert(rel, Node::File { mode, data });
        }
    }
}

/// A tar header with the given raw name bytes, written straight into the name field so that
/// names the `tar` crate would refuse to set (absolute, `..`, NUL) can be built.
pub fn raw_header(name: &[u8], kind: EntryType, size: u64, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    assert!(name.len() <= 100, "raw names must fit the header");
    h.as_old_mut().name = [0; 100];
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// Builds tar archives entry by entry, including entries no honest tool writes.
#[allow(missing_debug_implementations)]
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    pub fn file(mut self, name: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
        h.set_mode(mode);
        self.b.append_data(&mut h, name, &[][..]).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        self.b.append_link(&mut h, name, target).unwrap();
        self
    }

    /// An entry whose name bytes go into the header unchecked.
    pub fn raw(mut self, name: &[u8], kind: EntryType, data: &[u8], mode: u32) -> Self {
        let h = raw_header(name, kind, data.len() as u64, mode);
        self.b.append(&h, data).unwrap();
        self
    }

    /// A link entry (symlink or hard link) with raw name and target bytes.
    pub fn raw_link(mut self, name: &[u8], kind: EntryType, target: &[u8]) -> Self {
        let mut h = raw_header(name, kind, 0, 0o777);
        h.as_old_mut().linkname = [0; 100];
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    /// A header whose size field says `claimed` while `data` follows (padded to 512).
    pub fn lying_size(mut self, name: &str, claimed: u64, data: &[u8]) -> Self {
        let h = raw_header(name.as_bytes(), EntryType::Regular, claimed, 0o644);
        self.b.get_mut().extend_from_slice(h.as_bytes());
        self.b.get_mut().extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.b.get_mut().extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A GNU long-name record followed by a regular file (the header name is a stub).
    pub fn gnu_long_name(mut self, long: &[u8], data: &[u8]) -> Self {
        let h = raw_header(
            b"././@LongLink",
            EntryType::GNULongName,
            long.len() as u64 + 1,
            0o644,
        );
        let mut payload = long.to_vec();
        payload.push(0);
        self.b.append(&h, &payload[..]).unwrap();
        let h = raw_header(b"stub", EntryType::Regular, data.len() as u64, 0o644);
        self.b.append(&h, data).unwrap();
        self
    }

    /// A PAX header with the given records followed by a regular file.
    pub fn pax_file(mut self, records: &[(&str, &[u8])], name: &str, data: &[u8]) -> Self {
        self.b
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        let h = raw_header(
            name.as_bytes(),
            EntryType::Regular,
            data.len() as u64,
            0o644,
        );
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    /// The bytes without the end-of-archive blocks (for appending hand-made blocks).
    pub fn unterminated(self) -> Vec<u8> {
        let mut v = self.b.into_inner().unwrap();
        v.truncate(v.len() - 1024);
        v
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn expected_for(data: &[u8]) -> Expected {
    Expected {
        digest: Digest::of(data),
        size: Some(data.len() as u64),
    }
}

/// The three tarball encodings of one tar.
pub fn encodings(tar: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tar", tar.to_vec()),
        ("tar.gz", gzip(tar)),
        ("tar.zst", zstd(tar)),
    ]
}

/// Writes a tree: `dir/` entries end with `/`, `a -> b` are symlinks, the rest files.
pub fn write_tree(root: &Path, entries: &[(&str, &[u8], u32)]) {
    for (path, data, mode) in entries {
        let p = root.join(path.trim_end_matches('/'));
        if let Some((link, target)) = path.split_once(" -> ") {
            fs_err::os::unix::fs::symlink(target, root.join(link)).unwrap();
        } else if path.ends_with('/') {
            fs_err::create_dir_all(&p).unwrap();
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        } else {
            if let Some(parent) = p.parent() {
                fs_err::create_dir_all(parent).unwrap();
            }
            fs_err::write(&p, data).unwrap();
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
    }
}
