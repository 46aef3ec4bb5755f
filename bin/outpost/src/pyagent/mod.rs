//! The commands `outpost-agent` serves with the embedded Python: `agent`, `check run`,
//! `check validate` and `version`. Only `outpost-agent` compiles this module.

pub(crate) mod agent;
pub(crate) mod check_run;
pub(crate) mod output;
pub(crate) mod validate;
pub(crate) mod version;

use std::path::PathBuf;

use outpost_types::config::Config;

use outpost_cli::args::{ChecksArgs, GlobalArgs};

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
