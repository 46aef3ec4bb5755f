//! `outpost check validate NAME|FILE`: readiness of a check for the embedded interpreter.
//! Exit status 0 when `ready`, else 1.

use std::time::Duration;

use outpost_checks::{CHECK_READY_METRIC, ReadyStatus, Runtime, Validation, ValidationTarget};
use serde::Serialize;

use outpost_cli::ExitStatus;
use outpost_cli::args::{CheckValidateArgs, GlobalArgs};
use outpost_cli::output::print_json_line;

use super::Paths;

/// Default for `agent.python3_linter_timeout` (seconds), as in the Datadog agent.
const DEFAULT_TIMEOUT_SECS: u64 = 120;

#[derive(Serialize)]
struct MetricOut<'a> {
    name: &'static str,
    value: f64,
    tags: &'a [String],
}

#[derive(Serialize)]
struct ValidationOut<'a> {
    #[serde(flatten)]
    validation: &'a Validation,
    metric: MetricOut<'a>,
}

/// Runs `outpost check validate`.
pub(crate) fn run(global: &GlobalArgs, args: &CheckValidateArgs) -> ExitStatus {
    let checks = &args.checks;
    let target = ValidationTarget::parse(&args.target);
    let check_name = match &target {
        ValidationTarget::Name(n) => n.clone(),
        ValidationTarget::File(p) => p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let unknown = |message: String| Validation {
        check: check_name.clone(),
        file: None,
        status: ReadyStatus::Unknown,
        messages: vec![message],
    };
    // A check file that does not exist is reported like a check name that resolves to
    // nothing: `not_ready`, with one "no ..." message naming what was looked for (rather than
    // a Python exception from inside the interpreter).
    let missing_file = match &target {
        ValidationTarget::File(p) if !p.is_file() => Some(Validation {
            check: check_name.clone(),
            file: None,
            status: ReadyStatus::NotReady,
            messages: vec![format!("no check file {}", p.display())],
        }),
        _ => None,
    };
    let (validation, version) = match (missing_file, global.load_config()) {
        (Some(v), _) => (v, outpost_types::VERSION.to_owned()),
        (None, config) => match config {
            Err(e) => (
                unknown(outpost_types::error_chain(&e)),
                outpost_types::VERSION.to_owned(),
            ),
            Ok(config) => {
                let paths = Paths::resolve(global, checks, &config);
                let timeout = config
                    .agent
                    .get("python3_linter_timeout")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(DEFAULT_TIMEOUT_SECS);
                match Runtime::start(paths.runtime_config(&config)) {
                    Ok(rt) => (
                        rt.validate(&target, Duration::from_secs(timeout)),
                        rt.reported_version().to_owned(),
                    ),
                    Err(e) => (unknown(e.to_string()), outpost_types::VERSION.to_owned()),
                }
            }
        },
    };
    let tags = validation.tags(&version);
    if global.json {
        print_json_line(&ValidationOut {
            validation: &validation,
            metric: MetricOut {
                name: CHECK_READY_METRIC,
                value: validation.metric_value(),
                tags: &tags,
            },
        });
    } else {
        println!("{}: {}", validation.check, validation.status.as_str());
        if let Some(f) = &validation.file {
            println!("  file: {}", f.display());
        }
        for m in &validation.messages {
            println!("  - {m}");
        }
    }
    ExitStatus::from_success(validation.status == ReadyStatus::Ready)
}
