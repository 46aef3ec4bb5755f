//! Package extensions end to end: the real `outpost pack --extension NAME=DIR --push` into a
//! real `docker-registry`, the real daemon installing them into `<version>/ext/<name>/`,
//! keeping them across experiment start and promote, refusing an extension the image lacks
//! (stable untouched) and a hostile extension layer (an entry escaping its directory), and a
//! crash while a version with its extensions is moved into place.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_fetch::{Cancel, Digest, RegistrySettings};
use outpost_testkit::Registry;
use outpost_testkit::fixtures::{EntryType, TarBuilder, zstd};
use outpost_types::source::OciReference;
use serde_json::{Value, json};
use support::*;

struct Env {
    scratch: Scratch,
    reg: Registry,
    config: PathBuf,
}

impl Env {
    fn new() -> Self {
        let scratch = Scratch::new();
        let reg = Registry::start();
        let config = scratch.path().join("outpost.yaml");
        fs_err::write(
            &config,
            json!({"registry": {"insecure_hosts": [reg.host()]}}).to_string(),
        )
        .unwrap();
        Self {
            scratch,
            reg,
            config,
        }
    }

    /// Writes `files` under a fixture directory named `label`.
    fn tree(&self, label: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.scratch.fixtures().join(label);
        for (path, data) in files {
            let p = dir.join(path);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            fs_err::write(&p, data).unwrap();
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        dir
    }

    /// `outpost pack` of `agent` `version` with one `--extension` per name (each a tree with
    /// one file naming it and the version), then either `--push` or `--out`.
    fn pack(&self, version: &str, extensions: &[&str], target: &[&str]) -> Value {
        let payload = self.tree(
            &format!("agent-{version}"),
            &[("bin/agent", &format!("agent {version}"))],
        );
        let mut cmd = Command::new(BIN);
        cmd.arg("pack")
            .arg(&payload)
            .args(["--name", "agent", "--version", version])
            .args(target)
            .arg("--config")
            .arg(&self.config)
            .arg("--json");
        for ext in extensions {
            let dir = self.tree(
                &format!("ext-{ext}-{version}"),
                &[(&format!("lib/{ext}.so"), &format!("{ext} for {version}"))],
            );
            cmd.arg("--extension")
                .arg(format!("{ext}={}", dir.display()));
        }
        let out = cli_output(cmd, None);
        assert!(out.status.success(), "pack: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn push(&self, version: &str, extensions: &[&str]) -> Value {
        let target = self.reference(version);
        self.pack(version, extensions, &["--push", &target])
    }

    fn reference(&self, version: &str) -> String {
        format!("oci://{}/pkgs/agent:{version}", self.reg.host())
    }

    fn entry(&self, version: &str) -> Value {
        json!({"package": "agent", "version": version, "url": self.reference(version)})
    }

    fn daemon(&self) -> Daemon {
        Daemon::start_with(
            &self.scratch.root(),
            DaemonOptions {
                config: Some(self.config.clone()),
                ..DaemonOptions::default()
            },
        )
    }
}

fn ext_file(root: &Path, version: &str, ext: &str) -> Option<String> {
    fs_err::read_to_string(root.join(format!("packages/agent/{version}/ext/{ext}/lib/{ext}.so")))
        .ok()
}

fn extensions_in_status(d: &Daemon) -> Value {
    d.package_state("agent")
        .map_or(Value::Null, |p| p["extensions"].clone())
}

#[test]
fn extensions_are_installed_and_kept_across_experiment_start_and_promote() {
    let env = Env::new();
    let packed = env.push("1.0", &["python", "gpu"]);
    assert_eq!(
        packed["extensions"].as_array().unwrap().len(),
        2,
        "{packed}"
    );
    env.push("2.0", &["python", "gpu"]);
    let d = env.daemon();
    d.set_catalog(&[env.entry("1.0"), env.entry("2.0")]);

    // Through the CLI, as a person would: one of the two extensions.
    let out = d.cli(&["install", "agent", "1.0", "--extension", "python"]);
    assert!(out.status.success(), "install: {}", stderr(&out));
    assert_eq!(
        ext_file(&d.root, "1.0", "python").as_deref(),
        Some("python for 1.0")
    );
    assert_eq!(ext_file(&d.root, "1.0", "gpu"), None, "not asked for");
    assert_eq!(
        fs_err::read_to_string(d.root.join("packages/agent/1.0/bin/agent")).unwrap(),
        "agent 1.0"
    );
    assert_eq!(extensions_in_status(&d), json!(["python"]));

    // The experiment gets the same extensions, from its own image.
    d.post("/agent/experiment/start", Some(&json!({"version": "2.0"})))
        .assert_ok_empty();
    assert_eq!(
        ext_file(&d.root, "2.0", "python").as_deref(),
        Some("python for 2.0")
    );
    assert_eq!(ext_file(&d.root, "2.0", "gpu"), None);
    d.post("/agent/experiment/promote", None).assert_ok_empty();
    assert_eq!(d.versions("agent"), Some(("2.0".into(), String::new())));
    assert_eq!(
        fs_err::read_to_string(
            d.root
                .join("packages/agent/stable/ext/python/lib/python.so")
        )
        .unwrap(),
        "python for 2.0"
    );
    assert_eq!(extensions_in_status(&d), json!(["python"]));

    // Still recorded after a restart; `remove` forgets them.
    drop(d);
    let d = env.daemon();
    assert_eq!(extensions_in_status(&d), json!(["python"]));
    d.post("/agent/remove", None).assert_ok_empty();
    assert_eq!(extensions_in_status(&d), Value::Null);
}

#[test]
fn an_extension_the_image_lacks_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.push("1.0", &["python"]);
    env.push("2.0", &[]);
    let d = env.daemon();
    d.set_catalog(&[env.entry("1.0"), env.entry("2.0")]);

    // Unknown on install: nothing installed.
    let r = d.post(
        "/agent/install",
        Some(&json!({"version": "1.0", "extensions": ["nope"]})),
    );
    let message = r.assert_error(422, "extension_not_found");
    assert!(
        message.contains("\"nope\"") && message.contains("python"),
        "{message}"
    );
    assert_eq!(d.versions("agent"), None);
    wait_tmp_clean(&d.root);
    // A name that cannot be a directory is a bad request.
    let r = d.post(
        "/agent/install",
        Some(&json!({"version": "1.0", "extensions": ["../x"]})),
    );
    r.assert_error(400, "bad_request");

    d.post(
        "/agent/install",
        Some(&json!({"version": "1.0", "extensions": ["python"]})),
    )
    .assert_ok_empty();
    let before = version_inode(&d.root, "agent", "1.0");

    // 2.0 has no `python`: the start fails with a clear error, stable is untouched.
    let r = d.post("/agent/experiment/start", Some(&json!({"version": "2.0"})));
    let message = r.assert_error(422, "extension_not_found");
    assert!(
        message.contains("\"python\"") && message.contains("agent:2.0"),
        "{message}"
    );
    assert_eq!(d.versions("agent"), Some(("1.0".into(), String::new())));
    assert!(!version_exists(&d.root, "agent", "2.0"));
    assert_eq!(version_inode(&d.root, "agent", "1.0"), before);
    assert_eq!(
        ext_file(&d.root, "1.0", "python").as_deref(),
        Some("python for 1.0")
    );
    let task = d.task("agent").unwrap();
    assert_eq!(task["error"]["code"], "extension_not_found", "{task}");
    wait_tmp_clean(&d.root);
}

/// Replaces the blob of the extension layer `name` in the layout at `layout` with `blob`
/// (a platform-independent image: its config is `{}`, so there are no diff_ids to follow).
fn swap_extension_blob(layout: &Path, name: &str, blob: &[u8]) {
    let blob_path = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs_err::read(&index_path).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest: Value =
        serde_json::from_slice(&fs_err::read(blob_path(&manifest_digest)).unwrap()).unwrap();
    let digest = Digest::of(blob).to_string();
    fs_err::write(blob_path(&digest), blob).unwrap();
    let layer = manifest["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l["annotations"]["com.datadoghq.package.extension.name"] == name)
        .unwrap();
    layer["digest"] = json!(digest);
    layer["size"] = json!(blob.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = Digest::of(&manifest).to_string();
    fs_err::write(blob_path(&manifest_digest), &manifest).unwrap();
    index["manifests"][0]["digest"] = json!(manifest_digest);
    index["manifests"][0]["size"] = json!(manifest.len());
    fs_err::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_hostile_extension_layer_is_refused() {
    let env = Env::new();
    let layout = env.scratch.fixtures().join("hostile-layout");
    env.pack(
        "1.0",
        &["evil"],
        &["--out", layout.to_str().unwrap(), "--platform", "any"],
    );
    let hostile = TarBuilder::new()
        .file("lib/ok.so", b"fine", 0o644)
        .raw(b"../../../../escaped", EntryType::Regular, b"owned", 0o644)
        .finish();
    swap_extension_blob(&layout, "evil", &zstd(&hostile));
    let settings = RegistrySettings {
        insecure_hosts: vec![env.reg.host()],
        ..RegistrySettings::default()
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(outpost_fetch::push_layout(
            &settings,
            &layout,
            &OciReference::parse(&format!("{}/pkgs/agent:1.0", env.reg.host())).unwrap(),
            &Cancel::new(),
        ))
        .unwrap();

    let d = env.daemon();
    d.set_catalog(&[env.entry("1.0")]);
    let r = d.post(
        "/agent/install",
        Some(&json!({"version": "1.0", "extensions": ["evil"]})),
    );
    let message = r.assert_error(502, "integrity");
    assert!(message.contains("escaped"), "{message}");
    assert_eq!(d.versions("agent"), None);
    wait_tmp_clean(&d.root);
    for dir in [d.root.clone(), d.root.join("tmp"), d.root.join("packages")] {
        assert!(!dir.join("escaped").exists(), "{}", dir.display());
    }
    assert!(!env.scratch.path().join("escaped").exists());
    // Without the extension the same image installs: the payload itself is fine.
    d.post("/agent/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();
    assert!(!d.root.join("packages/agent/1.0/ext").exists());
}

/// A crash while the experiment's version (its extensions inside) is renamed into place:
/// after a restart stable keeps its extension, no experiment is half there, and the start
/// succeeds with the extension. Uses OCI layouts (`file://`), the other source kind.
#[test]
fn a_crash_at_the_version_rename_leaves_stable_and_its_extensions_whole() {
    let env = Env::new();
    let layouts = env.scratch.fixtures().join("layouts");
    fs_err::create_dir_all(&layouts).unwrap();
    let entry = |v: &str| {
        let out = layouts.join(v);
        env.pack(v, &["python"], &["--out", out.to_str().unwrap()]);
        json!({"package": "agent", "version": v, "url": format!("file://{}", out.display())})
    };
    let entries = [entry("1.0"), entry("2.0")];
    for point in ["repo.version.rename", "repo.version.rename.done"] {
        let root = env.scratch.path().join(format!("root-{point}"));
        let mut d = Daemon::start(&root);
        d.set_catalog(&entries);
        d.post(
            "/agent/install",
            Some(&json!({"version": "1.0", "extensions": ["python"]})),
        )
        .assert_ok_empty();
        d.stop();
        let mut d = Daemon::start_with(
            &root,
            DaemonOptions {
                env: vec![("OUTPOST_FAILPOINT".into(), point.into())],
                ..Default::default()
            },
        );
        let body = serde_json::to_vec(&json!({"version": "2.0"})).unwrap();
        let crashed = try_request(
            &d.socket,
            &request(
                "POST",
                "/agent/experiment/start",
                &[("Content-Type", "application/json")],
                Some(&body),
            ),
        );
        assert!(crashed.is_err(), "{point}: answered {crashed:?}");
        assert!(!d.wait_exit().success());

        let d = Daemon::start(&root);
        d.wait_gc_runs(0, 1);
        assert_eq!(
            d.versions("agent"),
            Some(("1.0".into(), String::new())),
            "{point}"
        );
        assert_eq!(
            ext_file(&root, "1.0", "python").as_deref(),
            Some("python for 1.0"),
            "{point}"
        );
        wait_tmp_clean(&root);
        d.post("/agent/experiment/start", Some(&json!({"version": "2.0"})))
            .assert_ok_empty();
        assert_eq!(
            ext_file(&root, "2.0", "python").as_deref(),
            Some("python for 2.0"),
            "{point}"
        );
        assert_eq!(extensions_in_status(&d), json!(["python"]));
    }
}

#[test]
fn an_install_without_the_field_keeps_the_extensions_and_an_empty_list_drops_them() {
    let env = Env::new();
    for v in ["1.0", "2.0", "3.0"] {
        env.push(v, &["python"]);
    }
    let d = env.daemon();
    d.set_catalog(&[env.entry("1.0"), env.entry("2.0"), env.entry("3.0")]);
    d.post(
        "/agent/install",
        Some(&json!({"version": "1.0", "extensions": ["python", "python"]})),
    )
    .assert_ok_empty();
    assert_eq!(extensions_in_status(&d), json!(["python"]));
    // The same version again with another list is refused; with the same list, a no-op.
    d.post(
        "/agent/install",
        Some(&json!({"version": "1.0", "extensions": []})),
    )
    .assert_error(409, "invalid_state");
    d.post("/agent/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();

    d.post("/agent/install", Some(&json!({"version": "2.0"})))
        .assert_ok_empty();
    assert_eq!(
        ext_file(&d.root, "2.0", "python").as_deref(),
        Some("python for 2.0")
    );
    d.post(
        "/agent/install",
        Some(&json!({"version": "3.0", "extensions": []})),
    )
    .assert_ok_empty();
    assert!(!d.root.join("packages/agent/3.0/ext").exists());
    assert_eq!(extensions_in_status(&d), Value::Null);
}

#[test]
fn pack_refuses_bad_extension_flags() {
    let env = Env::new();
    let payload = env.tree("payload", &[("bin/agent", "agent")]);
    let ext = env.tree("ext", &[("lib/x.so", "x")]);
    let ext_arg = |name: &str| format!("{name}={}", ext.display());
    let missing = env.scratch.path().join("missing");
    let cases: [(Vec<String>, &str); 4] = [
        (vec!["python".into()], "expected NAME=DIR"),
        (vec![ext_arg("Bad/Name")], "may hold only"),
        (vec![ext_arg("python"), ext_arg("python")], "given twice"),
        (vec![format!("python={}", missing.display())], "missing"),
    ];
    for (i, (args, expected)) in cases.iter().enumerate() {
        let out_dir = env.scratch.path().join(format!("out-{i}"));
        let mut cmd = Command::new(BIN);
        cmd.arg("pack")
            .arg(&payload)
            .args(["--name", "agent", "--version", "1.0", "--out"])
            .arg(&out_dir);
        for a in args {
            cmd.arg("--extension").arg(a);
        }
        let out = cli_output(cmd, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!out_dir.exists(), "{args:?}: nothing written");
    }
}

#[test]
fn a_payload_whose_ext_is_a_symlink_gets_no_extension_through_it() {
    let env = Env::new();
    let payload = env.tree("payload-link", &[("bin/agent", "agent 1.0")]);
    fs_err::os::unix::fs::symlink("bin", payload.join("ext")).unwrap();
    let ext = env.tree("ext-python", &[("lib/python.so", "python")]);
    let mut cmd = Command::new(BIN);
    cmd.arg("pack")
        .arg(&payload)
        .args(["--name", "agent", "--version", "1.0", "--push"])
        .arg(env.reference("1.0"))
        .arg("--extension")
        .arg(format!("python={}", ext.display()))
        .arg("--config")
        .arg(&env.config);
    let out = cli_output(cmd, None);
    assert!(out.status.success(), "pack: {}", stderr(&out));
    let d = env.daemon();
    d.set_catalog(&[env.entry("1.0")]);
    let message = d
        .post(
            "/agent/install",
            Some(&json!({"version": "1.0", "extensions": ["python"]})),
        )
        .assert_error(502, "download_failed");
    assert!(message.contains("ext is not a directory"), "{message}");
    assert_eq!(d.versions("agent"), None);
    wait_tmp_clean(&d.root);
}
