//! Model-based test: random sequences of operations, with failures injected at random failure
//! points, run against the real repository and against an in-memory model of what it should
//! hold. After every step the disk, read by a fresh handle, agrees with the model; a failed
//! operation leaves the model (and so the disk) unchanged.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use outpost_repo::{RepoError, Repository, VersionLock, failpoint};
use outpost_types::{ErrorCode, Version};
use proptest::prelude::*;

const PKGS: [&str; 2] = ["alpha", "beta"];
const VERS: [&str; 3] = ["1.0", "2.0", "3.0"];

#[derive(Debug, Clone, Copy)]
enum Op {
    Install(usize, usize),
    Start(usize, usize),
    Stop(usize),
    Promote(usize),
    Remove(usize),
    Gc,
    Lock(usize, usize),
    Unlock(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Step {
    op: Op,
    /// A failure point (index into `failpoint::ALL`) and which of its hits fails.
    fail: Option<(usize, u32)>,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PKGS.len();
    let v = 0..VERS.len();
    prop_oneof![
        4 => (p.clone(), v.clone()).prop_map(|(p, v)| Op::Install(p, v)),
        4 => (p.clone(), v.clone()).prop_map(|(p, v)| Op::Start(p, v)),
        2 => p.clone().prop_map(Op::Stop),
        3 => p.clone().prop_map(Op::Promote),
        1 => p.clone().prop_map(Op::Remove),
        2 => Just(Op::Gc),
        1 => (p.clone(), v.clone()).prop_map(|(p, v)| Op::Lock(p, v)),
        1 => (p, v).prop_map(|(p, v)| Op::Unlock(p, v)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        op(),
        prop::option::weighted(0.5, (0..failpoint::ALL.len(), 1..=2u32)),
    )
        .prop_map(|(op, fail)| Step { op, fail })
}

type Key = (&'static str, &'static str);

/// What the repository should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    states: BTreeMap<&'static str, (&'static str, Option<&'static str>)>,
    /// Version directories on disk.
    dirs: BTreeSet<Key>,
    /// Versions locked by this (live) process.
    locks: BTreeSet<Key>,
}

impl Model {
    fn referenced(&self, (p, v): Key) -> bool {
        self.states
            .get(p)
            .is_some_and(|(s, e)| *s == v || *e == Some(v))
    }

    /// The model after `op` and the outcome the repository must report.
    fn apply(&self, op: Op) -> (Model, Result<(), ErrorCode>) {
        let mut next = self.clone();
        let outcome = match op {
            Op::Install(p, v) => {
                let (p, v) = (PKGS[p], VERS[v]);
                if self.states.get(p).is_none_or(|(s, _)| *s != v) {
                    next.states.insert(p, (v, None));
                    next.dirs.insert((p, v));
                }
                Ok(())
            }
            Op::Start(p, v) => {
                let (p, v) = (PKGS[p], VERS[v]);
                match self.states.get(p) {
                    None => Err(ErrorCode::InvalidState),
                    Some((s, _)) if *s == v => Err(ErrorCode::InvalidState),
                    Some((s, _)) => {
                        next.states.insert(p, (s, Some(v)));
                        next.dirs.insert((p, v));
                        Ok(())
                    }
                }
            }
            Op::Stop(p) => match self.states.get(PKGS[p]) {
                None => Err(ErrorCode::NotInstalled),
                Some((s, _)) => {
                    next.states.insert(PKGS[p], (s, None));
                    Ok(())
                }
            },
            Op::Promote(p) => match self.states.get(PKGS[p]) {
                None => Err(ErrorCode::NotInstalled),
                Some((_, None)) => Err(ErrorCode::InvalidState),
                Some((_, Some(e))) => {
                    next.states.insert(PKGS[p], (e, None));
                    Ok(())
                }
            },
            Op::Remove(p) => {
                let p = PKGS[p];
                if !self.states.contains_key(p) {
                    Err(ErrorCode::NotInstalled)
                } else if self.locks.iter().any(|(lp, _)| *lp == p) {
                    Err(ErrorCode::Busy)
                } else {
                    next.states.remove(p);
                    next.dirs.retain(|(dp, _)| *dp != p);
                    Ok(())
                }
            }
            Op::Gc => {
                next.dirs = self
                    .dirs
                    .iter()
                    .copied()
                    .filter(|k| self.referenced(*k) || self.locks.contains(k))
                    .collect();
                Ok(())
            }
            Op::Lock(p, v) => {
                next.locks.insert((PKGS[p], VERS[v]));
                Ok(())
            }
            Op::Unlock(p, v) => {
                next.locks.remove(&(PKGS[p], VERS[v]));
                Ok(())
            }
        };
        if outcome.is_err() {
            return (self.clone(), outcome);
        }
        (next, outcome)
    }
}

fn run(repo: &Repository, held: &mut BTreeMap<Key, VersionLock>, op: Op) -> Result<(), RepoError> {
    match op {
        Op::Install(p, v) => repo.install(
            &pkg(PKGS[p]),
            &ver(VERS[v]),
            try_stage(repo, PKGS[p], VERS[v])?,
        ),
        Op::Start(p, v) => repo.start_experiment(
            &pkg(PKGS[p]),
            &ver(VERS[v]),
            try_stage(repo, PKGS[p], VERS[v])?,
        ),
        Op::Stop(p) => repo.stop_experiment(&pkg(PKGS[p])),
        Op::Promote(p) => repo.promote_experiment(&pkg(PKGS[p])),
        Op::Remove(p) => repo.remove(&pkg(PKGS[p])),
        Op::Gc => repo.gc().map(drop),
        Op::Lock(p, v) => {
            let key = (PKGS[p], VERS[v]);
            if let std::collections::btree_map::Entry::Vacant(slot) = held.entry(key) {
                slot.insert(repo.lock_version(&pkg(key.0), &ver(key.1), std::process::id())?);
            }
            Ok(())
        }
        Op::Unlock(p, v) => {
            held.remove(&(PKGS[p], VERS[v]));
            Ok(())
        }
    }
}

/// Version directories on disk.
fn disk_dirs(root: &Path) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for p in PKGS {
        for v in VERS {
            let path = root.join("packages").join(p).join(v);
            if fs_err::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                out.insert((p, v));
            }
        }
    }
    out
}

fn disk_states(root: &Path) -> BTreeMap<&'static str, (&'static str, Option<&'static str>)> {
    let intern = |v: &Version| *VERS.iter().find(|x| **x == v.as_str()).unwrap();
    Repository::open(root)
        .unwrap()
        .states()
        .unwrap()
        .into_iter()
        .map(|(name, s)| {
            let p = *PKGS.iter().find(|x| **x == name.as_str()).unwrap();
            (p, (intern(&s.stable), s.experiment.as_ref().map(intern)))
        })
        .collect()
}

fn check(steps: &[Step]) -> Result<(), TestCaseError> {
    let fx = Fx::new();
    let root = fx.root();
    let mut model = Model::default();
    let mut held = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let (expected_model, expected) = model.apply(step.op);
        let injection = step
            .fail
            .map(|(point, nth)| failpoint::inject(failpoint::ALL[point], nth));
        let result = run(&fx.repo, &mut held, step.op);
        let fired = injection.as_ref().is_some_and(failpoint::Injection::fired);
        drop(injection);
        let context = format!("step {i}: {step:?} -> {result:?}");
        if fired {
            let err = result.as_ref().expect_err(&context);
            prop_assert!(failpoint::injected_name(err).is_some(), "{}", context);
            if matches!(step.op, Op::Gc) {
                // GC carries on past a failure; whatever it did remove was removable.
                let on_disk = disk_dirs(&root);
                prop_assert!(on_disk.is_subset(&model.dirs), "{}", context);
                prop_assert!(on_disk.is_superset(&expected_model.dirs), "{}", context);
                model.dirs = on_disk;
            }
        } else {
            prop_assert_eq!(result.map_err(|e| e.code()), expected, "{}", context);
            model = expected_model;
        }
        prop_assert_eq!(disk_states(&root), model.states.clone(), "{}", context);
        prop_assert_eq!(disk_dirs(&root), model.dirs.clone(), "{}", context);
        assert_invariants(&root);
    }
    drop(held);
    fx.repo.gc().unwrap();
    prop_assert_eq!(disk_states(&root), model.states.clone());
    assert_clean(&root, &[]);
    fx.assert_outside_untouched();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn disk_agrees_with_the_model(steps in prop::collection::vec(step(), 1..24)) {
        check(&steps)?;
    }
}

/// A fixed sequence through every operation, so the model itself is known to be exercised
/// whatever the random cases draw.
#[test]
fn model_walkthrough() {
    use Op::*;
    let steps: Vec<Step> = [
        Install(0, 0),
        Start(0, 1),
        Lock(0, 1),
        Promote(0),
        Start(0, 2),
        Remove(0),
        Unlock(0, 1),
        Stop(0),
        Gc,
        Install(1, 0),
        Install(1, 1),
        Remove(1),
        Gc,
    ]
    .into_iter()
    .map(|op| Step { op, fail: None })
    .collect();
    check(&steps).unwrap();
}
