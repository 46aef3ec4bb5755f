//! Property tests of path safety: whatever the path, an accepted one stays below the root, and
//! no operation, successful or refused, ever changes anything outside the root, even with
//! symbolic links planted inside the tree that point out of it.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use outpost_config::{ConfigOperations, ConfigPath, Rules};
use proptest::prelude::*;
use serde_json::json;

/// Paths made of the pieces escapes are made of.
fn raw_path() -> impl Strategy<Value = String> {
    let segment = prop::sample::select(vec![
        "..", ".", "", "a", "x.yaml", "conf.d", "out", "ln.yaml", "out.d", "SEC[k]", "a\0b",
        "a\\b", "*.yaml",
    ]);
    (
        prop::sample::select(vec!["", "/", "//"]),
        prop::collection::vec(segment, 0..6),
    )
        .prop_map(|(lead, segments)| format!("{lead}{}", segments.join("/")))
}

fn op() -> impl Strategy<Value = serde_json::Value> {
    let kind = prop::sample::select(vec![
        "merge-patch",
        "patch",
        "delete",
        "delete-all",
        "copy",
        "move",
    ]);
    (kind, raw_path(), raw_path()).prop_map(|(kind, from, to)| match kind {
        "merge-patch" => json!({"file_op": kind, "file_path": from, "patch": {"x": "changed"}}),
        "patch" => json!({"file_op": kind, "file_path": from,
            "patch": [{"op": "add", "path": "/x", "value": "changed"}]}),
        "copy" | "move" => json!({"file_op": kind, "file_path": from, "destination_path": to}),
        _ => json!({"file_op": kind, "file_path": from}),
    })
}

/// A sandbox: `root/` with files and links pointing out, `outside/` that must not change.
fn sandbox() -> (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs_err::create_dir_all(root.join("conf.d")).unwrap();
    fs_err::create_dir_all(outside.join("out.d")).unwrap();
    fs_err::write(outside.join("x.yaml"), "x: outside\n").unwrap();
    fs_err::write(outside.join("out.d/x.yaml"), "x: outside\n").unwrap();
    fs_err::write(root.join("x.yaml"), "x: inside\n").unwrap();
    fs_err::write(root.join("conf.d/x.yaml"), "x: inside\n").unwrap();
    fs_err::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    fs_err::os::unix::fs::symlink(&outside, root.join("conf.d/out.d")).unwrap();
    fs_err::os::unix::fs::symlink(outside.join("x.yaml"), root.join("ln.yaml")).unwrap();
    let snapshot = snapshot(&outside);
    (dir, snapshot)
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs_err::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs_err::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(rel, Vec::new());
                stack.push(path);
            } else {
                out.insert(rel, fs_err::read(&path).unwrap());
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn accepted_paths_stay_below_the_root(raw in raw_path()) {
        if let Ok(path) = ConfigPath::parse(&raw) {
            let root = Path::new("/r/config");
            let joined = path.under(root);
            prop_assert!(joined.starts_with(root));
            let rest = joined.strip_prefix(root).unwrap();
            prop_assert!(rest.components().all(|c| matches!(c, Component::Normal(_))), "{raw:?}");
            prop_assert!(!raw.contains("/../") && !raw.starts_with("../") && !raw.ends_with("/.."));
            // Normalising is stable.
            prop_assert_eq!(ConfigPath::parse(&path.to_string()).unwrap(), path);
        }
    }

    #[test]
    fn no_operation_writes_outside_the_root(ops in prop::collection::vec(op(), 1..4)) {
        let (dir, before) = sandbox();
        let ops: ConfigOperations = serde_json::from_value(json!({
            "deployment_id": "p", "file_operations": ops,
        })).unwrap();
        let rules = Rules::parse("/** 0640\n", Path::new("config-files")).unwrap();
        let secrets = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        if let Ok(plan) = ops.plan("demo", &rules, &BTreeSet::from(["k"])) {
            // Success or refusal: either way, outside is untouched.
            let _ = plan.apply(&dir.path().join("root"), &secrets);
        }
        prop_assert_eq!(snapshot(&dir.path().join("outside")), before);
        let top: BTreeSet<String> = fs_err::read_dir(dir.path()).unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        prop_assert_eq!(top, BTreeSet::from(["outside".to_owned(), "root".to_owned()]));
    }
}
