//! The systemd units in `packaging/` (the daemon's and the agent's) are accepted by
//! `systemd-analyze verify` (the test command installs systemd), with `ExecStart` pointed at
//! the binary under test.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::path::Path;
use std::process::Command;

#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/outpost.service");
    let text = fs_err::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/bin/outpost daemon"),
        "unit must start the daemon"
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/opt/outpost",
    ] {
        assert!(text.contains(hardening), "unit lost {hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("outpost.service");
    fs_err::write(
        &local,
        text.replace("/usr/bin/outpost", env!("CARGO_BIN_EXE_outpost")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze must be installed (scripts/test installs systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown directive must be caught, so the check above is not vacuous.
    fs_err::write(
        &local,
        format!(
            "{}\n[Service]\nNoSuchDirective=1\n",
            fs_err::read_to_string(&local).unwrap()
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NoSuchDirective"),
        "systemd-analyze did not report an unknown directive"
    );
}

/// Runs `systemd-analyze verify` on `text` saved as `name`, and returns its verdict and output.
fn systemd_verify(name: &str, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join(name);
    fs_err::write(&local, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze must be installed (scripts/test installs systemd)");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

#[test]
fn agent_systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/outpost-agent.service");
    let text = fs_err::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/bin/outpost-agent agent"),
        "unit must start the agent"
    );
    for directive in [
        "Restart=always",
        "User=outpost-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "StateDirectory=outpost-agent",
        "Environment=OUTPOST_ROOT=/var/lib/outpost-agent",
        "MemoryMax=",
    ] {
        assert!(text.contains(directive), "unit lost {directive:?}");
    }
    // Checks need what these would take away (see the unit's header).
    let directives: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for absent in [
        "MemoryDenyWriteExecute=",
        "PrivateDevices=",
        "PrivateNetwork=",
    ] {
        assert!(
            !directives.iter().any(|l| l.starts_with(absent)),
            "{absent} would break checks"
        );
    }
    // The agent must never share the daemon's root.
    assert!(
        !directives.iter().any(|l| l.contains("/opt/outpost")),
        "the agent has its own state directory"
    );
    let local = text.replace(
        "/usr/bin/outpost-agent",
        env!("CARGO_BIN_EXE_outpost-agent"),
    );
    let (ok, output) = systemd_verify("outpost-agent.service", &local);
    assert!(ok, "systemd-analyze verify failed: {output}");
    let (_, output) = systemd_verify(
        "outpost-agent.service",
        &format!("{local}\n[Service]\nRestart=sometimes\n"),
    );
    assert!(
        output.contains("sometimes"),
        "systemd-analyze did not report a bad Restart= value: {output}"
    );
}

/// The dynamic section of a binary, as `readelf -d` prints it.
fn dynamic_section(binary: &str) -> String {
    let out = Command::new("readelf")
        .args(["-d", binary])
        .output()
        .expect("readelf (binutils) must be installed");
    assert!(out.status.success(), "readelf -d {binary} failed");
    String::from_utf8(out.stdout).expect("readelf prints text")
}

#[test]
fn the_daemon_binary_links_neither_python_nor_openssl() {
    let outpost = dynamic_section(env!("CARGO_BIN_EXE_outpost"));
    for lib in ["libpython", "libssl", "libcrypto"] {
        assert!(
            !outpost.contains(lib),
            "outpost must not link {lib}:\n{outpost}"
        );
    }
    let agent = dynamic_section(env!("CARGO_BIN_EXE_outpost-agent"));
    assert!(
        agent.contains("libpython3"),
        "outpost-agent embeds CPython:\n{agent}"
    );
    assert!(
        agent.contains("RUNPATH"),
        "outpost-agent must find the libpython it was built for:\n{agent}"
    );
}

#[test]
fn relative_relocations_are_packed() {
    if std::env::var_os("OUTPOST_NO_RELR").is_some() {
        return;
    }
    for binary in [
        env!("CARGO_BIN_EXE_outpost"),
        env!("CARGO_BIN_EXE_outpost-agent"),
    ] {
        let dynamic = dynamic_section(binary);
        assert!(
            dynamic.contains("(RELR)"),
            "{binary} has no packed relocations:\n{dynamic}"
        );
    }
}
