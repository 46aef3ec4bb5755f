//! `outpost-agent`: the check agent and `outpost check`, which embed CPython.
//!
//! `outpost agent|check|version` hand over to this binary with their arguments unchanged; it
//! parses the same command-line definition (`outpost-cli`). Exit status: 0 success, 1 the
//! operation failed, 2 usage error.
mod pyagent;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use outpost_cli::ExitStatus;
use outpost_cli::args::{AgentArgs, CheckCommand, Cli, Command, GlobalArgs};

fn main() -> ExitCode {
    // Parsed through `ArgMatches` to tell an explicit `--times` from its default.
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let global = &cli.global;
    let status = match &cli.command {
        // The long-running agent logs at info level, in the format it was asked for.
        Command::Agent(args @ AgentArgs { command: None, .. }) => pyagent::agent::run(global, args),
        Command::Check(CheckCommand::Run(args)) => {
            one_shot(global);
            let times_given = matches
                .subcommand_matches("check")
                .and_then(|m| m.subcommand_matches("run"))
                .and_then(|m| m.value_source("times"))
                == Some(clap::parser::ValueSource::CommandLine);
            pyagent::check_run::run(global, args, times_given)
        }
        Command::Check(CheckCommand::Validate(args)) => {
            one_shot(global);
            pyagent::validate::run(global, args)
        }
        Command::Version => {
            one_shot(global);
            pyagent::version::run(global)
        }
        _ => {
            eprintln!(
                "error: outpost-agent serves `agent` (not `agent status|reload`), `check` and \
                 `version`; run this command with `outpost`"
            );
            ExitStatus::Usage
        }
    };
    status.into()
}

/// Set-up of a one-shot command: default SIGPIPE, a warn-level stderr log.
fn one_shot(global: &GlobalArgs) {
    outpost_cli::process::restore_sigpipe();
    outpost_cli::logging::init_for_command(global);
}
