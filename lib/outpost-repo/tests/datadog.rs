//! The intents of the Datadog installer's repository tests (`repository_test.go`,
//! `repositories_test.go`), one test of ours per test of theirs, on our layout.
//! (The intents of `link_test.go` are unit tests in `src/link.rs`.)

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

mod common;

use common::*;
use outpost_repo::RepoError;
use outpost_types::ErrorCode;

/// `TestCreateFresh`: after installing v1, the package and its version directory exist.
#[test]
fn create_fresh() {
    let fx = Fx::new();
    fx.install("p", "v1");
    assert!(fx.root().join("packages/p").is_dir());
    assert!(fx.has_dir("p", "v1"));
    assert_eq!(fx.state("p"), Some(ps("v1", None)));
}

/// `TestCreateOverwrite`: installing v1 over `old` replaces stable; `old` is gone (after GC,
/// which callers run after each operation).
#[test]
fn create_overwrite_replaces_stable() {
    let fx = Fx::new();
    fx.install("p", "old");
    fx.install("p", "v1");
    fx.repo.gc().unwrap();
    assert!(fx.has_dir("p", "v1"));
    assert!(!fx.has_dir("p", "old"));
    assert_eq!(fx.state("p"), Some(ps("v1", None)));
}

/// `TestCreateOverwriteWithLockedPackage`: with our pid locking `old` and an empty lock
/// directory for a version that does not exist, installing v1 keeps `old` and removes the
/// lock directory of the missing version.
#[test]
fn create_overwrite_with_locked_package_keeps_it() {
    let fx = Fx::new();
    fx.install("p", "old");
    let lock = fx
        .repo
        .lock_version(&pkg("p"), &ver("old"), std::process::id())
        .unwrap();
    let garbage = fx.root().join("run/locks/p/garbagetocollect");
    fs_err::create_dir_all(&garbage).unwrap();
    fx.install("p", "v1");
    fx.repo.gc().unwrap();
    assert!(fx.has_dir("p", "v1"));
    assert!(fx.has_dir("p", "old"), "locked versions are kept");
    assert!(lock.path().is_file());
    assert!(
        !garbage.exists(),
        "lock directory of a missing version removed"
    );
    drop(lock);
    fx.repo.gc().unwrap();
    assert!(!fx.has_dir("p", "old"), "collected once unlocked");
}

/// `TestSetExperiment`: starting v2 succeeds and its directory exists.
#[test]
fn set_experiment() {
    let fx = Fx::new();
    fx.install("p", "v1");
    fx.start("p", "v2");
    assert!(fx.has_dir("p", "v2"));
    assert_eq!(fx.state("p"), Some(ps("v1", Some("v2"))));
}

/// `TestSetExperimentTwice`: v2 then v3 both succeed, and v2 is still on disk right after
/// (it goes at the next GC).
#[test]
fn set_experiment_twice() {
    let fx = Fx::new();
    fx.install("p", "v1");
    fx.start("p", "v2");
    fx.start("p", "v3");
    assert!(fx.has_dir("p", "v2"));
    assert_eq!(fx.state("p"), Some(ps("v1", Some("v3"))));
    fx.repo.gc().unwrap();
    assert!(!fx.has_dir("p", "v2"));
}

/// `TestSetExperimentBeforeStable`: an experiment without a stable version fails.
#[test]
fn set_experiment_before_stable_fails() {
    let fx = Fx::new();
    let err = fx
        .repo
        .start_experiment(&pkg("p"), &ver("v2"), fx.stage("p", "v2"))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert!(!fx.has_dir("p", "v2"));
}

/// `TestPromoteExperiment`: after v2 and promote, v1 is gone (after GC) and v2 remains.
#[test]
fn promote_experiment_removes_old_stable_after_gc() {
    let fx = Fx::new();
    fx.install("p", "v1");
    fx.start("p", "v2");
    fx.repo.promote_experiment(&pkg("p")).unwrap();
    fx.repo.gc().unwrap();
    assert!(!fx.has_dir("p", "v1"));
    assert!(fx.has_dir("p", "v2"));
    assert_eq!(fx.state("p"), Some(ps("v2", None)));
}

/// `TestPromoteExperimentWithoutExperiment`: promote right after install fails with the
/// Datadog message.
#[test]
fn promote_experiment_without_experiment_fails() {
    let fx = Fx::new();
    fx.install("p", "v1");
    let err = fx.repo.promote_experiment(&pkg("p")).unwrap_err();
    assert!(matches!(err, RepoError::InvalidState { .. }));
    assert_eq!(err.to_string(), "no experiment to promote");
}

/// `TestDeleteExperiment`: after v2 and stop, v2 is gone (after GC).
#[test]
fn delete_experiment() {
    let fx = Fx::new();
    fx.install("p", "v1");
    fx.start("p", "v2");
    fx.repo.stop_experiment(&pkg("p")).unwrap();
    fx.repo.gc().unwrap();
    assert!(!fx.has_dir("p", "v2"));
    assert_eq!(fx.state("p"), Some(ps("v1", None)));
}

/// `TestDeleteExperimentWithoutExperiment`: stop right after install succeeds.
#[test]
fn delete_experiment_without_experiment_succeeds() {
    let fx = Fx::new();
    fx.install("p", "v1");
    fx.repo.stop_experiment(&pkg("p")).unwrap();
    assert_eq!(fx.state("p"), Some(ps("v1", None)));
}

/// `TestDeleteExperimentWithLockedPackage`: v2 locked by our pid and by `-1`; stop succeeds,
/// v2 and its lock directory stay, `-1` is deleted, our pid's lock file remains.
#[test]
fn delete_experiment_with_locked_package() {
    let fx = Fx::new();
    fx.install("p", "v1");
    fx.start("p", "v2");
    let own = fx
        .repo
        .lock_version(&pkg("p"), &ver("v2"), std::process::id())
        .unwrap();
    let locks = fx.repo.lock_dir(&pkg("p"), &ver("v2"));
    fs_err::write(locks.join("-1"), "").unwrap();
    fx.repo.stop_experiment(&pkg("p")).unwrap();
    fx.repo.gc().unwrap();
    assert!(fx.has_dir("p", "v2"));
    assert!(locks.is_dir());
    assert!(!locks.join("-1").exists());
    assert!(own.path().is_file());
    assert_eq!(names(&locks), [std::process::id().to_string()]);
}

/// `TestLoadRepositories`: a temporary directory is not loaded as a package; exactly one
/// package is.
#[test]
fn load_repositories_skips_temporary_directories() {
    let fx = Fx::new();
    fx.install("datadog-agent", "7.50.0");
    // A staging directory in flight, and a package directory left by an interrupted first
    // install (no stable link yet), named like the Datadog temporary directory.
    let _staging = fx.stage("datadog-agent", "7.51.0");
    let partial = fx.root().join("packages/tmp-install-stable-datadog-agent");
    fs_err::create_dir_all(partial.join("7.51.0")).unwrap();
    let states = fx.reopen().states().unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states.get(&pkg("datadog-agent")), Some(&ps("7.50.0", None)));
}

/// `TestRepositoriesEmpty`: an empty root gives an empty map, no error.
#[test]
fn repositories_empty() {
    let fx = Fx::new();
    assert!(fx.repo.states().unwrap().is_empty());
}

/// `TestRepositories`: two packages, one with an experiment; an absent experiment is `None`.
#[test]
fn repositories_two_packages() {
    let fx = Fx::new();
    fx.install("repo1", "v1");
    fx.start("repo1", "v2");
    fx.install("repo2", "v1.0");
    let states = fx.repo.states().unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[&pkg("repo1")], ps("v1", Some("v2")));
    assert_eq!(states[&pkg("repo2")], ps("v1.0", None));
}

/// `TestRepositoriesReopen`: a fresh instance on the same root sees the same states.
#[test]
fn repositories_reopen() {
    let fx = Fx::new();
    fx.install("repo1", "v1");
    fx.install("repo2", "v1");
    let before = fx.repo.states().unwrap();
    drop(fx.repo.clone());
    let fresh = fx.reopen();
    assert_eq!(fresh.states().unwrap(), before);
    assert_eq!(before[&pkg("repo1")], ps("v1", None));
    assert_eq!(before[&pkg("repo2")], ps("v1", None));
}
