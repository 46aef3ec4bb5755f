//! The whole `outpost` command line (`spec/cli.md`), shared by both binaries: `outpost` parses
//! it and hands `agent` and `check` to `outpost-agent`, which parses the same definition, so
//! help, completions and flags stay one thing.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A host agent: a fleet daemon for versioned packages, and a runner of Python monitoring checks.
#[derive(Debug, Parser)]
#[command(
    name = "outpost",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Flags accepted before or after any subcommand.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// State directory [default: /opt/outpost for root, else $XDG_DATA_HOME/outpost or
    /// ~/.local/share/outpost]
    #[arg(long, global = true, env = "OUTPOST_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
    /// The daemon's API socket [default: <root>/run/outpost.sock]
    #[arg(long, global = true, env = "OUTPOST_SOCKET", value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Configuration file (YAML) [default: <root>/outpost.yaml if present]
    #[arg(long, global = true, env = "OUTPOST_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Less output (repeat for less)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub(crate) quiet: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the fleet daemon in the foreground
    Daemon(DaemonArgs),
    /// Show installed packages, their stable and experiment versions, and the last task
    Status,
    /// Set or show the catalog of installable packages
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Install a version of a package as stable
    Install {
        /// Package name
        package: String,
        /// Version (may be omitted when the catalog holds exactly one version of the package)
        #[arg(id = "pkg_version", value_name = "VERSION")]
        version: Option<String>,
        /// Arguments passed to the package's install hook
        #[arg(long = "install-arg", value_name = "ARG", allow_hyphen_values = true)]
        install_args: Vec<String>,
    },
    /// Start, stop or promote an experiment
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Remove a package entirely
    Remove {
        /// Package name
        package: String,
    },
    /// Build a package (an OCI image layout) from a directory, and optionally push it
    Pack(PackArgs),
    /// Run the check agent, or query it
    Agent(AgentArgs),
    /// Run or validate one check
    #[command(subcommand)]
    Check(CheckCommand),
    /// Print outpost's version and the embedded Python's version and prefix
    Version,
    /// Print shell completions
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },

    // Aliases for users of the Datadog installer.
    /// Same as `catalog set`
    #[command(name = "set-catalog", hide = true)]
    SetCatalog {
        /// A file, `-` for stdin, or the catalog JSON itself
        catalog: String,
    },
    /// Same as `experiment start`
    #[command(name = "start-experiment", hide = true)]
    StartExperiment {
        /// Package name
        package: String,
        /// Version
        #[arg(id = "pkg_version", value_name = "VERSION")]
        version: String,
    },
    /// Same as `experiment stop`
    #[command(name = "stop-experiment", hide = true)]
    StopExperiment {
        /// Package name
        package: String,
    },
    /// Same as `experiment promote`
    #[command(name = "promote-experiment", hide = true)]
    PromoteExperiment {
        /// Package name
        package: String,
    },
}

/// `outpost daemon`
#[derive(Debug, Clone, Args)]
pub(crate) struct DaemonArgs {
    /// Log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

/// `outpost catalog ...`
#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCommand {
    /// Replace the daemon's catalog with the one in FILE (`-` for stdin)
    Set {
        /// A file, `-` for stdin, or the catalog JSON itself
        file: String,
    },
    /// Print the catalog the daemon holds
    Show,
}

/// `outpost experiment ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ExperimentCommand {
    /// Install a version beside stable and point `experiment` at it; the daemon watches it
    /// (deadline, health command, auto-promote: docs/experiment-safety.md)
    Start {
        /// Package name
        package: String,
        /// Version
        #[arg(id = "pkg_version", value_name = "VERSION")]
        version: String,
        /// The watch's policy
        #[command(flatten)]
        policy: ExperimentPolicyArgs,
    },
    /// Follow the watch of a running experiment, one line per health run; exits 0 when it is
    /// promoted, 1 when it is rolled back
    Watch {
        /// Package name
        package: String,
    },
    /// Drop the experiment; stable is untouched
    Stop {
        /// Package name
        package: String,
    },
    /// Make the experiment the new stable
    Promote {
        /// Package name
        package: String,
    },
}

/// The safety policy flags of `outpost experiment start`. Durations take `ms`, `s`, `m`, `h`
/// or a bare number of seconds; what is not given comes from the catalog entry, the package
/// or the daemon's defaults.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ExperimentPolicyArgs {
    /// Health command, run with `/bin/sh -c` in the experiment's directory
    #[arg(long, value_name = "CMD")]
    pub(crate) health_cmd: Option<String>,
    /// Time between two health runs [daemon default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub(crate) health_interval: Option<String>,
    /// How long one health run may take [daemon default: the interval]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub(crate) health_timeout: Option<String>,
    /// Consecutive failed runs that roll the experiment back [daemon default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) health_failures: Option<u32>,
    /// Time before the first health run [daemon default: 0]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub(crate) health_grace: Option<String>,
    /// Roll back unless promoted within this time (1m..24h) [daemon default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub(crate) max_duration: Option<String>,
    /// Promote after this long without a failed health run
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub(crate) auto_promote_after: Option<String>,
}

/// Checks a duration flag locally, so a typo is reported before anything is sent.
fn duration_arg(s: &str) -> Result<String, String> {
    outpost_types::wire::WireDuration::parse(s).map(|_| s.to_string())
}

/// Layer compression for `outpost pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PackFormat {
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`)
    Zstd,
    /// gzip (`application/vnd.oci.image.layer.v1.tar+gzip`)
    Gzip,
}

/// `outpost pack`
#[derive(Debug, Clone, Args)]
#[command(disable_version_flag = true)]
#[command(group = clap::ArgGroup::new("dest").required(true).multiple(true).args(["out", "push"]))]
pub(crate) struct PackArgs {
    /// Directory whose contents become the package
    pub(crate) dir: PathBuf,
    /// Package name
    #[arg(long)]
    pub(crate) name: String,
    /// Package version
    #[arg(long = "version", id = "pkg_version", value_name = "VERSION")]
    pub(crate) version: String,
    /// Write the OCI image layout to this directory
    #[arg(long, value_name = "LAYOUT")]
    pub(crate) out: Option<PathBuf>,
    /// Push to a registry: oci://host[:port]/repo:tag
    #[arg(long, value_name = "REF")]
    pub(crate) push: Option<String>,
    /// Layer compression
    #[arg(long, value_enum, default_value_t = PackFormat::Zstd)]
    pub(crate) format: PackFormat,
    /// Platform of the image: os/arch, or `any` [default: the host's]
    #[arg(long)]
    pub(crate) platform: Option<String>,
}

/// Where checks and their configuration come from.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ChecksArgs {
    /// Check configurations [default: agent.conf_dir, else <root>/conf.d]
    #[arg(long, value_name = "DIR")]
    pub(crate) conf_dir: Option<PathBuf>,
    /// Custom checks [default: agent.checks_dir, else <root>/checks.d]
    #[arg(long, value_name = "DIR")]
    pub(crate) checks_dir: Option<PathBuf>,
    /// Python virtual environment with datadog-checks-base [default: agent.python_venv, else
    /// <root>/venv]
    #[arg(long, value_name = "DIR")]
    pub(crate) python_venv: Option<PathBuf>,
}

/// `outpost agent`
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AgentArgs {
    /// Query a running agent instead of starting one
    #[command(subcommand)]
    pub(crate) command: Option<AgentCommand>,
    /// Where checks come from
    #[command(flatten)]
    pub(crate) checks: ChecksArgs,
    /// Also write every submission as a JSON line to FILE (rotated at --output-max-bytes)
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Size at which --output is rotated
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub(crate) output_max_bytes: String,
    /// Log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// `outpost agent <command>`
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum AgentCommand {
    /// Print the running agent's check table
    Status,
    /// Ask the running agent to reload check configurations
    Reload,
}

/// `outpost check ...`
#[derive(Debug, Subcommand)]
pub(crate) enum CheckCommand {
    /// Run each instance of a check once (or N times) and print what it submitted
    Run {
        /// Check name (its conf.d entry)
        name: String,
        /// Where the check and its configuration come from
        #[command(flatten)]
        checks: ChecksArgs,
        /// Run every instance N times
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        times: u32,
    },
    /// Tell whether a check is ready for the embedded interpreter
    Validate {
        /// A check name or a path to its .py file
        target: String,
        /// Where the check comes from
        #[command(flatten)]
        checks: ChecksArgs,
    },
}

impl Command {
    /// True for the subcommands that `outpost-agent` serves (they embed Python).
    pub(crate) fn needs_python(&self) -> bool {
        matches!(self, Command::Agent(a) if a.command.is_none())
            || matches!(self, Command::Check(_) | Command::Version)
    }
}

/// The default state directory: `/opt/outpost` for root, else `$XDG_DATA_HOME/outpost` or
/// `~/.local/share/outpost`.
pub(crate) fn default_root() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/opt/outpost");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("outpost");
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/".into());
    Path::new(&home).join(".local/share/outpost")
}

impl GlobalArgs {
    /// The state directory in effect.
    pub(crate) fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(default_root)
    }

    /// The daemon socket in effect.
    pub(crate) fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.root().join("run/outpost.sock"))
    }

    /// Reads the configuration file: `--config` (must exist), else `<root>/outpost.yaml` if
    /// present, else the defaults.
    pub(crate) fn load_config(&self) -> anyhow::Result<outpost_types::config::Config> {
        use anyhow::Context as _;
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (self.root().join("outpost.yaml"), false),
        };
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Default::default());
            }
            Err(e) => return Err(e).context("reading the configuration file"),
        };
        outpost_types::config::Config::from_yaml(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli = Cli::try_parse_from(["outpost", "status", "--json", "--root", "/x"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.root(), PathBuf::from("/x"));
        assert_eq!(cli.global.socket(), PathBuf::from("/x/run/outpost.sock"));
    }

    #[test]
    fn pack_needs_a_destination() {
        assert!(
            Cli::try_parse_from(["outpost", "pack", "d", "--name", "n", "--version", "1"]).is_err()
        );
        assert!(
            Cli::try_parse_from([
                "outpost",
                "pack",
                "d",
                "--name",
                "n",
                "--version",
                "1",
                "--out",
                "o"
            ])
            .is_ok()
        );
    }

    #[test]
    fn install_args_may_look_like_flags() {
        let cli = Cli::try_parse_from([
            "outpost",
            "install",
            "p",
            "1",
            "--install-arg",
            "--apm",
            "--install-arg",
            "-x",
        ])
        .unwrap();
        let Command::Install { install_args, .. } = cli.command else {
            panic!("not install")
        };
        assert_eq!(install_args, ["--apm", "-x"]);
    }

    #[test]
    fn aliases() {
        let cli = Cli::try_parse_from(["outpost", "start-experiment", "p", "1"]).unwrap();
        assert!(matches!(cli.command, Command::StartExperiment { .. }));
    }
}
