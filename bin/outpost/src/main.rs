//! `outpost`: the fleet daemon and its command line (defined in `outpost-cli`).
//!
//! The subcommands that embed Python (`agent`, `check run|validate`, `version`) are handed to
//! the `outpost-agent` binary installed beside this one, with the arguments unchanged, so the
//! daemon, which runs as root, never maps libpython. Exit status: 0 success, 1 the operation
//! failed, 2 usage error, 3 the daemon (or the check agent) is not reachable.
mod commands;

use std::process::ExitCode;

use clap::Parser as _;
use outpost_cli::args::{Cli, Command};

fn main() -> ExitCode {
    // `--version` reports the embedded Python too, which only `outpost-agent` can tell.
    if matches!(std::env::args().nth(1).as_deref(), Some("--version" | "-V"))
        && std::env::args().len() == 2
    {
        return commands::version_with_python().into();
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_)) {
        outpost_cli::process::restore_sigpipe();
    }
    commands::run(cli).into()
}
