//! `outpost`: the fleet daemon and its command line.
//!
//! The subcommands that embed Python (`agent`, `check`, `version`) are handed to the
//! `outpost-agent` binary installed beside this one, with the arguments unchanged, so the
//! daemon, which runs as root, never maps libpython.
mod cli;
mod client_cmd;
mod experiment_cmd;
mod logging;
mod pack_cmd;
mod process;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use crate::cli::{CatalogCommand, Cli, Command, ExperimentCommand};
use crate::client_cmd::Verb;

/// Name of the sibling binary that serves the Python subcommands.
const AGENT_BINARY: &str = "outpost-agent";

fn main() -> ExitCode {
    // `--version` reports the embedded Python too, which only `outpost-agent` can tell.
    if matches!(std::env::args().nth(1).as_deref(), Some("--version" | "-V"))
        && std::env::args().len() == 2
    {
        return version_with_python();
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_)) {
        process::restore_sigpipe();
    }
    if cli.command.needs_python() {
        return exec_agent_binary();
    }
    let global = &cli.global;
    let verb = match cli.command {
        Command::Daemon(args) => return daemon(global, &args),
        Command::Pack(args) => {
            logging::init(
                cli::LogFormat::Text,
                global.verbose,
                global.quiet,
                tracing::Level::WARN,
            );
            return pack_cmd::run(global, &args);
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "outpost",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Agent(_) | Command::Check(_) | Command::Version => {
            // `needs_python` sent these to outpost-agent above, except `agent status|reload`.
            return exec_agent_binary();
        }
        Command::Status => Verb::Status,
        Command::Catalog(CatalogCommand::Show) => Verb::CatalogShow,
        Command::Catalog(CatalogCommand::Set { file }) | Command::SetCatalog { catalog: file } => {
            Verb::CatalogSet { source: file }
        }
        Command::Install {
            package,
            version,
            install_args,
        } => Verb::Install {
            package,
            version,
            install_args,
        },
        Command::Experiment(ExperimentCommand::Start {
            package,
            version,
            policy,
        }) => Verb::StartExperiment {
            package,
            version,
            policy,
        },
        Command::StartExperiment { package, version } => Verb::StartExperiment {
            package,
            version,
            policy: cli::ExperimentPolicyArgs::default(),
        },
        Command::Experiment(ExperimentCommand::Watch { package }) => {
            logging::init(
                cli::LogFormat::Text,
                global.verbose,
                global.quiet,
                tracing::Level::WARN,
            );
            return experiment_cmd::watch(global, &package);
        }
        Command::Experiment(ExperimentCommand::Stop { package })
        | Command::StopExperiment { package } => Verb::StopExperiment { package },
        Command::Experiment(ExperimentCommand::Promote { package })
        | Command::PromoteExperiment { package } => Verb::PromoteExperiment { package },
        Command::Remove { package } => Verb::Remove { package },
    };
    logging::init(
        cli::LogFormat::Text,
        global.verbose,
        global.quiet,
        tracing::Level::WARN,
    );
    client_cmd::run(global, verb)
}

/// `outpost daemon`: runs in the foreground until SIGTERM or SIGINT.
fn daemon(global: &cli::GlobalArgs, args: &cli::DaemonArgs) -> ExitCode {
    logging::init(
        args.log_format,
        global.verbose,
        global.quiet,
        tracing::Level::INFO,
    );
    let config = match global.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(client_cmd::EXIT_FAILED);
        }
    };
    let options = outpost_daemon::RunOptions {
        root: global.root(),
        socket: global.socket(),
        config,
    };
    // Before any thread starts: fewer malloc arenas, large buffers returned whole.
    outpost_daemon::allocator::tune();
    // Two workers: status keeps answering while an operation runs, and the daemon stays small.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("outpost-daemon")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the daemon's runtime: {e}");
            return ExitCode::from(client_cmd::EXIT_FAILED);
        }
    };
    match runtime.block_on(outpost_daemon::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "daemon failed");
            eprintln!("error: {}", outpost_types::error_chain(&e));
            ExitCode::from(client_cmd::EXIT_FAILED)
        }
    }
}

/// `outpost --version`: the same as `outpost version`; when `outpost-agent` is not installed,
/// says so instead of failing.
fn version_with_python() -> ExitCode {
    match sibling(AGENT_BINARY) {
        Ok(path) if path.is_file() => {
            let err = std::process::Command::new(&path)
                .arg0("outpost")
                .arg("version")
                .exec();
            eprintln!("error: cannot run {}: {err}", path.display());
            ExitCode::from(1)
        }
        _ => {
            println!(
                "outpost {}
python: not available ({AGENT_BINARY} is not installed beside outpost)",
                outpost_types::VERSION
            );
            ExitCode::SUCCESS
        }
    }
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
