//! Handing a command over to `outpost-agent`, the binary installed beside `outpost` that
//! embeds CPython, so that `outpost` (the daemon, which runs as root) never maps libpython.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

use outpost_cli::ExitStatus;

/// Name of the sibling binary that serves the Python subcommands.
const AGENT_BINARY: &str = "outpost-agent";

/// `outpost --version`: the same as `outpost version`; when `outpost-agent` is not installed,
/// says so instead of failing.
pub(crate) fn version_with_python() -> ExitStatus {
    match sibling(AGENT_BINARY) {
        Ok(path) if path.is_file() => {
            let err = std::process::Command::new(&path)
                .arg0("outpost")
                .arg("version")
                .exec();
            eprintln!("error: cannot run {}: {err}", path.display());
            ExitStatus::Failure
        }
        _ => {
            println!(
                "outpost {}
python: not available ({AGENT_BINARY} is not installed beside outpost)",
                outpost_types::VERSION
            );
            ExitStatus::Success
        }
    }
}

/// Replaces this process with `outpost-agent`, passing the arguments through unchanged.
/// Returns only on failure, after printing why (on stderr, and with `json` as the error
/// document on stdout).
pub(crate) fn exec_agent_binary(json: bool) -> ExitStatus {
    let fail = |message: String| {
        eprintln!("error: {message}");
        if json {
            outpost_cli::output::print_error_json("local", &message);
        }
        ExitStatus::Failure
    };
    let path = match sibling(AGENT_BINARY) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot locate {AGENT_BINARY}: {e}")),
    };
    let err = std::process::Command::new(&path)
        .arg0("outpost")
        .args(std::env::args_os().skip(1))
        .exec();
    fail(format!(
        "cannot run {} (the Python parts of outpost are installed there): {err}",
        path.display()
    ))
}

/// The path of a binary installed in the same directory as this one.
fn sibling(name: &str) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| {
        std::io::Error::other(format!("{} has no parent directory", exe.display()))
    })?;
    Ok(dir.join(name))
}
