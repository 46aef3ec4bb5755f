//! Fixtures shared by the repository's integration tests: payloads whose completeness can be
//! checked, a repository in a sandbox, snapshots of the tree, and the crash invariants.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part
#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use outpost_repo::{
    PackageName, PackageState, RepoError, Repository, StagingDir, Version, failpoint,
};

pub fn pkg(s: &str) -> PackageName {
    PackageName::new(s).unwrap()
}

pub fn ver(s: &str) -> Version {
    Version::new(s).unwrap()
}

pub fn ps(stable: &str, experiment: Option<&str>) -> PackageState {
    PackageState {
        stable: ver(stable),
        experiment: experiment.map(ver),
    }
}

/// The marker written last into every payload; its content lists the other files.
pub const MARKER: &str = "COMPLETE";

fn blob(pkg: &str, version: &str, len: usize) -> Vec<u8> {
    let seed = format!("{pkg}/{version}");
    seed.bytes()
        .cycle()
        .enumerate()
        .take(len)
        .map(|(i, b)| b.wrapping_add((i % 251) as u8))
        .collect()
}

fn payload_files(pkg: &str, version: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "bin/run",
            format!("#!/bin/sh\necho {pkg} {version}\n").into_bytes(),
        ),
        ("data/blob.bin", blob(pkg, version, 4096)),
        ("data/nested/empty", Vec::new()),
    ]
}

/// Writes a package payload into `dir`: a few files, then [`MARKER`] naming them, last.
pub fn write_payload(dir: &Path, pkg: &str, version: &str) {
    let files = payload_files(pkg, version);
    let mut marker = format!("package={pkg}\nversion={version}\n");
    for (rel, content) in &files {
        let path = dir.join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, content).unwrap();
        marker.push_str(&format!("{rel}={}\n", content.len()));
    }
    fs_err::write(dir.join(MARKER), marker).unwrap();
}

/// Checks that `dir` holds the complete payload of `pkg` `version`.
pub fn check_complete(dir: &Path, pkg: &str, version: &str) -> Result<(), String> {
    let marker = fs_err::read_to_string(dir.join(MARKER))
        .map_err(|e| format!("{}: no completeness marker: {e}", dir.display()))?;
    let expected_head = format!("package={pkg}\nversion={version}\n");
    if !marker.starts_with(&expected_head) {
        return Err(format!(
            "{}: marker names another payload: {marker:?}",
            dir.display()
        ));
    }
    for (rel, content) in payload_files(pkg, version) {
        if !marker.contains(&format!("{rel}={}\n", content.len())) {
            return Err(format!("{}: marker does not list {rel}", dir.display()));
        }
        let actual = fs_err::read(dir.join(rel)).map_err(|e| format!("{e}"))?;
        if actual != content {
            return Err(format!("{}: {rel} differs", dir.display()));
        }
    }
    Ok(())
}

/// A repository at `<sandbox>/root`, with an empty `<sandbox>/outside` beside it to prove
/// nothing is written outside the root.
pub struct Fx {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
}

impl Fx {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("outside")).unwrap();
        let repo = Repository::open(dir.path().join("root")).unwrap();
        Self { dir, repo }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// A fresh handle on the same root: what the next process would see.
    pub fn reopen(&self) -> Repository {
        Repository::open(self.root()).unwrap()
    }

    pub fn stage(&self, p: &str, v: &str) -> StagingDir {
        stage(&self.repo, p, v)
    }

    /// Like [`Fx::stage`], passing on a failure to create the staging directory.
    pub fn try_stage(&self, p: &str, v: &str) -> Result<StagingDir, RepoError> {
        try_stage(&self.repo, p, v)
    }

    pub fn install(&self, p: &str, v: &str) {
        self.repo
            .install(&pkg(p), &ver(v), self.stage(p, v))
            .unwrap();
    }

    pub fn start(&self, p: &str, v: &str) {
        self.repo
            .start_experiment(&pkg(p), &ver(v), self.stage(p, v))
            .unwrap();
    }

    pub fn state(&self, p: &str) -> Option<PackageState> {
        self.reopen().state(&pkg(p)).unwrap()
    }

    pub fn has_dir(&self, p: &str, v: &str) -> bool {
        self.root().join("packages").join(p).join(v).is_dir()
    }

    pub fn tmp_entries(&self) -> Vec<String> {
        names(&self.root().join("tmp"))
    }

    pub fn assert_outside_untouched(&self) {
        let top = names(self.dir.path());
        assert_eq!(
            top,
            ["outside", "root"],
            "something was written beside the root"
        );
        assert!(
            names(&self.outside()).is_empty(),
            "something was written outside the root"
        );
    }
}

pub fn stage(repo: &Repository, p: &str, v: &str) -> StagingDir {
    try_stage(repo, p, v).unwrap()
}

pub fn try_stage(repo: &Repository, p: &str, v: &str) -> Result<StagingDir, RepoError> {
    let staged = repo.staging(&format!("{p}-{v}"))?;
    write_payload(staged.path(), p, v);
    Ok(staged)
}

/// Sorted entry names of a directory (empty when it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

/// One node of a [`snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every path under `root/packages` and `root/tmp` with its kind and content.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for top in ["packages", "tmp"] {
        walk(root, &root.join(top), &mut out);
    }
    out
}

/// Like [`snapshot`], plus `run/locks`.
pub fn snapshot_all(root: &Path) -> BTreeMap<String, Node> {
    let mut out = snapshot(root);
    walk(root, &root.join("run/locks"), &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<String, Node>) {
    let Ok(meta) = fs_err::symlink_metadata(path) else {
        return;
    };
    let rel = path
        .strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    if meta.file_type().is_symlink() {
        out.insert(rel, Node::Link(fs_err::read_link(path).unwrap()));
    } else if meta.is_dir() {
        out.insert(rel, Node::Dir);
        for name in names(path) {
            walk(root, &path.join(name), out);
        }
    } else {
        out.insert(rel, Node::File(fs_err::read(path).unwrap()));
    }
}

/// The crash invariants of the spec, checked on what a fresh handle sees: for every package,
/// `stable` resolves to a complete version directory (or the package reads as not installed),
/// `experiment` is absent or complete, and every version directory is complete.
pub fn assert_invariants(root: &Path) -> BTreeMap<PackageName, PackageState> {
    let repo = Repository::open(root).unwrap();
    let states = repo.states().unwrap();
    for (name, state) in &states {
        let stable_dir = root.join("packages").join(name.as_str()).join("stable");
        check_complete(&stable_dir, name.as_str(), state.stable.as_str())
            .unwrap_or_else(|e| panic!("stable of {name}: {e}"));
        if let Some(exp) = &state.experiment {
            let exp_dir = root.join("packages").join(name.as_str()).join("experiment");
            check_complete(&exp_dir, name.as_str(), exp.as_str())
                .unwrap_or_else(|e| panic!("experiment of {name}: {e}"));
        }
    }
    for name in names(&root.join("packages")) {
        let pkg_dir = root.join("packages").join(&name);
        for entry in names(&pkg_dir) {
            let path = pkg_dir.join(&entry);
            let is_real_dir = fs_err::symlink_metadata(&path).unwrap().is_dir();
            if Version::new(entry.as_str()).is_ok() && is_real_dir {
                check_complete(&path, &name, &entry)
                    .unwrap_or_else(|e| panic!("version directory {}: {e}", path.display()));
            }
        }
    }
    states
}

/// What must hold after a successful GC: `tmp/` is empty, no temporary or broken links, no
/// version directory that is neither referenced nor in `locked`, no empty package directory,
/// and no lock directory of a missing version.
pub fn assert_clean(root: &Path, locked: &[(&str, &str)]) {
    let repo = Repository::open(root).unwrap();
    let states = repo.states().unwrap();
    assert!(
        names(&root.join("tmp")).is_empty(),
        "tmp/ not empty: {:?}",
        names(&root.join("tmp"))
    );
    let locked: BTreeSet<(String, String)> = locked
        .iter()
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect();
    for name in names(&root.join("packages")) {
        let pkg_dir = root.join("packages").join(&name);
        let entries = names(&pkg_dir);
        let state = states.get(&pkg(&name));
        assert!(
            state.is_some()
                || entries
                    .iter()
                    .any(|e| locked.contains(&(name.clone(), e.clone()))),
            "package directory {name} left without links: {entries:?}"
        );
        for entry in entries {
            match entry.as_str() {
                "stable" => assert!(state.is_some()),
                "experiment" => assert!(
                    state.unwrap().experiment.is_some(),
                    "stale experiment link in {name}"
                ),
                v => {
                    let state = state.cloned();
                    let referenced = state.as_ref().is_some_and(|s| {
                        s.stable.as_str() == v
                            || s.experiment.as_ref().is_some_and(|e| e.as_str() == v)
                    });
                    assert!(
                        referenced || locked.contains(&(name.clone(), v.to_string())),
                        "unexpected entry {name}/{v} after GC (state {state:?})"
                    );
                }
            }
        }
    }
    for name in names(&root.join("run/locks")) {
        for v in names(&root.join("run/locks").join(&name)) {
            assert!(
                root.join("packages").join(&name).join(&v).is_dir(),
                "lock directory of a missing version: {name}/{v}"
            );
        }
    }
}

/// Every (name, occurrence) an operation passes, in order, from a recording of its hits.
pub fn occurrences(hits: &[&'static str]) -> Vec<(&'static str, u32)> {
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    hits.iter()
        .map(|name| {
            let n = counts.entry(name).or_default();
            *n += 1;
            (*name, *n)
        })
        .collect()
}

/// Asserts that every hit is a listed failure point.
pub fn assert_listed(hits: &[&'static str]) {
    for name in hits {
        assert!(
            failpoint::ALL.contains(name),
            "failure point {name} is hit but missing from failpoint::ALL"
        );
    }
}
