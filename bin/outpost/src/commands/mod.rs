//! The commands `outpost` serves itself: the daemon, its client verbs, `pack`, the clients of
//! the check agent's socket (`agent status|reload`) and `completions`. The commands that
//! embed Python (`agent`, `check`, `version`) are handed over to `outpost-agent`.

mod agent_client;
mod brief;
mod catalog;
mod client;
mod config;
mod daemon;
mod experiment;
mod fleet;
mod fleet_report;
mod handover;
mod pack;

use outpost_cli::ExitStatus;
use outpost_cli::args::{AgentArgs, CatalogCommand, Cli, Command, ExperimentCommand};

use self::client::Verb;
pub(crate) use self::handover::version_with_python;

/// Runs the command `cli` names.
pub(crate) fn run(cli: Cli) -> ExitStatus {
    let global = &cli.global;
    let verb = match cli.command {
        Command::Daemon(args) => return daemon::run(global, &args),
        Command::Agent(AgentArgs {
            command: Some(command),
            ..
        }) => {
            outpost_cli::logging::init_for_command(global);
            return agent_client::run(global, &command);
        }
        Command::Agent(_) | Command::Check(_) | Command::Version => {
            return handover::exec_agent_binary(global.json);
        }
        Command::Pack(args) => {
            outpost_cli::logging::init_for_command(global);
            return pack::run(global, &args);
        }
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut outpost_cli::args::completion_command(),
                "outpost",
                &mut std::io::stdout(),
            );
            return ExitStatus::Success;
        }
        Command::Status(args) if args.brief => {
            outpost_cli::logging::init_for_command(global);
            return brief::run(global);
        }
        Command::Fleet(command) => {
            outpost_cli::logging::init_for_command(global);
            return fleet::run(global, command);
        }
        Command::Status(args) => Verb::Status(args),
        Command::Catalog(CatalogCommand::Show) => Verb::CatalogShow,
        Command::Catalog(CatalogCommand::Set(args)) => Verb::CatalogSet {
            source: args.file,
            allow_empty: args.allow_empty,
        },
        Command::SetCatalog(args) => Verb::CatalogSet {
            source: args.catalog,
            allow_empty: args.allow_empty,
        },
        Command::Install(args) => Verb::Install(args),
        Command::Experiment(ExperimentCommand::Start(args)) | Command::StartExperiment(args) => {
            Verb::StartExperiment(args)
        }
        Command::Experiment(ExperimentCommand::Watch(args)) => {
            outpost_cli::logging::init_for_command(global);
            return experiment::watch(global, &args.package);
        }
        Command::Experiment(ExperimentCommand::Stop(args)) | Command::StopExperiment(args) => {
            Verb::StopExperiment(args)
        }
        Command::Experiment(ExperimentCommand::Promote(args))
        | Command::PromoteExperiment(args) => Verb::PromoteExperiment(args),
        Command::Remove(args) => Verb::Remove(args),
        Command::ConfigCatalog(c) => return run_config(global, c.into()),
        Command::ConfigExperiment(c) => return run_config(global, c.into()),
        Command::Config(c) => return run_config(global, c.into()),
    };
    outpost_cli::logging::init_for_command(global);
    client::run(global, verb)
}

fn run_config(global: &outpost_cli::args::GlobalArgs, verb: config::ConfigVerb) -> ExitStatus {
    outpost_cli::logging::init_for_command(global);
    config::run(global, verb)
}
