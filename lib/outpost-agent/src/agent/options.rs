//! What the agent starts with: paths, the typed `agent:` section and what is derived from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use outpost_checks::Runtime;
use outpost_types::config::AgentConfig;

use crate::error::{AgentError, InvalidValue};
use crate::scheduler::SchedulerConfig;
use crate::sinks::RunFormat;

/// `--output`: where and up to which size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputOptions {
    /// The file.
    pub path: PathBuf,
    /// Size at which it is rotated.
    pub max_bytes: u64,
}

/// Everything the agent needs to start.
#[derive(Clone)]
pub struct AgentOptions {
    /// The state directory: the socket is `<root>/run/agent.sock`, the persistent cache is
    /// under `<root>/run`.
    pub root: PathBuf,
    /// Check configurations (`conf.d`).
    pub conf_dir: PathBuf,
    /// Custom checks (`checks.d`).
    pub checks_dir: PathBuf,
    /// The virtual environment with datadog-checks-base.
    pub python_venv: PathBuf,
    /// The configuration file's `agent:` section.
    pub agent: AgentConfig,
    /// `--output`.
    pub output: Option<OutputOptions>,
    /// How runs are shown as JSON (run-now and `--output`).
    pub format: Arc<dyn RunFormat>,
    /// Scheduler settings: `agent.runners`, `agent.check_timeout`, spreading.
    pub scheduler: SchedulerConfig,
    /// How long shutdown waits for runs in progress (`agent.shutdown_timeout`, default 5 s).
    pub shutdown_grace: Duration,
    /// Timeout of the validation of one custom check (`agent.python3_linter_timeout`,
    /// default 120 s).
    pub validation_timeout: Duration,
    /// A runtime already started in this process, to use instead of starting one (the
    /// interpreter starts once per process: tests and benchmarks run several agents on one).
    pub runtime: Option<Runtime>,
    /// The configuration file the `agent:` section came from, and whether it must exist: a
    /// reload reads `agent.check_memory_limit` from it again. `None`: it is not re-read.
    pub config_file: Option<(PathBuf, bool)>,
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("root", &self.root)
            .field("conf_dir", &self.conf_dir)
            .field("checks_dir", &self.checks_dir)
            .field("python_venv", &self.python_venv)
            .field("output", &self.output)
            .field("scheduler", &self.scheduler)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("validation_timeout", &self.validation_timeout)
            .finish_non_exhaustive()
    }
}

impl AgentOptions {
    /// Options from the resolved paths and the configuration's `agent:` section: runners
    /// (`agent.runners`), run timeout (`agent.check_timeout`, default: each instance's
    /// interval), shutdown grace (`agent.shutdown_timeout`, default 5 s) and validation
    /// timeout (`agent.python3_linter_timeout`, default 120 s).
    ///
    /// # Errors
    /// [`AgentError::InvalidConfig`] for zero runners or a zero duration (the parser of the
    /// configuration file already refused durations of the wrong form).
    pub fn new(
        root: impl Into<PathBuf>,
        conf_dir: impl Into<PathBuf>,
        checks_dir: impl Into<PathBuf>,
        python_venv: impl Into<PathBuf>,
        agent: AgentConfig,
        format: Arc<dyn RunFormat>,
    ) -> Result<Self, AgentError> {
        if agent.runners == 0 {
            return Err(AgentError::InvalidConfig {
                key: "agent.runners",
                problem: InvalidValue::Zero,
            });
        }
        let positive = |key: &'static str, d: Duration| {
            if d.is_zero() {
                Err(AgentError::InvalidConfig {
                    key,
                    problem: InvalidValue::NotPositive,
                })
            } else {
                Ok(d)
            }
        };
        let timeout = agent
            .check_timeout
            .map(|d| positive("agent.check_timeout", d.0))
            .transpose()?;
        if agent.check_memory_limit.is_some_and(|l| l.0 == 0) {
            return Err(AgentError::InvalidConfig {
                key: "agent.check_memory_limit",
                problem: InvalidValue::NotPositive,
            });
        }
        let shutdown_grace = positive("agent.shutdown_timeout", agent.shutdown_timeout.0)?;
        let validation_timeout = positive(
            "agent.python3_linter_timeout",
            agent.python3_linter_timeout.0,
        )?;
        Ok(Self {
            root: root.into(),
            conf_dir: conf_dir.into(),
            checks_dir: checks_dir.into(),
            python_venv: python_venv.into(),
            scheduler: SchedulerConfig {
                runners: agent.runners,
                timeout,
                spread: true,
                dedicated_thread: true,
            },
            agent,
            output: None,
            format,
            shutdown_grace,
            validation_timeout,
            runtime: None,
            config_file: None,
        })
    }

    /// Sets the configuration file a reload reads `agent.check_memory_limit` from again
    /// (`required`: a missing file is an error, else it means the defaults).
    pub fn with_config_file(mut self, path: impl Into<PathBuf>, required: bool) -> Self {
        self.config_file = Some((path.into(), required));
        self
    }

    /// Sets `--output`.
    pub fn with_output(mut self, path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        self.output = Some(OutputOptions {
            path: path.into(),
            max_bytes,
        });
        self
    }

    /// The agent's socket: `<root>/run/agent.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("run").join("agent.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFormat;

    impl RunFormat for NoFormat {
        fn run_entry(&self, _: &outpost_checks::RunReport) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn failed_entry(&self, _: &str, _: &outpost_checks::CheckError) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    fn options(yaml: &str) -> Result<AgentOptions, AgentError> {
        let config = outpost_types::config::Config::from_yaml(yaml).expect("valid YAML");
        AgentOptions::new("/r", "/c", "/k", "/v", config.agent, Arc::new(NoFormat))
    }

    #[test]
    fn durations_from_the_agent_section() {
        let o = options("agent: {check_timeout: 2.5, shutdown_timeout: 500ms}\n").unwrap();
        assert_eq!(o.scheduler.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(o.shutdown_grace, Duration::from_millis(500));
        assert_eq!(o.validation_timeout, Duration::from_secs(120));
        let o = options("").unwrap();
        assert_eq!(o.scheduler.timeout, None);
        assert_eq!(o.shutdown_grace, Duration::from_secs(5));
        assert_eq!(o.scheduler.runners, 4);
        for (yaml, key) in [
            ("agent: {check_timeout: 0}\n", "agent.check_timeout"),
            ("agent: {shutdown_timeout: 0s}\n", "agent.shutdown_timeout"),
            (
                "agent: {python3_linter_timeout: 0}\n",
                "agent.python3_linter_timeout",
            ),
            ("agent: {runners: 0}\n", "agent.runners"),
            (
                "agent: {check_memory_limit: 0}\n",
                "agent.check_memory_limit",
            ),
        ] {
            let e = options(yaml).unwrap_err();
            assert!(
                matches!(e, AgentError::InvalidConfig { key: k, .. } if k == key),
                "{yaml}: {e}"
            );
            assert!(e.to_string().contains(key), "{yaml}: {e}");
        }
    }
}
