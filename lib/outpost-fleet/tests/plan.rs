//! Convergence plans: scenarios, determinism and idempotence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{bytes, doc_value};
use outpost_fleet::{
    Action, Document, ExperimentSpec, Host, HostState, PackageLinks, PackageSpec, Percent,
    RolledBack, Skip, bucket, plan,
};
use outpost_types::wire::Catalog;
use outpost_types::{PackageName, Version};
use proptest::prelude::*;
use serde_json::json;

fn name(s: &str) -> PackageName {
    PackageName::new(s).expect("name")
}

fn ver(s: &str) -> Version {
    Version::new(s).expect("version")
}

fn doc() -> Document {
    Document::from_json(&bytes(&doc_value())).expect("valid")
}

/// A `role=web` host whose bucket for web 1.3.0 is below 10 % (`inside`) or not.
fn web_host(inside: bool) -> Host {
    let id = (0..)
        .map(|i| format!("host-{i}"))
        .find(|id| (bucket(id, "web", "1.3.0") < 1000) == inside)
        .expect("some host");
    Host {
        id,
        labels: [("role".to_string(), "web".to_string())].into(),
    }
}

fn state(entries: &[(&str, Option<&str>, Option<&str>)]) -> HostState {
    HostState {
        packages: entries
            .iter()
            .map(|(n, s, e)| {
                (
                    name(n),
                    PackageLinks {
                        stable: s.map(ver),
                        experiment: e.map(ver),
                    },
                )
            })
            .collect(),
    }
}

fn install(p: &str, v: &str) -> Action {
    Action::Install {
        package: name(p),
        version: ver(v),
    }
}

fn stop(p: &str) -> Action {
    Action::StopExperiment { package: name(p) }
}

#[test]
fn a_fresh_host_in_the_cohort_installs_then_starts_the_experiment() {
    let doc = doc();
    let p = plan(
        &doc,
        &web_host(true),
        &HostState::default(),
        &BTreeSet::new(),
    );
    assert_eq!(p.generation, 7);
    assert_eq!(p.actions.len(), 3, "{:?}", p.actions);
    assert_eq!(p.actions[0], install("db", "2.0.0"));
    assert_eq!(p.actions[1], install("web", "1.2.0"));
    let Action::StartExperiment {
        package,
        version,
        policy,
    } = &p.actions[2]
    else {
        panic!("{:?}", p.actions[2]);
    };
    assert_eq!((package.as_str(), version.as_str()), ("web", "1.3.0"));
    assert_eq!(policy.max_duration, Some(Duration::from_secs(3600)));
    assert_eq!(policy.auto_promote_after, Some(Duration::from_secs(1200)));
    assert_eq!(policy.health.as_ref().and_then(|h| h.failures), Some(3));
    assert_eq!(p.actions[2].operation(), "start_experiment");
    assert!(!p.converged());
    assert!(p.skipped.is_empty());
}

#[test]
fn a_host_outside_the_percent_or_the_selector_only_installs_stable() {
    let doc = doc();
    let p = plan(
        &doc,
        &web_host(false),
        &HostState::default(),
        &BTreeSet::new(),
    );
    assert_eq!(
        p.actions,
        vec![install("db", "2.0.0"), install("web", "1.2.0")]
    );
    assert_eq!(p.skipped.get(&name("web")), Some(&Skip::OutsidePercent));

    let mut db_host = web_host(true);
    db_host.labels.insert("role".into(), "db".into());
    let p = plan(&doc, &db_host, &HostState::default(), &BTreeSet::new());
    assert_eq!(
        p.actions,
        vec![install("db", "2.0.0"), install("web", "1.2.0")]
    );
    assert_eq!(p.skipped[&name("web")].reason(), "selector_mismatch");
}

#[test]
fn a_host_in_the_desired_state_is_converged() {
    let doc = doc();
    let inside = state(&[
        ("db", Some("2.0.0"), None),
        ("web", Some("1.2.0"), Some("1.3.0")),
    ]);
    assert!(plan(&doc, &web_host(true), &inside, &BTreeSet::new()).converged());
    let outside = state(&[("db", Some("2.0.0"), None), ("web", Some("1.2.0"), None)]);
    assert!(plan(&doc, &web_host(false), &outside, &BTreeSet::new()).converged());
}

#[test]
fn lowering_the_percent_stops_the_experiment_of_hosts_that_leave_the_cohort() {
    let mut v = doc_value();
    v["generation"] = json!(8);
    v["packages"]["web"]["experiment"]["percent"] = json!(0);
    let doc = Document::from_json(&bytes(&v)).expect("valid");
    let running = state(&[
        ("db", Some("2.0.0"), None),
        ("web", Some("1.2.0"), Some("1.3.0")),
    ]);
    let p = plan(&doc, &web_host(true), &running, &BTreeSet::new());
    assert_eq!(p.actions, vec![stop("web")]);

    // Removing the experiment from the document does the same.
    let mut v = doc_value();
    v["packages"]["web"]
        .as_object_mut()
        .expect("object")
        .remove("experiment");
    let doc = Document::from_json(&bytes(&v)).expect("valid");
    assert_eq!(
        plan(&doc, &web_host(true), &running, &BTreeSet::new()).actions,
        vec![stop("web")]
    );
}

#[test]
fn a_document_that_makes_the_experiment_stable_promotes_it_where_it_runs() {
    let mut v = doc_value();
    v["generation"] = json!(9);
    v["packages"]["web"] = json!({"stable": "1.3.0"});
    let doc = Document::from_json(&bytes(&v)).expect("valid");
    let running = state(&[
        ("db", Some("2.0.0"), None),
        ("web", Some("1.2.0"), Some("1.3.0")),
    ]);
    let p = plan(&doc, &web_host(true), &running, &BTreeSet::new());
    assert_eq!(
        p.actions,
        vec![Action::PromoteExperiment {
            package: name("web"),
            version: ver("1.3.0")
        }]
    );
    // A host that did not run it installs it.
    let plain = state(&[("db", Some("2.0.0"), None), ("web", Some("1.2.0"), None)]);
    let p = plan(&doc, &web_host(false), &plain, &BTreeSet::new());
    assert_eq!(p.actions, vec![install("web", "1.3.0")]);
}

#[test]
fn another_experiment_version_replaces_the_running_one() {
    let mut v = doc_value();
    v["catalog"]["packages"]
        .as_array_mut()
        .expect("array")
        .push(
            json!({"package": "web", "version": "1.4.0", "url": "oci://registry.test/web:1.4.0"}),
        );
    v["packages"]["web"]["experiment"]["version"] = json!("1.4.0");
    v["packages"]["web"]["experiment"]["percent"] = json!(100);
    let doc = Document::from_json(&bytes(&v)).expect("valid");
    let running = state(&[
        ("db", Some("2.0.0"), None),
        ("web", Some("1.2.0"), Some("1.3.0")),
    ]);
    let p = plan(&doc, &web_host(false), &running, &BTreeSet::new());
    assert_eq!(p.actions.len(), 2, "{:?}", p.actions);
    assert_eq!(p.actions[0], stop("web"));
    assert!(
        matches!(&p.actions[1], Action::StartExperiment { version, .. } if version.as_str() == "1.4.0")
    );
}

#[test]
fn a_rolled_back_experiment_is_not_started_again_for_the_same_generation() {
    let doc = doc();
    let host = web_host(true);
    let after_rollback = state(&[("db", Some("2.0.0"), None), ("web", Some("1.2.0"), None)]);
    let same = BTreeSet::from([RolledBack {
        generation: 7,
        package: name("web"),
        version: ver("1.3.0"),
    }]);
    let p = plan(&doc, &host, &after_rollback, &same);
    assert!(p.converged(), "{:?}", p.actions);
    assert_eq!(p.skipped.get(&name("web")), Some(&Skip::RolledBack));

    // A rollback of an older generation, or of another version, does not hold it back.
    for other in [
        RolledBack {
            generation: 6,
            package: name("web"),
            version: ver("1.3.0"),
        },
        RolledBack {
            generation: 7,
            package: name("web"),
            version: ver("1.2.9"),
        },
    ] {
        let p = plan(&doc, &host, &after_rollback, &BTreeSet::from([other]));
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.actions[0].operation(), "start_experiment");
    }
}

#[test]
fn packages_the_document_does_not_name_are_left_alone() {
    let doc = doc();
    let host = web_host(false);
    let s = state(&[
        ("db", Some("2.0.0"), None),
        ("web", Some("1.2.0"), None),
        ("local", Some("0.1"), Some("0.2")),
    ]);
    assert!(plan(&doc, &host, &s, &BTreeSet::new()).converged());
}

#[test]
fn a_new_stable_is_installed_beside_a_kept_experiment() {
    let mut v = doc_value();
    v["catalog"]["packages"]
        .as_array_mut()
        .expect("array")
        .push(
            json!({"package": "web", "version": "1.2.1", "url": "oci://registry.test/web:1.2.1"}),
        );
    v["packages"]["web"]["stable"] = json!("1.2.1");
    let doc = Document::from_json(&bytes(&v)).expect("valid");
    let running = state(&[
        ("db", Some("2.0.0"), None),
        ("web", Some("1.2.0"), Some("1.3.0")),
    ]);
    let p = plan(&doc, &web_host(true), &running, &BTreeSet::new());
    assert_eq!(p.actions, vec![install("web", "1.2.1")]);
}

// ---- properties ----

const PACKAGES: [&str; 3] = ["a", "b", "c"];
const VERSIONS: [&str; 4] = ["1", "2", "3", "4"];

fn arb_links() -> impl Strategy<Value = PackageLinks> {
    (
        proptest::option::of(0..VERSIONS.len()),
        proptest::option::of(0..VERSIONS.len()),
    )
        .prop_map(|(s, e)| PackageLinks {
            stable: s.map(|i| ver(VERSIONS[i])),
            experiment: e.map(|i| ver(VERSIONS[i])),
        })
}

fn arb_spec() -> impl Strategy<Value = PackageSpec> {
    (
        0..VERSIONS.len(),
        proptest::option::of((1..VERSIONS.len(), 0u16..=10_000, proptest::bool::ANY)),
    )
        .prop_map(|(s, exp)| PackageSpec {
            stable: ver(VERSIONS[s]),
            experiment: exp.map(|(offset, bp, select)| ExperimentSpec {
                version: ver(VERSIONS[(s + offset) % VERSIONS.len()]),
                percent: Percent::from_basis_points(bp).expect("in range"),
                selector: if select {
                    [("role".to_string(), "web".to_string())].into()
                } else {
                    BTreeMap::new()
                },
                health: None,
                max_duration: None,
                auto_promote_after: Some(Duration::from_secs(60)),
            }),
        })
}

fn arb_case() -> impl Strategy<Value = (Document, Host, HostState, BTreeSet<RolledBack>)> {
    let specs = proptest::collection::btree_map(0..PACKAGES.len(), arb_spec(), 0..=3);
    let links = proptest::collection::btree_map(0..PACKAGES.len(), arb_links(), 0..=3);
    let rolled =
        proptest::collection::btree_set((5u64..=7, 0..PACKAGES.len(), 0..VERSIONS.len()), 0..=3);
    (specs, links, rolled, "[a-z0-9]{1,12}", proptest::bool::ANY).prop_map(
        |(specs, links, rolled, id, web)| {
            let doc = Document {
                generation: 7,
                expires: "2027-01-31T00:00:00Z".parse().expect("time"),
                catalog: Catalog::default(),
                packages: specs
                    .into_iter()
                    .map(|(i, s)| (name(PACKAGES[i]), s))
                    .collect(),
            };
            let host = Host {
                id,
                labels: if web {
                    [("role".to_string(), "web".to_string())].into()
                } else {
                    BTreeMap::new()
                },
            };
            let state = HostState {
                packages: links
                    .into_iter()
                    .map(|(i, l)| (name(PACKAGES[i]), l))
                    .collect(),
            };
            let rolled = rolled
                .into_iter()
                .map(|(g, p, v)| RolledBack {
                    generation: g,
                    package: name(PACKAGES[p]),
                    version: ver(VERSIONS[v]),
                })
                .collect();
            (doc, host, state, rolled)
        },
    )
}

proptest! {
    #[test]
    fn applying_the_plan_converges_and_the_next_plan_is_empty(
        (doc, host, state, rolled) in arb_case()
    ) {
        let first = plan(&doc, &host, &state, &rolled);
        prop_assert_eq!(&first, &plan(&doc, &host, &state, &rolled), "not deterministic");
        let mut after = state.clone();
        for action in &first.actions {
            prop_assert!(doc.packages.contains_key(action.package()), "touched {}", action.package());
            after.apply(action);
        }
        let second = plan(&doc, &host, &after, &rolled);
        prop_assert!(second.converged(), "second plan: {:?}", second.actions);
        // The converged state is the desired one.
        for (n, spec) in &doc.packages {
            let links = &after.packages[n];
            prop_assert_eq!(links.stable.as_ref(), Some(&spec.stable));
            let wanted = spec.experiment.as_ref().filter(|_| !first.skipped.contains_key(n));
            prop_assert_eq!(links.experiment.as_ref(), wanted.map(|e| &e.version));
        }
        // Packages the document does not name are untouched.
        for (n, links) in &state.packages {
            if !doc.packages.contains_key(n) {
                prop_assert_eq!(Some(links), after.packages.get(n));
            }
        }
        // At most one action of each kind per package, and never more than three.
        for n in doc.packages.keys() {
            let ops: Vec<_> = first.actions.iter().filter(|a| a.package() == n).map(|a| a.operation()).collect();
            prop_assert!(ops.len() <= 3, "{:?}", ops);
            let unique: BTreeSet<_> = ops.iter().collect();
            prop_assert_eq!(unique.len(), ops.len());
        }
    }
}
