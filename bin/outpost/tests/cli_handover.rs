//! Which binary serves which command: `outpost` serves the daemon, its clients and the clients
//! of the check agent's socket (`agent status|reload`) itself, and hands the commands that
//! embed Python (`agent`, `check run|validate`, `version`) to the `outpost-agent` installed
//! beside it. Run against a copy of `outpost` installed alone, so every hand-over fails
//! visibly and every command served in-process still works.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OUTPOST: &str = env!("CARGO_BIN_EXE_outpost");
const AGENT: &str = env!("CARGO_BIN_EXE_outpost-agent");

/// A directory holding a copy of `outpost` and no `outpost-agent`, and a state root.
struct Alone {
    dir: tempfile::TempDir,
}

impl Alone {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs_err::create_dir(dir.path().join("bin")).expect("bin dir");
        fs_err::copy(OUTPOST, dir.path().join("bin/outpost")).expect("copy outpost");
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&self.bin().join("outpost"), args, &self.root())
    }
}

fn run(binary: &Path, args: &[&str], root: &Path) -> Output {
    Command::new(binary)
        .args(args)
        .arg("--root")
        .arg(root)
        .env_remove("OUTPOST_ROOT")
        .env_remove("OUTPOST_SOCKET")
        .env_remove("OUTPOST_CONFIG")
        .env_remove("OUTPOST_LOG")
        .output()
        .expect("run the binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn agent_status_and_reload_are_served_by_outpost_itself() {
    let alone = Alone::new();
    let socket = alone.root().join("run/agent.sock");
    for verb in ["status", "reload"] {
        let out = alone.run(&["agent", verb]);
        assert_eq!(out.status.code(), Some(3), "agent {verb}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "error: the check agent is not reachable at {}: No such file or directory \
                 (os error 2)\nhint: start it with `outpost agent --root {}`\n",
                socket.display(),
                alone.root().display()
            ),
            "agent {verb}"
        );
        assert!(out.stdout.is_empty(), "agent {verb}");
    }
}

#[test]
fn the_python_commands_are_handed_to_outpost_agent() {
    let alone = Alone::new();
    let missing = alone.bin().join("outpost-agent");
    for args in [
        &["agent"][..],
        &["check", "run", "disk"][..],
        &["check", "validate", "disk"][..],
        &["version"][..],
    ] {
        let out = alone.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "error: cannot run {} (the Python parts of outpost are installed there): No \
                 such file or directory (os error 2)\n",
                missing.display()
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // With --json, the failure is one error document on stdout too.
    let out = alone.run(&["check", "validate", "disk", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["error"]["code"], "local");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("cannot run {}", missing.display()))),
        "{doc}"
    );
}

#[test]
fn version_flag_says_python_is_missing_without_outpost_agent() {
    let alone = Alone::new();
    let out = Command::new(alone.bin().join("outpost"))
        .arg("--version")
        .output()
        .expect("run outpost");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "outpost {}\npython: not available (outpost-agent is not installed beside outpost)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn outpost_agent_refuses_what_outpost_serves() {
    let root = tempfile::tempdir().expect("temp dir");
    for args in [
        &["agent", "status"][..],
        &["agent", "reload"][..],
        &["status"][..],
    ] {
        let out = run(Path::new(AGENT), args, root.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "error: outpost-agent serves `agent` (not `agent status|reload`), `check` and \
             `version`; run this command with `outpost`\n",
            "{args:?}"
        );
    }
}
