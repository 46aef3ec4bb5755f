//! The safe-experiment parts of the command line (`docs/experiment-safety.md`): the body of
//! `experiment start` with its policy flags, the watch lines of `outpost status`, and
//! `outpost experiment watch PKG`, which follows a watch until the experiment is promoted
//! (exit 0) or rolled back (exit 1). The same follows the watch of a config experiment for
//! `outpost config-experiment watch PKG` (see [`Watched`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_api::ApiClient;
use outpost_types::wire::{
    ExperimentHistory, ExperimentWatch, HealthCheck, PackageStatus, StatusResponse, WatchSummary,
    parse_rfc3339,
};
use serde_json::{Map, Value, json};

use outpost_cli::ExitStatus;
use outpost_cli::args::{ExperimentPolicyArgs, GlobalArgs};
use outpost_cli::output::print_json;

use super::client::{path_segment, pick_socket, report_client_error};

/// How often `experiment watch` looks at `/status`.
const POLL: Duration = Duration::from_millis(200);
/// How many times `experiment watch` looks for the history entry of a watch that ended
/// (every [`POLL`]).
const HISTORY_TRIES: u32 = 25;

/// Which watch of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// The package experiment's (`experiment_watch`).
    Package,
    /// The config experiment's (`config_experiment_watch`).
    Config,
}

impl Watched {
    fn of(self, p: &PackageStatus) -> Option<ExperimentWatch> {
        match self {
            Self::Package => p.experiment_watch.clone(),
            Self::Config => p.config_experiment_watch.clone(),
        }
    }

    fn history_path(self, package: &str) -> String {
        let route = match self {
            Self::Package => "experiment",
            Self::Config => "config_experiment",
        };
        format!("/{}/{route}/history", path_segment(package))
    }

    /// `pkg` or `pkg config`, before a version in a line.
    fn label(self, package: &str) -> String {
        match self {
            Self::Package => package.to_string(),
            Self::Config => format!("{package} config"),
        }
    }
}

/// The body of `POST /{package}/experiment/start`: the version and the flags given (the
/// daemon fills in the rest and checks everything).
pub(crate) fn start_body(version: &str, policy: &ExperimentPolicyArgs) -> Value {
    let mut body = Map::new();
    body.insert("version".into(), json!(version));
    body.extend(policy_fields(policy));
    Value::Object(body)
}

/// The policy fields of a start body (`health`, `max_duration`, `auto_promote_after`) for the
/// flags given.
pub(crate) fn policy_fields(policy: &ExperimentPolicyArgs) -> Map<String, Value> {
    let mut health = Map::new();
    if let Some(cmd) = &policy.health_cmd {
        health.insert("command".into(), json!(["/bin/sh", "-c", cmd]));
    }
    for (key, value) in [
        ("interval", &policy.health_interval),
        ("timeout", &policy.health_timeout),
        ("grace", &policy.health_grace),
    ] {
        if let Some(v) = value {
            health.insert(key.into(), json!(v));
        }
    }
    if let Some(n) = policy.health_failures {
        health.insert("failures".into(), json!(n));
    }
    let mut body = Map::new();
    if !health.is_empty() {
        body.insert("health".into(), Value::Object(health));
    }
    if let Some(d) = &policy.max_duration {
        body.insert("max_duration".into(), json!(d));
    }
    if let Some(d) = &policy.auto_promote_after {
        body.insert("auto_promote_after".into(), json!(d));
    }
    body
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `1h02m`, `4m05s`, `12s`, `850ms`.
fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Time from now until an RFC 3339 time (`now` when past), for people.
fn until(at: &str, now: u64) -> String {
    parse_rfc3339(at).map_or_else(|| at.to_string(), |t| human(t.saturating_sub(now)))
}

/// One line per watched experiment, under the `outpost status` table.
pub(crate) fn print_watches(status: &StatusResponse) {
    let now = now_ms();
    for p in &status.remote_config_state {
        for which in [Watched::Package, Watched::Config] {
            if let Some(w) = which.of(p) {
                println!("{}", watch_line(&which.label(&p.package), &w, now));
            }
        }
    }
}

fn watch_line(package: &str, w: &ExperimentWatch, now: u64) -> String {
    let promote = w.auto_promote_at.as_deref().map_or_else(
        || "never".to_string(),
        |at| format!("in {}", until(at, now)),
    );
    let last = match &w.last_check {
        None => "no health run yet".to_string(),
        Some(c) => format!(
            "last health run {} {} ago",
            if c.ok { "passed" } else { "failed" },
            parse_rfc3339(&c.at).map_or_else(|| c.at.clone(), |t| human(now.saturating_sub(t)))
        ),
    };
    format!(
        "watch {package} {}: rolls back in {} unless promoted; auto-promote {promote}; {} consecutive failure(s); {last}",
        w.version,
        until(&w.deadline, now),
        w.consecutive_failures
    )
}

fn check_line(c: &HealthCheck) -> String {
    let result = match (c.ok, c.exit_code) {
        (true, _) => "pass".to_string(),
        (false, Some(code)) => format!("FAIL exit {code}"),
        (false, None) => "FAIL".to_string(),
    };
    let last_line = c
        .output_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    format!("{} {result} {last_line}", c.at)
        .trim_end()
        .to_string()
}

/// `outpost experiment watch PKG`.
pub(crate) fn watch(global: &GlobalArgs, package: &str) -> ExitStatus {
    watch_of(global, package, Watched::Package)
}

/// Follows watch `which` of `package`.
pub(crate) fn watch_of(global: &GlobalArgs, package: &str, which: Watched) -> ExitStatus {
    let runtime = match outpost_cli::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error watching experiment: cannot start the I/O runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    let socket = pick_socket(&global.daemon_sockets());
    let client = ApiClient::new(&socket);
    match runtime.block_on(follow(&client, global, package, which)) {
        Ok(code) => code,
        Err(e) => report_client_error(global, "watching experiment", &socket, &e),
    }
}

/// Follows watch `which` of `package` until it ends; 0 when its experiment became stable.
pub(crate) async fn follow(
    client: &ApiClient,
    global: &GlobalArgs,
    package: &str,
    which: Watched,
) -> Result<ExitStatus, outpost_api::ClientError> {
    let mut watched: Option<String> = None;
    let mut last_at = String::new();
    let say = |text: String| {
        if !global.json && global.quiet == 0 {
            println!("{text}");
        }
    };
    loop {
        let status: StatusResponse = client.get("/status").await?;
        let watch = status
            .remote_config_state
            .iter()
            .find(|p| p.package == package)
            .and_then(|p| which.of(p));
        match watch {
            Some(w) if watched.as_ref().is_none_or(|v| *v == w.version) => {
                if watched.is_none() {
                    say(watch_line(&which.label(package), &w, now_ms()));
                    watched = Some(w.version.clone());
                }
                if let Some(c) = w.last_check.filter(|c| c.at > last_at) {
                    emit(global, &c);
                    last_at = c.at;
                }
            }
            _ => {
                // Ended (or replaced by another version): the history says how.
                // The watch leaves /status as its operation ends; its history entry is
                // written under the same operation, so a watch seen running may need a moment
                // to appear there.
                let path = which.history_path(package);
                let mut tries = if watched.is_some() { HISTORY_TRIES } else { 1 };
                let history: ExperimentHistory = loop {
                    let history: ExperimentHistory = client.get(&path).await?;
                    tries -= 1;
                    let found = history
                        .watches
                        .iter()
                        .any(|s| watched.as_ref().is_none_or(|v| *v == s.version));
                    if found || tries == 0 {
                        break history;
                    }
                    tokio::time::sleep(POLL).await;
                };
                let Some(end) = history
                    .watches
                    .iter()
                    .rev()
                    .find(|s| watched.as_ref().is_none_or(|v| *v == s.version))
                else {
                    eprintln!(
                        "error watching experiment: {} has no experiment and no past watch",
                        which.label(package)
                    );
                    return Ok(ExitStatus::Failure);
                };
                if watched.is_some() {
                    for c in end.checks.iter().filter(|c| c.at > last_at) {
                        emit(global, c);
                    }
                }
                return Ok(finish(global, &which.label(package), end));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn emit(global: &GlobalArgs, c: &HealthCheck) {
    if global.json {
        if let Ok(line) = serde_json::to_string(c) {
            println!("{line}");
        }
    } else if global.quiet == 0 {
        println!("{}", check_line(c));
    }
}

/// Reports how a watch ended: 0 when its experiment became stable, 1 otherwise.
fn finish(global: &GlobalArgs, package: &str, end: &WatchSummary) -> ExitStatus {
    let promoted = matches!(end.outcome.as_str(), "promoted" | "auto_promoted");
    if global.json {
        print_json(end);
    } else if global.quiet == 0 {
        let first = end.message.lines().next().unwrap_or("");
        if promoted {
            println!(
                "{package} {} promoted ({}): {first}",
                end.version, end.outcome
            );
        } else {
            println!(
                "{package} {} rolled back ({}): {first}",
                end.version, end.outcome
            );
        }
    }
    if promoted {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bodies_carry_only_the_flags_given() {
        let none = start_body("2", &ExperimentPolicyArgs::default());
        assert_eq!(none, json!({"version": "2"}));
        let all = start_body(
            "2",
            &ExperimentPolicyArgs {
                health_cmd: Some("curl -sf localhost:8080/health".into()),
                health_interval: Some("5s".into()),
                health_failures: Some(2),
                max_duration: Some("30m".into()),
                auto_promote_after: Some("10m".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            all,
            json!({
                "version": "2",
                "health": {"command": ["/bin/sh", "-c", "curl -sf localhost:8080/health"], "interval": "5s", "failures": 2},
                "max_duration": "30m",
                "auto_promote_after": "10m",
            })
        );
    }

    #[test]
    fn times_left_read_well() {
        assert_eq!(human(850), "850ms");
        assert_eq!(human(12_400), "12s");
        assert_eq!(human(245_000), "4m05s");
        assert_eq!(human(3_720_000), "1h02m");
        let w = ExperimentWatch {
            version: "2".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            deadline: "2026-01-01T01:00:00.000Z".into(),
            auto_promote_at: None,
            consecutive_failures: 1,
            last_check: None,
        };
        let now = parse_rfc3339("2026-01-01T00:30:00.000Z").unwrap();
        let line = watch_line("pkg", &w, now);
        assert!(
            line.contains("rolls back in 30m00s") && line.contains("auto-promote never"),
            "{line}"
        );
    }
}
