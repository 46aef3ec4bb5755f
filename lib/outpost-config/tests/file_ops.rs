//! Every file operation on a real tree: works / refuses an escape / refuses a path the
//! package does not allow; plus symbolic links, modes, secrets and formats.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use outpost_config::{ConfigError, ConfigOperations, Rules, copy_tree};
use outpost_types::ErrorCode;
use serde_json::{Value, json};

/// A config root beside an `outside` directory that must never change.
struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("root")).unwrap();
        fs_err::create_dir(dir.path().join("outside")).unwrap();
        fs_err::write(dir.path().join("outside/secret.yaml"), "keep: me\n").unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn write(&self, rel: &str, text: &str, mode: u32) {
        let path = self.root().join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, text).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs_err::read_to_string(self.root().join(rel)).unwrap()
    }

    fn yaml(&self, rel: &str) -> Value {
        serde_saphyr::from_str(&self.read(rel)).unwrap()
    }

    fn mode(&self, rel: &str) -> u32 {
        fs_err::symlink_metadata(self.root().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn exists(&self, rel: &str) -> bool {
        fs_err::symlink_metadata(self.root().join(rel)).is_ok()
    }

    /// Plans `ops` with `rules` and applies them with `secrets`.
    fn run_with(
        &self,
        rules: &Rules,
        ops: Value,
        secrets: &[(&str, &str)],
    ) -> Result<(), ConfigError> {
        let ops: ConfigOperations = serde_json::from_value(json!({
            "deployment_id": "d-1",
            "file_operations": ops,
        }))
        .unwrap();
        let secrets: BTreeMap<String, String> = secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let keys: BTreeSet<&str> = secrets.keys().map(String::as_str).collect();
        let plan = ops.plan("demo", rules, &keys)?;
        plan.apply(&self.root(), &secrets)
    }

    fn run(&self, ops: Value) -> Result<(), ConfigError> {
        self.run_with(&Rules::defaults(), ops, &[])
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<String> = fs_err::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["secret.yaml"]);
        assert_eq!(
            fs_err::read_to_string(self.outside().join("secret.yaml")).unwrap(),
            "keep: me\n"
        );
    }
}

fn assert_refused(result: Result<(), ConfigError>, expected: &str) {
    let err = result.expect_err("the operation must be refused");
    assert_eq!(err.code(), ErrorCode::BadRequest, "{err}");
    assert!(
        err.to_string().contains(expected),
        "{err} does not say {expected:?}"
    );
}

/// The escapes every path-taking field is tried with.
const ESCAPES: &[&str] = &[
    "../outside/secret.yaml",
    "/../outside/secret.yaml",
    "/conf.d/../../outside/secret.yaml",
    "//outside/secret.yaml",
    "/./x.yaml",
];

// ---- merge-patch ----------------------------------------------------------------------------

#[test]
fn merge_patch_creates_a_missing_file_and_its_directories() {
    let fx = Fx::new();
    fx.run(
        json!([{"file_op": "merge-patch", "file_path": "/conf.d/redis.d/conf.yaml",
        "patch": {"instances": [{"host": "localhost", "port": 6379}]}}]),
    )
    .unwrap();
    assert_eq!(
        fx.yaml("conf.d/redis.d/conf.yaml"),
        json!({"instances": [{"host": "localhost", "port": 6379}]})
    );
    assert_eq!(fx.mode("conf.d/redis.d/conf.yaml"), 0o640);
    assert_eq!(fx.mode("conf.d/redis.d"), 0o755);
}

#[test]
fn merge_patch_merges_and_deletes_keys_per_rfc_7396() {
    let fx = Fx::new();
    fx.write(
        "app.yaml",
        "log_level: info\napm:\n  enabled: true\n  port: 8126\nkeep: [1, 2]\n",
        0o640,
    );
    fx.run(json!([{"file_op": "merge-patch", "file_path": "app.yaml",
        "patch": {"log_level": "debug", "apm": {"port": null, "env": "prod"}}}]))
        .unwrap();
    assert_eq!(
        fx.yaml("app.yaml"),
        json!({"log_level": "debug", "apm": {"enabled": true, "env": "prod"}, "keep": [1, 2]})
    );
}

#[test]
fn merge_patch_writes_json_back_as_json() {
    let fx = Fx::new();
    let rules = Rules::parse("/*.json 0600\n", Path::new("config-files")).unwrap();
    fx.write("app.json", "{\"a\": 1}", 0o600);
    fx.run_with(
        &rules,
        json!([{"file_op": "merge-patch", "file_path": "/app.json", "patch": {"b": [true]}}]),
        &[],
    )
    .unwrap();
    let text = fx.read("app.json");
    assert!(text.ends_with("}\n"), "{text:?}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value, json!({"a": 1, "b": [true]}));
    assert_eq!(fx.mode("app.json"), 0o600);
}

#[test]
fn merge_patch_refuses_escapes() {
    for escape in ESCAPES {
        let fx = Fx::new();
        assert_refused(
            fx.run(json!([{"file_op": "merge-patch", "file_path": escape, "patch": {"x": 1}}])),
            "invalid path",
        );
        fx.assert_outside_untouched();
    }
}

#[test]
fn merge_patch_refuses_a_path_the_package_does_not_allow() {
    let fx = Fx::new();
    for path in ["/etc/passwd", "/app.json", "/other/x.yaml", "/app.yaml.bak"] {
        assert_refused(
            fx.run(json!([{"file_op": "merge-patch", "file_path": path, "patch": {"x": 1}}])),
            "is not an allowed config file of package demo",
        );
    }
    assert!(!fx.exists("etc") && !fx.exists("other"));
}

#[test]
fn merge_patch_through_a_symlinked_directory_is_refused() {
    let fx = Fx::new();
    fs_err::os::unix::fs::symlink(fx.outside(), fx.root().join("conf.d")).unwrap();
    assert_refused(
        fx.run(
            json!([{"file_op": "merge-patch", "file_path": "/conf.d/secret.yaml",
            "patch": {"keep": "changed"}}]),
        ),
        "/conf.d is a symbolic link",
    );
    fx.assert_outside_untouched();
}

#[test]
fn merge_patch_of_a_symlinked_file_is_refused() {
    let fx = Fx::new();
    fs_err::os::unix::fs::symlink(fx.outside().join("secret.yaml"), fx.root().join("app.yaml"))
        .unwrap();
    assert_refused(
        fx.run(json!([{"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"keep": 1}}])),
        "/app.yaml is a symbolic link",
    );
    fx.assert_outside_untouched();
}

#[test]
fn merge_patch_of_an_unparsable_file_names_the_position_not_the_text() {
    let fx = Fx::new();
    fx.write("app.yaml", "a: 1\nb: [unclosed hunter2\n", 0o600);
    let err = fx
        .run(json!([{"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"x": 1}}]))
        .unwrap_err();
    let text = err.detail();
    assert!(text.starts_with("/app.yaml is not valid YAML"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(fx.read("app.yaml"), "a: 1\nb: [unclosed hunter2\n");
}

#[test]
fn patching_a_file_that_is_neither_yaml_nor_json_is_refused() {
    let fx = Fx::new();
    let rules = Rules::parse("/*.conf 0640\n", Path::new("config-files")).unwrap();
    assert_refused(
        fx.run_with(
            &rules,
            json!([{"file_op": "merge-patch", "file_path": "/app.conf", "patch": {"x": 1}}]),
            &[],
        ),
        "only those can be patched",
    );
}

// ---- patch (RFC 6902) ---------------------------------------------------------------------

#[test]
fn patch_applies_json_patch_operations() {
    let fx = Fx::new();
    fx.write("app.yaml", "list: [a, b]\nold: 1\nnested: {k: v}\n", 0o640);
    fx.run(
        json!([{"file_op": "patch", "file_path": "/app.yaml", "patch": [
            {"op": "test", "path": "/old", "value": 1},
            {"op": "add", "path": "/list/-", "value": "c"},
            {"op": "remove", "path": "/old"},
            {"op": "replace", "path": "/nested/k", "value": "w"},
            {"op": "copy", "from": "/nested", "path": "/copied"},
            {"op": "move", "from": "/copied/k", "path": "/moved"},
        ]}]),
    )
    .unwrap();
    assert_eq!(
        fx.yaml("app.yaml"),
        json!({"list": ["a", "b", "c"], "nested": {"k": "w"}, "copied": {}, "moved": "w"})
    );
}

#[test]
fn a_patch_that_does_not_apply_changes_nothing_and_names_the_pointer() {
    let fx = Fx::new();
    fx.write("app.yaml", "a: 1\n", 0o640);
    let err = fx
        .run(
            json!([{"file_op": "patch", "file_path": "/app.yaml", "patch": [
                {"op": "add", "path": "/b", "value": 2},
                {"op": "test", "path": "/a", "value": 2},
            ]}]),
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
    let text = err.detail();
    assert!(
        text.contains("operation '/1' failed at path '/a'"),
        "{text}"
    );
    assert_eq!(fx.read("app.yaml"), "a: 1\n");
}

#[test]
fn patch_refuses_escapes_and_disallowed_paths() {
    for escape in ESCAPES {
        let fx = Fx::new();
        assert_refused(
            fx.run(json!([{"file_op": "patch", "file_path": escape, "patch": []}])),
            "invalid path",
        );
        fx.assert_outside_untouched();
    }
    let fx = Fx::new();
    assert_refused(
        fx.run(json!([{"file_op": "patch", "file_path": "/etc/shadow.yaml", "patch": []}])),
        "not an allowed config file",
    );
}

// ---- delete ---------------------------------------------------------------------------------

#[test]
fn delete_removes_a_file_and_ignores_a_missing_one() {
    let fx = Fx::new();
    fx.write("conf.d/a.yaml", "x: 1\n", 0o640);
    fx.run(json!([
        {"file_op": "delete", "file_path": "/conf.d/a.yaml"},
        {"file_op": "delete", "file_path": "/conf.d/missing.yaml"},
        {"file_op": "delete", "file_path": "/conf.d/nodir/missing.yaml"},
    ]))
    .unwrap();
    assert!(!fx.exists("conf.d/a.yaml"));
    assert!(fx.exists("conf.d"));
}

#[test]
fn delete_refuses_escapes_disallowed_paths_links_and_directories() {
    for escape in ESCAPES {
        let fx = Fx::new();
        assert_refused(
            fx.run(json!([{"file_op": "delete", "file_path": escape}])),
            "invalid path",
        );
        fx.assert_outside_untouched();
    }
    let fx = Fx::new();
    fx.write("notes.txt", "x", 0o644);
    assert_refused(
        fx.run(json!([{"file_op": "delete", "file_path": "/notes.txt"}])),
        "not an allowed config file",
    );
    assert!(fx.exists("notes.txt"));
    fs_err::os::unix::fs::symlink(fx.outside().join("secret.yaml"), fx.root().join("l.yaml"))
        .unwrap();
    assert_refused(
        fx.run(json!([{"file_op": "delete", "file_path": "/l.yaml"}])),
        "symbolic link",
    );
    assert!(fx.exists("l.yaml"));
    fs_err::create_dir(fx.root().join("d.yaml")).unwrap();
    assert_refused(
        fx.run(json!([{"file_op": "delete", "file_path": "/d.yaml"}])),
        "is not a regular file",
    );
    fx.assert_outside_untouched();
}

// ---- delete-all -----------------------------------------------------------------------------

#[test]
fn delete_all_removes_a_directory_of_allowed_files() {
    let fx = Fx::new();
    fx.write("conf.d/a.yaml", "x: 1\n", 0o640);
    fx.write("conf.d/b.d/c.yaml", "x: 1\n", 0o640);
    fx.write("top.yaml", "x: 1\n", 0o640);
    fx.run(json!([{"file_op": "delete-all", "file_path": "/conf.d"}]))
        .unwrap();
    assert!(!fx.exists("conf.d"));
    assert!(fx.exists("top.yaml"));
    // The root is emptied, not removed; a missing path is fine.
    fx.run(json!([
        {"file_op": "delete-all", "file_path": "/"},
        {"file_op": "delete-all", "file_path": "/conf.d"},
    ]))
    .unwrap();
    assert!(fx.root().is_dir());
    assert_eq!(fs_err::read_dir(fx.root()).unwrap().count(), 0);
}

#[test]
fn delete_all_refuses_escapes_disallowed_files_and_links() {
    for escape in ["../outside", "//outside", "/conf.d/../../outside"] {
        let fx = Fx::new();
        assert_refused(
            fx.run(json!([{"file_op": "delete-all", "file_path": escape}])),
            "invalid path",
        );
        fx.assert_outside_untouched();
    }
    let fx = Fx::new();
    fx.write("conf.d/a.yaml", "x: 1\n", 0o640);
    fx.write("conf.d/run.sh", "#!/bin/sh\n", 0o755);
    assert_refused(
        fx.run(json!([{"file_op": "delete-all", "file_path": "/conf.d"}])),
        "/conf.d/run.sh is not an allowed config file",
    );
    assert!(fx.exists("conf.d/a.yaml") && fx.exists("conf.d/run.sh"));
    let fx = Fx::new();
    fx.write("conf.d/a.yaml", "x: 1\n", 0o640);
    fs_err::os::unix::fs::symlink(fx.outside(), fx.root().join("conf.d/out.d")).unwrap();
    assert_refused(
        fx.run(json!([{"file_op": "delete-all", "file_path": "/conf.d"}])),
        "/conf.d/out.d is a symbolic link",
    );
    assert_refused(
        fx.run(json!([{"file_op": "delete-all", "file_path": "/conf.d/out.d"}])),
        "symbolic link",
    );
    fx.assert_outside_untouched();
}

// ---- copy -----------------------------------------------------------------------------------

#[test]
fn copy_duplicates_a_file_with_the_destination_mode() {
    let fx = Fx::new();
    let rules = Rules::datadog_agent();
    fx.write("application_monitoring.yaml", "apm: true\n", 0o644);
    fx.run_with(
        &rules,
        json!([{"file_op": "copy", "file_path": "/application_monitoring.yaml",
            "destination_path": "/conf.d/apm.d/conf.yaml"}]),
        &[],
    )
    .unwrap();
    assert_eq!(fx.read("conf.d/apm.d/conf.yaml"), "apm: true\n");
    assert_eq!(fx.mode("conf.d/apm.d/conf.yaml"), 0o640);
    assert_eq!(fx.mode("application_monitoring.yaml"), 0o644);
}

#[test]
fn copy_refuses_escapes_disallowed_paths_links_and_missing_sources() {
    for escape in ESCAPES {
        let fx = Fx::new();
        fx.write("a.yaml", "x: 1\n", 0o640);
        assert_refused(
            fx.run(
                json!([{"file_op": "copy", "file_path": "/a.yaml", "destination_path": escape}]),
            ),
            "invalid path",
        );
        assert_refused(
            fx.run(
                json!([{"file_op": "copy", "file_path": escape, "destination_path": "/b.yaml"}]),
            ),
            "invalid path",
        );
        fx.assert_outside_untouched();
    }
    let fx = Fx::new();
    fx.write("a.yaml", "x: 1\n", 0o640);
    assert_refused(
        fx.run(
            json!([{"file_op": "copy", "file_path": "/a.yaml", "destination_path": "/bin/a.yaml"}]),
        ),
        "/bin/a.yaml is not an allowed config file",
    );
    assert_refused(
        fx.run(json!([{"file_op": "copy", "file_path": "/missing.yaml", "destination_path": "/b.yaml"}])),
        "/missing.yaml does not exist",
    );
    fs_err::os::unix::fs::symlink(fx.outside().join("secret.yaml"), fx.root().join("l.yaml"))
        .unwrap();
    assert_refused(
        fx.run(json!([{"file_op": "copy", "file_path": "/l.yaml", "destination_path": "/b.yaml"}])),
        "symbolic link",
    );
    assert!(!fx.exists("b.yaml"));
    fx.assert_outside_untouched();
}

// ---- move -----------------------------------------------------------------------------------

#[test]
fn move_renames_a_file() {
    let fx = Fx::new();
    fx.write("a.yaml", "x: 1\n", 0o600);
    fx.run(json!([{"file_op": "move", "file_path": "/a.yaml", "destination_path": "/conf.d/x.d/a.yaml"}]))
        .unwrap();
    assert!(!fx.exists("a.yaml"));
    assert_eq!(fx.read("conf.d/x.d/a.yaml"), "x: 1\n");
    // The stricter of the source's and the destination's modes.
    assert_eq!(fx.mode("conf.d/x.d/a.yaml"), 0o600);
}

#[test]
fn move_refuses_escapes_disallowed_paths_and_links() {
    for escape in ESCAPES {
        let fx = Fx::new();
        fx.write("a.yaml", "x: 1\n", 0o640);
        assert_refused(
            fx.run(
                json!([{"file_op": "move", "file_path": "/a.yaml", "destination_path": escape}]),
            ),
            "invalid path",
        );
        assert!(fx.exists("a.yaml"));
        fx.assert_outside_untouched();
    }
    let fx = Fx::new();
    fx.write("a.yaml", "x: 1\n", 0o640);
    assert_refused(
        fx.run(json!([{"file_op": "move", "file_path": "/a.yaml", "destination_path": "/a.sh"}])),
        "/a.sh is not an allowed config file",
    );
    fs_err::os::unix::fs::symlink(fx.outside(), fx.root().join("conf.d")).unwrap();
    assert_refused(
        fx.run(json!([{"file_op": "move", "file_path": "/a.yaml", "destination_path": "/conf.d/a.yaml"}])),
        "/conf.d is a symbolic link",
    );
    assert!(fx.exists("a.yaml"));
    fx.assert_outside_untouched();
}

// ---- secrets --------------------------------------------------------------------------------

#[test]
fn secrets_are_substituted_and_the_file_is_made_private() {
    let fx = Fx::new();
    let secret = "s3cr\"et: {value}";
    fx.run_with(
        &Rules::defaults(),
        json!([
            {"file_op": "merge-patch", "file_path": "/app.yaml",
             "patch": {"api_key": "SEC[api]", "url": "https://u:SEC[api]@h", "plain": "SEC"}},
            {"file_op": "patch", "file_path": "/conf.d/db.yaml",
             "patch": [{"op": "add", "path": "/password", "value": "SEC[api]"}]},
            {"file_op": "merge-patch", "file_path": "/public.yaml", "patch": {"x": 1}},
        ]),
        &[("api", secret)],
    )
    .unwrap();
    assert_eq!(
        fx.yaml("app.yaml"),
        json!({"api_key": secret, "url": format!("https://u:{secret}@h"), "plain": "SEC"})
    );
    assert_eq!(fx.yaml("conf.d/db.yaml"), json!({"password": secret}));
    assert_eq!(fx.mode("app.yaml"), 0o600);
    assert_eq!(fx.mode("conf.d/db.yaml"), 0o600);
    assert_eq!(fx.mode("public.yaml"), 0o640);
    // A later patch without a secret does not loosen the file, and a copy stays private.
    fx.run(json!([
        {"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"more": 1}},
        {"file_op": "copy", "file_path": "/app.yaml", "destination_path": "/conf.d/copy.yaml"},
    ]))
    .unwrap();
    assert_eq!(fx.mode("app.yaml"), 0o600);
    assert_eq!(fx.mode("conf.d/copy.yaml"), 0o600);
}

#[test]
fn a_stricter_package_mode_wins_over_0600() {
    let fx = Fx::new();
    let rules = Rules::parse("/*.yaml 0400\n", Path::new("config-files")).unwrap();
    fx.run_with(
        &rules,
        json!([{"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"k": "SEC[k]"}}]),
        &[("k", "v")],
    )
    .unwrap();
    assert_eq!(fx.mode("app.yaml"), 0o400);
}

#[test]
fn a_missing_or_misplaced_secret_is_refused_by_key_before_anything_is_written() {
    let fx = Fx::new();
    let err = fx
        .run(json!([
            {"file_op": "merge-patch", "file_path": "/first.yaml", "patch": {"x": 1}},
            {"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"k": "SEC[token]"}},
        ]))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(err.to_string().contains("SEC[token]"), "{err}");
    assert!(
        !fx.exists("first.yaml"),
        "refused before the first operation ran"
    );
    assert_refused(
        fx.run_with(
            &Rules::defaults(),
            json!([{"file_op": "merge-patch", "file_path": "/SEC[k].yaml", "patch": {}}]),
            &[("k", "v")],
        ),
        "placeholder SEC[k] in file_path",
    );
}

// ---- trees ----------------------------------------------------------------------------------

#[test]
fn copy_tree_keeps_files_and_modes_and_refuses_links() {
    let fx = Fx::new();
    fx.write("a.yaml", "a: 1\n", 0o600);
    fx.write("conf.d/b.d/c.yaml", "c: 1\n", 0o644);
    let copy = fx.dir.path().join("copy");
    fs_err::create_dir(&copy).unwrap();
    copy_tree(&fx.root(), &copy).unwrap();
    assert_eq!(
        fs_err::read_to_string(copy.join("a.yaml")).unwrap(),
        "a: 1\n"
    );
    let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&copy.join("a.yaml")), 0o600);
    assert_eq!(mode(&copy.join("conf.d/b.d/c.yaml")), 0o644);

    fs_err::os::unix::fs::symlink("/etc", fx.root().join("conf.d/etc")).unwrap();
    let again = fx.dir.path().join("again");
    fs_err::create_dir(&again).unwrap();
    let err = copy_tree(&fx.root(), &again).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/conf.d/etc is a symbolic link or a special file; config trees hold only files and directories"
    );
}

#[test]
fn a_failing_operation_leaves_the_stable_tree_untouched() {
    let fx = Fx::new();
    fx.write("app.yaml", "a: 1\n", 0o640);
    let stable = fx.root();
    let staged = fx.dir.path().join("staged");
    fs_err::create_dir(&staged).unwrap();
    copy_tree(&stable, &staged).unwrap();
    let ops: ConfigOperations = serde_json::from_value(json!({
        "deployment_id": "d-2",
        "file_operations": [
            {"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"a": 2}},
            {"file_op": "copy", "file_path": "/missing.yaml", "destination_path": "/b.yaml"},
        ]
    }))
    .unwrap();
    let plan = ops
        .plan("demo", &Rules::defaults(), &BTreeSet::new())
        .unwrap();
    let err = plan
        .apply(&staged, &BTreeMap::<String, String>::new())
        .unwrap_err();
    assert!(err.to_string().starts_with("file operation 1"), "{err}");
    assert_eq!(fx.read("app.yaml"), "a: 1\n");
}
