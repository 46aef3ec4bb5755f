//! Packages from OCI registries end to end: the real `outpost pack --push` into a real
//! `docker-registry` on loopback, then the real daemon installing from it over its socket,
//! by tag and by digest; refusals (wrong digest, missing tag, wrong platform only, plain
//! HTTP not listed as insecure, not enough disk space) that leave nothing behind; a
//! connection cut in the middle of a blob (resumed with a range request) and server errors
//! (retried); a mirror; an `http://` tarball; progress while bytes flow.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_fetch::oci::{ImageIndex, ImageManifest, annotation};
use outpost_fetch::{Cancel, Digest, RegistrySettings};
use outpost_testkit::{Fault, FaultProxy, FileServer, Registry, Rule, noise};
use outpost_types::source::OciReference;
use serde_json::{Value, json};
use support::*;

/// A scratch directory with a package tree to pack.
struct Env {
    scratch: Scratch,
}

impl Env {
    fn new() -> Self {
        Self {
            scratch: Scratch::new(),
        }
    }

    /// Writes the tree of `name` `version` (the standard files plus `extra` random bytes)
    /// and returns its directory and files.
    fn tree(&self, name: &str, version: &str, extra: usize) -> (PathBuf, Files) {
        let mut files = standard_files(name, version);
        if extra > 0 {
            files.push(("share/blob.bin".into(), noise(extra, 5), 0o644));
        }
        let dir = self
            .scratch
            .fixtures()
            .join(format!("tree-{name}-{version}"));
        for (path, data, mode) in &files {
            let p = dir.join(path);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            fs_err::write(&p, data).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        (dir, files)
    }

    /// A config file with these registry settings.
    fn config(&self, name: &str, registry: Value) -> PathBuf {
        let path = self.scratch.path().join(name);
        fs_err::write(&path, json!({ "registry": registry }).to_string()).unwrap();
        path
    }

    /// `outpost pack DIR --name N --version V --push REF [extra...] --config CONFIG --json`.
    fn pack_push(
        &self,
        dir: &Path,
        name: &str,
        version: &str,
        target: &str,
        config: &Path,
        extra: &[&str],
    ) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("pack")
            .arg(dir)
            .args(["--name", name, "--version", version, "--push", target])
            .args(extra)
            .arg("--config")
            .arg(config)
            .arg("--json");
        cli_output(cmd, None)
    }

    fn daemon(&self, config: &Path) -> Daemon {
        Daemon::start_with(
            &self.scratch.root(),
            DaemonOptions {
                config: Some(config.to_owned()),
                ..DaemonOptions::default()
            },
        )
    }
}

fn oci_entry(name: &str, version: &str, url: &str) -> Value {
    json!({"package": name, "version": version, "url": url})
}

/// Pushes `name` `version` with the CLI and returns the JSON it printed.
fn pushed(env: &Env, reg_host: &str, config: &Path, name: &str, version: &str) -> (Value, Files) {
    let (dir, files) = env.tree(name, version, 256 << 10);
    let out = env.pack_push(
        &dir,
        name,
        version,
        &format!("oci://{reg_host}/pkgs/{name}:{version}"),
        config,
        &[],
    );
    assert!(out.status.success(), "pack --push: {}", stderr(&out));
    (serde_json::from_slice(&out.stdout).unwrap(), files)
}

/// Asserts that a failed install left nothing: not installed, staging cleaned.
fn assert_nothing_installed(d: &Daemon, name: &str) {
    assert_eq!(d.versions(name), None, "{name} must not be installed");
    wait_tmp_clean(&d.root);
}

#[test]
fn pack_push_then_install_by_tag_then_experiment_by_digest() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let config = env.config("outpost.yaml", json!({"insecure_hosts": [host]}));
    let (v1, files1) = pushed(&env, &host, &config, "agent", "7.50.0");
    assert_eq!(
        v1["layout"],
        Value::Null,
        "no --out: the layout was temporary"
    );
    assert_eq!(
        v1["pushed"]["reference"],
        format!("oci://{host}/pkgs/agent:7.50.0")
    );
    assert_eq!(v1["pushed"]["index_digest"], v1["index_digest"]);
    let (v2, files2) = pushed(&env, &host, &config, "agent", "7.51.0");
    let v2_index = v2["index_digest"].as_str().unwrap().to_owned();

    let d = env.daemon(&config);
    d.set_catalog(&[
        oci_entry(
            "agent",
            "7.50.0",
            &format!("oci://{host}/pkgs/agent:7.50.0"),
        ),
        oci_entry(
            "agent",
            "7.51.0",
            &format!("oci://{host}/pkgs/agent@{v2_index}"),
        ),
    ]);
    // Through the CLI, as a person would.
    let out = d.cli(&["install", "agent", "7.50.0"]);
    assert!(out.status.success(), "install: {}", stderr(&out));
    assert_eq!(d.versions("agent"), Some(("7.50.0".into(), String::new())));
    assert_complete(&d.root.join("packages/agent/7.50.0"), &files1);

    d.post(
        "/agent/experiment/start",
        Some(&json!({"version": "7.51.0"})),
    )
    .assert_ok_empty();
    assert_eq!(
        d.versions("agent"),
        Some(("7.50.0".into(), "7.51.0".into()))
    );
    assert_complete(&d.root.join("packages/agent/7.51.0"), &files2);
    d.post("/agent/experiment/promote", None).assert_ok_empty();
    assert_eq!(d.versions("agent"), Some(("7.51.0".into(), String::new())));
    assert_eq!(d.task("agent").unwrap()["state"], "DONE");
}

#[test]
fn refusals_fail_at_once_and_leave_nothing_behind() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let config = env.config("outpost.yaml", json!({"insecure_hosts": [host]}));
    pushed(&env, &host, &config, "agent", "1.0.0");
    // An image for another platform only.
    let (dir, _) = env.tree("other", "1.0.0", 0);
    let out = env.pack_push(
        &dir,
        "other",
        "1.0.0",
        &format!("oci://{host}/pkgs/other:1.0.0"),
        &config,
        &["--platform", "linux/s390x-elsewhere"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let missing_digest = Digest::of(b"not pushed");
    let d = env.daemon(&config);
    d.set_catalog(&[
        oci_entry(
            "agent",
            "1.0.0",
            &format!("oci://{host}/pkgs/agent@{missing_digest}"),
        ),
        oci_entry("agent", "2.0.0", &format!("oci://{host}/pkgs/agent:2.0.0")),
        oci_entry("other", "1.0.0", &format!("oci://{host}/pkgs/other:1.0.0")),
    ]);
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "agent",
            "1.0.0",
            &[&missing_digest.to_string(), "not found (HTTP 404)"],
        ),
        ("agent", "2.0.0", &["agent:2.0.0", "not found (HTTP 404)"]),
        ("other", "1.0.0", &["no matching image found in the index"]),
    ];
    for (name, version, fragments) in cases {
        let r = d.post(
            &format!("/{name}/install"),
            Some(&json!({ "version": version })),
        );
        let message = r.assert_error(502, "download_failed");
        for f in fragments {
            assert!(message.contains(f), "{message:?} should contain {f:?}");
        }
        let task = d.task(name).unwrap();
        assert_eq!(task["state"], "ERROR");
        assert_eq!(task["error"]["code"], "download_failed");
        assert_nothing_installed(&d, name);
    }
}

#[test]
fn a_plain_http_registry_not_listed_as_insecure_is_refused() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let listed = env.config("listed.yaml", json!({"insecure_hosts": [host]}));
    pushed(&env, &host, &listed, "agent", "1.0.0");
    // Pushing without the listing is refused the same way.
    let unlisted = env.config("unlisted.yaml", json!({}));
    let (dir, _) = env.tree("agent", "1.0.1", 0);
    let out = env.pack_push(
        &dir,
        "agent",
        "1.0.1",
        &format!("oci://{host}/pkgs/agent:1.0.1"),
        &unlisted,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("registry.insecure_hosts"),
        "{}",
        stderr(&out)
    );
    let d = env.daemon(&unlisted);
    d.set_catalog(&[oci_entry(
        "agent",
        "1.0.0",
        &format!("oci://{host}/pkgs/agent:1.0.0"),
    )]);
    let message = d
        .post("/agent/install", Some(&json!({"version": "1.0.0"})))
        .assert_error(502, "download_failed");
    assert!(
        message.contains(&format!("list \"{host}\" in registry.insecure_hosts")),
        "{message}"
    );
    assert_nothing_installed(&d, "agent");
}

#[test]
fn basic_auth_right_and_wrong_and_the_password_is_never_shown() {
    const PASSWORD: &str = "Tr0ub4dor-never-in-a-log";
    let env = Env::new();
    let reg = Registry::start_with(outpost_testkit::RegistryAccess::Htpasswd {
        username: "deployer".into(),
        password: PASSWORD.into(),
    });
    let host = reg.host();
    let good = env.scratch.path().join("good.pass");
    fs_err::write(&good, format!("{PASSWORD}\n")).unwrap();
    let bad = env.scratch.path().join("bad.pass");
    fs_err::write(&bad, "guess\n").unwrap();
    let right = env.config(
        "right.yaml",
        json!({"insecure_hosts": [host], "username": "deployer", "password_file": good}),
    );
    // The defaults are wrong; the entry for this host is right and wins.
    let per_host = env.config(
        "per-host.yaml",
        json!({"insecure_hosts": [host], "username": "deployer", "password_file": bad,
               "auths": {host.clone(): {"username": "deployer", "password_file": good}}}),
    );
    let wrong = env.config(
        "wrong.yaml",
        json!({"insecure_hosts": [host], "username": "deployer", "password_file": bad}),
    );

    let (dir, files) = env.tree("agent", "1.0.0", 0);
    let target = format!("oci://{host}/pkgs/agent:1.0.0");
    let out = env.pack_push(&dir, "agent", "1.0.0", &target, &wrong, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refused the credentials of user \"deployer\""),
        "{err}"
    );
    assert!(!err.contains(PASSWORD));
    let out = env.pack_push(&dir, "agent", "1.0.0", &target, &per_host, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let catalog = [oci_entry("agent", "1.0.0", &target)];
    let mut failures = Vec::new();
    {
        let mut d = Daemon::start_with(
            &env.scratch.root(),
            DaemonOptions {
                config: Some(wrong),
                env: vec![("OUTPOST_LOG".into(), "trace".into())],
                ..DaemonOptions::default()
            },
        );
        d.set_catalog(&catalog);
        let r = d.post("/agent/install", Some(&json!({"version": "1.0.0"})));
        let message = r.assert_error(502, "download_failed");
        assert!(
            message.contains("refused the credentials of user \"deployer\""),
            "{message}"
        );
        failures.push(r.text());
        failures.push(d.status().to_string());
        assert_nothing_installed(&d, "agent");
        d.stop();
    }
    let mut d = Daemon::start_with(
        &env.scratch.root(),
        DaemonOptions {
            config: Some(right),
            env: vec![("OUTPOST_LOG".into(), "trace".into())],
            ..DaemonOptions::default()
        },
    );
    let out = d.cli(&["install", "agent", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_complete(&d.root.join("packages/agent/1.0.0"), &files);
    let log = d.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is verbose"
    );
    assert!(!log.contains(PASSWORD), "the password is in the daemon log");
    for text in failures {
        assert!(
            !text.contains(PASSWORD),
            "the password is in an answer: {text}"
        );
    }
    d.stop();
}

#[test]
fn a_cut_connection_resumes_with_a_range_request_and_server_errors_are_retried() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let config = env.config("push.yaml", json!({"insecure_hosts": [host]}));
    let (dir, files) = env.tree("agent", "3.0.0", 4 << 20);
    let out = env.pack_push(
        &dir,
        "agent",
        "3.0.0",
        &format!("oci://{host}/pkgs/agent:3.0.0"),
        &config,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let packed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = packed["layer_digest"].as_str().unwrap().to_owned();
    let cut_at: u64 = 1 << 20;
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![
            Rule::new("/manifests/3.0.0", Fault::Status(503), 1),
            Rule::new(format!("/blobs/{layer}"), Fault::Status(500), 1),
            Rule::new(
                format!("/blobs/{layer}"),
                Fault::CutBody { after: cut_at },
                1,
            ),
        ],
    );
    let config = env.config("outpost.yaml", json!({"insecure_hosts": [proxy.host()]}));
    let d = env.daemon(&config);
    d.set_catalog(&[oci_entry(
        "agent",
        "3.0.0",
        &format!("oci://{}/pkgs/agent:3.0.0", proxy.host()),
    )]);
    d.post("/agent/install", Some(&json!({"version": "3.0.0"})))
        .assert_ok_empty();
    assert_complete(&d.root.join("packages/agent/3.0.0"), &files);
    assert_eq!(proxy.injected(), 3);
    let blob_gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&layer))
        .collect();
    assert_eq!(blob_gets.len(), 3, "{blob_gets:?}");
    let from: u64 = blob_gets[2]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the last request is not a resumption: {blob_gets:?}"));
    assert!(from > 0 && from <= cut_at, "resumed from {from}");
    let log = d.log();
    assert!(log.contains("resuming"), "the resumption is logged: {log}");
}

/// Copies the layout at `layout` to `out` with its manifest declaring `size` bytes.
fn with_declared_size(layout: &Path, out: &Path, size: u64) {
    fs_err::create_dir_all(out.join("blobs/sha256")).unwrap();
    for e in fs_err::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        fs_err::copy(e.path(), out.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    let mut index: ImageIndex =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = &mut index.manifests[0];
    let mut manifest: ImageManifest =
        serde_json::from_slice(&fs_err::read(desc.digest.blob_path(layout)).unwrap()).unwrap();
    for key in [annotation::DATADOG_SIZE, annotation::OUTPOST_SIZE] {
        manifest.annotations.insert(key.into(), size.to_string());
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    desc.digest = Digest::of(&bytes);
    desc.size = bytes.len() as u64;
    fs_err::write(desc.digest.blob_path(out), &bytes).unwrap();
    fs_err::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs_err::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn not_enough_disk_space_is_refused_before_the_download() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let (dir, _) = env.tree("big", "1.0.0", 0);
    let layout = env.scratch.fixtures().join("big-layout");
    let out = Command::new(BIN)
        .arg("pack")
        .arg(&dir)
        .args(["--name", "big", "--version", "1.0.0", "--out"])
        .arg(&layout)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A package declaring a petabyte: no disk of this machine has that much free.
    const DECLARED: u64 = 1 << 50;
    let huge = env.scratch.fixtures().join("huge-layout");
    with_declared_size(&layout, &huge, DECLARED);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(outpost_fetch::push_layout(
            &RegistrySettings {
                insecure_hosts: vec![host.clone()],
                ..RegistrySettings::default()
            },
            &huge,
            &OciReference::parse(&format!("{host}/pkgs/big:1.0.0")).unwrap(),
            &Cancel::new(),
        ))
        .unwrap();
    let proxy = FaultProxy::start(reg.addr(), vec![]);
    let config = env.config("outpost.yaml", json!({"insecure_hosts": [proxy.host()]}));
    let d = env.daemon(&config);
    d.set_catalog(&[oci_entry(
        "big",
        "1.0.0",
        &format!("oci://{}/pkgs/big:1.0.0", proxy.host()),
    )]);
    let message = d
        .post("/big/install", Some(&json!({"version": "1.0.0"})))
        .assert_error(507, "not_enough_disk_space");
    assert!(message.contains("bytes available"), "{message}");
    assert!(
        message.contains(&format!("{} bytes required", DECLARED + (10 << 20))),
        "the figures include the declared size and the margin: {message}"
    );
    assert!(
        proxy.requests().iter().all(|r| !r.path.contains("/blobs/")),
        "nothing was downloaded: {:?}",
        proxy.requests()
    );
    assert_nothing_installed(&d, "big");
}

#[test]
fn a_mirror_replaces_the_registry_host() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let push = env.config("push.yaml", json!({"insecure_hosts": [host]}));
    let (_, files) = pushed(&env, &host, &push, "agent", "1.0.0");
    let config = env.config(
        "outpost.yaml",
        json!({"insecure_hosts": [host], "mirror": host}),
    );
    let d = env.daemon(&config);
    // Nothing answers at this name: only the mirror can serve it.
    d.set_catalog(&[oci_entry(
        "agent",
        "1.0.0",
        "oci://registry.invalid/pkgs/agent:1.0.0",
    )]);
    d.post("/agent/install", Some(&json!({"version": "1.0.0"})))
        .assert_ok_empty();
    assert_complete(&d.root.join("packages/agent/1.0.0"), &files);
}

#[test]
fn an_http_tarball_is_installed_and_checked() {
    let env = Env::new();
    let fixture = standard(&env.scratch.fixtures(), "tool", "2.1.0");
    let www = env.scratch.path().join("www");
    fs_err::create_dir(&www).unwrap();
    fs_err::copy(&fixture.layer_blob, www.join("tool-2.1.0.tar.zst")).unwrap();
    let server = FileServer::start(&www);
    let config = env.config("outpost.yaml", json!({}));
    let d = env.daemon(&config);
    let url = server.url("tool-2.1.0.tar.zst");
    d.set_catalog(&[
        json!({"package": "tool", "version": "2.1.0", "url": url,
               "sha256": fixture.layer_sha256, "size": fixture.layer_size}),
        json!({"package": "tool", "version": "2.2.0", "url": url,
               "sha256": Digest::of(b"x").hex()}),
    ]);
    d.post("/tool/install", Some(&json!({"version": "2.1.0"})))
        .assert_ok_empty();
    assert_complete(&d.root.join("packages/tool/2.1.0"), &fixture.files);
    let message = d
        .post("/tool/experiment/start", Some(&json!({"version": "2.2.0"})))
        .assert_error(502, "integrity");
    assert!(message.contains("digest mismatch"), "{message}");
    assert_eq!(d.versions("tool"), Some(("2.1.0".into(), String::new())));
    wait_tmp_clean(&d.root);
}

#[test]
fn status_shows_download_progress_while_bytes_flow() {
    let env = Env::new();
    let reg = Registry::start();
    let host = reg.host();
    let push = env.config("push.yaml", json!({"insecure_hosts": [host]}));
    let (dir, files) = env.tree("agent", "5.0.0", 6 << 20);
    let out = env.pack_push(
        &dir,
        "agent",
        "5.0.0",
        &format!("oci://{host}/pkgs/agent:5.0.0"),
        &push,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let packed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = packed["layer_digest"].as_str().unwrap().to_owned();
    let layer_size = packed["layer_size"].as_u64().unwrap();
    // The proxy passes 2 MiB of the layer, then holds the rest until released.
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![Rule::new(
            format!("/blobs/{layer}"),
            Fault::HoldBody { after: 2 << 20 },
            1,
        )],
    );
    let config = env.config("outpost.yaml", json!({"insecure_hosts": [proxy.host()]}));
    let d = env.daemon(&config);
    d.set_catalog(&[oci_entry(
        "agent",
        "5.0.0",
        &format!("oci://{}/pkgs/agent:5.0.0", proxy.host()),
    )]);
    let socket = d.socket.clone();
    let install =
        std::thread::spawn(move || cli(&socket, &["--json", "install", "agent", "5.0.0"], None));
    let progress = wait_for("download progress in /status", || {
        let task = d.task("agent")?;
        let p = task.get("progress")?.clone();
        (task["state"] == "RUNNING"
            && p["phase"] == "download"
            && p["bytes_done"].as_u64()? >= 1 << 20)
            .then_some(p)
    });
    assert_eq!(progress["bytes_total"].as_u64(), Some(layer_size));
    assert!(progress["bytes_done"].as_u64().unwrap() <= 2 << 20);
    proxy.release();
    let out = install.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_complete(&d.root.join("packages/agent/5.0.0"), &files);
    let task = d.task("agent").unwrap();
    assert_eq!(task["state"], "DONE");
    assert!(task.get("progress").is_none(), "{task}");
}
