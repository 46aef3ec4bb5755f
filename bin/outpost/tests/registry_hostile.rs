//! Hostile registries end to end, through the real daemon: a layer or config body that never
//! ends, trickles, or runs past its size fails the install with `download_failed` (under a
//! short `registry.stall_timeout`), a corrupted config or a layer that is not its config's
//! `diff_id` with `integrity`; in every case nothing is installed and the staging directory
//! is removed (`tmp/` under the root is empty again).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod support;

use std::path::PathBuf;

use outpost_fetch::pack::{PackFormat, PackOptions, PackedImage, pack};
use outpost_fetch::{Cancel, RegistrySettings};
use outpost_testkit::{Fault, FaultProxy, Registry, Rule, noise};
use outpost_types::source::OciReference;
use outpost_types::{PackageName, Version};
use serde_json::json;
use support::*;

/// A registry holding `agent` `1.0.0` (with 256 KiB of random data), packed for the host.
struct Pushed {
    scratch: Scratch,
    reg: Registry,
    packed: PackedImage,
}

impl Pushed {
    fn new() -> Self {
        let scratch = Scratch::new();
        let tree = scratch.fixtures().join("tree");
        let mut files = standard_files("agent", "1.0.0");
        files.push(("share/blob.bin".into(), noise(256 << 10, 9), 0o644));
        for (path, data, mode) in &files {
            let p = tree.join(path);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            fs_err::write(&p, data).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let layout = scratch.fixtures().join("layout");
        let packed = pack(
            &tree,
            &PackageName::new("agent").unwrap(),
            &Version::new("1.0.0").unwrap(),
            &PackOptions::host(PackFormat::Zstd),
            &layout,
        )
        .unwrap();
        let reg = Registry::start();
        let settings = RegistrySettings {
            insecure_hosts: vec![reg.host()],
            ..RegistrySettings::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(outpost_fetch::push_layout(
                &settings,
                &layout,
                &OciReference::parse(&format!("{}/pkgs/agent:1.0.0", reg.host())).unwrap(),
                &Cancel::new(),
            ))
            .unwrap();
        Self {
            scratch,
            reg,
            packed,
        }
    }

    /// Installs `agent` `1.0.0` through a proxy that applies `fault` to the blob whose path
    /// holds `digest`, with a 300 ms stall timeout; asserts the error code and that nothing
    /// is left, and returns the error message.
    fn install_through(&self, name: &str, digest: &str, fault: Fault, code: &str) -> String {
        let proxy = FaultProxy::start(
            self.reg.addr(),
            vec![Rule::new(format!("/blobs/{digest}"), fault, 100)],
        );
        let host = proxy.host();
        let config: PathBuf = self.scratch.path().join(format!("{name}.yaml"));
        fs_err::write(
            &config,
            json!({"registry": {"insecure_hosts": [host], "stall_timeout": "300ms"}}).to_string(),
        )
        .unwrap();
        let root = self.scratch.path().join(format!("root-{name}"));
        let d = Daemon::start_with(
            &root,
            DaemonOptions {
                config: Some(config),
                ..DaemonOptions::default()
            },
        );
        d.set_catalog(&[json!({
            "package": "agent",
            "version": "1.0.0",
            "url": format!("oci://{host}/pkgs/agent:1.0.0"),
        })]);
        let r = d.post("/agent/install", Some(&json!({"version": "1.0.0"})));
        let message = r.assert_error(502, code);
        let task = d.task("agent").unwrap();
        assert_eq!(task["state"], "ERROR", "{name}");
        assert_eq!(task["error"]["code"], code, "{name}");
        assert_eq!(d.versions("agent"), None, "{name}: nothing installed");
        wait_tmp_clean(&d.root);
        assert!(proxy.injected() >= 1, "{name}");
        message
    }
}

#[test]
fn endless_oversized_and_trickling_blobs_fail_the_install_and_leave_nothing() {
    let p = Pushed::new();
    let layer = p.packed.layer.digest.to_string();
    let config = p.packed.config.digest.to_string();
    let cases: [(&str, &str, Fault, &str); 4] = [
        (
            "endless-layer",
            &layer,
            Fault::PadBody { extra: None },
            "size exceeded",
        ),
        (
            "oversized-config",
            &config,
            Fault::PadBody {
                extra: Some(1 << 20),
            },
            "size exceeded",
        ),
        (
            "trickling-layer",
            &layer,
            Fault::Trickle { every_ms: 20 },
            "stalled",
        ),
        (
            "trickling-config",
            &config,
            Fault::Trickle { every_ms: 20 },
            "stalled",
        ),
    ];
    for (name, digest, fault, want) in cases {
        let message = p.install_through(name, digest, fault, "download_failed");
        assert!(message.contains(want), "{name}: {message:?}");
        assert!(message.contains(digest), "{name}: {message:?}");
    }
}

#[test]
fn a_corrupted_config_fails_the_install_with_integrity() {
    let p = Pushed::new();
    let config = p.packed.config.digest.to_string();
    let message = p.install_through(
        "corrupted-config",
        &config,
        Fault::FlipBodyByte { at: 3 },
        "integrity",
    );
    assert!(message.contains("digest mismatch"), "{message:?}");
    assert!(message.contains(&config), "{message:?}");
}
