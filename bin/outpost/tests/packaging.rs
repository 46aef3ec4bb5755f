//! The systemd unit in `packaging/` is accepted by `systemd-analyze verify` (the test command
//! installs systemd), with `ExecStart` pointed at the binary under test.

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
