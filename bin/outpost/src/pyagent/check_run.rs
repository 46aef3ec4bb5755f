//! `outpost check run NAME`: runs every instance of a check once (or `--times N`) and shows
//! what it submitted. Exit status 0 when every run succeeded, else 1.

use std::collections::BTreeMap;

use outpost_checks::{Runtime, conf_d};

use super::output::{CheckRunOut, Entry, ErrorOut, InstanceOut, LoadErrorOut, render_entry};
use outpost_cli::ExitStatus;
use outpost_cli::args::{CheckRunArgs, GlobalArgs};
use outpost_cli::output::{print_json_line, print_stdout};

use super::Paths;

/// Reports a failure before any instance ran: the load-error body with `--json`, else the
/// message (and traceback) on stderr. Always exit status 1.
fn load_failure(json: bool, name: &str, error: ErrorOut) -> ExitStatus {
    if json {
        print_json_line(&LoadErrorOut {
            check: name,
            error,
            instances: [],
        });
    } else {
        eprintln!("error: check '{name}' failed to load: {}", error.message);
        if !error.traceback.is_empty() {
            eprintln!("{}", error.traceback.trim_end());
        }
    }
    ExitStatus::Failure
}

/// Runs `outpost check run`; `times_given` tells an explicit `--times 1` from the default
/// (the JSON output then numbers the runs).
pub(crate) fn run(global: &GlobalArgs, args: &CheckRunArgs, times_given: bool) -> ExitStatus {
    let CheckRunArgs {
        name,
        checks,
        times,
    } = args;
    let (name, times) = (name.as_str(), *times);
    let json = global.json;
    let config = match global.load_config() {
        Ok(c) => c,
        Err(e) => {
            let error = ErrorOut {
                message: outpost_types::error_chain(&e),
                code: "invalid_input".to_owned(),
                traceback: String::new(),
            };
            return load_failure(json, name, error);
        }
    };
    let paths = Paths::resolve(global, checks, &config);
    let files = match conf_d::find(&paths.conf_dir, name) {
        Ok(f) => f,
        Err(e) => return load_failure(json, name, ErrorOut::of(&e, e.to_string())),
    };
    let runtime = match Runtime::start(paths.runtime_config(&config)) {
        Ok(r) => r,
        Err(e) => {
            let message = if e.is_python_unavailable() {
                format!("Python is unavailable: {e}")
            } else {
                e.to_string()
            };
            return load_failure(json, name, ErrorOut::of(&e, message));
        }
    };

    // Load every configuration file; the first load error of the check itself stops here.
    let mut version = String::from("unversioned");
    let mut slots = Vec::new();
    for file in &files {
        match runtime.load_check(name, file) {
            Ok(loaded) => {
                version = loaded.version.clone();
                slots.extend(loaded.instances);
            }
            Err(e) => return load_failure(json, name, ErrorOut::of(&e, e.to_string())),
        }
    }

    let mut entries = Vec::new();
    for run in 1..=times {
        for slot in &slots {
            entries.push(match slot {
                Ok(instance) => Entry::Ran {
                    report: Box::new(instance.run()),
                    run,
                },
                Err(failed) => Entry::Failed {
                    check_id: failed.check_id.to_string(),
                    error: ErrorOut::of(&failed.error, failed.error.to_string()),
                    run,
                },
            });
        }
    }
    // The agent cancels its checks when it stops; so does a one-shot run.
    for instance in slots.iter().flatten() {
        if let Err(e) = instance.cancel() {
            tracing::warn!(check.id = %instance.id(), error = %e, "cancel() failed");
        }
    }

    let ok = entries.iter().all(Entry::is_ok);
    if json {
        let empty = BTreeMap::new();
        let show_run = times_given || times > 1;
        print_json_line(&CheckRunOut {
            check: name,
            version: &version,
            instances: entries
                .iter()
                .map(|e| InstanceOut::new(e, show_run, &empty))
                .collect(),
        });
    } else {
        println!("{name} {version}");
        for e in &entries {
            print_stdout(&render_entry(e, times));
        }
    }
    ExitStatus::from_success(ok)
}
