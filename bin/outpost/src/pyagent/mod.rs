//! The commands `outpost-agent` serves with the embedded Python: `agent` (and its client
//! verbs `agent status|reload`), `check run`, `check validate` and `version`.

pub(crate) mod agent;
pub(crate) mod agent_status;
pub(crate) mod output;
pub(crate) mod run;
pub(crate) mod validate;
pub(crate) mod version;

use std::path::PathBuf;

use outpost_types::config::Config;

use crate::cli::{ChecksArgs, GlobalArgs};

/// Where checks, their configuration and the venv are, after flags, config file and
/// defaults (`<root>/conf.d`, `<root>/checks.d`, `<root>/venv`).
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) root: PathBuf,
    pub(crate) conf_dir: PathBuf,
    pub(crate) checks_dir: PathBuf,
    pub(crate) venv: PathBuf,
}

impl Paths {
    pub(crate) fn resolve(global: &GlobalArgs, checks: &ChecksArgs, config: &Config) -> Self {
        let root = global.root();
        let agent = &config.agent;
        let pick = |flag: &Option<PathBuf>, conf: &Option<PathBuf>, default: &str| {
            flag.clone()
                .or_else(|| conf.clone())
                .unwrap_or_else(|| root.join(default))
        };
        Self {
            conf_dir: pick(&checks.conf_dir, &agent.conf_dir, "conf.d"),
            checks_dir: pick(&checks.checks_dir, &agent.checks_dir, "checks.d"),
            venv: pick(&checks.python_venv, &agent.python_venv, "venv"),
            root,
        }
    }

    /// The runtime configuration for these paths.
    pub(crate) fn runtime_config(&self, config: &Config) -> outpost_checks::RuntimeConfig {
        outpost_checks::RuntimeConfig::new(&self.venv, self.root.join("run"))
            .with_checks_dir(&self.checks_dir)
            .with_agent_config(config.agent.clone())
    }
}

/// Installs the stderr log: `-v`/`-q` around `warn`. With `OUTPOST_LOG` set, the shared
/// `logging::init` (an `EnvFilter`) serves the directives; otherwise a plain level filter does
/// the same job without compiling the filter's regular expressions, which would cost this
/// process, whose resident memory is budgeted against plain Python's, about 0.8 MiB.
pub(crate) fn init_logging(global: &GlobalArgs) {
    if std::env::var_os("OUTPOST_LOG").is_some_and(|v| !v.is_empty()) {
        crate::logging::init(
            crate::cli::LogFormat::Text,
            global.verbose,
            global.quiet,
            tracing::Level::WARN,
        );
        return;
    }
    let level = crate::logging::level(tracing::Level::WARN, global.verbose, global.quiet);
    // A second initialisation (tests) keeps the first subscriber, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        // Our output types always serialise; if one ever did not, say so instead of nothing.
        Err(e) => eprintln!("error: cannot encode the output as JSON: {e}"),
    }
}
