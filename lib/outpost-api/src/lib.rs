//! The HTTP machinery both outpost processes share: a module router that enforces the API
//! conventions, a Unix-socket server with peer credentials, a caller-identity cache,
//! a Prometheus telemetry registry, `/debug/vars`, and the client the CLI uses.
//!
//! # Module model
//! An API is assembled from [`Module`]s. A module is a named group of routes mounted under
//! `/<name>` ([`Module::new`]) or at the root ([`Module::root`], the daemon's LocalAPI, so its
//! routes keep the spec's paths `/status`, `/{package}/install`, ...). Handlers are ordinary
//! axum handlers (extractors, `State<S>` via [`Module::with_state`]). The [`ApiBuilder`] keeps a
//! registry of `(path, method) -> handler`: registering the same route twice replaces the
//! first handler, and [`ApiBuilder::build`] turns the registry into one router (a conflict
//! between two templates, an invalid path or name is an [`Error`], not a panic).
//!
//! Each mounted module has a [`ModuleHandle`] to stop and start it at run time; a stopped
//! module's routes answer `503` `{"error":{"message":"module stopped","code":"unavailable"}}`.
//! Every request runs in a tracing span `api.request` with the fields `http.method`,
//! `http.route` (the template), `api.module` and `http.status`, and is counted in
//! [`REQUESTS_METRIC`] (`outpost_api_requests_total{module,route,method,status}`; requests
//! matching no route are counted with `module="-",route="-"`).
//!
//! Ready-made modules: [`Telemetry::module`] (`GET /telemetry`, Prometheus text 0.0.4) and
//! [`DebugVars::module`] (`GET /debug/vars`, JSON from named providers).
//!
//! # Conventions (enforced for every module)
//! * Every response body is JSON with `Content-Type: application/json` and a trailing
//!   newline. Handlers return [`Json<T>`] or [`ErrorResponse`] (which already comply); a
//!   response from anything else is normalised on the way out: a JSON body gets its newline,
//!   an error status with a non-JSON body (say an axum `Path` rejection) becomes the JSON
//!   error with that text as its message, an empty success becomes `{}`. Non-JSON successes
//!   such as the Prometheus exposition are left as they are.
//! * Errors are `{"error":{"message":"...","code":"..."}}` with the status from
//!   [`outpost_types::ErrorCode::http_status`].
//! * Unknown route: 404 `not_found`. Known path, wrong method: 405 `method_not_allowed` with
//!   an `Allow` header (`GET` routes also answer `HEAD`).
//! * A path with a `.` or `..` segment, literal or percent-encoded (`%2e%2e`), is 400
//!   `bad_request` before routing: it is never normalised into another route.
//! * A request body over 1 MiB ([`BODY_LIMIT`]) is 413 `payload_too_large`, with a
//!   `Content-Length` (not read at all) or chunked (counted as it arrives; the connection is
//!   closed after the answer since the rest was not read).
//! * A request with a body whose `Content-Type` is missing or not `application/json` is 415
//!   `unsupported_media_type`; parameters such as `; charset=utf-8` are accepted. A request
//!   without a body (none, or `Content-Length: 0`) needs no `Content-Type`.
//! * The [`Json<T>`] extractor answers 400 with serde's message for malformed or ill-typed
//!   bodies and ignores unknown fields; `Option<Json<T>>` is `None` when there is no body.
//! * A handler that panics is answered 500 `internal`; the server keeps running.
//!
//! # Security model
//! * The socket is created with mode 0700 at bind time (umask around `bind`), so only its
//!   owner and root can connect. A stale socket is replaced; a live one is never stolen; a
//!   non-socket file at the path is never removed ([`Server::bind_unix`]).
//! * Each connection's peer credentials are read with `SO_PEERCRED` when it is accepted and
//!   offered to handlers as a [`Caller`] (uid, gid, pid, container id from
//!   `/proc/<pid>/cgroup` through the [`CallerCache`]).
//! * Reads (`GET`, `HEAD`, `OPTIONS`) are open to anyone who can connect. Everything else is
//!   privileged ([`Access`]; overridable per route): allowed for uid 0, the server's own
//!   effective uid, and the uids/gids configured in `api.allow_uids` / `api.allow_gids`
//!   ([`AccessPolicy`]); others get 403 `forbidden`. Each privileged request is logged with
//!   the caller's uid and pid.
//! * The optional TCP listener ([`Server::bind_tcp`]) binds loopback addresses only (anything
//!   else, `0.0.0.0` included, is refused). It has no credentials: its callers count as
//!   the server's own uid only if the configuration explicitly enabled TCP (`api.tcp`, which
//!   [`AccessPolicy::from_config`] reads); otherwise they may only read.
//! * The read-only TCP listener ([`readonly`], for `/metrics` and status pages) can only hold
//!   `GET` routes, answers every other method 405 before routing, trusts no peer, and binds
//!   a non-loopback address only when told so (`allow_remote: true`).
//!
//! # Limits on slow and hostile peers
//! Each listener bounds what one connection may hold ([`ServerLimits`], set with
//! [`Server::limits`]; details in [`server`](server#slow-and-hostile-peers)):
//!
//! | limit | default | when it is reached |
//! |---|---|---|
//! | header read timeout | 10 s | no complete request head since the accept or the last answer: the connection is closed |
//! | body read timeout | 10 s | the body is not all there 10 s after its head: 400 `bad_request`, `Connection: close` |
//! | write timeout | 10 s | the client has read nothing of its answer for 10 s: the connection is closed |
//! | connections per listener | 1024 | the oldest silent connection (no request in flight, nothing to read) is closed for the new one; with none, the new one waits |
//! | request body | 1 MiB ([`BODY_LIMIT`]) | 413 `payload_too_large` |
//!
//! A request answered without its body being read (404, 403, 405, 415, 503) has its body read
//! and discarded first (up to [`BODY_LIMIT`], within the body read timeout), so a client that
//! sends its body after its head always receives the JSON error rather than a reset; when the
//! body cannot be read (too large, too slow, held back by `Expect: 100-continue`) the answer
//! says `Connection: close`.
//!
//! # Example: mounting a module
//! ```no_run
//! use axum::extract::{Path, State};
//! use outpost_api::{Api, Caller, ErrorResponse, Json, Module, serve_unix};
//! use outpost_types::config::ApiConfig;
//! use outpost_types::ErrorCode;
//!
//! #[derive(Clone)]
//! struct Daemon { /* ... */ }
//!
//! #[derive(serde::Deserialize)]
//! struct InstallParams { version: Option<String> }
//!
//! async fn status(State(_d): State<Daemon>) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({"version": "0.1.0", "packages": {}}))
//! }
//!
//! async fn install(
//!     State(_d): State<Daemon>,
//!     caller: Caller,
//!     Path(package): Path<String>,
//!     params: Option<Json<InstallParams>>, // None when the request had no body
//! ) -> Result<Json<serde_json::Value>, ErrorResponse> {
//!     let Some(Json(params)) = params else {
//!         return Err(ErrorResponse::new(ErrorCode::BadRequest, "a version is required"));
//!     };
//!     tracing::info!(caller.uid = caller.uid, package.name = %package, "install");
//!     let _ = params.version;
//!     Ok(Json(serde_json::json!({})))
//! }
//!
//! # async fn run() -> Result<(), outpost_api::Error> {
//! let config = ApiConfig::default();
//! let telemetry = outpost_api::Telemetry::new();
//! let mut builder = Api::builder()
//!     .access_policy(outpost_api::AccessPolicy::from_config(&config))
//!     .telemetry(telemetry.clone());
//! let local_api = builder.mount(
//!     Module::root("localapi")
//!         .get("/status", status)
//!         .post("/{package}/install", install)
//!         .with_state(Daemon {}),
//! );
//! builder.mount(telemetry.module());                       // GET /telemetry
//! builder.mount(outpost_api::DebugVars::new().module());   // GET /debug/vars
//! let api = builder.build()?;
//!
//! local_api.stop();  // its routes now answer 503 `module stopped`
//! local_api.start();
//!
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! serve_unix("/opt/outpost/run/outpost.sock", api, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! # Client
//! [`ApiClient`] speaks HTTP/1.1 over the socket and tells apart "not reachable", "the API
//! said no" and "the exchange failed" ([`ClientError`]).
//!
//! The benchmarks' load generator is `outpost_testkit::loadgen`.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

pub mod caller;
pub mod client;
pub mod debug;
pub mod error;
pub mod exposition;
pub mod json;
mod middleware;
pub mod module;
pub mod page;
pub mod readonly;
pub mod server;
pub mod telemetry;

pub use caller::{
    AccessPolicy, Caller, CallerCache, CallerCacheConfig, Peer, PeerCredentials, Transport,
};
pub use client::{ApiClient, ClientError, ClientErrorKind};
pub use debug::DebugVars;
pub use error::{Error, ErrorResponse};
pub use json::Json;
pub use middleware::{BODY_LIMIT, dot_segment};
pub use module::{Access, Api, ApiBuilder, Module, ModuleHandle, REQUESTS_METRIC};
pub use readonly::{Exposure, ReadOnlyRoutes, ReadOnlyServer};
pub use server::{Server, ServerLimits, serve_unix};
pub use telemetry::{MetricKind, Telemetry};
