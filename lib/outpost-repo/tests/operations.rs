//! Every operation: works / rolls back (an injected failure at each of its steps leaves the
//! previous state) / refuses a conflict; plus hostile trees and concurrent readers.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use outpost_repo::{InvalidStateReason, RepoError, Repository, failpoint};
use outpost_types::ErrorCode;

// ---- rollback harness ---------------------------------------------------------------------

/// Runs `op` once on `setup` to learn every failure point it passes, then, for each one, on a
/// fresh `setup`: injects an error there, checks the operation fails with that error, and that
/// `packages/` and `tmp/` are exactly as before (and the states a fresh handle reads).
/// Returns how many steps were checked.
fn assert_rolls_back(setup: fn(&Fx), op: fn(&Fx) -> Result<(), RepoError>) -> usize {
    let hits = {
        let fx = Fx::new();
        setup(&fx);
        let recording = failpoint::record();
        op(&fx).expect("the dry run succeeds");
        recording.hits()
    };
    assert_listed(&hits);
    let points = occurrences(&hits);
    assert!(!points.is_empty(), "the operation passes no failure point");
    for &(name, nth) in &points {
        let fx = Fx::new();
        setup(&fx);
        let before = snapshot(&fx.root());
        let states_before = fx.reopen().states().unwrap();
        let injection = failpoint::inject(name, nth);
        let err = op(&fx).expect_err(&format!("failure injected at {name}#{nth}"));
        assert!(injection.fired(), "{name}#{nth} not reached");
        assert_eq!(
            failpoint::injected_name(&err),
            Some(name),
            "error at {name}#{nth} is not the injected one: {err:?}"
        );
        drop(injection);
        assert_eq!(
            fx.reopen().states().unwrap(),
            states_before,
            "state after failure at {name}#{nth}"
        );
        assert_eq!(
            snapshot(&fx.root()),
            before,
            "tree after failure at {name}#{nth}"
        );
        assert_invariants(&fx.root());
        fx.assert_outside_untouched();
    }
    points.len()
}

fn installed(fx: &Fx) {
    fx.install("p", "1.0");
}

fn with_experiment(fx: &Fx) {
    fx.install("p", "1.0");
    fx.start("p", "2.0");
}

/// An unlocked leftover of version 3.0 (an experiment that was stopped, GC not run yet).
fn with_leftover(fx: &Fx) {
    fx.install("p", "1.0");
    fx.start("p", "3.0");
    fx.repo.stop_experiment(&pkg("p")).unwrap();
}

// ---- install ------------------------------------------------------------------------------

#[test]
fn install_first_version_creates_package_and_stable() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    assert_eq!(fx.state("p"), Some(ps("1.0", None)));
    check_complete(&fx.root().join("packages/p/stable"), "p", "1.0").unwrap();
    assert_eq!(
        fs_err::read_link(fx.root().join("packages/p/stable")).unwrap(),
        std::path::Path::new("1.0"),
        "links are relative"
    );
    assert!(
        fx.tmp_entries().is_empty(),
        "the staged tree was moved, not copied"
    );
    assert!(fx.repo.has_version(&pkg("p"), &ver("1.0")));
    fx.assert_outside_untouched();
}

#[test]
fn install_replaces_stable_and_keeps_old_until_gc() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    fx.install("p", "2.0");
    assert_eq!(fx.state("p"), Some(ps("2.0", None)));
    assert!(fx.has_dir("p", "1.0"), "a switch never deletes");
    let report = fx.repo.gc().unwrap();
    assert_eq!(report.removed_versions, [(pkg("p"), ver("1.0"))]);
    assert!(!fx.has_dir("p", "1.0"));
    assert_clean(&fx.root(), &[]);
}

#[test]
fn install_drops_a_running_experiment() {
    let fx = Fx::new();
    with_experiment(&fx);
    fx.install("p", "3.0");
    assert_eq!(fx.state("p"), Some(ps("3.0", None)));
    assert!(!fx.root().join("packages/p/experiment").exists());
}

#[test]
fn install_of_the_running_experiment_version_reuses_its_directory() {
    let fx = Fx::new();
    with_experiment(&fx);
    let inode = inode(&fx.root().join("packages/p/2.0"));
    fx.install("p", "2.0");
    assert_eq!(fx.state("p"), Some(ps("2.0", None)));
    assert_eq!(inode, self::inode(&fx.root().join("packages/p/2.0")));
    assert!(fx.tmp_entries().is_empty());
}

#[test]
fn install_rolls_back_a_first_install_at_every_step() {
    let steps = assert_rolls_back(
        |_| {},
        |fx| {
            fx.repo
                .install(&pkg("p"), &ver("1.0"), fx.try_stage("p", "1.0")?)
        },
    );
    assert!(steps >= 14, "{steps}");
}

#[test]
fn install_rolls_back_a_replacement_at_every_step() {
    assert_rolls_back(installed, |fx| {
        fx.repo
            .install(&pkg("p"), &ver("2.0"), fx.try_stage("p", "2.0")?)
    });
}

#[test]
fn install_rolls_back_over_an_experiment_at_every_step() {
    assert_rolls_back(with_experiment, |fx| {
        fx.repo
            .install(&pkg("p"), &ver("3.0"), fx.try_stage("p", "3.0")?)
    });
}

#[test]
fn install_rolls_back_over_an_unlocked_leftover_at_every_step() {
    assert_rolls_back(with_leftover, |fx| {
        fx.repo
            .install(&pkg("p"), &ver("3.0"), fx.try_stage("p", "3.0")?)
    });
}

#[test]
fn install_of_the_stable_version_is_a_no_op() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let before = snapshot(&fx.root());
    let recording = failpoint::record();
    fx.repo
        .install(&pkg("p"), &ver("1.0"), fx.stage("p", "1.0"))
        .unwrap();
    assert_eq!(
        recording.hits(),
        ["repo.staging.mkdir", "repo.staging.mkdir.done"]
    );
    assert_eq!(
        snapshot(&fx.root()),
        before,
        "staged tree dropped, nothing changed"
    );
}

#[test]
fn install_over_an_unlocked_leftover_replaces_it() {
    let fx = Fx::new();
    with_leftover(&fx);
    let old = inode(&fx.root().join("packages/p/3.0"));
    fx.install("p", "3.0");
    assert_eq!(fx.state("p"), Some(ps("3.0", None)));
    assert_ne!(
        old,
        inode(&fx.root().join("packages/p/3.0")),
        "the staged tree took its place"
    );
    assert_eq!(
        fx.tmp_entries().len(),
        1,
        "the leftover waits in tmp/ for GC"
    );
    fx.repo.gc().unwrap();
    assert_clean(&fx.root(), &[]);
}

#[test]
fn install_over_a_locked_leftover_keeps_it_and_drops_the_staged_tree() {
    let fx = Fx::new();
    with_leftover(&fx);
    let _lock = fx
        .repo
        .lock_version(&pkg("p"), &ver("3.0"), std::process::id())
        .unwrap();
    let old = inode(&fx.root().join("packages/p/3.0"));
    fx.install("p", "3.0");
    assert_eq!(fx.state("p"), Some(ps("3.0", None)));
    assert_eq!(old, inode(&fx.root().join("packages/p/3.0")));
    assert!(fx.tmp_entries().is_empty());
}

#[test]
fn install_refuses_a_package_directory_that_is_a_symlink() {
    let fx = Fx::new();
    fs_err::os::unix::fs::symlink(fx.outside(), fx.root().join("packages/p")).unwrap();
    let err = fx
        .repo
        .install(&pkg("p"), &ver("1.0"), fx.stage("p", "1.0"))
        .unwrap_err();
    assert!(matches!(err, RepoError::NotADirectory { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Filesystem);
    assert!(
        names(&fx.outside()).is_empty(),
        "nothing written through the symlink"
    );
    assert!(fx.tmp_entries().is_empty());
    assert!(fx.repo.states().unwrap().is_empty());
}

#[test]
fn install_refuses_a_staging_directory_of_another_repository() {
    let fx = Fx::new();
    let other = Fx::new();
    let staged = other.stage("p", "1.0");
    let err = fx.repo.install(&pkg("p"), &ver("1.0"), staged).unwrap_err();
    assert!(matches!(err, RepoError::ForeignStaging { .. }), "{err:?}");
    assert!(
        other.tmp_entries().is_empty(),
        "the refused staging directory was dropped"
    );
    assert_eq!(fx.state("p"), None);
}

// ---- start_experiment ---------------------------------------------------------------------

#[test]
fn start_experiment_puts_the_version_beside_stable() {
    let fx = Fx::new();
    with_experiment(&fx);
    assert_eq!(fx.state("p"), Some(ps("1.0", Some("2.0"))));
    check_complete(&fx.root().join("packages/p/experiment"), "p", "2.0").unwrap();
    check_complete(&fx.root().join("packages/p/stable"), "p", "1.0").unwrap();
    assert!(fx.tmp_entries().is_empty());
}

#[test]
fn start_experiment_replaces_a_running_one() {
    let fx = Fx::new();
    with_experiment(&fx);
    fx.start("p", "3.0");
    assert_eq!(fx.state("p"), Some(ps("1.0", Some("3.0"))));
    assert!(fx.has_dir("p", "2.0"), "the old experiment waits for GC");
    fx.repo.gc().unwrap();
    assert!(!fx.has_dir("p", "2.0"));
    assert_clean(&fx.root(), &[]);
}

#[test]
fn start_experiment_rolls_back_at_every_step() {
    assert_rolls_back(installed, |fx| {
        fx.repo
            .start_experiment(&pkg("p"), &ver("2.0"), fx.try_stage("p", "2.0")?)
    });
}

#[test]
fn start_experiment_rolls_back_a_replacement_at_every_step() {
    assert_rolls_back(with_experiment, |fx| {
        fx.repo
            .start_experiment(&pkg("p"), &ver("3.0"), fx.try_stage("p", "3.0")?)
    });
}

#[test]
fn start_experiment_rolls_back_over_a_leftover_at_every_step() {
    assert_rolls_back(with_leftover, |fx| {
        fx.repo
            .start_experiment(&pkg("p"), &ver("3.0"), fx.try_stage("p", "3.0")?)
    });
}

#[test]
fn start_experiment_refuses_a_package_that_is_not_installed() {
    let fx = Fx::new();
    let err = fx
        .repo
        .start_experiment(&pkg("p"), &ver("2.0"), fx.stage("p", "2.0"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::InvalidState {
                reason: InvalidStateReason::NotInstalled,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert!(fx.tmp_entries().is_empty());
    assert!(names(&fx.root().join("packages")).is_empty());
}

#[test]
fn start_experiment_refuses_the_stable_version() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let before = snapshot(&fx.root());
    let err = fx
        .repo
        .start_experiment(&pkg("p"), &ver("1.0"), fx.stage("p", "1.0"))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert!(err.to_string().contains("already stable"), "{err}");
    assert_eq!(snapshot(&fx.root()), before);
}

#[test]
fn start_experiment_of_the_running_version_is_a_no_op() {
    let fx = Fx::new();
    with_experiment(&fx);
    let before = snapshot(&fx.root());
    fx.start("p", "2.0");
    assert_eq!(snapshot(&fx.root()), before);
}

// ---- stop_experiment ----------------------------------------------------------------------

#[test]
fn stop_experiment_removes_the_link_and_keeps_the_directory_until_gc() {
    let fx = Fx::new();
    with_experiment(&fx);
    fx.repo.stop_experiment(&pkg("p")).unwrap();
    assert_eq!(fx.state("p"), Some(ps("1.0", None)));
    assert!(fx.has_dir("p", "2.0"));
    fx.repo.gc().unwrap();
    assert!(!fx.has_dir("p", "2.0"));
    assert_clean(&fx.root(), &[]);
}

#[test]
fn stop_experiment_rolls_back_at_every_step() {
    assert_rolls_back(with_experiment, |fx| fx.repo.stop_experiment(&pkg("p")));
}

#[test]
fn stop_experiment_without_one_is_a_no_op() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let before = snapshot(&fx.root());
    fx.repo.stop_experiment(&pkg("p")).unwrap();
    assert_eq!(snapshot(&fx.root()), before);
}

#[test]
fn stop_experiment_refuses_a_package_that_is_not_installed() {
    let fx = Fx::new();
    let err = fx.repo.stop_experiment(&pkg("p")).unwrap_err();
    assert!(matches!(err, RepoError::NotInstalled { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::NotInstalled);
}

// ---- promote_experiment -------------------------------------------------------------------

#[test]
fn promote_experiment_makes_it_stable() {
    let fx = Fx::new();
    with_experiment(&fx);
    fx.repo.promote_experiment(&pkg("p")).unwrap();
    assert_eq!(fx.state("p"), Some(ps("2.0", None)));
    assert!(!fx.root().join("packages/p/experiment").exists());
    assert!(fx.has_dir("p", "1.0"), "the old stable waits for GC");
}

#[test]
fn promote_experiment_rolls_back_at_every_step() {
    assert_rolls_back(with_experiment, |fx| fx.repo.promote_experiment(&pkg("p")));
}

#[test]
fn promote_experiment_without_one_is_refused() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let before = snapshot(&fx.root());
    let err = fx.repo.promote_experiment(&pkg("p")).unwrap_err();
    assert_eq!(err.to_string(), "no experiment to promote");
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert_eq!(snapshot(&fx.root()), before);
}

#[test]
fn promote_experiment_refuses_a_package_that_is_not_installed() {
    let fx = Fx::new();
    let err = fx.repo.promote_experiment(&pkg("p")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotInstalled);
}

// ---- remove -------------------------------------------------------------------------------

#[test]
fn remove_takes_the_package_away_whole() {
    let fx = Fx::new();
    with_experiment(&fx);
    fx.install("q", "1.0");
    fx.repo.remove(&pkg("p")).unwrap();
    assert_eq!(fx.state("p"), None);
    assert!(
        !fx.root().join("packages/p").exists(),
        "one rename, no half state"
    );
    assert_eq!(
        fx.state("q"),
        Some(ps("1.0", None)),
        "other packages untouched"
    );
    fx.repo.gc().unwrap();
    assert_clean(&fx.root(), &[]);
}

#[test]
fn remove_rolls_back_at_every_step() {
    assert_rolls_back(with_experiment, |fx| fx.repo.remove(&pkg("p")));
}

#[test]
fn remove_deletes_lock_files_of_dead_processes() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let locks = fx.repo.lock_dir(&pkg("p"), &ver("1.0"));
    fs_err::create_dir_all(&locks).unwrap();
    fs_err::write(locks.join("-1"), "").unwrap();
    fs_err::write(locks.join(dead_pid().to_string()), "").unwrap();
    fx.repo.remove(&pkg("p")).unwrap();
    assert!(names(&locks).is_empty());
    fx.repo.gc().unwrap();
    assert!(!fx.root().join("run/locks/p").exists());
    assert_clean(&fx.root(), &[]);
}

#[test]
fn remove_refuses_a_package_with_a_locked_version_and_changes_nothing() {
    let fx = Fx::new();
    with_experiment(&fx);
    let _lock = fx
        .repo
        .lock_version(&pkg("p"), &ver("2.0"), std::process::id())
        .unwrap();
    let dead_lock = fx.repo.lock_dir(&pkg("p"), &ver("1.0")).join("-1");
    fs_err::create_dir_all(dead_lock.parent().unwrap()).unwrap();
    fs_err::write(&dead_lock, "").unwrap();
    let before = snapshot_all(&fx.root());
    let err = fx.repo.remove(&pkg("p")).unwrap_err();
    match &err {
        RepoError::Busy {
            package,
            version,
            pids,
        } => {
            assert_eq!(package, &pkg("p"));
            assert_eq!(version, &ver("2.0"));
            assert_eq!(pids, &[std::process::id()]);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(err.code(), ErrorCode::Busy);
    assert_eq!(
        snapshot_all(&fx.root()),
        before,
        "nothing changed, not even dead locks"
    );
}

#[test]
fn live_locks_lists_only_live_holders() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    assert!(fx.repo.live_locks(&pkg("p")).unwrap().is_empty());
    let _lock = fx
        .repo
        .lock_version(&pkg("p"), &ver("2.0"), std::process::id())
        .unwrap();
    let dead = fx.repo.lock_dir(&pkg("p"), &ver("1.0"));
    fs_err::create_dir_all(&dead).unwrap();
    fs_err::write(dead.join("-1"), "").unwrap();
    fs_err::write(dead.join(dead_pid().to_string()), "").unwrap();
    assert_eq!(
        fx.repo.live_locks(&pkg("p")).unwrap(),
        [(ver("2.0"), vec![std::process::id()])]
    );
    assert_eq!(names(&dead).len(), 2, "a read deletes nothing");
    assert!(fx.repo.live_locks(&pkg("other")).unwrap().is_empty());
}

#[test]
fn remove_refuses_a_package_that_is_not_installed() {
    let fx = Fx::new();
    assert_eq!(
        fx.repo.remove(&pkg("p")).unwrap_err().code(),
        ErrorCode::NotInstalled
    );
    // A directory without a stable link is not an installed package either.
    fs_err::create_dir(fx.root().join("packages/p")).unwrap();
    assert_eq!(
        fx.repo.remove(&pkg("p")).unwrap_err().code(),
        ErrorCode::NotInstalled
    );
}

// ---- gc -----------------------------------------------------------------------------------

/// Garbage of every kind GC handles, around two live packages.
fn with_garbage(fx: &Fx) {
    with_experiment(fx);
    fx.start("p", "3.0"); // 2.0 is now unreferenced
    fx.install("q", "1.0");
    fx.install("q", "2.0"); // q/1.0 unreferenced
    fx.install("gone", "1.0");
    fx.repo.remove(&pkg("gone")).unwrap(); // a removed package waiting in tmp/
    let root = fx.root();
    fs_err::os::unix::fs::symlink("1.0", root.join("packages/p/stable@0123456789abcdef")).unwrap();
    fs_err::write(root.join("tmp/leftover-file"), "x").unwrap();
    fs_err::create_dir_all(root.join("tmp/crashed-staging/deep")).unwrap();
    let locks = fx.repo.lock_dir(&pkg("q"), &ver("2.0"));
    fs_err::create_dir_all(&locks).unwrap();
    fs_err::write(locks.join("-1"), "").unwrap();
    fs_err::create_dir_all(root.join("run/locks/q/never-installed")).unwrap();
}

#[test]
fn gc_removes_unreferenced_versions_and_leftovers() {
    let fx = Fx::new();
    with_garbage(&fx);
    let states = fx.reopen().states().unwrap();
    let report = fx.repo.gc().unwrap();
    assert_eq!(
        report.removed_versions,
        [(pkg("p"), ver("2.0")), (pkg("q"), ver("1.0"))]
    );
    assert_eq!(report.removed_lock_files, 1);
    assert_eq!(report.removed_lock_dirs, 1);
    assert_eq!(report.repaired_links, 1);
    assert_eq!(report.removed_tmp_entries, 3);
    assert_eq!(fx.reopen().states().unwrap(), states, "GC changes no state");
    assert_clean(&fx.root(), &[]);
    assert!(
        fx.repo.gc().unwrap().is_empty(),
        "a second pass finds nothing"
    );
}

#[test]
fn gc_failure_at_every_step_keeps_states_and_the_next_pass_finishes() {
    let hits = {
        let fx = Fx::new();
        with_garbage(&fx);
        let recording = failpoint::record();
        fx.repo.gc().unwrap();
        recording.hits()
    };
    assert_listed(&hits);
    let expected = {
        let fx = Fx::new();
        with_garbage(&fx);
        fx.repo.gc().unwrap();
        (
            fx.reopen().states().unwrap(),
            names(&fx.root().join("packages/p")),
        )
    };
    for (name, nth) in occurrences(&hits) {
        let fx = Fx::new();
        with_garbage(&fx);
        let injection = failpoint::inject(name, nth);
        let err = fx.repo.gc().expect_err(name);
        assert!(injection.fired());
        assert_eq!(failpoint::injected_name(&err), Some(name));
        drop(injection);
        assert_invariants(&fx.root());
        assert_eq!(fx.reopen().states().unwrap(), expected.0, "{name}#{nth}");
        fx.repo.gc().unwrap();
        assert_eq!(
            names(&fx.root().join("packages/p")),
            expected.1,
            "{name}#{nth}"
        );
        assert_clean(&fx.root(), &[]);
    }
}

#[test]
fn gc_keeps_locked_versions_and_live_staging_directories() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    fx.install("p", "2.0");
    let _lock = fx
        .repo
        .lock_version(&pkg("p"), &ver("1.0"), std::process::id())
        .unwrap();
    let live = fx.stage("p", "3.0");
    let report = fx.repo.gc().unwrap();
    assert_eq!(report.kept_locked, [(pkg("p"), ver("1.0"))]);
    assert!(fx.has_dir("p", "1.0"));
    assert!(
        live.path().join(MARKER).is_file(),
        "a live staging directory is not garbage"
    );
    assert_eq!(fx.repo.clean_staging().unwrap(), 0);
    assert!(live.path().is_dir());
    drop(live);
    assert!(
        fx.tmp_entries().is_empty(),
        "dropped staging directories delete themselves"
    );
}

#[test]
fn gc_removes_hostile_entries_without_following_them() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let outside = fx.outside();
    fs_err::write(outside.join("precious"), "keep").unwrap();
    let pkg_dir = fx.root().join("packages/p");
    // A symlink named like a version, pointing outside; a file named like a version.
    fs_err::os::unix::fs::symlink(&outside, pkg_dir.join("6.6.6")).unwrap();
    fs_err::write(pkg_dir.join("7.7.7"), "not a tree").unwrap();
    // A package whose stable link escapes the root.
    fs_err::create_dir(outside.join("1.0")).unwrap();
    fs_err::create_dir(fx.root().join("packages/evil")).unwrap();
    fs_err::os::unix::fs::symlink(outside.join("1.0"), fx.root().join("packages/evil/stable"))
        .unwrap();
    // A package directory that is a symlink, and an entry that is no package name.
    fs_err::os::unix::fs::symlink(&outside, fx.root().join("packages/linked")).unwrap();
    fs_err::create_dir(fx.root().join("packages/NotAName")).unwrap();
    // Lock files: a foreign name is kept, invalid pids go.
    let locks = fx.repo.lock_dir(&pkg("p"), &ver("1.0"));
    fs_err::create_dir_all(&locks).unwrap();
    for name in ["abc", "0", "-1", "99999999999"] {
        fs_err::write(locks.join(name), "").unwrap();
    }

    assert_eq!(
        fx.repo.state(&pkg("evil")).unwrap(),
        None,
        "an escaping link reads as absent"
    );
    assert_eq!(fx.repo.states().unwrap().len(), 1);
    fx.repo.gc().unwrap();
    assert_eq!(names(&pkg_dir), ["1.0", "stable"]);
    assert!(!fx.root().join("packages/evil").exists());
    assert_eq!(names(&locks), ["abc"]);
    assert_eq!(names(&outside), ["1.0", "precious"]);
    assert_eq!(
        fs_err::read_to_string(outside.join("precious")).unwrap(),
        "keep"
    );
    assert!(
        fs_err::symlink_metadata(fx.root().join("packages/linked")).is_ok(),
        "left alone"
    );
    assert!(fx.root().join("packages/NotAName").is_dir(), "left alone");
}

// ---- crash shapes as readers and the next operation see them ------------------------------

#[test]
fn experiment_equal_to_stable_reads_as_none_and_the_next_operation_repairs_it() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let pkg_dir = fx.root().join("packages/p");
    fs_err::os::unix::fs::symlink("1.0", pkg_dir.join("experiment")).unwrap();
    fs_err::os::unix::fs::symlink("1.0", pkg_dir.join("experiment@00000000deadbeef")).unwrap();
    assert_eq!(fx.state("p"), Some(ps("1.0", None)));
    fx.repo.stop_experiment(&pkg("p")).unwrap();
    assert_eq!(names(&pkg_dir), ["1.0", "stable"]);
}

#[test]
fn a_dangling_experiment_reads_as_absent_and_gc_removes_it() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let pkg_dir = fx.root().join("packages/p");
    fs_err::os::unix::fs::symlink("9.9", pkg_dir.join("experiment")).unwrap();
    assert_eq!(fx.state("p"), Some(ps("1.0", None)));
    assert_eq!(
        fx.repo
            .promote_experiment(&pkg("p"))
            .unwrap_err()
            .to_string(),
        "no experiment to promote"
    );
    assert_eq!(
        names(&pkg_dir),
        ["1.0", "stable"],
        "the failed promote still repaired"
    );
    fs_err::os::unix::fs::symlink("9.9", pkg_dir.join("experiment")).unwrap();
    let report = fx.repo.gc().unwrap();
    assert_eq!(report.repaired_links, 1);
    assert_clean(&fx.root(), &[]);
}

// ---- staging, writer lock, open -----------------------------------------------------------

#[test]
fn staging_directories_live_in_tmp_and_delete_themselves() {
    let fx = Fx::new();
    let staged = fx.repo.staging("../../escape me").unwrap();
    assert_eq!(staged.path().parent().unwrap(), fx.root().join("tmp"));
    assert!(names(staged.path()).is_empty());
    write_payload(staged.path(), "p", "1.0");
    drop(staged);
    assert!(fx.tmp_entries().is_empty());
    let staged = fx.stage("p", "1.0");
    staged.discard().unwrap();
    assert!(fx.tmp_entries().is_empty());
    fx.assert_outside_untouched();
}

#[test]
fn clean_staging_deletes_leftovers_of_a_dead_process() {
    let fx = Fx::new();
    // A staging directory another process was filling when it died.
    let path = fx.root().join("tmp/p-1.0-0123456789abcdef");
    fs_err::create_dir(&path).unwrap();
    write_payload(&path, "p", "1.0");
    fs_err::write(fx.root().join("tmp/stray"), "x").unwrap();
    let live = fx.stage("p", "2.0");
    assert_eq!(fx.reopen().clean_staging().unwrap(), 2);
    assert!(!path.exists());
    assert_eq!(
        fx.tmp_entries().len(),
        1,
        "a live staging directory of this process stays"
    );
    assert!(live.path().join(MARKER).is_file());
}

#[test]
fn writer_lock_is_exclusive_and_names_the_root() {
    let fx = Fx::new();
    let held = fx.repo.acquire_writer_lock().unwrap();
    assert_eq!(held.path(), fx.root().join("run/repo.lock"));
    let err = fx.reopen().acquire_writer_lock().unwrap_err();
    assert!(matches!(err, RepoError::WriterLocked { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&fx.root().display().to_string()),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Busy);
    drop(held);
    fx.reopen().acquire_writer_lock().unwrap();
}

#[test]
fn writer_lock_is_released_when_its_process_dies() {
    let fx = Fx::new();
    let lock = fx.root().join("run/repo.lock");
    // util-linux flock(1) holds the same kind of lock in another process.
    let mut holder = std::process::Command::new("flock")
        .args(["--exclusive", "--no-fork"])
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match fx.repo.acquire_writer_lock() {
            Err(RepoError::WriterLocked { .. }) => break,
            Ok(guard) => {
                drop(guard);
                assert!(
                    std::time::Instant::now() < deadline,
                    "flock(1) never took the lock"
                );
                std::thread::yield_now();
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    fx.repo.acquire_writer_lock().unwrap();
}

#[test]
fn open_creates_only_its_directories_and_refuses_impostors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/root");
    let repo = Repository::open(&root).unwrap();
    assert_eq!(repo.root(), root);
    assert_eq!(names(&root), ["packages", "run", "tmp"]);
    assert_eq!(names(&root.join("run")), ["locks"]);
    assert!(repo.states().unwrap().is_empty());

    let bad = dir.path().join("bad");
    fs_err::create_dir(&bad).unwrap();
    fs_err::write(bad.join("packages"), "file").unwrap();
    let err = Repository::open(&bad).unwrap_err();
    assert!(matches!(err, RepoError::NotADirectory { .. }), "{err:?}");
}

// ---- readers during switches --------------------------------------------------------------

#[test]
fn readers_always_see_a_complete_state_during_switches() {
    let fx = Fx::new();
    fx.install("p", "1.0");
    let root = fx.root();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let repo = fx.reopen();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let state = repo.state(&pkg("p")).unwrap().expect("always installed");
                assert_ne!(Some(&state.stable), state.experiment.as_ref());
                // The kernel reads the link, then looks its target up: if a promote and a GC
                // both happen in between, the lookup misses (package users lock the version
                // they run). Whatever is found must be a complete tree.
                match fs_err::read_to_string(root.join("packages/p/stable").join(MARKER)) {
                    Ok(marker) => assert!(marker.starts_with("package=p\n"), "{marker}"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("{e}"),
                }
                reads += 1;
            }
            reads
        })
    };
    for round in 0..10 {
        let (a, b) = if round % 2 == 0 {
            ("1.0", "2.0")
        } else {
            ("2.0", "1.0")
        };
        fx.start("p", b);
        if round % 3 == 0 {
            fx.repo.stop_experiment(&pkg("p")).unwrap();
            fx.start("p", b);
        }
        fx.repo.promote_experiment(&pkg("p")).unwrap();
        assert_eq!(fx.state("p"), Some(ps(b, None)));
        fx.repo.gc().unwrap();
        assert!(!fx.has_dir("p", a));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

// ---- helpers ------------------------------------------------------------------------------

fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs_err::symlink_metadata(path).unwrap().ino()
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn handles_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Repository>();
    send_sync::<outpost_repo::StagingDir>();
    send_sync::<outpost_repo::VersionLock>();
    send_sync::<outpost_repo::WriterLock>();
    send_sync::<RepoError>();
}

#[test]
fn handles_on_the_same_root_share_one_mutation_lock() {
    // A GC through a second handle must never run between an install placing its version
    // directory and linking it (it would take the fresh directory for garbage).
    let fx = Fx::new();
    fx.install("p", "0");
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = Arc::clone(&stop);
        let other = fx.reopen();
        std::thread::spawn(move || {
            let mut passes = 0u32;
            while !stop.load(Ordering::Relaxed) || passes == 0 {
                other.gc().unwrap();
                passes += 1;
            }
            passes
        })
    };
    for i in 1..=40 {
        let v = i.to_string();
        fx.start("p", &v);
        let state = fx.state("p").unwrap();
        assert_eq!(state.experiment, Some(ver(&v)), "round {i}");
        check_complete(&fx.root().join("packages/p/experiment"), "p", &v).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
}
