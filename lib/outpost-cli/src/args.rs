//! The whole `outpost` command line (`spec/cli.md`), shared by both binaries: `outpost` parses
//! it and hands the commands that embed Python (`agent` itself, `check`, `version`) to
//! `outpost-agent`, which parses the same definition, so help, completions and flags stay one
//! thing.
//!
//! Each subcommand with arguments has a struct of its own (`InstallArgs`,
//! `ExperimentStartArgs`, ...), shared with its Datadog-style alias, so a new flag is one field.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use outpost_types::config::Config;

use crate::Error;

/// A host agent: a fleet daemon for versioned packages, and a runner of Python monitoring checks.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, max_term_width = 100)]
pub struct Cli {
    /// Flags accepted before or after any subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand, listed under their own heading in every
/// help page.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// State directory [default: /opt/outpost for root, else $XDG_DATA_HOME/outpost or
    /// ~/.local/share/outpost]
    #[arg(long, global = true, env = "OUTPOST_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The daemon's API socket [default: <root>/run/outpost.sock]
    #[arg(long, global = true, env = "OUTPOST_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Configuration file (YAML) [default: <root>/outpost.yaml if present]
    #[arg(long, global = true, env = "OUTPOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output (repeat for less)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the fleet daemon in the foreground
    Daemon(DaemonArgs),
    /// Show installed packages, their stable and experiment versions, and the last task
    Status(StatusArgs),
    /// Set or show the catalog of installable packages
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Install a version of a package as stable
    Install(InstallArgs),
    /// Start, stop or promote an experiment
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Remove a package entirely
    Remove(PackageArgs),
    /// Set or show the config catalog (config deployments, by id)
    #[command(name = "config-catalog", subcommand)]
    ConfigCatalog(ConfigCatalogCommand),
    /// Start, stop or promote a config experiment
    #[command(name = "config-experiment", subcommand)]
    ConfigExperiment(ConfigExperimentCommand),
    /// Show a package's stable or experiment config
    #[command(subcommand)]
    Config(ConfigCommand),
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
    Completions(CompletionsArgs),
    /// Publish, check and follow the fleet's signed desired-state document
    #[command(subcommand)]
    Fleet(FleetCommand),

    // Aliases for users of the Datadog installer.
    /// Same as `catalog set`
    #[command(name = "set-catalog", hide = true)]
    SetCatalog(SetCatalogArgs),
    /// Same as `experiment start`
    #[command(name = "start-experiment", hide = true)]
    StartExperiment(ExperimentStartArgs),
    /// Same as `experiment stop`
    #[command(name = "stop-experiment", hide = true)]
    StopExperiment(PackageArgs),
    /// Same as `experiment promote`
    #[command(name = "promote-experiment", hide = true)]
    PromoteExperiment(PackageArgs),
}

/// `outpost install`
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Package name
    pub package: String,
    /// Version (may be omitted when the catalog holds exactly one version of the package)
    #[arg(id = "pkg_version", value_name = "VERSION")]
    pub version: Option<String>,
    /// Arguments passed to the package's install hook
    #[arg(long = "install-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub install_args: Vec<String>,
    /// Install this extension of the package too (repeatable) [default: those installed with
    /// the version before]
    #[arg(long = "extension", value_name = "NAME")]
    pub extensions: Vec<String>,
}

/// `outpost status`
#[derive(Debug, Clone, Default, Args)]
pub struct StatusArgs {
    /// Show this package only, with its last task in full
    pub package: Option<String>,
    /// Print errors in full instead of one short line each
    #[arg(long)]
    pub wide: bool,
    /// Only whether the daemon is up: its version and the free disk space, read from the
    /// read-only status socket (<root>/run/status.sock), which any user may query
    #[arg(long, conflicts_with_all = ["package", "wide"])]
    pub brief: bool,
}

/// The commands that take a package name only: `remove`, `experiment stop|promote`.
#[derive(Debug, Clone, Args)]
pub struct PackageArgs {
    /// Package name
    pub package: String,
}

/// `outpost completions`
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// `outpost set-catalog` (the Datadog installer's spelling of `catalog set`)
#[derive(Debug, Clone, Args)]
pub struct SetCatalogArgs {
    /// A file, `-` for stdin, or the catalog JSON itself
    pub catalog: String,
    /// Accept a catalog with no entries (clears the daemon's catalog)
    #[arg(long)]
    pub allow_empty: bool,
}

/// `outpost fleet report`
#[derive(Debug, Clone, Args)]
pub struct FleetReportArgs {
    /// Base URL of the Prometheus server, e.g. http://127.0.0.1:9090
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// Label matchers restricting the hosts counted, e.g. 'job="outpost",region="eu"'
    #[arg(long, value_name = "MATCHERS")]
    pub selector: Option<String>,
}

/// `outpost daemon`
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve GET /metrics (Prometheus) on this TCP address, e.g. 127.0.0.1:9465 (overrides
    /// telemetry.listen; a non-loopback address needs telemetry.allow_remote: true)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

/// `outpost fleet ...`
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Validate a desired-state document, sign it, and push it to a registry
    Push(FleetPushArgs),
    /// Fetch the document at a reference and check its signature and contents
    Verify(FleetVerifyArgs),
    /// Show what the daemon's fleet poller applied and whether the host is converged
    Status,
    /// How many hosts are on each generation, converged, on each package version and rolled
    /// back, from a Prometheus server scraping the daemons
    Report(FleetReportArgs),
}

/// `outpost fleet push`
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("signing").required(true).args(["sign_key", "signature", "unsigned"]))]
pub struct FleetPushArgs {
    /// The document (JSON), pushed byte for byte as signed
    pub doc: PathBuf,
    /// Where to push: oci://host[:port]/repository:tag
    #[arg(long, value_name = "REFERENCE")]
    pub to: String,
    /// minisign secret key that signs the document
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// File holding the password of an encrypted --sign-key (one trailing newline stripped)
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    pub password_file: Option<PathBuf>,
    /// A minisign signature of the document made beforehand (`minisign -S`), pushed as is
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// Push without a signature (only daemons with fleet.allow_unsigned accept it)
    #[arg(long)]
    pub unsigned: bool,
}

/// `outpost fleet verify`
#[derive(Debug, Clone, Args)]
pub struct FleetVerifyArgs {
    /// The document's artifact: oci://host[:port]/repository:tag
    pub source: String,
    /// minisign public key trusted to sign it (repeatable)
    #[arg(long = "key", value_name = "PUB", required = true)]
    pub keys: Vec<PathBuf>,
    /// Also write the document and its signature (document.json, document.json.minisig) here
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
}

/// `outpost catalog ...`
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Replace the daemon's catalog with the one in FILE (`-` for stdin)
    Set(CatalogSetArgs),
    /// Print the catalog the daemon holds
    Show,
}

/// `outpost catalog set`
#[derive(Debug, Clone, Args)]
pub struct CatalogSetArgs {
    /// A file, `-` for stdin, or the catalog JSON itself
    pub file: String,
    /// Accept a catalog with no entries (clears the daemon's catalog)
    #[arg(long)]
    pub allow_empty: bool,
}

/// `outpost config-catalog ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCatalogCommand {
    /// Replace the daemon's config catalog with the one in FILE (JSON or YAML; `-` for stdin)
    Set(ConfigCatalogSetArgs),
    /// Print the config catalog the daemon holds
    Show,
}

/// `outpost config-catalog set`
#[derive(Debug, Clone, Args)]
pub struct ConfigCatalogSetArgs {
    /// A file (JSON or YAML), `-` for stdin, or the JSON itself
    pub file: String,
}

/// `outpost config-experiment ...`
#[derive(Debug, Subcommand)]
pub enum ConfigExperimentCommand {
    /// Build a config from the stable one and the operations of a config catalog entry (or of
    /// a file), and point the package's config `experiment` at it
    Start(ConfigStartArgs),
    /// Drop the config experiment; the stable config is untouched
    Stop(PackageArgs),
    /// Make the config experiment the new stable config
    Promote(PackageArgs),
}

/// `outpost config-experiment start`
#[derive(Debug, Clone, Args)]
pub struct ConfigStartArgs {
    /// Package name
    pub package: String,
    /// An id of the config catalog
    #[arg(
        value_name = "ID",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub id: Option<String>,
    /// The operations instead, from a file (JSON or YAML: {"deployment_id", "file_operations"};
    /// `-` for stdin)
    #[arg(long, value_name = "OPS")]
    pub file: Option<String>,
    /// A secret for the `SEC[KEY]` placeholders, sealed to the daemon's key before it is sent
    /// (repeatable)
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    pub secrets: Vec<String>,
    /// A secret read from a file (its content, one trailing newline dropped), so that it is
    /// not on the command line (repeatable)
    #[arg(long = "secret-file", value_name = "KEY=PATH")]
    pub secret_files: Vec<String>,
}

/// `outpost config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the files of a package's stable (default) or experiment config, read from
    /// `<root>/config/<package>/`
    Show(ConfigShowArgs),
}

/// Which config of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConfigLink {
    /// The stable config
    #[default]
    Stable,
    /// The running config experiment
    Experiment,
}

/// `outpost config show`
#[derive(Debug, Clone, Args)]
pub struct ConfigShowArgs {
    /// Package name
    pub package: String,
    /// Which config
    #[arg(value_enum, default_value_t = ConfigLink::Stable)]
    pub which: ConfigLink,
}

/// `outpost experiment ...`
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Install a version beside stable and point `experiment` at it; the daemon watches it
    /// (deadline, health command, auto-promote: docs/experiment-safety.md)
    Start(ExperimentStartArgs),
    /// Follow the watch of a running experiment, one line per health run; exits 0 when it is
    /// promoted, 1 when it is rolled back
    Watch(PackageArgs),
    /// Drop the experiment; stable is untouched
    Stop(PackageArgs),
    /// Make the experiment the new stable
    Promote(PackageArgs),
}

/// `outpost experiment start` (and its alias `start-experiment`)
#[derive(Debug, Clone, Args)]
pub struct ExperimentStartArgs {
    /// Package name
    pub package: String,
    /// Version
    #[arg(id = "pkg_version", value_name = "VERSION")]
    pub version: String,
    /// The watch's policy
    #[command(flatten)]
    pub policy: ExperimentPolicyArgs,
}

/// The safety policy flags of `outpost experiment start`. Durations take `ms`, `s`, `m`, `h`
/// or a bare number of seconds; what is not given comes from the catalog entry, the package
/// or the daemon's defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ExperimentPolicyArgs {
    /// Health command, run with `/bin/sh -c` in the experiment's directory
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between two health runs [daemon default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub health_interval: Option<String>,
    /// How long one health run may take [daemon default: the interval]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub health_timeout: Option<String>,
    /// Consecutive failed runs that roll the experiment back [daemon default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub health_failures: Option<u32>,
    /// Time before the first health run [daemon default: 0]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub health_grace: Option<String>,
    /// Roll back unless promoted within this time (1m..24h) [daemon default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub max_duration: Option<String>,
    /// Promote after this long without a failed health run
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub auto_promote_after: Option<String>,
}

/// Checks a duration flag locally, so a typo is reported before anything is sent.
fn duration_arg(s: &str) -> Result<String, outpost_types::wire::DurationError> {
    outpost_types::wire::WireDuration::parse(s).map(|_| s.to_string())
}

/// Layer compression for `outpost pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PackFormat {
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`)
    Zstd,
    /// gzip (`application/vnd.oci.image.layer.v1.tar+gzip`)
    Gzip,
}

/// `outpost pack`
#[derive(Debug, Clone, Args)]
#[command(disable_version_flag = true)]
#[command(group = clap::ArgGroup::new("dest").required(true).multiple(true).args(["out", "push"]))]
pub struct PackArgs {
    /// Directory whose contents become the package
    pub dir: PathBuf,
    /// Package name
    #[arg(long)]
    pub name: String,
    /// Package version
    #[arg(long = "version", id = "pkg_version", value_name = "VERSION")]
    pub version: String,
    /// Write the OCI image layout to this directory
    #[arg(long, value_name = "LAYOUT")]
    pub out: Option<PathBuf>,
    /// Push to a registry: oci://host[:port]/repo:tag
    #[arg(long, value_name = "REF")]
    pub push: Option<String>,
    /// Layer compression
    #[arg(long, value_enum, default_value_t = PackFormat::Zstd)]
    pub format: PackFormat,
    /// Platform of the image: os/arch, or `any` [default: the host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Add the directory DIR as the extension NAME (an extra layer; repeatable)
    #[arg(long = "extension", value_name = "NAME=DIR")]
    pub extensions: Vec<String>,
}

/// Where checks and their configuration come from.
#[derive(Debug, Clone, Default, Args)]
pub struct ChecksArgs {
    /// Check configurations [default: agent.conf_dir, else <root>/conf.d]
    #[arg(long, value_name = "DIR")]
    pub conf_dir: Option<PathBuf>,
    /// Custom checks [default: agent.checks_dir, else <root>/checks.d]
    #[arg(long, value_name = "DIR")]
    pub checks_dir: Option<PathBuf>,
    /// Python virtual environment with datadog-checks-base [default: agent.python_venv, else
    /// <root>/venv]
    #[arg(long, value_name = "DIR")]
    pub python_venv: Option<PathBuf>,
}

/// `outpost agent`
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    /// Query a running agent instead of starting one
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// Where checks come from
    #[command(flatten)]
    pub checks: ChecksArgs,
    /// Also write every submission as a JSON line to FILE (rotated at --output-max-bytes)
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Size at which --output is rotated
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub output_max_bytes: String,
    /// Log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve GET /metrics (Prometheus) on this TCP address, e.g. 127.0.0.1:9464 (overrides
    /// agent.listen; a non-loopback address needs agent.allow_remote: true)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `outpost agent <command>`
#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// Print the running agent's check table
    Status(AgentClientArgs),
    /// Ask the running agent to reload check configurations
    Reload(AgentClientArgs),
}

/// `outpost agent status|reload`: where the running agent listens.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentClientArgs {
    /// The check agent's API socket (`--socket` is the daemon's) [default: <root>/run/agent.sock]
    #[arg(long, env = "OUTPOST_AGENT_SOCKET", value_name = "PATH")]
    pub agent_socket: Option<PathBuf>,
}

/// `outpost check ...`
#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Run each instance of a check once (or N times) and print what it submitted
    Run(CheckRunArgs),
    /// Tell whether a check is ready for the embedded interpreter
    Validate(CheckValidateArgs),
}

/// `outpost check run`
#[derive(Debug, Clone, Args)]
pub struct CheckRunArgs {
    /// Check name (its conf.d entry)
    pub name: String,
    /// Where the check and its configuration come from
    #[command(flatten)]
    pub checks: ChecksArgs,
    /// Run every instance N times
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub times: u32,
}

/// `outpost check validate`
#[derive(Debug, Clone, Args)]
pub struct CheckValidateArgs {
    /// A check name or a path to its .py file
    pub target: String,
    /// Where the check comes from
    #[command(flatten)]
    pub checks: ChecksArgs,
}

/// The system daemon's socket (root's default root `/opt/outpost`), which client commands of
/// other users try when no daemon answers under their own data directory.
pub const SYSTEM_SOCKET: &str = "/opt/outpost/run/outpost.sock";

/// The default state directory: `/opt/outpost` for root, else `$XDG_DATA_HOME/outpost` or
/// `~/.local/share/outpost`.
pub fn default_root() -> PathBuf {
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

/// The command line as completion scripts offer it: without the hidden subcommands (the
/// Datadog installer's aliases), which still parse.
pub fn completion_command() -> clap::Command {
    use clap::CommandFactory as _;
    let full = Cli::command();
    let mut out = clap::Command::new("outpost")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .max_term_width(100);
    out = out.args(full.get_arguments().cloned());
    out.subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
}

impl GlobalArgs {
    /// The state directory in effect.
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(default_root)
    }

    /// The daemon socket in effect.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.root().join("run/outpost.sock"))
    }

    /// The sockets to try for the daemon, in order: the one in effect, and for a user other
    /// than root who gave neither `--root` nor `--socket` (nor their variables), the system
    /// daemon's socket [`SYSTEM_SOCKET`] after the one under the user's data directory.
    pub fn daemon_sockets(&self) -> Vec<PathBuf> {
        let first = self.socket();
        let system = PathBuf::from(SYSTEM_SOCKET);
        if self.root.is_some() || self.socket.is_some() || first == system {
            vec![first]
        } else {
            vec![first, system]
        }
    }

    /// The read-only status sockets to try, in order: `<root>/run/status.sock`, and for a
    /// user other than root who gave no `--root`, the system daemon's one beside
    /// [`SYSTEM_SOCKET`] after it.
    pub fn status_sockets(&self) -> Vec<PathBuf> {
        let first = self.root().join("run/status.sock");
        let system = Path::new(SYSTEM_SOCKET).with_file_name("status.sock");
        if self.root.is_some() || first == system {
            vec![first]
        } else {
            vec![first, system]
        }
    }

    /// The `--root` / `--socket` in effect as flags, each with a leading space (`""` when
    /// neither is given), for hints whose commands the user can copy as they are.
    pub fn given_location(&self) -> String {
        let mut out = String::new();
        for (flag, value) in [("--root", &self.root), ("--socket", &self.socket)] {
            if let Some(v) = value {
                let v = v.display().to_string();
                if v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%".contains(c))
                {
                    out.push_str(&format!(" {flag} {v}"));
                } else {
                    out.push_str(&format!(" {flag} '{}'", v.replace('\'', "'\\''")));
                }
            }
        }
        out
    }

    /// Reads the configuration file: `--config` (must exist), else `<root>/outpost.yaml` if
    /// present, else the defaults.
    ///
    /// # Errors
    /// [`Error::ReadConfig`] when the file cannot be read (a missing `--config` included),
    /// [`Error::InvalidConfig`] when it is not a valid configuration.
    pub fn load_config(&self) -> Result<Config, Error> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (self.root().join("outpost.yaml"), false),
        };
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => return Err(Error::ReadConfig(e)),
        };
        Config::from_yaml(&text).map_err(|e| Error::InvalidConfig {
            path,
            source: e.into(),
        })
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
        let Command::Install(args) = cli.command else {
            panic!("not install")
        };
        assert_eq!(args.install_args, ["--apm", "-x"]);
    }

    fn global_with(root: &Path, config: Option<PathBuf>) -> GlobalArgs {
        let mut global = Cli::try_parse_from(["outpost", "status"]).unwrap().global;
        global.root = Some(root.to_owned());
        global.config = config;
        global
    }

    #[test]
    fn the_configuration_file_is_optional_only_when_not_named() {
        let dir = tempfile::tempdir().unwrap();
        // No <root>/outpost.yaml: the defaults.
        let config = global_with(dir.path(), None).load_config().unwrap();
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
        // A named file must exist; the error names it.
        let missing = dir.path().join("missing.yaml");
        let err = global_with(dir.path(), Some(missing.clone()))
            .load_config()
            .unwrap_err();
        assert!(matches!(err, Error::ReadConfig(_)), "{err:?}");
        let text = outpost_types::error_chain(&err);
        assert!(
            text.starts_with("reading the configuration file: ")
                && text.contains(&missing.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn an_invalid_configuration_file_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("outpost.yaml");
        fs_err::write(&file, "api: [\n").unwrap();
        let err = global_with(dir.path(), None).load_config().unwrap_err();
        let Error::InvalidConfig { path, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, &file);
        let text = outpost_types::error_chain(&err);
        assert!(
            text.starts_with(&format!("invalid configuration file {}: ", file.display()))
                && text.contains("line 1"),
            "{text}"
        );
    }

    #[test]
    fn hints_repeat_the_location_given_and_users_fall_back_to_the_system_socket() {
        let mut global = Cli::try_parse_from(["outpost", "status"]).unwrap().global;
        assert_eq!(global.given_location(), "");
        global.socket = Some("/tmp/a b.sock".into());
        global.root = Some("/srv/o".into());
        assert_eq!(
            global.given_location(),
            " --root /srv/o --socket '/tmp/a b.sock'"
        );
        assert_eq!(global.daemon_sockets(), [PathBuf::from("/tmp/a b.sock")]);
        global.socket = None;
        global.root = None;
        let sockets = global.daemon_sockets();
        assert_eq!(sockets.last(), Some(&PathBuf::from(SYSTEM_SOCKET)));
        assert_eq!(
            sockets.len(),
            if rustix::process::geteuid().is_root() {
                1
            } else {
                2
            }
        );
    }

    #[test]
    fn global_options_have_their_heading_and_only_the_top_command_has_a_version() {
        let mut cmd = Cli::command();
        let help = cmd.render_help().to_string();
        assert!(
            help.contains("Global options:\n      --root <DIR>"),
            "{help}"
        );
        assert!(help.contains("-V, --version"), "{help}");
        let status = cmd.find_subcommand_mut("status").unwrap();
        let help = status.render_help().to_string();
        assert!(help.contains("Global options:"), "{help}");
        assert!(!help.contains("--version"), "{help}");
        assert!(Cli::try_parse_from(["outpost", "status", "-V"]).is_err());
    }

    #[test]
    fn completions_leave_out_hidden_aliases() {
        let cmd = completion_command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        assert!(
            names.contains(&"status") && names.contains(&"catalog"),
            "{names:?}"
        );
        assert!(!names.contains(&"set-catalog"), "{names:?}");
        assert!(!names.contains(&"start-experiment"), "{names:?}");
    }

    #[test]
    fn aliases() {
        let cli = Cli::try_parse_from(["outpost", "start-experiment", "p", "1"]).unwrap();
        assert!(matches!(cli.command, Command::StartExperiment(_)));
    }
}
