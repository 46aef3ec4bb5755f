//! Registry credentials against a real `docker-registry`: HTTP basic authentication
//! (htpasswd) and bearer tokens (the registry's token authentication, with a token server
//! signing JWTs), right and wrong credentials, per-host entries overriding the defaults,
//! and passwords never appearing in an error message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_fetch::pack::{PackOptions, pack};
use outpost_fetch::{
    Cancel, FetchContext, FetchError, Limits, Login, RegistrySettings, RetryPolicy,
};
use outpost_testkit::{Registry, RegistryAccess, TokenServer};
use outpost_types::ErrorCode;
use outpost_types::source::OciReference;
use outpost_types::wire::{CatalogEntry, ResolvedPackage};
use outpost_types::{PackageName, Version};

const USER: &str = "deployer";
const PASSWORD: &str = "Pa55-w0rd-never-printed";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Scratch {
    dir: tempfile::TempDir,
    layout: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir_all(tree.join("bin")).unwrap();
        fs_err::write(tree.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        let layout = dir.path().join("layout");
        pack(
            &tree,
            &PackageName::new("agent").unwrap(),
            &Version::new("1.0.0").unwrap(),
            &PackOptions::default(),
            &layout,
        )
        .unwrap();
        Self { dir, layout }
    }

    /// A password file holding `password` and a trailing newline.
    fn password_file(&self, name: &str, password: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs_err::write(&p, format!("{password}\n")).unwrap();
        p
    }

    fn dest(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        fs_err::create_dir(&d).unwrap();
        d
    }
}

fn settings(host: &str, login: Option<(&str, &Path)>) -> RegistrySettings {
    RegistrySettings {
        insecure_hosts: vec![host.to_owned()],
        default_login: Login {
            username: login.map(|(u, _)| u.to_owned()),
            password_file: login.map(|(_, p)| p.to_owned()),
        },
        retry: RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        ..RegistrySettings::default()
    }
}

fn push(s: &RegistrySettings, layout: &Path, target: &str) -> Result<(), FetchError> {
    rt().block_on(outpost_fetch::push_layout(
        s,
        layout,
        &OciReference::parse(target).unwrap(),
        &Cancel::new(),
    ))
    .map(|_| ())
    .map_err(FetchError::from)
}

fn resolved(url: &str) -> ResolvedPackage {
    CatalogEntry {
        package: "agent".into(),
        version: "1.0.0".into(),
        url: url.into(),
        sha256: String::new(),
        size: 0,
        platform: String::new(),
        arch: String::new(),
        health: None,
    }
    .resolve()
    .unwrap()
}

fn fetch(s: &RegistrySettings, url: &str, dest: &Path) -> Result<(), FetchError> {
    let ctx = FetchContext::new(s.clone(), Limits::default());
    rt().block_on(outpost_fetch::fetch(&resolved(url), dest, &ctx))
        .map(|_| ())
}

#[track_caller]
fn assert_refused(err: &FetchError, fragments: &[&str]) {
    let msg = err.to_string();
    assert_eq!(err.code(), ErrorCode::DownloadFailed, "{msg}");
    for f in fragments {
        assert!(msg.contains(f), "{msg:?} should contain {f:?}");
    }
    assert!(!msg.contains(PASSWORD), "the password leaked: {msg}");
    assert!(
        !format!("{err:?}").contains(PASSWORD),
        "the password leaked: {err:?}"
    );
}

/// Pushes and pulls with the right credentials, then checks every wrong way in.
fn exercise(reg: &Registry, sc: &Scratch) {
    let host = reg.host();
    let good = sc.password_file("good", PASSWORD);
    let bad = sc.password_file("bad", "not-the-password");
    let url = format!("oci://{host}/agent:1.0.0");

    // Anonymous: refused, saying credentials are needed.
    let anonymous = settings(&host, None);
    let err = push(&anonymous, &sc.layout, &format!("{host}/agent:1.0.0")).unwrap_err();
    assert_refused(&err, &["requires credentials", "registry.username"]);

    // Right credentials: push, then pull.
    let right = settings(&host, Some((USER, &good)));
    push(&right, &sc.layout, &format!("{host}/agent:1.0.0")).unwrap();
    let dest = sc.dest("pulled");
    fetch(&right, &url, &dest).unwrap();
    assert_eq!(
        fs_err::read(dest.join("bin/app")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );

    // Wrong password: refused at once, naming the user, never the password.
    let wrong = settings(&host, Some((USER, &bad)));
    let err = fetch(&wrong, &url, &sc.dest("wrong")).unwrap_err();
    assert_refused(
        &err,
        &[&url, "refused the credentials of user \"deployer\""],
    );
    let err = fetch(&anonymous, &url, &sc.dest("anonymous")).unwrap_err();
    assert_refused(&err, &["requires credentials"]);

    // A per-host entry overrides wrong defaults.
    let mut per_host = settings(&host, Some((USER, &bad)));
    per_host.auths.insert(
        host.clone(),
        Login {
            username: Some(USER.into()),
            password_file: Some(good.clone()),
        },
    );
    fetch(&per_host, &url, &sc.dest("per-host")).unwrap();
    // ... and wrong per-host credentials are not rescued by right defaults.
    let mut per_host_wrong = settings(&host, Some((USER, &good)));
    per_host_wrong.auths.insert(
        host.clone(),
        Login {
            username: Some("intruder".into()),
            password_file: Some(bad),
        },
    );
    let err = fetch(&per_host_wrong, &url, &sc.dest("per-host-wrong")).unwrap_err();
    assert_refused(&err, &["refused the credentials of user \"intruder\""]);

    // An unreadable password file is named.
    let missing = settings(&host, Some((USER, Path::new("/nonexistent/outpost-pass"))));
    let err = fetch(&missing, &url, &sc.dest("missing")).unwrap_err();
    assert_refused(&err, &["/nonexistent/outpost-pass", &host]);
}

#[test]
fn basic_authentication() {
    let reg = Registry::start_with(RegistryAccess::Htpasswd {
        username: USER.into(),
        password: PASSWORD.into(),
    });
    let sc = Scratch::new();
    exercise(&reg, &sc);
    assert!(!reg.log().contains(PASSWORD));
}

#[test]
fn bearer_token_authentication() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let reg = Registry::start_with(tokens.registry_auth());
    let sc = Scratch::new();
    exercise(&reg, &sc);
    let issued = tokens.issued();
    assert!(
        issued.iter().any(|s| s == "repository:agent:pull,push"),
        "a push token was issued: {issued:?}"
    );
    assert!(
        issued.iter().any(|s| s == "repository:agent:pull"),
        "a pull token was issued: {issued:?}"
    );
}
