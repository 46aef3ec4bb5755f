//! The LocalAPI of the real daemon over its real socket: every route's success, every error
//! status with its exact code and body, the conventions (JSON, trailing newline, `Allow`),
//! and the Datadog daemon's test intents (status shape, install, experiment round trips).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use serde_json::{Value, json};
use support::*;

const TOO_BIG: usize = (1 << 20) + 1;

fn daemon_with(s: &Scratch, fixtures: &[&Fixture]) -> Daemon {
    let d = Daemon::start(&s.root());
    let entries: Vec<Value> = fixtures.iter().map(|f| f.layout_entry()).collect();
    d.set_catalog(&entries);
    d
}

#[test]
fn status_of_an_empty_daemon_has_the_datadog_shape() {
    let s = Scratch::new();
    let d = Daemon::start(&s.root());
    let r = d.get("/status");
    assert_eq!(r.status, 200);
    r.assert_json_convention();
    let body = r.json();
    // The key of encrypted secrets: 32 bytes in standard base64 (see daemon_secrets.rs).
    let key = body["secrets_pub_key"].as_str().unwrap();
    assert_eq!(key.len(), 44, "{key}");
    assert_eq!(
        body,
        json!({"version": env!("CARGO_PKG_VERSION"), "packages": {}, "remote_config_state": [],
               "secrets_pub_key": key})
    );
}

/// The Datadog daemon's `TestAPIStatus`, `TestAPIInstall`, `TestAPIStartExperiment`,
/// `TestAPIStopExperiment` and `TestAPIPromoteExperiment`, against the real daemon: each call
/// answers `{}` and `/status` shows the effect with `Stable`/`Experiment` keys and the last
/// task in `remote_config_state`.
#[test]
fn datadog_intents_install_experiment_stop_and_promote() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "test-package", "1.0.0");
    let v2 = standard(&fx, "test-package", "2.0.0");
    let d = daemon_with(&s, &[&v1, &v2]);
    let root = s.root();

    d.post("/test-package/install", Some(&json!({"version": "1.0.0"})))
        .assert_ok_empty();
    let status = d.status();
    assert_eq!(
        status["packages"],
        json!({"test-package": {"Stable": "1.0.0", "Experiment": ""}})
    );
    let rc = &status["remote_config_state"][0];
    assert_eq!(rc["package"], "test-package");
    assert_eq!(rc["stable_version"], "1.0.0");
    assert_eq!(rc["experiment_version"], "");
    assert_eq!(rc["task"]["state"], "DONE");
    assert_eq!(rc["task"]["operation"], "install");
    assert!(rc["task"].get("error").is_none());
    let install_id = rc["task"]["id"].as_str().unwrap().to_owned();
    assert_complete(&root.join("packages/test-package/1.0.0"), &v1.files);

    d.post(
        "/test-package/experiment/start",
        Some(&json!({"version": "2.0.0"})),
    )
    .assert_ok_empty();
    let status = d.status();
    assert_eq!(
        status["packages"]["test-package"],
        json!({"Stable": "1.0.0", "Experiment": "2.0.0"})
    );
    let task = &status["remote_config_state"][0]["task"];
    assert_eq!(task["state"], "DONE");
    assert_eq!(task["operation"], "start_experiment");
    assert_ne!(task["id"], install_id.as_str(), "each task has its own id");
    assert_eq!(
        status["remote_config_state"][0]["experiment_version"],
        "2.0.0"
    );

    d.post("/test-package/experiment/stop", None)
        .assert_ok_empty();
    assert_eq!(
        d.versions("test-package"),
        Some(("1.0.0".into(), String::new()))
    );
    assert_eq!(link_target(&root, "test-package", "experiment"), None);

    d.post(
        "/test-package/experiment/start",
        Some(&json!({"version": "2.0.0"})),
    )
    .assert_ok_empty();
    d.post("/test-package/experiment/promote", None)
        .assert_ok_empty();
    assert_eq!(
        d.versions("test-package"),
        Some(("2.0.0".into(), String::new()))
    );
    assert_eq!(
        d.task("test-package").unwrap()["operation"],
        "promote_experiment"
    );
    assert_invariants(&root, "test-package", &|v| {
        standard_files("test-package", v)
    });
}

/// `/status` is served from a cache while nothing changes, but memory stays a cache of the
/// disk: every operation shows at once, and a change made behind the daemon's back (here an
/// experiment link removed by hand) shows within the cache's one-second lifetime.
#[test]
fn status_is_a_cache_of_the_disk() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = daemon_with(&s, &[&v1, &v2]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let first = d.get("/status").body;
    assert_eq!(d.get("/status").body, first, "same state, same bytes");
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("1".into(), "2".into())));
    fs_err::remove_file(s.root().join("packages/pkg/experiment")).unwrap();
    // No operation runs: only the cache's lifetime can make the change show.
    wait_for("status to see the change on disk", || {
        (d.versions("pkg") == Some(("1".into(), String::new()))).then_some(())
    });
    assert_eq!(d.task("pkg").unwrap()["operation"], "start_experiment");
}

#[test]
fn stop_without_experiment_is_a_noop() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = daemon_with(&s, &[&v1]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/stop", None).assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert_eq!(d.task("pkg").unwrap()["state"], "DONE");
}

#[test]
fn a_running_experiment_is_replaced_by_a_new_one() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixtures: Vec<Fixture> = ["1", "2", "3"]
        .iter()
        .map(|v| standard(&fx, "pkg", v))
        .collect();
    let d = daemon_with(&s, &fixtures.iter().collect::<Vec<_>>());
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "3"})))
        .assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("1".into(), "3".into())));
    // Starting the running experiment again changes nothing.
    let inode = version_inode(&s.root(), "pkg", "3");
    d.post("/pkg/experiment/start", Some(&json!({"version": "3"})))
        .assert_ok_empty();
    assert_eq!(version_inode(&s.root(), "pkg", "3"), inode);
    assert_invariants(&s.root(), "pkg", &|v| standard_files("pkg", v));
}

#[test]
fn installing_the_stable_version_again_leaves_its_directory_untouched() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1.0");
    let d = daemon_with(&s, &[&v1]);
    d.post("/pkg/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();
    let inode = version_inode(&s.root(), "pkg", "1.0");
    let first = d.task("pkg").unwrap()["id"].clone();
    d.post("/pkg/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();
    assert_eq!(version_inode(&s.root(), "pkg", "1.0"), inode);
    let task = d.task("pkg").unwrap();
    assert_eq!(task["state"], "DONE");
    assert_ne!(task["id"], first);
}

/// Installing the version the experiment runs makes it stable in place (the directory is
/// kept, not fetched again) and ends the experiment; installing another version over a
/// running experiment drops the experiment too.
#[test]
fn install_over_a_running_experiment() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let fixtures: Vec<Fixture> = ["1", "2", "3", "4"]
        .iter()
        .map(|v| standard(&fx, "pkg", v))
        .collect();
    let d = daemon_with(&s, &fixtures.iter().collect::<Vec<_>>());
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    let inode = version_inode(&s.root(), "pkg", "2");
    d.post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("2".into(), String::new())));
    assert_eq!(version_inode(&s.root(), "pkg", "2"), inode);
    d.post("/pkg/experiment/start", Some(&json!({"version": "3"})))
        .assert_ok_empty();
    d.post("/pkg/install", Some(&json!({"version": "4"})))
        .assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("4".into(), String::new())));
    assert_eq!(link_target(&s.root(), "pkg", "experiment"), None);
    assert_invariants(&s.root(), "pkg", &|v| standard_files("pkg", v));
}

#[test]
fn install_without_a_body_takes_the_only_catalog_version() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let only = standard(&fx, "single", "4.2");
    let a = standard(&fx, "multi", "1");
    let b = standard(&fx, "multi", "2");
    let d = daemon_with(&s, &[&only, &a, &b]);

    d.post("/single/install", None).assert_ok_empty();
    assert_eq!(d.versions("single"), Some(("4.2".into(), String::new())));

    // Content-Length: 0 is "no body" too, and needs no Content-Type.
    let r = send(
        &d.socket,
        &request("POST", "/multi/install", &[("Content-Length", "0")], None),
    );
    let message = r.assert_error(400, "bad_request");
    assert!(
        message.contains("a version is required") && message.contains("1, 2"),
        "{message}"
    );
    assert_eq!(d.versions("multi"), None);

    let message = d
        .post("/absent/install", None)
        .assert_error(422, "package_not_found");
    assert!(
        message.contains("package absent, any version for"),
        "{message}"
    );
}

#[test]
fn install_from_gzip_and_zstd_tarballs() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let gz = package_as(
        &fx,
        "tarred",
        "1",
        standard_files("tarred", "1"),
        outpost_fetch::pack::PackFormat::Gzip,
    );
    let zst = standard(&fx, "tarred", "2");
    let d = Daemon::start(&s.root());
    let e1 = gz.tarball_entry(&fx);
    let e2 = zst.tarball_entry(&fx);
    assert!(e1["url"].as_str().unwrap().ends_with(".tar.gz"));
    assert!(e2["url"].as_str().unwrap().ends_with(".tar.zst"));
    d.set_catalog(&[e1, e2]);
    d.post("/tarred/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/tarred/experiment/start", Some(&json!({"version": "2"})))
        .assert_ok_empty();
    assert_eq!(d.versions("tarred"), Some(("1".into(), "2".into())));
    assert_invariants(&s.root(), "tarred", &|v| standard_files("tarred", v));
}

#[test]
fn remove_deletes_the_package() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "gone", "1");
    let d = daemon_with(&s, &[&v1]);
    d.post("/gone/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    d.post("/gone/remove", None).assert_ok_empty();
    let status = d.status();
    assert_eq!(status["packages"], json!({}));
    // The last task is kept for a removed package, with empty versions.
    let rc = &status["remote_config_state"][0];
    assert_eq!(
        (rc["package"].as_str(), rc["stable_version"].as_str()),
        (Some("gone"), Some(""))
    );
    assert_eq!(rc["task"]["operation"], "remove");
    assert!(!s.root().join("packages/gone").exists());
    // Installing again works.
    d.post("/gone/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
}

#[test]
fn catalog_round_trips_and_invalid_entries_leave_it_unchanged() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = daemon_with(&s, &[&v1]);
    let sha = "a".repeat(64);
    let set = json!({"packages": [
        v1.layout_entry(),
        {"package": "tb", "version": "2", "url": "file:///x/tb.tar.gz", "sha256": sha,
         "size": 10, "platform": "linux", "arch": "", "unknown_field": true},
    ]});
    d.post("/catalog", Some(&set)).assert_ok_empty();
    let r = d.get("/catalog");
    assert_eq!(r.status, 200);
    r.assert_json_convention();
    let stored = r.json();
    assert_eq!(stored["packages"].as_array().unwrap().len(), 2);
    assert_eq!(stored["packages"][1]["sha256"], sha.as_str());
    assert_eq!(stored["packages"][1]["platform"], "linux");

    let bad_entries = [
        (
            json!({"package": "Bad", "version": "1", "url": "oci://r.io/p:1"}),
            "Bad",
        ),
        (
            json!({"package": "ok", "version": "..", "url": "oci://r.io/p:1"}),
            "..",
        ),
        (
            json!({"package": "ok", "version": "stable", "url": "oci://r.io/p:1"}),
            "stable",
        ),
        (
            json!({"package": "ok", "version": "1", "url": "ftp://r.io/p"}),
            "ftp",
        ),
        (
            json!({"package": "ok", "version": "1", "url": "file:///p.tar.gz"}),
            "sha256",
        ),
        (
            json!({"package": "ok", "version": "1", "url": "file:///p.tar.gz", "sha256": "xyz"}),
            "sha256",
        ),
    ];
    for (bad, needle) in bad_entries {
        let body = json!({"packages": [v1.layout_entry(), bad]});
        let message = d
            .post("/catalog", Some(&body))
            .assert_error(400, "bad_request");
        assert!(
            message.contains("catalog entry 1") && message.contains(needle),
            "{message}"
        );
        assert_eq!(
            d.get("/catalog").json(),
            stored,
            "catalog changed by {body}"
        );
    }
    for (body, needle) in [
        (json!({"packages": "nope"}), "invalid type"),
        (
            json!({"packages": [{"package": 1, "version": "1", "url": "oci://r/p:1"}]}),
            "invalid type",
        ),
        (
            json!({"packages": [{"package": "p", "version": "1", "url": "oci://r/p:1", "size": "big"}]}),
            "invalid type",
        ),
        (
            json!({"packages": [{"package": "p", "version": "1"}]}),
            "url",
        ),
    ] {
        let message = d
            .post("/catalog", Some(&body))
            .assert_error(400, "bad_request");
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(d.get("/catalog").json(), stored);
    }
    let message = d.post("/catalog", None).assert_error(400, "bad_request");
    assert!(message.contains("catalog"), "{message}");
}

#[test]
fn bad_names_and_versions_are_refused_before_any_work() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = daemon_with(&s, &[&v1]);
    let long = "a".repeat(101);
    for path in [
        "/Upper/install".to_owned(),
        format!("/{long}/install"),
        "/-dash/install".into(),
        "/a%20b/install".into(),
        "/a%2Fb/install".into(),
        "/caf%C3%A9/experiment/stop".into(),
        "/_x/remove".into(),
    ] {
        let message = d
            .post(&path, Some(&json!({"version": "1"})))
            .assert_error(400, "bad_request");
        assert!(
            message.contains("invalid package name"),
            "{path}: {message}"
        );
    }
    for path in [
        "/../status",
        "/pkg/../status",
        "/%2e%2e/install",
        "/pkg/experiment/%2E%2E/start",
        "/./pkg/install",
    ] {
        let r = send(&d.socket, &request("POST", path, &[], None));
        let message = r.assert_error(400, "bad_request");
        assert!(message.contains("is not allowed"), "{path}: {message}");
    }
    for (body, needle) in [
        (json!({"version": ".."}), "invalid version"),
        (json!({"version": "."}), "invalid version"),
        (json!({"version": "stable"}), "invalid version"),
        (json!({"version": "experiment"}), "invalid version"),
        (json!({"version": "a/b"}), "invalid version"),
        (json!({"version": "x".repeat(129)}), "invalid version"),
        (json!({"version": 1}), "invalid type"),
        (json!({"version": "1", "install_args": "x"}), "invalid type"),
        (json!({"version": "1", "install_args": [1]}), "invalid type"),
        (json!(["1"]), "invalid type"),
    ] {
        for route in ["/pkg/install", "/pkg/experiment/start"] {
            let message = d.post(route, Some(&body)).assert_error(400, "bad_request");
            assert!(message.contains(needle), "{route} {body}: {message}");
        }
    }
    // experiment/start needs a body and a version.
    for body in [None, Some(json!({})), Some(json!({"version": ""}))] {
        let message = d
            .post("/pkg/experiment/start", body.as_ref())
            .assert_error(400, "bad_request");
        assert!(message.contains("version"), "{message}");
    }
    // Malformed JSON.
    let r = send(
        &d.socket,
        &request(
            "POST",
            "/pkg/install",
            &[("Content-Type", "application/json")],
            Some(b"{\"version\": "),
        ),
    );
    r.assert_error(400, "bad_request");
    let r = send(
        &d.socket,
        &request(
            "POST",
            "/catalog",
            &[("Content-Type", "application/json")],
            Some(b"not json"),
        ),
    );
    r.assert_error(400, "bad_request");
    // Nothing was done: no task, nothing installed.
    assert_eq!(d.status()["remote_config_state"], json!([]));
    assert!(
        fs_err::read_dir(s.root().join("packages"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let s = Scratch::new();
    let d = Daemon::start(&s.root());
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/pkg/unknown"),
        ("POST", "/pkg/experiment/restart"),
        ("GET", "/"),
        ("POST", "/pkg/install/extra"),
    ] {
        let r = send(&d.socket, &request(method, path, &[], None));
        let message = r.assert_error(404, "not_found");
        assert!(message.contains(path), "{message}");
    }
    for (method, path, allow) in [
        ("POST", "/status", "GET, HEAD"),
        ("DELETE", "/catalog", "GET, HEAD, POST"),
        ("GET", "/pkg/install", "POST"),
        ("PUT", "/pkg/experiment/start", "POST"),
        ("GET", "/pkg/remove", "POST"),
    ] {
        let r = send(&d.socket, &request(method, path, &[], None));
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn bodies_over_one_mebibyte_are_413_with_or_without_length() {
    let s = Scratch::new();
    let d = Daemon::start(&s.root());
    let big = vec![b' '; TOO_BIG];
    // Raw: the daemon answers and closes before reading the whole body.
    let r = send_raw(
        &d.socket,
        &request(
            "POST",
            "/catalog",
            &[("Content-Type", "application/json")],
            Some(&big),
        )
        .to_bytes(),
    );
    r.assert_error(413, "payload_too_large");

    // Chunked: counted as it arrives (4 chunks of 512 KiB).
    let mut raw = b"POST /pkg/install HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(format!("{:x}\r\n", 512 * 1024).as_bytes());
        raw.extend(std::iter::repeat_n(b' ', 512 * 1024));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    send_raw(&d.socket, &raw).assert_error(413, "payload_too_large");

    // A chunked body under the limit is read and used.
    let body = br#"{"packages": []}"#;
    let mut raw = b"POST /catalog HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    send_raw(&d.socket, &raw).assert_ok_empty();
    // The daemon is still healthy.
    assert_eq!(d.get("/status").status, 200);
}

#[test]
fn bodies_need_a_json_content_type() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = daemon_with(&s, &[&v1]);
    let body = br#"{"version": "1"}"#;
    for headers in [
        vec![],
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![("Content-Type", "application/jsonx")],
    ] {
        let r = send(
            &d.socket,
            &request("POST", "/pkg/install", &headers, Some(body)),
        );
        r.assert_error(415, "unsupported_media_type");
    }
    assert_eq!(d.versions("pkg"), None);
    let r = send(
        &d.socket,
        &request(
            "POST",
            "/pkg/install",
            &[("Content-Type", "application/json; charset=utf-8")],
            Some(body),
        ),
    );
    r.assert_ok_empty();
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
}

#[test]
fn unknown_versions_are_422() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1");
    let d = daemon_with(&s, &[&v1]);
    let message = d
        .post("/pkg/install", Some(&json!({"version": "9.9"})))
        .assert_error(422, "package_not_found");
    assert!(message.contains("pkg, 9.9"), "{message}");
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_error(422, "package_not_found");
    assert!(message.contains("pkg, 2"), "{message}");
    // Another package's version does not count.
    let message = d
        .post("/other/install", Some(&json!({"version": "1"})))
        .assert_error(422, "package_not_found");
    assert!(message.contains("other"), "{message}");
}

#[test]
fn stop_promote_and_remove_of_a_package_not_installed_are_404() {
    let s = Scratch::new();
    let d = Daemon::start(&s.root());
    for route in [
        "/ghost/experiment/stop",
        "/ghost/experiment/promote",
        "/ghost/remove",
    ] {
        let message = d.post(route, None).assert_error(404, "not_installed");
        assert_eq!(message, "package ghost is not installed", "{route}");
    }
    // A name that was never installed gets no entry (no task) in the status.
    assert_eq!(d.status()["remote_config_state"], json!([]));
}

#[test]
fn invalid_states_are_409() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = daemon_with(&s, &[&v1, &v2]);

    // Experiment on a package that is not installed.
    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_error(409, "invalid_state");
    assert!(message.contains("not installed"), "{message}");
    assert_eq!(d.versions("pkg"), None);
    assert_eq!(d.task("pkg"), None);

    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    // Promote without an experiment: the Datadog daemon's exact words.
    let message = d
        .post("/pkg/experiment/promote", None)
        .assert_error(409, "invalid_state");
    assert_eq!(message, "no experiment to promote");
    // Experiment with the stable version.
    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "1"})))
        .assert_error(409, "invalid_state");
    assert!(message.contains("already the stable version"), "{message}");
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    // Refusals do not rewrite history: the last task is still the install that succeeded,
    // in /status and after a restart.
    let task = d.task("pkg").unwrap();
    assert_eq!(
        (&task["operation"], &task["state"], &task["version"]),
        (&json!("install"), &json!("DONE"), &json!("1"))
    );
    // A 422 (not in the catalog) leaves it too.
    d.post("/pkg/experiment/start", Some(&json!({"version": "9"})))
        .assert_error(422, "package_not_found");
    assert_eq!(d.task("pkg").unwrap()["id"], task["id"]);
    let root = s.root();
    drop(d);
    let d = Daemon::start(&root);
    assert_eq!(d.task("pkg").unwrap()["id"], task["id"]);
    assert_eq!(d.task("pkg").unwrap()["state"], "DONE");
}

#[test]
fn remove_is_refused_while_a_live_process_locks_a_version() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let hook_marker = s.path().join("pre-remove.ran");
    let files = with_hook(
        standard_files("pkg", "1"),
        "pre-remove",
        &format!("#!/bin/sh\ntouch {}\n", hook_marker.display()),
    );
    let v1 = package(&fx, "pkg", "1", files);
    let d = daemon_with(&s, &[&v1]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let lock_dir = s.root().join("run/locks/pkg/1");
    fs_err::create_dir_all(&lock_dir).unwrap();
    let lock = lock_dir.join(std::process::id().to_string());
    fs_err::write(&lock, "").unwrap();

    let message = d.post("/pkg/remove", None).assert_error(409, "busy");
    assert!(
        message.contains("in use") && message.contains(&std::process::id().to_string()),
        "{message}"
    );
    assert!(
        !hook_marker.exists(),
        "the pre-remove hook ran although the removal was refused"
    );
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));

    // A lock named by a dead pid does not count.
    fs_err::remove_file(&lock).unwrap();
    fs_err::write(lock_dir.join("-1"), "").unwrap();
    d.post("/pkg/remove", None).assert_ok_empty();
    assert!(hook_marker.exists(), "pre-remove hook did not run");
    assert_eq!(d.versions("pkg"), None);
}

#[test]
fn a_tarball_whose_digest_does_not_match_is_502_integrity() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = Daemon::start(&s.root());
    let good = v1.tarball_entry(&fx);
    let mut wrong_digest = v2.tarball_entry(&fx);
    wrong_digest["sha256"] = json!("0".repeat(64));
    let mut wrong_size = v2.tarball_entry(&fx);
    wrong_size["version"] = json!("3");
    wrong_size["size"] = json!(v2.layer_size + 1);
    d.set_catalog(&[good, wrong_digest, wrong_size]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();

    let message = d
        .post("/pkg/install", Some(&json!({"version": "2"})))
        .assert_error(502, "integrity");
    assert!(message.contains("digest mismatch"), "{message}");
    let task = d.task("pkg").unwrap();
    assert_eq!(task["state"], "ERROR");
    assert_eq!(task["error"]["code"], "integrity");
    assert_eq!(task["error"]["message"], message.as_str());

    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "3"})))
        .assert_error(502, "integrity");
    assert!(message.contains("size mismatch"), "{message}");

    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert!(!version_exists(&s.root(), "pkg", "2"));
    assert!(!version_exists(&s.root(), "pkg", "3"));
    assert!(tmp_entries(&s.root()).is_empty(), "staging left behind");
}

#[test]
fn a_tampered_layout_is_502_integrity() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let v2 = standard(&fx, "pkg", "2");
    let d = daemon_with(&s, &[&v1, &v2]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    // Flip one byte of the layer: same size, other digest.
    let mut blob = fs_err::read(&v2.layer_blob).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0xff;
    fs_err::write(&v2.layer_blob, &blob).unwrap();
    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_error(502, "integrity");
    assert!(message.contains(&v2.layer_sha256), "{message}");
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert!(!version_exists(&s.root(), "pkg", "2"));
    assert!(tmp_entries(&s.root()).is_empty(), "staging left behind");
}

#[test]
fn a_missing_source_is_502_download_failed() {
    let s = Scratch::new();
    let d = Daemon::start(&s.root());
    d.set_catalog(&[
        json!({"package": "pkg", "version": "1", "url": format!("file://{}/nowhere", s.path().display())}),
        json!({"package": "pkg", "version": "2", "url": format!("file://{}/nowhere.tar.gz", s.path().display()), "sha256": "a".repeat(64)}),
    ]);
    for version in ["1", "2"] {
        let message = d
            .post("/pkg/install", Some(&json!({"version": version})))
            .assert_error(502, "download_failed");
        assert!(message.contains("nowhere"), "{message}");
    }
    assert_eq!(d.versions("pkg"), None);
}

#[test]
fn a_package_larger_than_the_free_space_is_507() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let v1 = standard(&fx, "pkg", "1");
    let d = Daemon::start(&s.root());
    // A tarball declaring a size no disk has: refused before a byte is read.
    let mut entry = v1.tarball_entry(&fx);
    entry["size"] = json!(1u64 << 60);
    d.set_catalog(&[entry]);
    let message = d
        .post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_error(507, "not_enough_disk_space");
    assert!(
        message.starts_with(&format!("not enough disk space at {}", s.root().display()))
            && message.contains("bytes available"),
        "{message}"
    );
    assert_eq!(
        d.task("pkg").unwrap()["error"]["code"],
        "not_enough_disk_space"
    );
    assert!(tmp_entries(&s.root()).is_empty());
}

/// A root on a 16 MiB tmpfs (the daemon keeps 10 MiB free on top of a package): a layout whose
/// size annotation is over the free space is refused up front; a small tarball that unpacks to
/// more than the disk holds fills it while unpacking and is refused the same way. Either way
/// nothing is left behind and stable is untouched.
#[test]
fn a_small_filesystem_gives_507_and_leaves_nothing_behind() {
    let s = Scratch::new();
    let fx = s.fixtures();
    let mnt = s.path().join("small");
    fs_err::create_dir_all(&mnt).unwrap();
    let _mount = TmpfsMount::new(&mnt, "16m");
    let root = mnt.join("root");
    let small = standard(&fx, "pkg", "1");
    let mut big_files = standard_files("pkg", "2");
    big_files.push(("blob".into(), vec![0; 8 << 20], 0o644));
    let big = package(&fx, "pkg", "2", big_files);
    let mut bomb_files = standard_files("pkg", "3");
    bomb_files.push(("zeros".into(), vec![0; 24 << 20], 0o644));
    let bomb = package(&fx, "pkg", "3", bomb_files);
    assert!(bomb.layer_size < 1 << 20, "zeros compress well");

    let d = Daemon::start(&root);
    d.set_catalog(&[
        small.layout_entry(),
        big.layout_entry(),
        bomb.tarball_entry(&fx),
    ]);
    d.post("/pkg/install", Some(&json!({"version": "1"})))
        .assert_ok_empty();
    let message = d
        .post("/pkg/experiment/start", Some(&json!({"version": "2"})))
        .assert_error(507, "not_enough_disk_space");
    assert!(message.contains("bytes required"), "{message}");
    let message = d
        .post("/pkg/install", Some(&json!({"version": "3"})))
        .assert_error(507, "not_enough_disk_space");
    assert!(
        message.contains("zeros"),
        "the message names the file: {message}"
    );
    assert_eq!(d.versions("pkg"), Some(("1".into(), String::new())));
    assert!(tmp_entries(&root).is_empty(), "staging left on a full disk");
    assert_invariants(&root, "pkg", &|v| standard_files("pkg", v));
    drop(d);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct TmpfsMount {
    path: std::path::PathBuf,
}

impl TmpfsMount {
    fn new(path: &std::path::Path, size: &str) -> Self {
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("mount(8) is needed to build a small filesystem");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Best effort: the mount point lives in a temporary directory.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn telemetry_and_debug_vars_answer_on_the_daemon_socket() {
    let s = Scratch::new();
    let v1 = standard(&s.fixtures(), "pkg", "1.0");
    let d = daemon_with(&s, &[&v1]);
    assert_eq!(d.get("/status").status, 200);
    d.post("/nope/remove", None)
        .assert_error(404, "not_installed");
    d.post("/pkg/install", Some(&json!({"version": "1.0"})))
        .assert_ok_empty();
    d.post("/pkg/experiment/promote", None)
        .assert_error(409, "invalid_state");
    let r = d.get("/telemetry");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains(r#"outpost_api_requests_total{method="GET",module="localapi",route="/status",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"{method="POST",module="localapi",route="/{package}/remove",status="404"}"#
        ),
        "{text}"
    );
    // The daemon's own metrics, in the same exposition.
    for expected in [
        r#"outpost_daemon_operations_total{operation="install",result="ok"} 1"#,
        r#"outpost_daemon_operations_total{operation="promote_experiment",result="invalid_state"} 1"#,
        r#"outpost_daemon_operation_duration_seconds_count{operation="install"} 1"#,
        "outpost_daemon_catalog_entries 1",
        "outpost_daemon_operations_waiting 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Garbage collection runs after the answer; poll its figures with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = d.get("/telemetry").text();
        if text.contains("outpost_daemon_packages_installed 1")
            && text.contains(r#"outpost_daemon_gc_runs_total{result="ok"}"#)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no GC figures in\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let vars = d.debug_vars();
    assert_eq!(vars["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(vars["daemon"]["root"], s.root().display().to_string());
    assert!(vars["daemon"]["gc"]["runs"].as_u64().is_some(), "{vars}");
    assert_eq!(vars["status"]["packages"]["pkg"]["Stable"], "1.0");
}
