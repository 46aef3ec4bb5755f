//! Arbitrary bytes as a config experiment's operations (`outpost_config::ConfigOperations`,
//! the `operations` of `POST /{package}/config_experiment/start`), planned against a package's
//! rules and applied to a config tree in which links pointing out of it are planted.
//!
//! Asserted: nothing panics; whether the operations are refused or applied, in whole or in
//! part, nothing outside the config root changes (a snapshot of the directory beside it, which
//! the planted links point to, is equal before and after) and nothing new appears beside the
//! root; every entry left in the tree is a directory, a regular file or one of the planted
//! links, so no operation ever makes a link.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use outpost_config::{ConfigOperations, Rules};

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(dir).expect("inside").to_path_buf();
            if meta.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    Some(
                        std::fs::read_link(&path)
                            .expect("link")
                            .into_os_string()
                            .into_encoded_bytes(),
                    ),
                );
            } else {
                out.insert(rel, Some(std::fs::read(&path).expect("read")));
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(ops) = serde_json::from_slice::<ConfigOperations>(data) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("conf.d")).expect("mkdir");
    std::fs::create_dir_all(outside.join("out.d")).expect("mkdir");
    std::fs::write(outside.join("x.yaml"), "x: outside\n").expect("write");
    std::fs::write(outside.join("out.d/x.yaml"), "x: outside\n").expect("write");
    std::fs::write(root.join("x.yaml"), "x: inside\n").expect("write");
    std::fs::write(root.join("conf.d/x.json"), "{\"x\": \"inside\"}\n").expect("write");
    let planted = [
        (outside.clone(), root.join("out")),
        (outside.join("out.d"), root.join("conf.d/out.d")),
        (outside.join("x.yaml"), root.join("ln.yaml")),
    ];
    for (target, link) in &planted {
        std::os::unix::fs::symlink(target, link).expect("symlink");
    }
    let before = snapshot(&outside);

    let rules = Rules::parse("/** 0640\n", Path::new("config-files")).expect("rules");
    let secrets = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    if let Ok(plan) = ops.plan("demo", &rules, &BTreeSet::from(["k"])) {
        // Applied or refused part way: the caller discards the tree on error; either way
        // nothing outside it may have changed.
        let _ = plan.apply(&root, &secrets);
    }

    assert_eq!(
        snapshot(&outside),
        before,
        "an operation changed something outside the root"
    );
    let top: BTreeSet<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(top.len(), 2, "an operation wrote beside the root: {top:?}");
    let links: BTreeSet<PathBuf> = planted
        .iter()
        .map(|(_, l)| l.strip_prefix(&root).expect("inside").to_path_buf())
        .collect();
    for (path, content) in snapshot(&root) {
        if content.is_some()
            && std::fs::symlink_metadata(root.join(&path))
                .expect("metadata")
                .file_type()
                .is_symlink()
        {
            assert!(
                links.contains(&path),
                "an operation made a link: {}",
                path.display()
            );
        }
    }
});
