//! The fleet daemon: catalog, serialised package operations, task state and the LocalAPI
//! routes (`spec/localapi.md`), on top of the repository (`outpost-repo`), the package
//! sources (`outpost-fetch`) and the shared API machinery (`outpost-api`).
//!
//! Data flows one way: route → [`Daemon`] operation → fetch into a staging directory →
//! repository switch. The daemon knows nothing of tar or OCI; the repository knows nothing
//! of HTTP.
//!
//! Who can connect: the socket is born 0700 (root only); `api.allow_uids` / `api.allow_gids`
//! are granted access to it with a POSIX ACL, nobody else (see [`socket_access`]). Who may
//! change packages: uid 0, the daemon's uid, and those lists (checked on the peer's
//! credentials by `outpost-api`).
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

pub mod allocator;
pub mod config_routes;
pub mod error;
pub mod fleet;
pub mod hooks;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod routes;
pub mod serve;
pub mod socket_access;
pub mod status_socket;
mod store;
pub mod tasks;
mod watch;

pub use error::{DaemonError, StateConflict};
pub use ops::{Daemon, GcSummary, Requester, Secrets, StatusBody};
pub use serve::{RunError, RunOptions, run};
pub use socket_access::SocketAccessError;
