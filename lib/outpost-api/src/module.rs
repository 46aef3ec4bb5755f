//! Modules, the route registry, and the assembled [`Api`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};
use http::{HeaderValue, Method};

use crate::caller::{AccessPolicy, CallerCache};
use crate::error::Error;
use crate::middleware::{self, MethodRoute, PathInfo, Shared, StatusCounters};
use crate::telemetry::{MetricKind, Telemetry};

/// The metric every request is counted in.
pub const REQUESTS_METRIC: &str = "outpost_api_requests_total";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can connect to the socket.
    Open,
    /// Only callers the [`AccessPolicy`] allows to mutate (others get 403 `forbidden`).
    Privileged,
}

impl Access {
    /// The default for a method: `GET`, `HEAD` and `OPTIONS` are reads (open), everything
    /// else mutates (privileged).
    pub fn for_method(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Self::Open
        } else {
            Self::Privileged
        }
    }
}

struct RouteDef<S> {
    method: Method,
    path: String,
    access: Access,
    handler: MethodRouter<S>,
}

/// A group of routes mounted under one namespace, stopped and started as a unit.
///
/// Build it with [`Module::new`] (mounted under `/<name>`) or [`Module::root`] (mounted at `/`,
/// the name only labels spans and metrics), add routes with ordinary axum handlers, give it
/// its state with [`Module::with_state`], and mount it with [`ApiBuilder::mount`].
///
/// Route paths are relative to the namespace and use axum's syntax (`/{package}/install`,
/// `/{*rest}`); `"/"` is the namespace itself. Registering the same method and path twice
/// replaces the first handler.
pub struct Module<S = ()> {
    name: String,
    root: bool,
    routes: BTreeMap<(String, String), RouteDef<S>>,
    errors: Vec<Error>,
}

impl<S> std::fmt::Debug for Module<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("root", &self.root)
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn valid_module_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_route_path(path: &str) -> Result<(), &'static str> {
    if path == "/" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("a route path starts with /");
    };
    for segment in rest.split('/') {
        match segment {
            "" => return Err("empty path segment (double or trailing slash)"),
            "." | ".." => return Err("`.` and `..` segments are not routable"),
            _ => {}
        }
    }
    Ok(())
}

impl<S: Clone + Send + Sync + 'static> Module<S> {
    /// A module mounted under `/<name>`. `name` is 1..64 of `[a-z0-9_-]`; an invalid name is
    /// reported by [`ApiBuilder::build`].
    pub fn new(name: &str) -> Self {
        Self::with_root(name, false)
    }

    /// A module mounted at `/` (the daemon's LocalAPI keeps the spec's paths this way).
    pub fn root(name: &str) -> Self {
        Self::with_root(name, true)
    }

    fn with_root(name: &str, root: bool) -> Self {
        let errors = if valid_module_name(name) {
            Vec::new()
        } else {
            vec![Error::InvalidModuleName {
                name: name.to_owned(),
            }]
        };
        Self {
            name: name.to_owned(),
            root,
            routes: BTreeMap::new(),
            errors,
        }
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds (or replaces) the handler for `method path`, with the method's default
    /// [`Access`]. An unusable method or path is reported by [`ApiBuilder::build`].
    #[must_use]
    pub fn route<H, T>(self, method: Method, path: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let access = Access::for_method(&method);
        self.route_with_access(method, path, access, handler)
    }

    /// Adds (or replaces) the handler for `method path` with an explicit [`Access`] (e.g. a
    /// `GET` that reveals secrets and should be privileged).
    #[must_use]
    pub fn route_with_access<H, T>(
        mut self,
        method: Method,
        path: &str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let invalid = |reason| Error::InvalidRoute {
            module: self.name.clone(),
            method: method.to_string(),
            path: path.to_owned(),
            reason,
        };
        if let Err(reason) = check_route_path(path) {
            let e = invalid(reason);
            self.errors.push(e);
            return self;
        }
        let filter = match MethodFilter::try_from(method.clone()) {
            Ok(filter) => filter,
            Err(_) => {
                let e = invalid("unsupported method");
                self.errors.push(e);
                return self;
            }
        };
        let key = (path.to_owned(), method.to_string());
        let def = RouteDef {
            method,
            path: path.to_owned(),
            access,
            handler: on(filter, handler),
        };
        if self.routes.insert(key, def).is_some() {
            tracing::debug!(api.module = %self.name, http.route = path, "route handler replaced");
        }
        self
    }

    /// `GET path` (also answers `HEAD`).
    #[must_use]
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.route(Method::GET, path, handler)
    }

    /// `POST path`.
    #[must_use]
    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.route(Method::POST, path, handler)
    }

    /// `PUT path`.
    #[must_use]
    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.route(Method::PUT, path, handler)
    }

    /// `DELETE path`.
    #[must_use]
    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.route(Method::DELETE, path, handler)
    }

    /// Gives the handlers their state (axum's `State<S>` extractor), as
    /// `axum::Router::with_state` does.
    pub fn with_state(self, state: S) -> Module<()> {
        Module {
            name: self.name,
            root: self.root,
            routes: self
                .routes
                .into_iter()
                .map(|(k, d)| {
                    let handler = d.handler.with_state(state.clone());
                    (
                        k,
                        RouteDef {
                            method: d.method,
                            path: d.path,
                            access: d.access,
                            handler,
                        },
                    )
                })
                .collect(),
            errors: self.errors,
        }
    }
}

#[derive(Debug)]
struct ModuleState {
    name: String,
    running: AtomicBool,
}

/// Stops and starts a mounted module at run time. Cheap to clone.
///
/// While stopped, every route of the module answers `503` with code `unavailable` and message
/// `module stopped`; requests already running are not interrupted.
#[derive(Debug, Clone)]
pub struct ModuleHandle(Arc<ModuleState>);

impl ModuleHandle {
    fn new(name: &str) -> Self {
        Self(Arc::new(ModuleState {
            name: name.to_owned(),
            running: AtomicBool::new(true),
        }))
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Stops serving the module's routes (503 until [`ModuleHandle::start`]).
    pub fn stop(&self) {
        if self.0.running.swap(false, Ordering::AcqRel) {
            tracing::info!(api.module = %self.0.name, "module stopped");
        }
    }

    /// Serves the module's routes again.
    pub fn start(&self) {
        if !self.0.running.swap(true, Ordering::AcqRel) {
            tracing::info!(api.module = %self.0.name, "module started");
        }
    }

    /// Whether the module is serving.
    pub fn is_running(&self) -> bool {
        self.0.running.load(Ordering::Acquire)
    }
}

struct Mounted {
    method: Method,
    module: ModuleHandle,
    access: Access,
    handler: MethodRouter,
}

/// Assembles an [`Api`] from modules. See the crate docs for an example.
pub struct ApiBuilder {
    modules: BTreeMap<String, ModuleHandle>,
    /// full path -> method -> route
    routes: BTreeMap<String, BTreeMap<String, Mounted>>,
    errors: Vec<Error>,
    access: AccessPolicy,
    telemetry: Telemetry,
    callers: CallerCache,
}

impl std::fmt::Debug for ApiBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiBuilder")
            .field("modules", &self.modules.keys().collect::<Vec<_>>())
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Default for ApiBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiBuilder {
    /// A builder with no module, the default [`AccessPolicy`] (root and the process's own
    /// euid; no TCP), a fresh [`Telemetry`] and a default [`CallerCache`].
    pub fn new() -> Self {
        Self {
            modules: BTreeMap::new(),
            routes: BTreeMap::new(),
            errors: Vec::new(),
            access: AccessPolicy::default(),
            telemetry: Telemetry::new(),
            callers: CallerCache::default(),
        }
    }

    /// Uses this access policy (usually [`AccessPolicy::from_config`]).
    #[must_use]
    pub fn access_policy(mut self, access: AccessPolicy) -> Self {
        self.access = access;
        self
    }

    /// Counts requests in this (shared) registry.
    #[must_use]
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Resolves callers through this cache.
    #[must_use]
    pub fn caller_cache(mut self, callers: CallerCache) -> Self {
        self.callers = callers;
        self
    }

    /// Mounts a module and returns its run-time handle. Mounting a module with the name of one
    /// already mounted adds to it (same handle); any method and path registered before is
    /// replaced. Errors in the module's routes are reported by [`ApiBuilder::build`].
    pub fn mount(&mut self, module: Module) -> ModuleHandle {
        let handle = self
            .modules
            .entry(module.name.clone())
            .or_insert_with(|| ModuleHandle::new(&module.name))
            .clone();
        self.errors.extend(module.errors);
        for (_, def) in module.routes {
            let full = if module.root {
                def.path.clone()
            } else if def.path == "/" {
                format!("/{}", module.name)
            } else {
                format!("/{}{}", module.name, def.path)
            };
            let replaced = self.routes.entry(full.clone()).or_default().insert(
                def.method.to_string(),
                Mounted {
                    method: def.method,
                    module: handle.clone(),
                    access: def.access,
                    handler: def.handler,
                },
            );
            if let Some(old) = replaced {
                tracing::debug!(
                    api.module = %handle.name(),
                    previous.module = %old.module.name(),
                    http.route = %full,
                    "route handler replaced"
                );
            }
        }
        handle
    }

    /// Builds the API.
    ///
    /// # Errors
    /// The first invalid module name ([`Error::InvalidModuleName`]), route
    /// ([`Error::InvalidRoute`]) or conflict between two templates ([`Error::RouteConflict`]).
    pub fn build(self) -> Result<Api, Error> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        self.telemetry.describe(
            REQUESTS_METRIC,
            "API requests by module, route template, method and status code.",
            MetricKind::Counter,
        )?;
        // axum panics on two templates that overlap; this check, made once while building,
        // turns that into an error. Requests are routed by axum alone.
        let mut conflicts = matchit::Router::new();
        let shared = Arc::new(Shared {
            unmatched: StatusCounters::new(self.telemetry.clone(), "-".to_owned()),
            telemetry: self.telemetry,
            callers: self.callers,
            access: self.access,
            modules: self.modules,
        });
        let mut router = Router::new();
        for (path, methods) in self.routes {
            let Some(primary) = methods.values().next().map(|m| m.module.clone()) else {
                continue;
            };
            let mut allow: Vec<&str> = methods.keys().map(String::as_str).collect();
            if allow.contains(&"GET") && !allow.contains(&"HEAD") {
                allow.push("HEAD");
            }
            allow.sort_unstable();
            let allow = HeaderValue::from_str(&allow.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            let mut method_router = MethodRouter::new();
            let mut routes = Vec::with_capacity(methods.len());
            for (_, mounted) in methods {
                method_router = method_router.merge(mounted.handler);
                routes.push(MethodRoute {
                    method: mounted.method,
                    module: mounted.module,
                    access: mounted.access,
                });
            }
            conflicts
                .insert(path.as_str(), ())
                .map_err(|source| Error::RouteConflict {
                    path: path.clone(),
                    module: primary.name().to_owned(),
                    source,
                })?;
            let info = Arc::new(PathInfo {
                counters: StatusCounters::new(shared.telemetry.clone(), path.clone()),
                template: path.clone(),
                routes,
                primary,
                allow,
            });
            // The path's conventions wrap every method of it, the 405 fallback included.
            let method_router =
                method_router.layer(middleware::PathLayer::new(Arc::clone(&shared), info));
            router = router.route(&path, method_router);
        }
        let router = router.fallback(middleware::not_found);
        Ok(Api { router, shared })
    }
}

/// The assembled API: a cloneable tower service (`Request` in, `Response` out, never fails)
/// that enforces the conventions. Serve it with [`crate::server::Server`], or drive it
/// in-process with `tower::ServiceExt::oneshot`.
#[derive(Clone)]
pub struct Api {
    pub(crate) router: Router,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("modules", &self.shared.modules.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A builder.
    pub fn builder() -> ApiBuilder {
        ApiBuilder::new()
    }

    /// The handle of a mounted module.
    pub fn module(&self, name: &str) -> Option<ModuleHandle> {
        self.shared.modules.get(name).cloned()
    }

    /// The registry requests are counted in.
    pub fn telemetry(&self) -> &Telemetry {
        &self.shared.telemetry
    }

    /// The caller cache.
    pub fn caller_cache(&self) -> &CallerCache {
        &self.shared.callers
    }

    /// The access policy.
    pub fn access_policy(&self) -> &AccessPolicy {
        &self.shared.access
    }
}
