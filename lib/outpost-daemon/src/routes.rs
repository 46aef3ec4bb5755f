//! The LocalAPI (`spec/localapi.md`) as an `outpost-api` module mounted at the root, so its
//! routes keep the Datadog daemon's paths.
//!
//! | method | path | handler |
//! |---|---|---|
//! | GET | `/status` | [`status`] |
//! | GET, POST | `/catalog` | [`catalog`], [`set_catalog`] |
//! | POST | `/{package}/install` | [`install`] |
//! | POST | `/{package}/experiment/start` | [`start_experiment`] |
//! | POST | `/{package}/experiment/stop` | [`stop_experiment`] |
//! | POST | `/{package}/experiment/promote` | [`promote_experiment`] |
//! | GET | `/{package}/experiment/history` | [`experiment_history`] |
//! | POST | `/{package}/remove` | [`remove`] |
//!
//! The config routes (`/config_catalog`, `/{package}/config_experiment/...`) are in
//! [`crate::config_routes`], mounted into the same root module.
//!
//! Every mutating body may carry `expected_state` (see [`crate::ops::expected`]).
//! Names and versions are validated before any work (400). A mutation of a package the fleet
//! document manages is refused with 409 `managed_by_fleet` unless its body has
//! `"force": true` (see [`crate::fleet`]). Every mutating body may carry `expected_state` (see
//! [`crate::ops::expected`]). Conventions (JSON bodies, error
//! shape, 404/405/413/415, access control by peer uid) are enforced by the router.

use std::sync::Arc;

use axum::extract::{Path, State};
use outpost_api::{Caller, ErrorResponse, Json, Module};
use outpost_types::wire::{
    Catalog, Empty, ExpectedState, ExperimentHistory, ExperimentStartParams, OperationParams,
    TaskParams,
};
use outpost_types::{ErrorCode, PackageName, Version};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::DaemonError;
use crate::ops::{Daemon, Requester, StatusBody};

impl From<DaemonError> for ErrorResponse {
    fn from(e: DaemonError) -> Self {
        ErrorResponse::new(e.code(), e.message())
    }
}

type Result<T> = std::result::Result<Json<T>, ErrorResponse>;

/// A request body that must be a JSON object.
pub(crate) type ObjectBody = Option<Json<Map<String, Value>>>;

/// Decodes an object body into `T` (`None` when the request had no body). serde would also
/// take a JSON array for a struct (`["1.0"]` as `{"version": "1.0"}`); the contract calls that
/// an ill-typed body, so the top level must be an object.
pub(crate) fn decode<T: DeserializeOwned>(
    body: ObjectBody,
) -> std::result::Result<Option<T>, ErrorResponse> {
    body.map(|Json(map)| {
        serde_json::from_value(Value::Object(map))
            .map_err(|e| ErrorResponse::bad_request(format!("invalid request body: {e}")))
    })
    .transpose()
}

/// The LocalAPI module, mounted at the root namespace.
pub fn module(daemon: Arc<Daemon>) -> Module {
    Module::root("localapi")
        .get("/status", status)
        .get("/catalog", catalog)
        .post("/catalog", set_catalog)
        .post("/{package}/install", install)
        .post("/{package}/experiment/start", start_experiment)
        .post("/{package}/experiment/stop", stop_experiment)
        .post("/{package}/experiment/promote", promote_experiment)
        .get("/{package}/experiment/history", experiment_history)
        .post("/{package}/remove", remove)
        .with_state(daemon)
}

pub(crate) fn requester(caller: Option<&Caller>) -> Requester {
    Requester {
        uid: caller.map(|c| c.uid),
        pid: caller
            .and_then(|c| c.pid)
            .and_then(|p| i32::try_from(p).ok()),
    }
}

/// `"force": true` in a mutation's body: a local change of a package the fleet manages.
fn force(body: &ObjectBody) -> std::result::Result<bool, ErrorResponse> {
    match body.as_ref().and_then(|Json(map)| map.get("force")) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ErrorResponse::bad_request(
            "invalid request body: force: expected true or false",
        )),
    }
}

/// Refuses (409 `managed_by_fleet`) a local mutation of a package the fleet document
/// manages, unless the body says `"force": true`.
pub(crate) fn managed(
    d: &Daemon,
    name: &PackageName,
    body: &ObjectBody,
    operation: &str,
    caller: Option<&Caller>,
) -> std::result::Result<(), ErrorResponse> {
    d.check_managed(name, force(body)?, operation, requester(caller))?;
    Ok(())
}

pub(crate) fn package(name: String) -> std::result::Result<PackageName, ErrorResponse> {
    PackageName::new(name).map_err(|e| ErrorResponse::new(ErrorCode::BadRequest, e.to_string()))
}

fn version(v: String) -> std::result::Result<Version, ErrorResponse> {
    if v.is_empty() {
        return Err(ErrorResponse::bad_request(
            "a version is required: {\"version\": \"...\"}",
        ));
    }
    Version::new(v).map_err(|e| ErrorResponse::new(ErrorCode::BadRequest, e.to_string()))
}

/// `GET /status`: never waits for a running operation; served from a cache of the
/// serialised body while nothing changed (see [`Daemon::status_body`]).
pub async fn status(State(d): State<Arc<Daemon>>) -> Result<StatusBody> {
    Ok(Json(d.status_body()?))
}

/// `GET /catalog`.
pub async fn catalog(State(d): State<Arc<Daemon>>) -> Json<Catalog> {
    Json(d.catalog())
}

/// `POST /catalog`: replace the catalog (validated; unchanged on any invalid entry). A
/// catalog that touches the entries of a package the fleet manages is refused (409
/// `managed_by_fleet`) unless the body says `"force": true`.
pub async fn set_catalog(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    body: ObjectBody,
) -> Result<Empty> {
    let force = force(&body)?;
    let Some(catalog) = decode::<Catalog>(body)? else {
        return Err(ErrorResponse::bad_request(
            "a catalog body is required: {\"packages\": [...]}",
        ));
    };
    d.check_catalog_managed(&catalog, force, requester(caller.as_ref()))?;
    d.set_catalog(catalog, requester(caller.as_ref()))?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/install`: the body may be omitted when the catalog has exactly one version
/// of the package for this host.
pub async fn install(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "install", caller.as_ref())?;
    let params = decode::<TaskParams>(body)?;
    let version = d.install_version(&name, params.as_ref())?;
    let (args, extensions, expected) = params
        .map(|p| {
            (
                p.install_args.unwrap_or_default(),
                p.extensions,
                p.expected_state,
            )
        })
        .unwrap_or_default();
    d.install_expecting(
        name,
        version,
        args,
        extensions,
        expected,
        requester(caller.as_ref()),
    )
    .await?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/experiment/start`: `{"version": "..."}` required; the optional safety
/// policy (`health`, `max_duration`, `auto_promote_after`) is checked before any work, and a
/// malformed one is a 400 naming the field (`docs/experiment-safety.md`).
pub async fn start_experiment(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "start_experiment", caller.as_ref())?;
    let Some(Json(map)) = body else {
        return Err(ErrorResponse::bad_request(
            "a body is required: {\"version\": \"...\"}",
        ));
    };
    // The task parameters first, with the messages install gives for the same fields.
    let task = decode::<TaskParams>(Some(Json(map.clone())))?;
    let expected = task.and_then(|t| t.expected_state);
    let params = ExperimentStartParams::from_map(&map)
        .map_err(|e| ErrorResponse::bad_request(format!("invalid request body: {e}")))?;
    let version = version(params.version.clone())?;
    d.start_experiment_expecting(name, version, params, expected, requester(caller.as_ref()))
        .await?;
    Ok(Json(Empty {}))
}

/// `GET /{package}/experiment/history`: the last 20 watches of the package, oldest first,
/// with their last health runs (`{"package", "watches": [...]}`); empty for a package that
/// never had one.
pub async fn experiment_history(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<ExperimentHistory> {
    Ok(Json(d.experiment_history(&package(name)?)?))
}

/// The `expected_state` of an optional body of `stop`, `promote` or `remove`.
pub(crate) fn expected(
    body: ObjectBody,
) -> std::result::Result<Option<ExpectedState>, ErrorResponse> {
    Ok(decode::<OperationParams>(body)?.and_then(|p| p.expected_state))
}

/// `POST /{package}/experiment/stop`: no experiment is a no-op.
pub async fn stop_experiment(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "stop_experiment", caller.as_ref())?;
    d.stop_experiment_expecting(name, expected(body)?, requester(caller.as_ref()))
        .await?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/experiment/promote`: no experiment is 409 `invalid_state`.
pub async fn promote_experiment(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "promote_experiment", caller.as_ref())?;
    d.promote_experiment_expecting(name, expected(body)?, requester(caller.as_ref()))
        .await?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/remove`: refused with 409 while a version is in use.
pub async fn remove(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "remove", caller.as_ref())?;
    d.remove_expecting(name, expected(body)?, requester(caller.as_ref()))
        .await?;
    Ok(Json(Empty {}))
}
