//! `outpost agent status`, `outpost agent reload` and `outpost agent enable`: clients of the agent's socket
//! (`<root>/run/agent.sock`). Exit status: 0 success, 1 the agent refused, 3 the agent is not
//! reachable.

//!
//! They run in `outpost` itself: a client of the agent's socket has no use for Python.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use outpost_api::{ApiClient, ClientError, ClientErrorKind};
use outpost_cli::ExitStatus;
use outpost_cli::args::{AgentClientArgs, AgentCommand, AgentEnableArgs, GlobalArgs};
use outpost_cli::output::{print_error_json, print_json, print_stdout, table};
use outpost_cli::report::{self, Service};
use serde_json::Value;

/// Runs `outpost agent status`, `reload` or `enable`.
pub(crate) fn run(global: &GlobalArgs, command: &AgentCommand) -> ExitStatus {
    match command {
        AgentCommand::Status(args) => status(global, args),
        AgentCommand::Reload(args) => reload(global, args),
        AgentCommand::Enable(args) => enable(global, args),
    }
}

/// `outpost agent enable NAME`: `POST /checks/{name}/enable`, then what it enabled.
fn enable(global: &GlobalArgs, args: &AgentEnableArgs) -> ExitStatus {
    // The name goes into the path: refuse what would change its meaning there.
    if args.name.is_empty() || args.name.contains(['/', '?', '#', '%']) {
        eprintln!("error: invalid instance ID or check name {:?}", args.name);
        return ExitStatus::Usage;
    }
    let path = format!("/checks/{}/enable", args.name);
    let body = match call(global, &args.client, async |c| {
        c.post::<(), Value>(&path, None).await
    }) {
        Ok(b) => b,
        Err(status) => return status,
    };
    if global.json {
        print_json(&body);
        return ExitStatus::Success;
    }
    let enabled = body["enabled"].as_array().cloned().unwrap_or_default();
    println!("enabled: {}", enabled.len());
    for id in &enabled {
        println!("  + {}", id.as_str().unwrap_or_default());
    }
    for id in body["not_disabled"].as_array().into_iter().flatten() {
        println!("  {} was not disabled", id.as_str().unwrap_or_default());
    }
    ExitStatus::Success
}

/// The agent's socket: `--agent-socket`, else `<root>/run/agent.sock`.
fn socket(global: &GlobalArgs, args: &AgentClientArgs) -> PathBuf {
    args.agent_socket
        .clone()
        .unwrap_or_else(|| global.root().join("run").join("agent.sock"))
}

fn call(
    global: &GlobalArgs,
    args: &AgentClientArgs,
    f: impl AsyncFnOnce(ApiClient) -> Result<Value, ClientError>,
) -> Result<Value, ExitStatus> {
    let socket = socket(global, args);
    let fail = |code: &str, message: String| {
        eprintln!("error: {message}");
        if global.json {
            print_error_json(code, &message);
        }
        ExitStatus::Failure
    };
    let runtime = match outpost_cli::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            return Err(fail(
                "local",
                format!("cannot start the client's runtime: {e}"),
            ));
        }
    };
    match runtime.block_on(f(ApiClient::new(&socket))) {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == ClientErrorKind::NotReachable => {
            let mut given = global.given_location();
            if let Some(s) = &args.agent_socket {
                given = format!("{given} --agent-socket {}", s.display());
            }
            Err(report::unreachable(
                None,
                Service::Agent,
                &socket,
                &e,
                &given,
                global.json,
            ))
        }
        Err(e) => match e.api_error() {
            Some(api) => {
                eprintln!("error: {}", api.message);
                if global.json {
                    print_json(&outpost_types::error::ErrorBody { error: api.clone() });
                }
                Err(ExitStatus::Failure)
            }
            None => Err(fail("protocol", outpost_types::error_chain(&e))),
        },
    }
}

/// `outpost agent status`: the check table of `GET /checks` (or its body with `--json`).
fn status(global: &GlobalArgs, args: &AgentClientArgs) -> ExitStatus {
    let body = match call(global, args, async |c| c.get::<Value>("/checks").await) {
        Ok(b) => b,
        Err(status) => return status,
    };
    if global.json {
        print_json(&body);
    } else {
        print_stdout(&render_status(&body, now_unix()));
    }
    // No check can run without Python: a failure, as `systemctl status` of a failed unit.
    if body["python"]["available"].as_bool() == Some(false) {
        return ExitStatus::Failure;
    }
    ExitStatus::Success
}

/// `outpost agent reload`: `POST /checks/reload`, then what changed.
fn reload(global: &GlobalArgs, args: &AgentClientArgs) -> ExitStatus {
    let body = match call(global, args, async |c| {
        c.post::<(), Value>("/checks/reload", None).await
    }) {
        Ok(b) => b,
        Err(status) => return status,
    };
    if global.json {
        print_json(&body);
        return ExitStatus::Success;
    }
    let count = |k: &str| body[k].as_array().map_or(0, Vec::len);
    println!(
        "reloaded: {} added, {} removed, {} unchanged",
        count("added"),
        count("removed"),
        body["unchanged"].as_u64().unwrap_or(0)
    );
    for id in body["added"].as_array().into_iter().flatten() {
        println!("  + {}", id.as_str().unwrap_or_default());
    }
    for id in body["removed"].as_array().into_iter().flatten() {
        println!("  - {}", id.as_str().unwrap_or_default());
    }
    let mut errors = String::new();
    write_load_errors(&mut errors, &body["errors"]);
    print!("{errors}");
    ExitStatus::Success
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `0.4ms`, `250ms`, `1.5s`, `3m`, `2h`.
fn human(seconds: f64) -> String {
    if seconds < 0.01 {
        format!("{:.1}ms", seconds * 1000.0)
    } else if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{}s", (seconds * 10.0).round() / 10.0)
    } else if seconds < 7200.0 {
        format!("{:.0}m", seconds / 60.0)
    } else {
        format!("{:.0}h", seconds / 3600.0)
    }
}

fn write_load_errors(out: &mut String, errors: &Value) {
    let Some(errors) = errors.as_array().filter(|e| !e.is_empty()) else {
        return;
    };
    out.push_str("load errors:\n");
    for e in errors {
        let what = e["check_id"]
            .as_str()
            .or_else(|| e["check"].as_str())
            .unwrap_or("(configuration)");
        let file = e["config"]
            .as_str()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let message = e["error"]["message"].as_str().unwrap_or_default();
        let _ = writeln!(out, "  {what}{file}: {message}");
    }
}

/// The readable check table.
fn render_status(body: &Value, now: f64) -> String {
    let mut out = String::new();
    let python = &body["python"];
    if python["available"].as_bool() == Some(true) {
        let base = python["checks_base_version"]
            .as_str()
            .map(|v| format!(" (datadog-checks-base {v})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "Python {}{base}, {} runners",
            python["version"].as_str().unwrap_or("?"),
            body["runners"].as_u64().unwrap_or(0)
        );
    } else {
        let _ = writeln!(
            out,
            "Python is unavailable: {}",
            python["error"].as_str().unwrap_or("unknown reason")
        );
    }
    let instances = body["instances"].as_array().cloned().unwrap_or_default();
    if instances.is_empty() {
        out.push_str("no check instance is scheduled\n");
    } else {
        let header = [
            "INSTANCE", "VERSION", "INTERVAL", "LAST RUN", "DURATION", "METRICS", "RUNS", "ERRORS",
            "LATE", "STATUS",
        ];
        let rows: Vec<Vec<String>> = instances
            .iter()
            .map(|i| {
                let stats = &i["stats"];
                let status = if !i["disabled"].is_null() {
                    "disabled"
                } else if stats["running"].as_bool() == Some(true) {
                    if stats["late"].as_u64().unwrap_or(0) > 0
                        && stats["running_for_ms"].as_f64().unwrap_or(0.0)
                            >= stats["timeout_s"].as_f64().unwrap_or(f64::MAX) * 1000.0
                    {
                        "late"
                    } else {
                        "running"
                    }
                } else if i["last_run"].is_null() {
                    "pending"
                } else if i["error"].is_null() {
                    "ok"
                } else {
                    "error"
                };
                vec![
                    i["id"].as_str().unwrap_or_default().to_owned(),
                    i["version"].as_str().unwrap_or_default().to_owned(),
                    human(i["interval_s"].as_f64().unwrap_or(0.0)),
                    i["last_run"]
                        .as_f64()
                        .map_or("-".into(), |t| format!("{} ago", human((now - t).max(0.0)))),
                    i["duration_ms"]
                        .as_f64()
                        .map_or("-".into(), |d| human(d / 1000.0)),
                    i["metric_count"]
                        .as_u64()
                        .map_or("-".into(), |n| n.to_string()),
                    stats["runs"].as_u64().unwrap_or(0).to_string(),
                    stats["errors"].as_u64().unwrap_or(0).to_string(),
                    stats["late"].as_u64().unwrap_or(0).to_string(),
                    status.to_owned(),
                ]
            })
            .collect();
        table(&mut out, "", &header, &rows);
        for i in instances.iter().filter(|i| !i["disabled"].is_null()) {
            let _ = writeln!(
                out,
                "disabled: {}: {} (since {} ago)",
                i["id"].as_str().unwrap_or_default(),
                i["disabled"]["message"].as_str().unwrap_or_default(),
                human((now - i["disabled"]["at"].as_f64().unwrap_or(now)).max(0.0))
            );
        }
        let failing: Vec<&Value> = instances.iter().filter(|i| !i["error"].is_null()).collect();
        if !failing.is_empty() {
            out.push_str("errors:\n");
            for i in failing {
                let _ = writeln!(
                    out,
                    "  {}: {}",
                    i["id"].as_str().unwrap_or_default(),
                    i["error"]["message"].as_str().unwrap_or_default()
                );
            }
        }
        for i in &instances {
            for w in i["warnings"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "warning: {}: {}",
                    i["id"].as_str().unwrap_or_default(),
                    w.as_str().unwrap_or_default()
                );
            }
        }
    }
    write_load_errors(&mut out, &body["load_errors"]);
    for v in body["validations"].as_array().into_iter().flatten() {
        if v["status"].as_str() != Some("ready") {
            let _ = writeln!(
                out,
                "validation: {} is {}: {}",
                v["check"].as_str().unwrap_or_default(),
                v["status"].as_str().unwrap_or_default(),
                v["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_instance_and_what_went_wrong() {
        let body = serde_json::json!({
            "python": {"available": true, "version": "3.11.2", "checks_base_version": "38.5.0"},
            "runners": 4,
            "instances": [
                {"id": "good:1", "version": "1.0.0", "interval_s": 15.0, "last_run": 990.0,
                 "duration_ms": 1.5, "metric_count": 2, "error": null, "warnings": ["slow"],
                 "stats": {"runs": 3, "errors": 0, "late": 0, "running": false}},
                {"id": "bad:2", "version": "unversioned", "interval_s": 1.0, "last_run": 999.5,
                 "duration_ms": 2500.0, "metric_count": 0,
                 "error": {"message": "boom", "traceback": "..."}, "warnings": [],
                 "stats": {"runs": 1, "errors": 1, "late": 0, "running": false}},
                {"id": "new:3", "version": "2", "interval_s": 300.0, "last_run": null,
                 "duration_ms": null, "metric_count": null, "error": null, "warnings": [],
                 "stats": {"runs": 0, "errors": 0, "late": 0, "running": false}}
            ],
            "load_errors": [{"check": "broken", "config": "/c/broken.yaml", "check_id": null,
                             "error": {"message": "unable to import module 'broken'"}}],
            "validations": [{"check": "bad", "status": "not_ready", "messages": ["imports imp"]}]
        });
        let text = render_status(&body, 1000.0);
        assert_eq!(
            text,
            "Python 3.11.2 (datadog-checks-base 38.5.0), 4 runners\n\
             INSTANCE  VERSION      INTERVAL  LAST RUN   DURATION  METRICS  RUNS  ERRORS  LATE  STATUS\n\
             good:1    1.0.0        15s       10s ago    1.5ms     2        3     0       0     ok\n\
             bad:2     unversioned  1s        500ms ago  2.5s      0        1     1       0     error\n\
             new:3     2            5m        -          -         -        0     0       0     pending\n\
             errors:\n  bad:2: boom\n\
             warning: good:1: slow\n\
             load errors:\n  broken (/c/broken.yaml): unable to import module 'broken'\n\
             validation: bad is not_ready: imports imp\n"
        );
        let disabled = serde_json::json!({
            "python": {"available": true, "version": "3.11.2"},
            "runners": 1,
            "instances": [
                {"id": "hog:4", "version": "1", "interval_s": 1.0, "last_run": 900.0,
                 "duration_ms": 30.0, "metric_count": 0,
                 "error": {"message": "memory limit exceeded: ...", "traceback": ""},
                 "warnings": [],
                 "disabled": {"reason": "memory_limit", "limit_bytes": 100, "inuse_bytes": 99,
                              "at": 900.0, "message": "disabled: over the limit"},
                 "stats": {"runs": 1, "errors": 1, "late": 0, "running": false}}
            ],
            "load_errors": []
        });
        let text = render_status(&disabled, 1000.0);
        let row = text.lines().nth(2).unwrap();
        assert!(
            row.starts_with("hog:4 ") && row.ends_with(" disabled"),
            "{text}"
        );
        assert!(
            text.contains("disabled: hog:4: disabled: over the limit (since 100s ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("errors:\n  hog:4: memory limit exceeded"),
            "{text}"
        );
        let down = serde_json::json!({"python": {"available": false, "error": "no venv"},
                                      "instances": [], "load_errors": []});
        assert_eq!(
            render_status(&down, 0.0),
            "Python is unavailable: no venv\nno check instance is scheduled\n"
        );
    }
}
