//! The read-only status socket, `<root>/run/status.sock`: any local user may connect (mode
//! 0666, set atomically by [`outpost_api::Server::bind_unix_public`]) and ask `GET /status`,
//! answered with [`BriefStatus`] (`installer_version`, `available_disk_space`) and nothing
//! else: no package, no task, no catalog, no key. Every other path is 404 and every other
//! method on `/status` 405, as on the main socket, whose limits (timeouts, connection limit,
//! body limit) apply here too. `outpost status --brief` reads it, so an unprivileged user can
//! tell that the daemon is up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use outpost_api::{Api, ErrorResponse, Json, Module, Server};
use outpost_types::wire::BriefStatus;

use crate::ops::available_space;

/// The status socket's path under `root`.
pub fn path(root: &Path) -> PathBuf {
    root.join("run/status.sock")
}

/// The status socket's API: `GET /status` only.
pub fn build_api(root: PathBuf) -> Result<Api, outpost_api::Error> {
    let mut builder = Api::builder();
    builder.mount(
        Module::root("status")
            .get("/status", brief)
            .with_state(Arc::new(root)),
    );
    builder.build()
}

/// Binds the status socket under `root`, ready to serve.
///
/// # Errors
/// Those of [`Server::bind_unix_public`]: a live socket at the path, or something that is not
/// a socket, is refused and left alone.
pub async fn bind(root: &Path) -> Result<Server, outpost_api::Error> {
    Server::new(build_api(root.to_path_buf())?)
        .bind_unix_public(path(root))
        .await
}

/// `GET /status` on the status socket.
async fn brief(State(root): State<Arc<PathBuf>>) -> Result<Json<BriefStatus>, ErrorResponse> {
    // One statvfs(2): no need to leave the runtime for it.
    Ok(Json(BriefStatus {
        installer_version: outpost_types::VERSION.to_owned(),
        available_disk_space: available_space(&root)?,
    }))
}
