//! The daemon's status page, served at `GET /` on its read-only listener
//! (`telemetry.listen`, through [`crate::listener::mounts`]): every package with its stable
//! and experiment versions, its last task (a progress bar while it downloads), and the watch
//! over a running experiment (time left until it is stopped or promoted, consecutive
//! failures, the last health check's output).
//!
//! The page, its assets and its update channel are [`outpost_api::page`]'s; this module says
//! what the tables hold ([`spec`], [`tables`]), from the same state as `GET /status`. Error
//! messages and outputs have the user information of any URL in them replaced by `***`.

use std::sync::Arc;
use std::time::Duration;

use outpost_api::ReadOnlyRoutes;
use outpost_api::page::{
    self, Cell, Column, Format, PageSource, PageSpec, RowInput, TableInput, TableSpec,
    redact_userinfo,
};
use outpost_types::wire::{Phase, StatusResponse, TaskState, parse_rfc3339};
use serde_json::{Value, json};

use crate::ops::Daemon;

/// How often the daemon's state is read at most, whatever the number of pages polling.
pub const MIN_REFRESH: Duration = Duration::from_millis(500);

/// The page's tables and columns.
pub fn spec() -> PageSpec {
    PageSpec {
        title: "outpost daemon".into(),
        tables: vec![
            TableSpec {
                name: "packages",
                title: "Packages",
                empty: "No package is installed.",
                columns: vec![
                    Column::new("p", "Package", Format::Text),
                    Column::new("sv", "Stable", Format::Text),
                    Column::new("ev", "Experiment", Format::Text),
                    Column::new("op", "Last task", Format::Text),
                    Column::new("ts", "Task state", Format::State),
                    Column::new("pr", "Progress", Format::Progress),
                    Column::new("ph", "Phase", Format::Text),
                    Column::new("te", "Task error", Format::Error),
                ],
            },
            TableSpec {
                name: "watch",
                title: "Experiments under watch",
                empty: "No experiment is running.",
                columns: vec![
                    Column::new("p", "Package", Format::Text),
                    Column::new("v", "Experiment", Format::Text),
                    Column::new("dl", "Stopped in", Format::Deadline),
                    Column::new("ap", "Promoted in", Format::Deadline),
                    Column::new("cf", "Consecutive failures", Format::Count),
                    Column::new("hs", "Last health check", Format::State),
                    Column::new("ho", "Output", Format::Details),
                ],
            },
            TableSpec {
                name: "daemon",
                title: "Daemon",
                empty: "",
                columns: vec![Column::new("v", "Version", Format::Text)],
            },
            TableSpec {
                name: "fleet",
                title: "Fleet",
                empty: "No fleet source is configured.",
                columns: vec![
                    Column::new("s", "Source", Format::Text),
                    Column::new("g", "Generation", Format::Text),
                    Column::new("c", "Converged", Format::Text),
                    Column::new("lp", "Last poll", Format::Text),
                    Column::new("sb", "Signed by", Format::Text),
                    Column::new("m", "Managed packages", Format::Text),
                    Column::new("sk", "Experiments not run here", Format::Text),
                    Column::new("le", "Last error", Format::Error),
                ],
            },
        ],
    }
}

#[allow(clippy::cast_precision_loss)] // display values
fn unix_seconds(rfc3339: &str) -> Value {
    parse_rfc3339(rfc3339).map_or(Value::Null, |ms| json!(ms as f64 / 1000.0))
}

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The rows of the page's tables for a `GET /status` answer.
#[allow(clippy::cast_precision_loss)] // display values
pub fn tables(status: &StatusResponse) -> Vec<TableInput> {
    let mut packages = Vec::new();
    let mut watch = Vec::new();
    for p in &status.remote_config_state {
        let task = p.task.as_ref();
        let running = task.is_some_and(|t| t.state == TaskState::Running);
        let progress = task.and_then(|t| t.progress.as_ref()).filter(|_| running);
        let fraction = progress
            .and_then(|pr| {
                pr.bytes_total
                    .filter(|t| *t > 0)
                    .map(|t| (pr.bytes_done as f64 / t as f64).min(1.0))
            })
            .map_or(Value::Null, |f| json!((f * 1000.0).round() / 1000.0));
        let phase = progress.map_or(Value::Null, |pr| {
            let done = pr.bytes_done as f64 / 1_048_576.0;
            json!(match pr.bytes_total {
                Some(t) => format!(
                    "{} {done:.1} of {:.1} MiB",
                    phase_name(pr.phase),
                    t as f64 / 1_048_576.0
                ),
                None => format!("{} {done:.1} MiB", phase_name(pr.phase)),
            })
        });
        let operation = task.map_or(Value::Null, |t| {
            json!(match &t.version {
                Some(v) => format!("{} {v}", t.operation),
                None => t.operation.clone(),
            })
        });
        let state = task.map_or(Value::Null, |t| {
            json!(match t.state {
                TaskState::Running => "running",
                TaskState::Done => "done",
                TaskState::Error => "failed",
                TaskState::InvalidState => "refused",
            })
        });
        let error = task
            .and_then(|t| t.error.as_ref())
            .map_or(Value::Null, |e| json!({"m": redact_userinfo(&e.message)}));
        let text = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
        packages.push(RowInput {
            key: p.package.clone(),
            cells: vec![
                Cell::Value(json!(p.package)),
                Cell::Value(text(&p.stable_version)),
                Cell::Value(text(&p.experiment_version)),
                Cell::Value(operation),
                Cell::Value(state),
                Cell::Value(fraction),
                Cell::Value(phase),
                Cell::Value(error),
            ],
        });
        // The package experiment's watch, then the config experiment's (`pkg (config)`).
        let watches = [
            (
                p.experiment_watch.as_ref(),
                p.package.clone(),
                p.package.clone(),
            ),
            (
                p.config_experiment_watch.as_ref(),
                format!("{}/config", p.package),
                format!("{} (config)", p.package),
            ),
        ];
        for (w, key, label) in watches {
            let Some(w) = w else {
                continue;
            };
            let (health, output) = match &w.last_check {
                Some(c) => {
                    let code = c
                        .exit_code
                        .map_or_else(|| "no exit code".to_owned(), |c| format!("exit {c}"));
                    (
                        json!(if c.ok { "passed" } else { "failed" }),
                        json!({"m": format!("{code}, {}", c.at), "tb": redact_userinfo(&c.output_tail)}),
                    )
                }
                None => (json!("pending"), Value::Null),
            };
            watch.push(RowInput {
                key,
                cells: vec![
                    Cell::Value(json!(label)),
                    Cell::Value(json!(w.version)),
                    Cell::Value(unix_seconds(&w.deadline)),
                    Cell::Value(
                        w.auto_promote_at
                            .as_deref()
                            .map_or(Value::Null, unix_seconds),
                    ),
                    Cell::Value(json!(w.consecutive_failures)),
                    Cell::Value(health),
                    Cell::Value(output),
                ],
            });
        }
    }
    vec![
        TableInput {
            name: "packages",
            rows: packages,
        },
        TableInput {
            name: "watch",
            rows: watch,
        },
        TableInput {
            name: "daemon",
            rows: vec![RowInput {
                key: "daemon".into(),
                cells: vec![Cell::Value(json!(status.version))],
            }],
        },
        TableInput {
            name: "fleet",
            rows: status.fleet.as_ref().map(fleet_row).into_iter().collect(),
        },
    ]
}

/// The fleet poller's state as one row: what was applied, whether the host is there, and why
/// the last poll failed (credentials in the source's URL blanked out).
fn fleet_row(f: &outpost_types::wire::FleetStatus) -> RowInput {
    let generation = f.applied_generation.map_or(Value::Null, |g| {
        json!(match &f.applied_digest {
            Some(d) => format!("{g} ({})", d.get(..19).unwrap_or(d)),
            None => g.to_string(),
        })
    });
    let signed = if f.unsigned {
        json!("unsigned (allow_unsigned)")
    } else {
        f.signed_by.as_deref().map_or(Value::Null, |k| json!(k))
    };
    let list = |v: Vec<String>| {
        if v.is_empty() {
            Value::Null
        } else {
            json!(v.join(", "))
        }
    };
    let error = f.last_error.as_deref().map_or(Value::Null, |e| {
        let reason = f.last_error_reason.as_deref().unwrap_or("error");
        json!({"m": redact_userinfo(&format!("{reason}: {e}"))})
    });
    RowInput {
        key: "fleet".into(),
        cells: vec![
            Cell::Value(json!(redact_userinfo(&f.source))),
            Cell::Value(generation),
            Cell::Value(json!(if f.converged { "yes" } else { "no" })),
            Cell::Value(f.last_poll_at.as_deref().map_or(Value::Null, |t| json!(t))),
            Cell::Value(signed),
            Cell::Value(list(f.managed.clone())),
            Cell::Value(list(
                f.skipped
                    .iter()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .collect(),
            )),
            Cell::Value(error),
        ],
    }
}

struct DaemonPage(Arc<Daemon>);

impl PageSource for DaemonPage {
    fn tables(&self) -> Vec<TableInput> {
        match self.0.status() {
            Ok(status) => tables(&status),
            Err(error) => {
                // The tables keep their last rows until the state can be read again.
                tracing::warn!(%error, "cannot read the state for the status page");
                Vec::new()
            }
        }
    }
}

/// The page's routes: `GET /`, its assets, `/api/page` and `/api/page/updates`.
pub fn routes(daemon: Arc<Daemon>) -> ReadOnlyRoutes {
    page::routes(spec(), Arc::new(DaemonPage(daemon)), MIN_REFRESH)
}

#[cfg(test)]
mod tests {
    use outpost_types::ErrorCode;
    use outpost_types::error::ApiError;
    use outpost_types::wire::{ExperimentWatch, HealthCheck, PackageStatus, Progress, Task};

    use super::*;

    fn cells(t: &TableInput) -> Vec<Value> {
        row_cells(t, 0)
    }

    /// The values of row `i` (a series as null).
    fn row_cells(t: &TableInput, i: usize) -> Vec<Value> {
        t.rows[i]
            .cells
            .iter()
            .map(|c| match c {
                Cell::Value(v) => v.clone(),
                Cell::Series { .. } => Value::Null,
            })
            .collect()
    }

    #[test]
    fn rows_show_progress_watch_and_no_credential() {
        let status = StatusResponse {
            version: "0.1.0".into(),
            packages: Default::default(),
            remote_config_state: vec![
                PackageStatus {
                    package: "tool".into(),
                    stable_version: "1".into(),
                    experiment_version: String::new(),
                    task: Some(Task {
                        id: "t1".into(),
                        operation: "install".into(),
                        version: Some("2".into()),
                        state: TaskState::Running,
                        error: None,
                        progress: Some(Progress {
                            phase: Phase::Download,
                            bytes_done: 1 << 20,
                            bytes_total: Some(4 << 20),
                        }),
                        started_at: Some("2026-12-03T06:00:00Z".into()),
                        finished_at: None,
                    }),
                    experiment_watch: None,
                    config_experiment_watch: None,
                    stable_config_version: String::new(),
                    experiment_config_version: String::new(),
                    extensions: Vec::new(),
                },
                PackageStatus {
                    package: "pkg".into(),
                    stable_version: "1".into(),
                    experiment_version: "2".into(),
                    task: Some(Task {
                        id: "t2".into(),
                        operation: "install".into(),
                        version: Some("3".into()),
                        state: TaskState::Error,
                        error: Some(ApiError::new(
                            ErrorCode::BadRequest,
                            "GET https://bob:s3cret@reg.example/v2/pkg failed",
                        )),
                        progress: None,
                        started_at: Some("2026-12-03T06:00:00Z".into()),
                        finished_at: Some("2026-12-03T06:00:02Z".into()),
                    }),
                    experiment_watch: Some(ExperimentWatch {
                        version: "2".into(),
                        started_at: "2026-12-03T06:00:00Z".into(),
                        deadline: "2026-12-03T06:10:00Z".into(),
                        auto_promote_at: None,
                        consecutive_failures: 1,
                        last_check: Some(HealthCheck {
                            at: "2026-12-03T06:01:00Z".into(),
                            ok: false,
                            exit_code: Some(3),
                            output_tail: "pulling oci://u:p@r/x\n".into(),
                        }),
                    }),
                    config_experiment_watch: Some(ExperimentWatch {
                        version: "c7".into(),
                        started_at: "2026-12-03T06:00:00Z".into(),
                        deadline: "2026-12-03T07:00:00Z".into(),
                        auto_promote_at: Some("2026-12-03T06:10:00Z".into()),
                        consecutive_failures: 0,
                        last_check: None,
                    }),
                    stable_config_version: String::new(),
                    experiment_config_version: String::new(),
                    extensions: Vec::new(),
                },
            ],
            ..Default::default()
        };
        let t = tables(&status);
        let tool = cells(&t[0]);
        assert_eq!(tool[3], json!("install 2"));
        assert_eq!(tool[4], json!("running"));
        assert_eq!(tool[5], json!(0.25));
        assert_eq!(tool[6], json!("download 1.0 of 4.0 MiB"));
        let pkg = row_cells(&t[0], 1);
        assert_eq!(pkg[4], json!("failed"));
        assert_eq!(pkg[5], Value::Null, "no bar once it is over");
        assert_eq!(
            pkg[7],
            json!({"m": "GET https://***@reg.example/v2/pkg failed"})
        );
        let watch = cells(&t[1]);
        assert_eq!(watch[1], json!("2"));
        assert_eq!(watch[2], json!(1_796_278_200.0));
        assert_eq!(watch[3], Value::Null);
        assert_eq!(watch[5], json!("failed"));
        assert_eq!(
            watch[6],
            json!({"m": "exit 3, 2026-12-03T06:01:00Z", "tb": "pulling oci://***@r/x\n"})
        );
        // The config experiment's watch has a row of its own, after the package's.
        assert_eq!(t[1].rows.len(), 2);
        assert_eq!(t[1].rows[1].key, "pkg/config");
        let config = row_cells(&t[1], 1);
        assert_eq!(config[0], json!("pkg (config)"));
        assert_eq!(config[1], json!("c7"));
        assert_eq!(config[5], json!("pending"));
        assert!(t[3].rows.is_empty(), "no fleet row without a fleet source");
    }

    #[test]
    fn the_fleet_row_shows_what_was_applied_and_why_a_poll_failed() {
        let status = StatusResponse {
            fleet: Some(outpost_types::wire::FleetStatus {
                source: "oci://bob:s3cret@reg.example/fleet:prod".into(),
                applied_generation: Some(7),
                applied_digest: Some(format!("sha256:{}", "ab".repeat(32))),
                last_poll_at: Some("2026-12-03T06:40:12.345Z".into()),
                last_error: Some("registry unreachable".into()),
                last_error_reason: Some("registry".into()),
                converged: false,
                signed_by: Some("A1B2C3D4E5F60708".into()),
                managed: vec!["db".into(), "web".into()],
                skipped: [("web".to_owned(), "outside_percent".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = tables(&status);
        let fleet = cells(&t[3]);
        assert_eq!(fleet[0], json!("oci://***@reg.example/fleet:prod"));
        assert_eq!(fleet[1], json!("7 (sha256:abababababab)"));
        assert_eq!(fleet[2], json!("no"));
        assert_eq!(fleet[3], json!("2026-12-03T06:40:12.345Z"));
        assert_eq!(fleet[4], json!("A1B2C3D4E5F60708"));
        assert_eq!(fleet[5], json!("db, web"));
        assert_eq!(fleet[6], json!("web: outside_percent"));
        assert_eq!(fleet[7], json!({"m": "registry: registry unreachable"}));
    }
}
