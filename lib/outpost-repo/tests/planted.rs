//! Links and modes planted in the repository between two operations: a directory others may
//! write to or that another uid owns is refused (at open and before every change), and a
//! symbolic link where a directory belongs is never followed.
#![allow(clippy::unwrap_used)]

mod common;

use fs_err::os::unix::fs::symlink;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use common::{Fx, names, pkg, ps, ver};
use outpost_repo::{RepoError, Repository, UnsafeReason};
use outpost_types::ErrorCode;

fn chmod(path: &Path, mode: u32) {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn assert_writable(err: &RepoError, dir: &Path, mode: u32) {
    assert!(
        matches!(err, RepoError::UnsafeDirectory { path, reason: UnsafeReason::Writable { mode: m } }
            if path == dir && *m == mode),
        "expected {} refused as writable ({mode:o}), got {err:?}",
        dir.display()
    );
    assert_eq!(err.code(), ErrorCode::Filesystem);
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}

/// Every change the repository offers, each expected to be refused with `check`.
fn every_change_is_refused(fx: &Fx, check: impl Fn(&RepoError)) {
    let repo = &fx.repo;
    check(&repo.staging("p-3.0").unwrap_err());
    check(&repo.gc().unwrap_err());
    check(&repo.clean_staging().unwrap_err());
    check(&repo.stop_experiment(&pkg("p")).unwrap_err());
    check(&repo.promote_experiment(&pkg("p")).unwrap_err());
    check(&repo.remove(&pkg("p")).unwrap_err());
    check(
        &repo
            .lock_version(&pkg("p"), &ver("1.0"), std::process::id())
            .unwrap_err(),
    );
    check(&Repository::open(fx.root()).unwrap_err());
}

#[test]
fn a_writable_root_packages_tmp_or_run_is_refused_before_every_change() {
    for dir in ["", "packages", "tmp", "run"] {
        let fx = Fx::new();
        fx.install("p", "1.0");
        // Staged while the directory was still safe, so install and start are tried too.
        let staged_install = fx.stage("p", "2.0");
        let staged_start = fx.stage("p", "2.0");
        let path = if dir.is_empty() {
            fx.root()
        } else {
            fx.root().join(dir)
        };
        for mode in [0o775, 0o757, 0o1777] {
            chmod(&path, mode);
            every_change_is_refused(&fx, |err| assert_writable(err, &path, mode));
        }
        let err = fx
            .repo
            .install(&pkg("p"), &ver("2.0"), staged_install)
            .unwrap_err();
        assert_writable(&err, &path, 0o1777);
        let err = fx
            .repo
            .start_experiment(&pkg("p"), &ver("2.0"), staged_start)
            .unwrap_err();
        assert_writable(&err, &path, 0o1777);
        // Reads still answer, and nothing changed.
        assert_eq!(fx.repo.state(&pkg("p")).unwrap(), Some(ps("1.0", None)));
        chmod(&path, 0o755);
        fx.install("p", "2.0");
        assert_eq!(fx.state("p"), Some(ps("2.0", None)));
        fx.repo.gc().unwrap();
        fx.assert_outside_untouched();
    }
}

#[test]
fn a_directory_owned_by_another_uid_is_refused() {
    let me = rustix::process::geteuid().as_raw();
    let other = if me == 0 { 65534 } else { me };
    assert_eq!(
        me, 0,
        "changing an owner needs root; the test suite runs as root"
    );
    for dir in ["", "packages", "tmp", "run"] {
        let fx = Fx::new();
        fx.install("p", "1.0");
        let path = if dir.is_empty() {
            fx.root()
        } else {
            fx.root().join(dir)
        };
        std::os::unix::fs::chown(&path, Some(other), None).unwrap();
        every_change_is_refused(&fx, |err| {
            assert!(
                matches!(err, RepoError::UnsafeDirectory { path: p, reason: UnsafeReason::Owner { owner, expected } }
                    if *p == path && *owner == other && *expected == me),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("is owned by uid {other}, not by uid {me}")),
                "{err}"
            );
        });
        std::os::unix::fs::chown(&path, Some(me), None).unwrap();
        fx.install("p", "2.0");
        assert_eq!(fx.state("p"), Some(ps("2.0", None)));
    }
}

#[test]
fn gc_never_follows_a_symlinked_tmp() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    fx.install("p", "2.0");
    let precious = fx.dir.path().join("precious");
    fs_err::create_dir(&precious).unwrap();
    fs_err::write(precious.join("keep"), "data").unwrap();
    let tmp = fx.root().join("tmp");
    fs_err::remove_dir(&tmp).unwrap();
    symlink(&precious, &tmp).unwrap();

    let err = fx.repo.gc().unwrap_err();
    assert!(
        matches!(&err, RepoError::NotADirectory { path } if *path == tmp),
        "{err:?}"
    );
    assert!(matches!(
        fx.repo.clean_staging(),
        Err(RepoError::NotADirectory { .. })
    ));
    assert!(matches!(
        fx.repo.staging("p-3.0"),
        Err(RepoError::NotADirectory { .. })
    ));
    assert!(matches!(
        fx.repo.remove(&pkg("p")),
        Err(RepoError::NotADirectory { .. })
    ));
    assert!(matches!(
        Repository::open(fx.root()),
        Err(RepoError::NotADirectory { .. })
    ));
    assert_eq!(
        names(&precious),
        ["keep"],
        "nothing deleted or moved through the link"
    );
    assert!(
        fx.has_dir("p", "1.0"),
        "the unreferenced version was not moved"
    );
    assert_eq!(fx.repo.state(&pkg("p")).unwrap(), Some(ps("2.0", None)));

    // The operator removes the link; the repository recreates tmp/ and collects as usual.
    fs_err::remove_file(&tmp).unwrap();
    let repo = Repository::open(fx.root()).unwrap();
    let report = repo.gc().unwrap();
    assert_eq!(report.removed_versions, [(pkg("p"), ver("1.0"))]);
    assert_eq!(names(&precious), ["keep"]);
}

#[test]
fn a_version_directory_replaced_by_a_symlink_is_never_followed() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    fx.start("p", "2.0");
    // Copies of the real trees outside the root, then links in their place.
    let pkg_dir = fx.root().join("packages/p");
    for v in ["1.0", "2.0"] {
        let copy = fx.outside().join(v);
        fs_err::rename(pkg_dir.join(v), &copy).unwrap();
        symlink(&copy, pkg_dir.join(v)).unwrap();
    }
    // stable and experiment name version directories that are links: not installed.
    assert_eq!(fx.repo.state(&pkg("p")).unwrap(), None);
    assert!(fx.repo.states().unwrap().is_empty());
    assert!(!fx.repo.has_version(&pkg("p"), &ver("1.0")));
    assert!(matches!(
        fx.repo.promote_experiment(&pkg("p")),
        Err(RepoError::NotInstalled { .. })
    ));

    // An install puts a real tree in place of the link, moving the link (not its target).
    fx.install("p", "1.0");
    assert_eq!(fx.state("p"), Some(ps("1.0", None)));
    let meta = fs_err::symlink_metadata(pkg_dir.join("1.0")).unwrap();
    assert!(meta.is_dir());
    common::check_complete(&pkg_dir.join("1.0"), "p", "1.0").unwrap();

    // GC removes the leftover link named like a version without following it.
    fx.repo.gc().unwrap();
    assert!(fs_err::symlink_metadata(pkg_dir.join("2.0")).is_err());
    for v in ["1.0", "2.0"] {
        common::check_complete(&fx.outside().join(v), "p", v).unwrap();
    }
    assert_eq!(names(&fx.outside()), ["1.0", "2.0"]);
    common::assert_invariants(&fx.root());
}

#[test]
fn an_experiment_whose_target_became_a_symlink_reads_as_none_and_is_repaired() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    fx.start("p", "2.0");
    let pkg_dir = fx.root().join("packages/p");
    let copy = fx.outside().join("2.0");
    fs_err::rename(pkg_dir.join("2.0"), &copy).unwrap();
    symlink(&copy, pkg_dir.join("2.0")).unwrap();

    assert_eq!(fx.repo.state(&pkg("p")).unwrap(), Some(ps("1.0", None)));
    let err = fx.repo.promote_experiment(&pkg("p")).unwrap_err();
    assert!(
        matches!(err, RepoError::InvalidState { .. }),
        "never promoted through the link: {err:?}"
    );
    assert_eq!(
        fs_err::symlink_metadata(pkg_dir.join("stable"))
            .map(|_| fs_err::read_link(pkg_dir.join("stable")).unwrap())
            .unwrap(),
        Path::new("1.0")
    );
    // The broken experiment link was repaired by that operation.
    assert!(fs_err::symlink_metadata(pkg_dir.join("experiment")).is_err());
    fx.start("p", "3.0");
    assert_eq!(fx.state("p"), Some(ps("1.0", Some("3.0"))));
    fx.repo.gc().unwrap();
    common::check_complete(&copy, "p", "2.0").unwrap();
    common::assert_invariants(&fx.root());
}

#[test]
fn a_symlink_at_the_writer_lock_is_not_opened() {
    let fx = Fx::new();
    let target = fx.outside().join("created");
    symlink(&target, fx.root().join("run/repo.lock")).unwrap();
    let err = fx.repo.acquire_writer_lock().unwrap_err();
    assert!(
        matches!(&err, RepoError::Filesystem { path, .. } if path.ends_with("run/repo.lock")),
        "{err:?}"
    );
    assert!(
        fs_err::symlink_metadata(&target).is_err(),
        "nothing created through the link"
    );
    fx.assert_outside_untouched();
}

#[test]
fn the_root_is_created_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new-root");
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o002));
    let opened = Repository::open(&root);
    rustix::process::umask(old);
    opened.unwrap();
    assert_eq!(fs_err::metadata(&root).unwrap().mode() & 0o7777, 0o755);
}
