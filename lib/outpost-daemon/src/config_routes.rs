//! The config routes of the LocalAPI (`docs/config-experiments.md`), mounted at the root
//! beside [`crate::routes`].
//!
//! | method | path | handler |
//! |---|---|---|
//! | GET, POST | `/config_catalog` | [`config_catalog`], [`set_config_catalog`] |
//! | POST | `/{package}/config_experiment/start` | [`start_config_experiment`] |
//! | POST | `/{package}/config_experiment/stop` | [`stop_config_experiment`] |
//! | POST | `/{package}/config_experiment/promote` | [`promote_config_experiment`] |
//! | GET | `/{package}/config_experiment/history` | [`config_experiment_history`] |
//!
//! The config experiment routes of a package the fleet document manages answer 409
//! `managed_by_fleet` unless the body says `"force": true`, like the package's other local
//! mutations (see [`crate::fleet`]). The config catalog names no package (its entries are
//! keyed by id), so setting it touches no managed package.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use outpost_api::{Caller, ErrorResponse, Json, Module};
use outpost_config::{ConfigCatalog, ConfigOperations};
use outpost_types::wire::{Empty, ExpectedState, ExperimentHistory, ExperimentStartParams};
use serde::Deserialize;

use crate::ops::Daemon;
use crate::routes::{ObjectBody, decode, expected, managed, package, requester};

type Result<T> = std::result::Result<Json<T>, ErrorResponse>;

/// The config routes, mounted into the LocalAPI's root module.
pub fn module(daemon: Arc<Daemon>) -> Module {
    Module::root("localapi")
        .get("/config_catalog", config_catalog)
        .post("/config_catalog", set_config_catalog)
        .post(
            "/{package}/config_experiment/start",
            start_config_experiment,
        )
        .post("/{package}/config_experiment/stop", stop_config_experiment)
        .post(
            "/{package}/config_experiment/promote",
            promote_config_experiment,
        )
        .get(
            "/{package}/config_experiment/history",
            config_experiment_history,
        )
        .with_state(daemon)
}

/// Body of `POST /{package}/config_experiment/start`: a config catalog id, or the operations
/// inline; sealed secrets for either; an optional expected state; the watch's policy
/// (`health`, `max_duration`, `auto_promote_after`, read by [`ExperimentStartParams`]). Other
/// fields are ignored.
#[derive(Debug, Deserialize)]
struct StartBody {
    /// An id of the config catalog.
    #[serde(default)]
    version: Option<String>,
    /// The deployment inline.
    #[serde(default)]
    operations: Option<ConfigOperations>,
    /// Secret key -> base64 sealed box (`crypto_box_seal` to the daemon's public key).
    #[serde(default)]
    encrypted_secrets: BTreeMap<String, String>,
    /// The state the caller expects the package in (see `ops::expected`).
    #[serde(default)]
    expected_state: Option<ExpectedState>,
}

/// `GET /config_catalog`.
pub async fn config_catalog(State(d): State<Arc<Daemon>>) -> Result<ConfigCatalog> {
    Ok(Json(d.config_catalog()?))
}

/// `POST /config_catalog`: replace the config catalog (validated; unchanged on any bad entry,
/// which the 400 names).
pub async fn set_config_catalog(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    body: ObjectBody,
) -> Result<Empty> {
    let Some(catalog) = decode::<ConfigCatalog>(body)? else {
        return Err(ErrorResponse::bad_request(
            "a config catalog body is required: {\"<id>\": {\"id\": \"<id>\", \"file_operations\": [...]}}",
        ));
    };
    d.set_config_catalog(catalog, requester(caller.as_ref()))?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/config_experiment/start`: `{"version": "<id>"}` or
/// `{"operations": {"deployment_id", "file_operations"}}`, with optional
/// `"encrypted_secrets"` and the optional safety policy of the watch (a malformed one is a
/// 400 naming the field, before any work).
pub async fn start_config_experiment(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "start_config_experiment", caller.as_ref())?;
    let map = body.as_ref().map(|Json(map)| map.clone());
    let Some(body) = decode::<StartBody>(body)? else {
        return Err(ErrorResponse::bad_request(
            "a body is required: {\"version\": \"<config id>\"} or {\"operations\": {...}}",
        ));
    };
    let mut params = ExperimentStartParams::from_map(&map.unwrap_or_default())
        .map_err(|e| ErrorResponse::bad_request(format!("invalid request body: {e}")))?;
    let ops = match (body.version, body.operations) {
        (Some(id), None) if !id.is_empty() => {
            let entry = d.config_catalog_entry(&id)?;
            // The start's policy over the entry's, field by field.
            if let Some(below) = &entry.health {
                params.health = Some(params.health.unwrap_or_default().or(below));
            }
            entry.operations()
        }
        (None, Some(ops)) => ops,
        (Some(_), Some(_)) => {
            return Err(ErrorResponse::bad_request(
                "give either \"version\" (a config catalog id) or \"operations\", not both",
            ));
        }
        _ => {
            return Err(ErrorResponse::bad_request(
                "a config is required: {\"version\": \"<config id>\"} or {\"operations\": {...}}",
            ));
        }
    };
    let secrets = d.open_secrets(&body.encrypted_secrets)?;
    d.start_config_experiment(
        name,
        ops,
        secrets,
        params,
        body.expected_state,
        requester(caller.as_ref()),
    )
    .await?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/config_experiment/stop`: no config experiment is a no-op.
pub async fn stop_config_experiment(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(&d, &name, &body, "stop_config_experiment", caller.as_ref())?;
    d.stop_config_experiment(name, expected(body)?, requester(caller.as_ref()))
        .await?;
    Ok(Json(Empty {}))
}

/// `POST /{package}/config_experiment/promote`: no config experiment is 409 `invalid_state`.
pub async fn promote_config_experiment(
    State(d): State<Arc<Daemon>>,
    caller: Option<Caller>,
    Path(name): Path<String>,
    body: ObjectBody,
) -> Result<Empty> {
    let name = package(name)?;
    managed(
        &d,
        &name,
        &body,
        "promote_config_experiment",
        caller.as_ref(),
    )?;
    d.promote_config_experiment(name, expected(body)?, requester(caller.as_ref()))
        .await?;
    Ok(Json(Empty {}))
}

/// `GET /{package}/config_experiment/history`: the last 20 watches of the package's config
/// experiments, oldest first, with their last health runs (`{"package", "watches": [...]}`,
/// the shape of `/{package}/experiment/history`); empty for a package that never had one.
pub async fn config_experiment_history(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<ExperimentHistory> {
    Ok(Json(d.config_experiment_history(&package(name)?)?))
}
