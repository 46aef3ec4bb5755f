//! `outpost-agent`: the check agent and `outpost check`, which embed CPython.
//!
//! `outpost agent|check|version` hand over to this binary with their arguments unchanged; it
//! parses the same command-line definition. Exit status: 0 success, 1 the operation failed,
//! 2 usage error.
#[allow(dead_code)] // the definition is shared with `outpost`, which uses the rest
mod cli;
#[allow(dead_code)] // shared with `outpost`
mod logging;
mod process;
mod pyagent;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::cli::{AgentArgs, AgentCommand, CheckCommand, Cli, Command};

fn main() -> ExitCode {
    // Parsed through `ArgMatches` to tell an explicit `--times` from its default.
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let global = &cli.global;
    if let Command::Agent(args) = &cli.command
        && args.command.is_none()
    {
        // The long-running agent logs at info level, in the format it was asked for.
        return pyagent::agent::run(global, args);
    }
    process::restore_sigpipe();
    pyagent::init_logging(global);
    match &cli.command {
        Command::Check(CheckCommand::Run {
            name,
            checks,
            times,
        }) => {
            let times_given = matches
                .subcommand_matches("check")
                .and_then(|m| m.subcommand_matches("run"))
                .and_then(|m| m.value_source("times"))
                == Some(clap::parser::ValueSource::CommandLine);
            pyagent::run::run(global, name, checks, *times, times_given)
        }
        Command::Check(CheckCommand::Validate { target, checks }) => {
            pyagent::validate::run(global, target, checks)
        }
        Command::Version => pyagent::version::run(global),
        Command::Agent(AgentArgs {
            command: Some(AgentCommand::Status),
            ..
        }) => pyagent::agent_status::status(global),
        Command::Agent(AgentArgs {
            command: Some(AgentCommand::Reload),
            ..
        }) => pyagent::agent_status::reload(global),
        Command::Agent(args) => pyagent::agent::run(global, args),
        _ => {
            eprintln!(
                "error: outpost-agent serves `agent`, `check` and `version`; run this command \
                 with `outpost`"
            );
            ExitCode::from(2)
        }
    }
}
