//! `outpost agent`: the long-running check agent, until SIGTERM or SIGINT (exit 0).
//!
//! Logs go to stderr (`--log-format text|json`, info level by default). Start-up failures
//! (unreadable configuration, `--output` that cannot be opened, the socket in use) exit 1
//! with the reason; a bad `--output-max-bytes` is a usage error (2). Python failing to start
//! is not fatal: the agent serves its API and reports why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_agent::{AgentOptions, RunFormat};
use outpost_checks::{CheckError, RunReport};
use outpost_types::config::ByteSize;

use super::Paths;
use super::output::{Entry, ErrorOut, InstanceOut};
use outpost_cli::ExitStatus;
use outpost_cli::args::{AgentArgs, GlobalArgs};

/// The instance entries of `outpost check run --json`, for run-now and `--output`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckRunFormat;

impl RunFormat for CheckRunFormat {
    fn run_entry(&self, report: &RunReport) -> serde_json::Value {
        let entry = Entry::Ran {
            report: Box::new(report.clone()),
            run: 1,
        };
        let empty = BTreeMap::new();
        // The output types always serialise (non-finite numbers are already strings).
        serde_json::to_value(InstanceOut::new(&entry, false, &empty))
            .unwrap_or(serde_json::Value::Null)
    }

    fn failed_entry(&self, check_id: &str, error: &CheckError) -> serde_json::Value {
        let entry = Entry::Failed {
            check_id: check_id.to_owned(),
            error: ErrorOut::from(error),
            run: 1,
        };
        let empty = BTreeMap::new();
        serde_json::to_value(InstanceOut::new(&entry, false, &empty))
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub(crate) fn run(global: &GlobalArgs, args: &AgentArgs) -> ExitStatus {
    outpost_cli::logging::init(
        args.log_format,
        global.verbose,
        global.quiet,
        tracing::Level::INFO,
    );
    let config = match global.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", outpost_types::error_chain(&e));
            return ExitStatus::Failure;
        }
    };
    let max_bytes = match ByteSize::parse(&args.output_max_bytes) {
        Ok(b) if b.0 > 0 => b.0,
        Ok(_) => {
            eprintln!("error: invalid --output-max-bytes: must be more than 0");
            return ExitStatus::Usage;
        }
        Err(e) => {
            eprintln!(
                "error: invalid --output-max-bytes {:?}: {e}",
                args.output_max_bytes
            );
            return ExitStatus::Usage;
        }
    };
    let paths = Paths::resolve(global, &args.checks, &config);
    let mut agent_config = config.agent.clone();
    if let Some(addr) = args.listen {
        agent_config.listen = Some(addr);
    }
    let options = match AgentOptions::new(
        &paths.root,
        &paths.conf_dir,
        &paths.checks_dir,
        &paths.venv,
        agent_config,
        Arc::new(CheckRunFormat),
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {}", outpost_types::error_chain(&e));
            return ExitStatus::Failure;
        }
    };
    let options = match &args.output {
        Some(path) => options.with_output(path, max_bytes),
        None => options,
    };
    let (config_file, required) = global.config_file();
    let options = options.with_config_file(config_file, required);
    // Two workers serve the API and the scheduling loop; check runs have threads of their own.
    let runtime = match outpost_cli::runtime::service("outpost-agent", 2, None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the agent's runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    let result = runtime.block_on(outpost_agent::run(options, &config.api));
    // Runs still stuck in a check after the grace period are abandoned with the process.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitStatus::Success,
        Err(e) => {
            tracing::error!(error = %e, "agent failed");
            eprintln!("error: {}", outpost_types::error_chain(&e));
            ExitStatus::Failure
        }
    }
}
