//! `outpost`: the fleet daemon and its command line.
//!
//! The subcommands that embed Python (`agent`, `check`, `version`) are handed to the
//! `outpost-agent` binary installed beside this one, with the arguments unchanged, so the
//! daemon, which runs as root, never maps libpython.
#[allow(dead_code)] // until every command is wired
mod cli;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;

/// Name of the sibling binary that serves the Python subcommands.
const AGENT_BINARY: &str = "outpost-agent";

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if cli.command.needs_python() {
        return exec_agent_binary();
    }
    ExitCode::SUCCESS
}

/// Replaces this process with `outpost-agent`, passing the arguments through. Returns only on
/// failure, after printing why.
fn exec_agent_binary() -> ExitCode {
    let path = match sibling(AGENT_BINARY) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot locate {AGENT_BINARY}: {e}");
            return ExitCode::from(1);
        }
    };
    let err = std::process::Command::new(&path)
        .arg0("outpost")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!(
        "error: cannot run {} (the Python parts of outpost are installed there): {err}",
        path.display()
    );
    ExitCode::from(1)
}

/// The path of a binary installed in the same directory as this one.
fn sibling(name: &str) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| {
        std::io::Error::other(format!("{} has no parent directory", exe.display()))
    })?;
    Ok(dir.join(name))
}
