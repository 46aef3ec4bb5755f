//! `outpost version`: outpost's version and the embedded Python's version and prefix.

use outpost_checks::{PythonInfo, Runtime, interpreter};
use serde::Serialize;

use outpost_cli::ExitStatus;
use outpost_cli::args::{ChecksArgs, GlobalArgs};
use outpost_cli::output::print_json_line;

use super::Paths;

#[derive(Serialize)]
struct VersionOut<'a> {
    version: &'a str,
    python: Option<&'a PythonInfo>,
    /// Why the configured venv could not be used, if it could not.
    venv_error: Option<String>,
    /// Why the interpreter could not be described at all.
    python_error: Option<String>,
}

/// Runs `outpost version`: exit status 1 when the interpreter could not be described.
pub(crate) fn run(global: &GlobalArgs) -> ExitStatus {
    let config = global.load_config().unwrap_or_else(|e| {
        tracing::warn!(error = %outpost_types::error_chain(&e), "ignoring the configuration file");
        Default::default()
    });
    let paths = Paths::resolve(global, &ChecksArgs::default(), &config);
    let mut venv_error = None;
    let mut python_error = None;
    let info = match Runtime::start(paths.runtime_config(&config)) {
        Ok(rt) => Some(rt.python().clone()),
        Err(e) => {
            venv_error = Some(format!("{}: {e}", paths.venv.display()));
            // The interpreter may be up even though the runtime is not (no datadog_checks);
            // else start it bare.
            match interpreter::running_info() {
                Some(i) => Some(i),
                None => match interpreter::probe_without_venv() {
                    Ok(i) => Some(i),
                    Err(e) => {
                        python_error = Some(e.to_string());
                        None
                    }
                },
            }
        }
    };
    if global.json {
        print_json_line(&VersionOut {
            version: outpost_types::VERSION,
            python: info.as_ref(),
            venv_error,
            python_error,
        });
    } else {
        println!("outpost {}", outpost_types::VERSION);
        match &info {
            Some(i) => {
                println!("Python {}", i.full_version.replace('\n', " "));
                println!("  prefix:     {}", i.base_prefix.display());
                if let Some(lib) = &i.library {
                    println!("  library:    {}", lib.display());
                }
                println!("  executable: {}", i.executable.display());
                if let Some(venv) = &i.venv {
                    let base = i
                        .checks_base_version
                        .as_deref()
                        .map(|v| format!(" (datadog-checks-base {v})"))
                        .unwrap_or_default();
                    println!("  venv:       {}{base}", venv.display());
                }
            }
            None => println!(
                "Python {} (not started)",
                interpreter::embedded_version().replace('\n', " ")
            ),
        }
        if let Some(e) = &venv_error {
            println!("  venv:       unusable: {e}");
        }
        if let Some(e) = &python_error {
            println!("  error:      {e}");
        }
    }
    ExitStatus::from_success(info.is_some())
}
