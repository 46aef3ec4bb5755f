//! Config switches under the repository's failure points: for each config operation, a crash
//! at every step it passes (a child process aborts there), and an error injected at every
//! step (the operation rolls back). The steps are learned from a dry run, as in `crash.rs`.
//!
//! After a crash a fresh handle must read the old or the new config state of package `p`,
//! every deployment directory must be complete, the bystander `q` (a package and its config)
//! must be untouched; the retried operation must then reach the new state, and GC must leave
//! nothing behind.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use outpost_repo::{ConfigState, RepoError, Repository, failpoint};
use outpost_types::ErrorCode;

/// (stable, experiment) of a config.
type CState = (Option<&'static str>, Option<&'static str>);

const SCENARIO_ENV: &str = "OUTPOST_CONFIG_CRASH_SCENARIO";
const ROOT_ENV: &str = "OUTPOST_CONFIG_CRASH_ROOT";

struct Scenario {
    name: &'static str,
    setup: fn(&Repository),
    op: fn(&Repository) -> Result<(), RepoError>,
    allowed: &'static [CState],
    after: CState,
    retry_may_fail_with: &'static [ErrorCode],
}

fn cstate((stable, experiment): CState) -> ConfigState {
    ConfigState {
        stable: stable.map(ver),
        experiment: experiment.map(ver),
    }
}

/// A staged config tree of `p` deployment `id`, with the completeness marker.
fn staged(repo: &Repository, id: &str) -> Result<outpost_repo::StagingDir, RepoError> {
    let dir = repo.staging(&format!("config-p-{id}"))?;
    write_payload(dir.path(), "p", id);
    Ok(dir)
}

fn start(repo: &Repository, id: &str) -> Result<(), RepoError> {
    repo.start_config_experiment(&pkg("p"), &ver(id), staged(repo, id)?)
}

fn bystander(repo: &Repository) {
    repo.install(&pkg("q"), &ver("1.0"), stage(repo, "q", "1.0"))
        .unwrap();
    let dir = repo.staging("config-q").unwrap();
    write_payload(dir.path(), "q", "q1");
    repo.start_config_experiment(&pkg("q"), &ver("q1"), dir)
        .unwrap();
    repo.promote_config_experiment(&pkg("q")).unwrap();
    repo.install(&pkg("p"), &ver("1.0"), stage(repo, "p", "1.0"))
        .unwrap();
}

fn p_experiment_c1(repo: &Repository) {
    bystander(repo);
    start(repo, "c1").unwrap();
}

fn p_stable_c1(repo: &Repository) {
    p_experiment_c1(repo);
    repo.promote_config_experiment(&pkg("p")).unwrap();
}

fn p_stable_c1_experiment_c2(repo: &Repository) {
    p_stable_c1(repo);
    start(repo, "c2").unwrap();
}

fn p_leftover_c2(repo: &Repository) {
    bystander(repo);
    start(repo, "c2").unwrap();
    repo.stop_config_experiment(&pkg("p")).unwrap();
}

/// Garbage of every kind GC handles in config trees.
fn garbage(repo: &Repository) {
    p_stable_c1(repo);
    start(repo, "c2").unwrap();
    repo.stop_config_experiment(&pkg("p")).unwrap(); // c2 unreferenced
    let dir = repo.config_dir(&pkg("p"));
    fs_err::os::unix::fs::symlink("c1", dir.join("experiment")).unwrap(); // stale
    fs_err::os::unix::fs::symlink("c1", dir.join("stable@2222222222222222")).unwrap();
    // A config directory whose only link dangles.
    let other = repo.config_root().join("other");
    fs_err::create_dir(&other).unwrap();
    fs_err::os::unix::fs::symlink("gone", other.join("stable")).unwrap();
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "config_start_first",
        setup: bystander,
        op: |r| start(r, "c1"),
        allowed: &[(None, None), (None, Some("c1"))],
        after: (None, Some("c1")),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "config_start_replacing",
        setup: p_experiment_c1,
        op: |r| start(r, "c2"),
        allowed: &[(None, Some("c1")), (None, Some("c2"))],
        after: (None, Some("c2")),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "config_start_beside_stable",
        setup: p_stable_c1,
        op: |r| start(r, "c2"),
        allowed: &[(Some("c1"), None), (Some("c1"), Some("c2"))],
        after: (Some("c1"), Some("c2")),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "config_start_over_leftover",
        setup: p_leftover_c2,
        op: |r| start(r, "c2"),
        allowed: &[(None, None), (None, Some("c2"))],
        after: (None, Some("c2")),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "config_stop",
        setup: p_stable_c1_experiment_c2,
        op: |r| r.stop_config_experiment(&pkg("p")),
        allowed: &[(Some("c1"), Some("c2")), (Some("c1"), None)],
        after: (Some("c1"), None),
        retry_may_fail_with: &[],
    },
    Scenario {
        name: "config_promote",
        setup: p_stable_c1_experiment_c2,
        op: |r| r.promote_config_experiment(&pkg("p")),
        allowed: &[(Some("c1"), Some("c2")), (Some("c2"), None)],
        after: (Some("c2"), None),
        retry_may_fail_with: &[ErrorCode::InvalidState],
    },
    Scenario {
        name: "config_promote_first",
        setup: p_experiment_c1,
        op: |r| r.promote_config_experiment(&pkg("p")),
        allowed: &[(None, Some("c1")), (Some("c1"), None)],
        after: (Some("c1"), None),
        retry_may_fail_with: &[ErrorCode::InvalidState],
    },
    Scenario {
        name: "config_gc",
        setup: garbage,
        op: |r| r.gc().map(drop),
        allowed: &[(Some("c1"), None)],
        after: (Some("c1"), None),
        retry_may_fail_with: &[],
    },
];

fn config_of(root: &Path, p: &str) -> ConfigState {
    Repository::open(root)
        .unwrap()
        .config_state(&pkg(p))
        .unwrap()
}

/// Every deployment a link names resolves to a complete tree, and every deployment
/// directory is complete.
fn assert_config_invariants(root: &Path) {
    let repo = Repository::open(root).unwrap();
    for (name, state) in repo.config_states().unwrap() {
        let dir = repo.config_dir(&name);
        if let Some(stable) = &state.stable {
            check_complete(&dir.join("stable"), name.as_str(), stable.as_str())
                .unwrap_or_else(|e| panic!("stable config of {name}: {e}"));
        }
        if let Some(exp) = &state.experiment {
            check_complete(&dir.join("experiment"), name.as_str(), exp.as_str())
                .unwrap_or_else(|e| panic!("experiment config of {name}: {e}"));
        }
        for entry in names(&dir) {
            let path = dir.join(&entry);
            if fs_err::symlink_metadata(&path).unwrap().is_dir() {
                check_complete(&path, name.as_str(), &entry)
                    .unwrap_or_else(|e| panic!("deployment {}: {e}", path.display()));
            }
        }
    }
}

/// After GC: `tmp/` empty; in each config directory only `stable`, `experiment` and the
/// deployments they name.
fn assert_config_clean(root: &Path) {
    assert!(names(&root.join("tmp")).is_empty(), "tmp/ not empty");
    let repo = Repository::open(root).unwrap();
    let states = repo.config_states().unwrap();
    for name in names(&root.join("config")) {
        let state = states.get(&pkg(&name)).cloned().unwrap_or_default();
        let mut expected: Vec<String> = Vec::new();
        if let Some(s) = &state.stable {
            expected.extend(["stable".to_owned(), s.to_string()]);
        }
        if let Some(e) = &state.experiment {
            expected.extend(["experiment".to_owned(), e.to_string()]);
        }
        expected.sort();
        assert!(
            !expected.is_empty(),
            "config directory {name} left without links"
        );
        assert_eq!(names(&root.join("config").join(&name)), expected, "{name}");
    }
}

/// Every path under `config/`, `packages/` and `tmp/` with its kind and content.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<_> = ["config", "packages", "tmp"]
        .iter()
        .map(|t| root.join(t))
        .collect();
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs_err::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        if meta.file_type().is_symlink() {
            out.insert(
                rel,
                format!("-> {}", fs_err::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(rel, "dir".into());
            stack.extend(names(&path).into_iter().map(|n| path.join(n)));
        } else {
            out.insert(
                rel,
                String::from_utf8_lossy(&fs_err::read(&path).unwrap()).into(),
            );
        }
    }
    out
}

fn dry_run(scenario: &Scenario) -> Vec<&'static str> {
    let fx = Fx::new();
    (scenario.setup)(&fx.repo);
    let recording = failpoint::record();
    (scenario.op)(&fx.repo).unwrap_or_else(|e| panic!("{}: dry run: {e:?}", scenario.name));
    let hits = recording.hits();
    drop(recording);
    assert_eq!(
        config_of(&fx.root(), "p"),
        cstate(scenario.after),
        "{}",
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
        let bystander = (fx.state("q"), config_of(&fx.root(), "q"), fx.state("p"));
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "config_crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SCENARIO_ENV, scenario.name)
            .env(ROOT_ENV, fx.root())
            .env(failpoint::ENV, format!("{name}#{nth}"))
            .env("TMPDIR", fx.outside())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(rustix::process::Signal::ABORT.as_raw()),
            "{case}: child did not abort there: {:?}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert_config_invariants(&fx.root());
        assert_invariants(&fx.root());
        let seen = config_of(&fx.root(), "p");
        assert!(
            scenario.allowed.iter().any(|s| cstate(*s) == seen),
            "{case}: config state {seen:?} is not one of {:?}",
            scenario.allowed
        );
        let now = (fx.state("q"), config_of(&fx.root(), "q"), fx.state("p"));
        assert_eq!(now, bystander, "{case}: bystander or package p changed");
        fx.assert_outside_untouched();

        let repo = fx.reopen();
        repo.clean_staging().unwrap();
        if let Err(err) = (scenario.op)(&repo) {
            assert!(
                scenario.retry_may_fail_with.contains(&err.code()),
                "{case}: retry failed: {err:?}"
            );
        }
        assert_eq!(
            config_of(&fx.root(), "p"),
            cstate(scenario.after),
            "{case}: retry"
        );
        repo.gc().unwrap_or_else(|e| panic!("{case}: gc: {e:?}"));
        assert_config_clean(&fx.root());
        assert_config_invariants(&fx.root());
        assert_clean(&fx.root(), &[]);
        let now = (fx.state("q"), config_of(&fx.root(), "q"), fx.state("p"));
        assert_eq!(now, bystander, "{case}: bystander changed");
        fx.assert_outside_untouched();
    }
}

/// The child side; does nothing in a normal test run.
#[test]
fn config_crash_child_entry() {
    let Ok(name) = std::env::var(SCENARIO_ENV) else {
        return;
    };
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).unwrap();
    let root = std::env::var(ROOT_ENV).unwrap();
    let scenario = SCENARIOS.iter().find(|s| s.name == name).unwrap();
    let repo = Repository::open(root).unwrap();
    let result = (scenario.op)(&repo);
    std::process::exit(if result.is_ok() { 3 } else { 4 });
}

/// An error injected at every step rolls the switch back: the trees and the states a fresh
/// handle reads are exactly as before.
fn rolls_back_at_every_point(scenario: &Scenario) {
    let points = occurrences(&dry_run(scenario));
    for &(name, nth) in &points {
        let case = format!("{} failed at {name}#{nth}", scenario.name);
        let fx = Fx::new();
        (scenario.setup)(&fx.repo);
        let before = tree(&fx.root());
        let state = config_of(&fx.root(), "p");
        let injection = failpoint::inject(name, nth);
        let result = (scenario.op)(&fx.repo);
        assert!(injection.fired(), "{case}: not reached");
        drop(injection);
        let err = result.expect_err(&case);
        assert_eq!(
            failpoint::injected_name(&err),
            Some(name),
            "{case}: {err:?}"
        );
        assert_eq!(config_of(&fx.root(), "p"), state, "{case}: state");
        assert_eq!(tree(&fx.root()), before, "{case}: tree");
        fx.assert_outside_untouched();
    }
}

macro_rules! config_tests {
    ($($crash:ident => $scenario:literal;)*) => {
        $(
            #[test]
            fn $crash() {
                crash_at_every_point(SCENARIOS.iter().find(|s| s.name == $scenario).unwrap());
            }
        )*

        #[test]
        fn every_config_scenario_has_a_crash_test() {
            let tested = [$($scenario),*];
            for s in SCENARIOS {
                assert!(tested.contains(&s.name), "scenario {} has no test", s.name);
            }
        }
    };
}

config_tests! {
    crash_config_start_first => "config_start_first";
    crash_config_start_replacing => "config_start_replacing";
    crash_config_start_beside_stable => "config_start_beside_stable";
    crash_config_start_over_leftover => "config_start_over_leftover";
    crash_config_stop => "config_stop";
    crash_config_promote => "config_promote";
    crash_config_promote_first => "config_promote_first";
    crash_config_gc => "config_gc";
}

/// The switches (not GC, which carries on past a failed step by design) roll back at every
/// step.
#[test]
fn config_switches_roll_back_at_every_step() {
    for scenario in SCENARIOS.iter().filter(|s| s.name != "config_gc") {
        rolls_back_at_every_point(scenario);
    }
}

/// The config switches pass the same steps as version switches: the directory creations,
/// the sync and rename of the staged tree, and the link switches.
#[test]
fn config_switches_use_the_repository_steps() {
    let hits = dry_run(&SCENARIOS[0]);
    for point in [
        "repo.package.mkdir",
        "repo.package.fsync",
        "repo.version.sync",
        "repo.version.rename",
        "repo.version.fsync",
        "repo.link.symlink",
        "repo.link.rename",
        "repo.link.fsync",
    ] {
        assert!(hits.contains(&point), "{point} not hit: {hits:?}");
    }
}
