//! `outpost version`: outpost's version and the embedded Python's version and prefix.

use std::process::ExitCode;

use outpost_checks::{PythonInfo, Runtime, interpreter};
use serde::Serialize;

use super::{Paths, print_json};
use crate::cli::{ChecksArgs, GlobalArgs};

#[derive(Serialize)]
struct VersionOut<'a> {
    version: &'a str,
    python: Option<&'a PythonInfo>,
    /// Why the configured venv could not be used, if it could not.
    venv_error: Option<String>,
    /// Why the interpreter could not be described at all.
    python_error: Option<String>,
}

pub(crate) fn run(global: &GlobalArgs) -> ExitCode {
    let config = global.load_config().unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "ignoring the configuration file");
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
        print_json(&VersionOut {
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
    if info.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
