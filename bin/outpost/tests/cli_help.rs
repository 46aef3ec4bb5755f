//! Help and completions of the real binary: global options under their own heading, `-V` on
//! the top command only, `--agent-socket` for the agent's clients, no hidden aliases offered.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("OUTPOST_ROOT")
        .env_remove("OUTPOST_SOCKET")
        .output()
        .expect("outpost runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn global_options_are_a_section_of_their_own() {
    let help = stdout(&run(&["install", "--help"]));
    let (own, global) = help
        .split_once("Global options:\n")
        .expect("a global section");
    assert!(own.contains("--install-arg"), "{help}");
    assert!(
        !own.contains("--socket") && !own.contains("--json"),
        "{help}"
    );
    assert!(
        global.contains("--socket") && global.contains("--json"),
        "{help}"
    );
    assert!(!help.contains("--version"), "{help}");
    let out = run(&["install", "-V"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&run(&["--help"])).contains("-V, --version"));
}

#[test]
fn the_agent_clients_take_their_own_socket() {
    let help = stdout(&run(&["agent", "status", "--help"]));
    assert!(help.contains("--agent-socket <PATH>"), "{help}");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let out = run(&[
        "agent",
        "reload",
        "--agent-socket",
        socket.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: the check agent is not reachable at {}",
            socket.display()
        )),
        "{err}"
    );
}

#[test]
fn completions_do_not_offer_hidden_aliases() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&run(&["completions", shell]));
        assert!(script.contains("promote"), "{shell}");
        for hidden in [
            "set-catalog",
            "start-experiment",
            "stop-experiment",
            "promote-experiment",
        ] {
            assert!(!script.contains(hidden), "{shell} offers {hidden}");
        }
    }
}
