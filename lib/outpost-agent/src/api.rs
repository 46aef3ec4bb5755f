//! The agent's API modules, mounted by the `outpost-api` router:
//!
//! | route | answer |
//! |---|---|
//! | `GET /checks` | [`ChecksView`](crate::ChecksView): every instance with its last run, error, warnings, metric count, statistics and memory; load errors; validations; the Python status |
//! | `POST /checks/{name}/run` | runs every instance of the check now: the `outpost check run --json` document |
//! | `POST /checks/{name}/enable` | enables the disabled instance with that ID, or every disabled instance of the check with that name: [`EnableSummary`](crate::EnableSummary); 404 `not_found` when nothing has that name; 400 `bad_request` naming the instances that could not be loaded again |
//! | `POST /checks/reload` | reloads the configurations: [`ReloadSummary`](crate::ReloadSummary); 400 `bad_request` listing the load errors when any configuration failed to load |
//! | `GET /telemetry` | Prometheus text 0.0.4 (see [`crate::telemetry`]) |
//! | `GET /debug/vars` | JSON: `rtloader` (the expvar memory map, with `Checks` by check ID), `memtrack` (the full snapshot), `scheduler`, `checks` (statistics and memory per instance), `agent` |
//!
//! The read-only TCP listener (`agent.listen`, `outpost agent --listen`) serves
//! [`metrics_routes`]: `GET /metrics`, the same exposition as `GET /telemetry`, in Prometheus
//! text 0.0.4 or OpenMetrics 1.0.0 as the scraper's `Accept` asks
//! ([`outpost_api::exposition`]), and the status page's routes ([`crate::page`]).
//!
//! `POST`s are privileged (the socket's owner, root, and `api.allow_uids`/`allow_gids`); the
//! router logs their caller.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use outpost_api::{Api, DebugVars, ErrorResponse, Json, Module, ReadOnlyRoutes, Telemetry};
use outpost_checks::memtrack;

use crate::agent::{Agent, ChecksView, EnableSummary, ReloadSummary};
use crate::error::AgentError;

/// The `Content-Type` of the exposition.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn list(State(agent): State<Agent>) -> Json<ChecksView> {
    Json(agent.checks_view())
}

async fn run_check(
    State(agent): State<Agent>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ErrorResponse> {
    if outpost_checks::conf_d::validate_check_name(&name).is_err() {
        return Err(AgentError::UnknownCheck { name }.into());
    }
    Ok(Json(agent.run_check(&name).await?))
}

/// A reload that left any configuration unloaded answers 400 `bad_request` with every load
/// error in the message (what did load is applied all the same).
async fn reload(State(agent): State<Agent>) -> Result<Json<ReloadSummary>, ErrorResponse> {
    let summary = agent.reload().await?;
    match summary.failure_message() {
        None => Ok(Json(summary)),
        Some(message) => Err(ErrorResponse::bad_request(message)),
    }
}

/// `name` is an instance ID or a check name (see [`Agent::enable`]).
async fn enable(
    State(agent): State<Agent>,
    Path(name): Path<String>,
) -> Result<Json<EnableSummary>, ErrorResponse> {
    let summary = agent.enable(&name).await?;
    match summary.failure_message() {
        None => Ok(Json(summary)),
        Some(message) => Err(ErrorResponse::bad_request(message)),
    }
}

/// The `checks` module.
pub fn checks_module(agent: Agent) -> Module {
    Module::new("checks")
        .get("/", list)
        .post("/reload", reload)
        .post("/{name}/run", run_check)
        .post("/{name}/enable", enable)
        .with_state(agent)
}

#[derive(Clone)]
struct TelemetryState {
    agent: Agent,
    api: Telemetry,
}

async fn exposition(State(s): State<TelemetryState>) -> Response {
    // Rendering 10,000 series takes about a millisecond: no need to leave the runtime.
    let text = crate::telemetry::render(&s.agent, &s.api);
    let mut response = Body::from(text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    response
}

/// The `telemetry` module: `GET /telemetry`. `api` is the registry the router counts requests
/// in.
pub fn telemetry_module(agent: Agent, api: Telemetry) -> Module {
    Module::new("telemetry")
        .get("/", exposition)
        .with_state(TelemetryState { agent, api })
}

async fn metrics(State(s): State<TelemetryState>, headers: HeaderMap) -> Response {
    outpost_api::exposition::respond(&headers, crate::telemetry::render(&s.agent, &s.api))
}

/// The routes of the read-only listener: `GET /metrics`. `api` is the registry of the agent's
/// API (its request counters are part of the exposition).
pub fn metrics_routes(agent: Agent, api: Telemetry) -> ReadOnlyRoutes {
    ReadOnlyRoutes::new("metrics")
        .get("/", metrics)
        .with_state(TelemetryState { agent, api })
}

/// The `/debug/vars` providers of the agent.
pub fn debug_vars(agent: &Agent) -> DebugVars {
    let vars = DebugVars::new();
    vars.register("rtloader", || memtrack::snapshot().rtloader_expvar());
    vars.register("memtrack", || {
        serde_json::to_value(memtrack::snapshot()).unwrap_or(serde_json::Value::Null)
    });
    {
        let a = agent.clone();
        vars.register("scheduler", move || {
            serde_json::to_value(a.scheduler_stats()).unwrap_or(serde_json::Value::Null)
        });
    }
    {
        let a = agent.clone();
        vars.register("checks", move || {
            let view = a.checks_view();
            let checks: serde_json::Map<String, serde_json::Value> = view
                .instances
                .into_iter()
                .map(|i| {
                    (
                        i.id.clone(),
                        serde_json::json!({
                            "check": i.check,
                            "stats": i.stats,
                            "memory": i.memory,
                        }),
                    )
                })
                .collect();
            serde_json::Value::Object(checks)
        });
    }
    {
        let a = agent.clone();
        vars.register("agent", move || a.debug_vars());
    }
    vars
}

/// Builds the agent's API: `checks`, `telemetry` and `debug`, with the access policy of the
/// configuration's `api:` section.
///
/// # Errors
/// [`AgentError::Api`] when the router cannot be built.
pub fn build_api(agent: &Agent, access: outpost_api::AccessPolicy) -> Result<Api, AgentError> {
    let telemetry = Telemetry::new();
    let mut builder = Api::builder()
        .access_policy(access)
        .telemetry(telemetry.clone());
    builder.mount(checks_module(agent.clone()));
    builder.mount(telemetry_module(agent.clone(), telemetry));
    builder.mount(debug_vars(agent).module());
    Ok(builder.build()?)
}
