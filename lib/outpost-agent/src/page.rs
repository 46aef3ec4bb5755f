//! The agent's status page, served at `GET /` on the read-only listener beside `/metrics`
//! (`agent.listen`): every check instance with its state, last run, a sparkline of its last
//! [`RECENT_RUNS`](crate::scheduler::RECENT_RUNS) run durations, its run and error counts,
//! its metric count, its memory in use and its error (the Python traceback one click away);
//! the configurations that failed to load; the agent's runtime.
//!
//! The page, its assets and its update channel are [`outpost_api::page`]'s; this module says
//! what the tables hold ([`spec`], [`tables`]). `GET /api/checks` serves the same document as
//! `GET /checks` on the Unix socket.
//!
//! An instance's state is `disabled` (a run went over the check memory limit: it is no
//! longer scheduled; its error cell says why and since when, the run's error one click
//! away), `error` (its last run failed), `not ready` (Python is not available
//! or its custom check failed validation), `pending` (it has not run yet), `warning` (its
//! last run reported warnings) or `ok`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use outpost_api::page::{
    self, Cell, Column, Format, PageSource, PageSpec, RowInput, TableInput, TableSpec,
};
use outpost_api::{Json, ReadOnlyRoutes};
use outpost_checks::ReadyStatus;
use serde_json::{Value, json};

use crate::agent::{Agent, ChecksView, InstanceView};

/// How often the page's source is read at most, whatever the number of pages polling.
pub const MIN_REFRESH: Duration = Duration::from_millis(500);

/// The page's tables and columns.
pub fn spec() -> PageSpec {
    PageSpec {
        title: "outpost agent".into(),
        tables: vec![
            TableSpec {
                name: "checks",
                title: "Check instances",
                empty: "No check instance is scheduled.",
                columns: vec![
                    Column::new("c", "Check", Format::Text),
                    Column::new("i", "Instance", Format::Text),
                    Column::new("st", "State", Format::State),
                    Column::new("t", "Last run (UTC)", Format::Clock),
                    Column::new("d", "Duration", Format::Millis),
                    Column::new("s", "Last 60 runs", Format::Spark),
                    Column::new("r", "Runs", Format::Count),
                    Column::new("x", "Errors", Format::Count),
                    Column::new("n", "Metrics", Format::Count),
                    Column::new("m", "Memory", Format::Bytes),
                    Column::new("e", "Error", Format::Error),
                ],
            },
            TableSpec {
                name: "load",
                title: "Configurations not loaded",
                empty: "Every configuration loaded.",
                columns: vec![
                    Column::new("f", "File", Format::Text),
                    Column::new("c", "Check", Format::Text),
                    Column::new("e", "Error", Format::Error),
                ],
            },
            TableSpec {
                name: "agent",
                title: "Agent",
                empty: "",
                columns: vec![
                    Column::new("v", "Version", Format::Text),
                    Column::new("py", "Python", Format::Text),
                    Column::new("ru", "Runners", Format::Count),
                    Column::new("ab", "Abandoned runners", Format::Count),
                    Column::new("in", "Instances", Format::Count),
                ],
            },
        ],
    }
}

fn error_value(message: &str, traceback: &str) -> Value {
    json!({"m": message, "tb": traceback})
}

/// The state of an instance (see the [module docs](self)).
pub fn state(i: &InstanceView, python: bool, ready: Option<ReadyStatus>) -> &'static str {
    if i.disabled.is_some() {
        "disabled"
    } else if i.error.is_some() {
        "error"
    } else if !python || ready.is_some_and(|r| r != ReadyStatus::Ready) {
        "not ready"
    } else if i.last_run.is_none() {
        "pending"
    } else if !i.warnings.is_empty() {
        "warning"
    } else {
        "ok"
    }
}

#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // display values
fn instance_row(i: &InstanceView, python: bool, ready: Option<ReadyStatus>) -> RowInput {
    let (runs, errors, recent) = i.stats.as_ref().map_or((0, 0, Vec::new()), |s| {
        (s.runs, s.errors, s.recent_ms.clone())
    });
    let error = match (&i.error, i.warnings.is_empty()) {
        _ if i.disabled.is_some() => {
            let (m, tb) = i.disabled.as_ref().zip(i.error.as_ref()).map_or_else(
                || (String::new(), String::new()),
                |(d, e)| {
                    (
                        d.message.clone(),
                        format!("{}\n\n{}", e.message, e.traceback),
                    )
                },
            );
            error_value(&m, &tb)
        }
        (Some(e), _) => error_value(&e.message, &e.traceback),
        (None, false) => json!({"m": i.warnings.join("\n")}),
        (None, true) => Value::Null,
    };
    // Whole seconds and whole KiB: what the page shows, and fewer changes to send.
    let last_run = i.last_run.map_or(Value::Null, |t| json!(t.floor() as i64));
    let memory = i
        .memory
        .map_or(Value::Null, |m| json!(m.inuse_bytes / 1024 * 1024));
    RowInput {
        key: i.id.clone(),
        cells: vec![
            Cell::Value(json!(i.check)),
            Cell::Value(json!(i.id)),
            Cell::Value(json!(state(i, python, ready))),
            Cell::Value(last_run),
            Cell::Value(
                i.duration_ms
                    .map_or(Value::Null, |d| json!(page::round1(d))),
            ),
            Cell::Series {
                total: runs,
                tail: recent,
            },
            Cell::Value(json!(runs)),
            Cell::Value(json!(errors)),
            Cell::Value(i.metric_count.map_or(Value::Null, |n| json!(n))),
            Cell::Value(memory),
            Cell::Value(error),
        ],
    }
}

/// The rows of the page's tables for a view of the checks.
pub fn tables(view: &ChecksView) -> Vec<TableInput> {
    let python = view.python.available;
    let ready: HashMap<&str, ReadyStatus> = view
        .validations
        .iter()
        .map(|v| (v.check.as_str(), v.status))
        .collect();
    let checks = view
        .instances
        .iter()
        .map(|i| instance_row(i, python, ready.get(i.check.as_str()).copied()))
        .collect();
    let load = view
        .load_errors
        .iter()
        .map(|e| {
            let file = e
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let file = match e.index {
                Some(i) => format!("{file} (instance {i})"),
                None => file,
            };
            let check = e.check.clone().unwrap_or_default();
            RowInput {
                key: format!("{file}\u{0}{check}\u{0}{}", e.error.message),
                cells: vec![
                    Cell::Value(json!(file)),
                    Cell::Value(json!(check)),
                    Cell::Value(error_value(&e.error.message, &e.error.traceback)),
                ],
            }
        })
        .collect();
    let python_text = match (&view.python.error, &view.python.info) {
        (Some(e), _) => format!("not available: {e}"),
        (None, Some(info)) => format!("available ({})", info.version),
        (None, None) => "available".to_owned(),
    };
    let agent = vec![RowInput {
        key: "agent".into(),
        cells: vec![
            Cell::Value(json!(outpost_types::VERSION)),
            Cell::Value(json!(python_text)),
            Cell::Value(json!(view.runners)),
            Cell::Value(json!(view.abandoned_runners)),
            Cell::Value(json!(view.instances.len())),
        ],
    }];
    vec![
        TableInput {
            name: "checks",
            rows: checks,
        },
        TableInput {
            name: "load",
            rows: load,
        },
        TableInput {
            name: "agent",
            rows: agent,
        },
    ]
}

struct AgentPage(Agent);

impl PageSource for AgentPage {
    fn tables(&self) -> Vec<TableInput> {
        tables(&self.0.checks_view())
    }
}

async fn checks(State(agent): State<Agent>) -> Json<ChecksView> {
    Json(agent.checks_view())
}

/// The page's routes (`GET /`, its assets, `/api/page`, `/api/page/updates`) and
/// `GET /api/checks`, for the read-only listener.
pub fn routes(agent: &Agent) -> Vec<ReadOnlyRoutes> {
    vec![
        page::routes(spec(), Arc::new(AgentPage(agent.clone())), MIN_REFRESH),
        ReadOnlyRoutes::new("api")
            .get("/checks", checks)
            .with_state(agent.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::agent::DisabledView;
    use crate::scheduler::DisableReason;
    use outpost_checks::CheckError;

    fn instance(disabled: bool) -> InstanceView {
        let reason = DisableReason::MemoryLimit {
            limit_bytes: 100,
            inuse_bytes: 99,
        };
        InstanceView {
            check: "hog".into(),
            id: "hog:1".into(),
            version: "1".into(),
            source: "custom",
            config: PathBuf::from("/c/hog.yaml"),
            index: 0,
            interval_s: 1.0,
            last_run: Some(1000.0),
            duration_ms: Some(3.0),
            error: Some(CheckError {
                message: "memory limit exceeded".into(),
                traceback: "Traceback".into(),
            }),
            warnings: Vec::new(),
            metric_count: Some(0),
            stats: None,
            memory: None,
            disabled: disabled.then(|| DisabledView {
                reason,
                at: crate::scheduler::unix_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(9)),
                message: "disabled: over the limit".into(),
            }),
        }
    }

    #[test]
    fn a_disabled_instance_says_so_and_why() {
        let row = instance_row(&instance(true), true, None);
        let Cell::Value(state) = &row.cells[2] else {
            panic!("the state is a value");
        };
        assert_eq!(state, "disabled");
        let Cell::Value(error) = &row.cells[10] else {
            panic!("the error is a value");
        };
        assert_eq!(error["m"], "disabled: over the limit");
        assert_eq!(error["tb"], "memory limit exceeded\n\nTraceback");
        assert_eq!(state_of(&instance(false)), "error");
    }

    fn state_of(i: &InstanceView) -> &'static str {
        state(i, true, None)
    }
}
