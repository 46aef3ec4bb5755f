//! Crash at every step: for each operation and each failure point it passes (learned from a
//! dry run, so new steps are covered without editing this file), the operation runs in a
//! child process (this test binary, re-executed) that aborts at that point. A fresh handle on
//! the root then checks the spec's invariants and that the state is one the operation allows
//! mid-way; the operation is retried, GC runs, and nothing may be left over.
//!
//! The child is selected with libtest's own arguments (`crash_child_entry --exact`), which
//! `cargo test` and `cargo nextest` binaries both accept.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::*;
use outpost_repo::{PackageState, RepoError, Repository, failpoint};
use outpost_types::ErrorCode;

type State = Option<(&'static str, Option<&'static str>)>;

struct Scenario {
    name: &'static str,
    /// Builds the state before the operation (in the parent, on a fresh root). A bystander
    /// package `q` is always installed first and must come through untouched.
    setup: fn(&Repository),
    /// The operation under test (in the child, and in the dry run).
    op: fn(&Repository) -> Result<(), RepoError>,
    /// The states of package `p` a reader may see after a crash anywhere in `op`.
    allowed: &'static [State],
    /// The state of `p` after `op` succeeded (the retry must get there).
    after: State,
    /// Errors a retry may answer when the crash already completed the operation.
    retry_may_fail_with: &'static [ErrorCode],
}

fn inst(repo: &Repository, p: &str, v: &str) -> Result<(), RepoError> {
    repo.install(&pkg(p), &ver(v), stage(repo, p, v))
}

fn start(repo: &Repository, p: &str, v: &str) -> Result<(), RepoError> {
    repo.start_experiment(&pkg(p), &ver(v), stage(repo, p, v))
}

fn bystander(repo: &Repository) {
    inst(repo, "q", "1.0").unwrap();
}

fn p_installed(repo: &Repository) {
    bystander(repo);
    inst(repo, "p", "1.0").unwrap();
}

fn p_experiment(repo: &Repository) {
    p_installed(repo);
    start(repo, "p", "2.0").unwrap();
}

fn p_leftover_3(repo: &Repository) {
    p_installed(repo);
    start(repo, "p", "3.0").unwrap();
    repo.stop_experiment(&pkg("p")).unwrap();
}

/// The shapes a crash leaves for the next operation to repair: `experiment` naming the stable
/// version (mid-promote) and a temporary link.
fn p_crash_shapes(repo: &Repository) {
    p_installed(repo);
    let pkg_dir = repo.root().join("packages/p");
    fs_err::os::unix::fs::symlink("1.0", pkg_dir.join("experiment")).unwrap();
    fs_err::os::unix::fs::symlink("1.0", pkg_dir.join("stable@0000000000000000")).unwrap();
}

/// A dead lock on `p`, for `remove` to clear.
fn p_experiment_dead_lock(repo: &Repository) {
    p_experiment(repo);
    let locks = repo.lock_dir(&pkg("p"), &ver("1.0"));
    fs_err::create_dir_all(&locks).unwrap();
    fs_err::write(locks.join("-1"), "").unwrap();
}

/// Garbage of every kind GC handles.
fn garbage(repo: &Repository) {
    p_installed(repo);
    start(repo, "p", "2.0").unwrap();
    repo.stop_experiment(&pkg("p")).unwrap(); // p/2.0 unreferenced
    let root = repo.root();
    let pkg_dir = root.join("packages/p");
    fs_err::os::unix::fs::symlink("1.0", pkg_dir.join("experiment")).unwrap(); // stale
    fs_err::os::unix::fs::symlink("1.0", pkg_dir.join("experiment@1111111111111111")).unwrap();
    // A package whose stable link dangles, and one whose first install never linked.
    inst(repo, "broken", "1.0").unwrap();
    fs_err::remove_file(root.join("packages/broken/stable")).unwrap();
    fs_err::os::unix::fs::symlink("9.9", root.join("packages/broken/stable")).unwrap();
    inst(repo, "partial", "1.0").unwrap();
    fs_err::remove_file(root.join("packages/partial/stable")).unwrap();
    // Locks: a dead one, and the directory of a version that never existed.
    let locks = repo.lock_dir(&pkg("p"), &ver("1.0"));
    fs_err::create_dir_all(&locks).unwrap();
    fs_err::write(locks.join("-1"), "").unwrap();
    fs_err::create_dir_all(repo.lock_dir(&pkg("p"), &ver("never"))).unwrap();
    // tmp/: a staging directory of a dead process and a removed package.
    let dead_staging = root.join("tmp/p-4.0-0123456789abcdef");
    fs_err::create_dir(&dead_staging).unwrap();
    write_payload(&dead_staging, "p", "4.0");
    inst(repo, "gone", "1.0").unwrap();
    repo.remove(&pkg("gone")).unwrap();
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "install_first",
        setup: bystander,
        op: |r| inst(r, "p", "1.0"),
        allowed: &[None, Some(("1.0", None))],
        after: Some(("1.0", None)),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "install_replace",
        setup: p_installed,
        op: |r| inst(r, "p", "2.0"),
        allowed: &[Some(("1.0", None)), Some(("2.0", None))],
        after: Some(("2.0", None)),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "install_over_experiment",
        setup: p_experiment,
        op: |r| inst(r, "p", "3.0"),
        allowed: &[
            Some(("1.0", Some("2.0"))),
            Some(("1.0", None)),
            Some(("3.0", None)),
        ],
        after: Some(("3.0", None)),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "install_over_leftover",
        setup: p_leftover_3,
        op: |r| inst(r, "p", "3.0"),
        allowed: &[Some(("1.0", None)), Some(("3.0", None))],
        after: Some(("3.0", None)),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "start_experiment",
        setup: p_installed,
        op: |r| start(r, "p", "2.0"),
        allowed: &[Some(("1.0", None)), Some(("1.0", Some("2.0")))],
        after: Some(("1.0", Some("2.0"))),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "start_experiment_replacing_over_leftover",
        setup: |r| {
            p_leftover_3(r);
            start(r, "p", "2.0").unwrap();
        },
        op: |r| start(r, "p", "3.0"),
        allowed: &[Some(("1.0", Some("2.0"))), Some(("1.0", Some("3.0")))],
        after: Some(("1.0", Some("3.0"))),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "start_experiment_after_crash_shapes",
        setup: p_crash_shapes,
        op: |r| start(r, "p", "2.0"),
        allowed: &[Some(("1.0", None)), Some(("1.0", Some("2.0")))],
        after: Some(("1.0", Some("2.0"))),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "stop_experiment",
        setup: p_experiment,
        op: |r| r.stop_experiment(&pkg("p")),
        allowed: &[Some(("1.0", Some("2.0"))), Some(("1.0", None))],
        after: Some(("1.0", None)),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "promote_experiment",
        setup: p_experiment,
        op: |r| r.promote_experiment(&pkg("p")),
        allowed: &[Some(("1.0", Some("2.0"))), Some(("2.0", None))],
        after: Some(("2.0", None)),
        retry_may_fail_with: &[ErrorCode::InvalidState],
    },
    Scenario {
        name: "remove",
        setup: p_experiment_dead_lock,
        op: |r| r.remove(&pkg("p")),
        allowed: &[Some(("1.0", Some("2.0"))), None],
        after: None,
        retry_may_fail_with: &[ErrorCode::NotInstalled],
    },
    Scenario {
        name: "gc",
        setup: garbage,
        op: |r| r.gc().map(drop),
        allowed: &[Some(("1.0", None))],
        after: Some(("1.0", None)),
        retry_may_fail_with: &[],
    },
];

fn to_state(s: &State) -> Option<PackageState> {
    s.map(|(stable, exp)| ps(stable, exp))
}

/// The failure points `scenario.op` passes, with occurrence numbers.
fn dry_run(scenario: &Scenario) -> Vec<&'static str> {
    let fx = Fx::new();
    (scenario.setup)(&fx.repo);
    let recording = failpoint::record();
    (scenario.op)(&fx.repo).unwrap_or_else(|e| panic!("{}: dry run: {e:?}", scenario.name));
    let hits = recording.hits();
    drop(recording);
    assert_eq!(
        fx.state("p"),
        to_state(&scenario.after),
        "{}: dry run",
        scenario.name
    );
    hits
}

fn crash_at_every_point(scenario: &Scenario) {
    let hits = dry_run(scenario);
    assert_listed(&hits);
    let points = occurrences(&hits);
    assert!(!points.is_empty());
    eprintln!("{}: crashing at {} points", scenario.name, points.len());
    for (name, nth) in points {
        let case = format!("{} crashed at {name}#{nth}", scenario.name);
        let fx = Fx::new();
        (scenario.setup)(&fx.repo);
        let bystander = fx.state("q");
        assert!(bystander.is_some());

        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OUTPOST_CRASH_SCENARIO", scenario.name)
            .env("OUTPOST_CRASH_ROOT", fx.root())
            .env(failpoint::ENV, format!("{name}#{nth}"))
            .env("TMPDIR", fx.outside())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(rustix::process::Signal::ABORT.as_raw()),
            "{case}: child did not abort there: {:?}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        // What the next process sees.
        let states = assert_invariants(&fx.root());
        let seen = states.get(&pkg("p")).cloned();
        assert!(
            scenario.allowed.iter().map(to_state).any(|s| s == seen),
            "{case}: state {seen:?} is not one of {:?}",
            scenario.allowed
        );
        assert_eq!(fx.state("q"), bystander, "{case}: bystander changed");
        fx.assert_outside_untouched();

        // The next operation succeeds and, after GC, nothing is left over.
        let repo = fx.reopen();
        repo.clean_staging().unwrap();
        if let Err(err) = (scenario.op)(&repo) {
            assert!(
                scenario.retry_may_fail_with.contains(&err.code()),
                "{case}: retry failed: {err:?}"
            );
        }
        assert_eq!(
            repo.state(&pkg("p")).unwrap(),
            to_state(&scenario.after),
            "{case}: retry"
        );
        repo.gc().unwrap_or_else(|e| panic!("{case}: gc: {e:?}"));
        assert_clean(&fx.root(), &[]);
        assert_invariants(&fx.root());
        assert_eq!(fx.state("q"), bystander, "{case}: bystander changed");
        fx.assert_outside_untouched();
    }
}

/// The child side: runs one scenario's operation with `OUTPOST_FAILPOINT` set, which aborts
/// the process at the chosen point. In a normal test run (no scenario in the environment) it
/// does nothing.
#[test]
fn crash_child_entry() {
    let Ok(name) = std::env::var("OUTPOST_CRASH_SCENARIO") else {
        return;
    };
    // An abort must not leave core dumps behind, whatever the host's limits.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).unwrap();
    let root = std::env::var("OUTPOST_CRASH_ROOT").unwrap();
    let scenario = SCENARIOS.iter().find(|s| s.name == name).unwrap();
    let repo = Repository::open(root).unwrap();
    let result = (scenario.op)(&repo);
    // Reaching this line means the failure point was not hit: report how it ended.
    std::process::exit(if result.is_ok() { 3 } else { 4 });
}

macro_rules! crash_tests {
    ($($test:ident => $scenario:literal;)*) => {
        $(
            #[test]
            fn $test() {
                let scenario = SCENARIOS.iter().find(|s| s.name == $scenario).unwrap();
                crash_at_every_point(scenario);
            }
        )*

        /// Every scenario has its test above.
        #[test]
        fn every_scenario_has_a_crash_test() {
            let tested = [$($scenario),*];
            for s in SCENARIOS {
                assert!(tested.contains(&s.name), "scenario {} has no test", s.name);
            }
        }
    };
}

crash_tests! {
    crash_install_first => "install_first";
    crash_install_replace => "install_replace";
    crash_install_over_experiment => "install_over_experiment";
    crash_install_over_leftover => "install_over_leftover";
    crash_start_experiment => "start_experiment";
    crash_start_experiment_replacing_over_leftover => "start_experiment_replacing_over_leftover";
    crash_start_experiment_after_crash_shapes => "start_experiment_after_crash_shapes";
    crash_stop_experiment => "stop_experiment";
    crash_promote_experiment => "promote_experiment";
    crash_remove => "remove";
    crash_gc => "gc";
}

/// `failpoint::ALL` cannot rot: every name an operation hits is listed (checked in every dry
/// run above), and every listed name is hit by some scenario.
#[test]
fn every_listed_failure_point_is_exercised() {
    let mut hit: Vec<&str> = SCENARIOS.iter().flat_map(dry_run).collect();
    assert_listed(&hit);
    hit.sort_unstable();
    hit.dedup();
    let missing: Vec<&&str> = failpoint::ALL.iter().filter(|n| !hit.contains(n)).collect();
    assert!(missing.is_empty(), "listed but never hit: {missing:?}");
}

/// A crash also leaves the environment alone: the child really ran with the sandbox as its
/// TMPDIR, and a run without a failure point completes (exit code 3 from the entry point).
#[test]
fn child_without_failure_point_completes() {
    let fx = Fx::new();
    p_installed(&fx.repo);
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OUTPOST_CRASH_SCENARIO", "install_replace")
        .env("OUTPOST_CRASH_ROOT", fx.root())
        .env_remove(failpoint::ENV)
        .env("TMPDIR", fx.outside())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(fx.state("p"), Some(ps("2.0", None)));
    fx.assert_outside_untouched();
}
