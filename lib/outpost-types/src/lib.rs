//! Types shared by every outpost crate: validated package names and versions, the LocalAPI
//! wire types, the API error codes, the host platform, and the configuration file.
//!
//! This crate performs no I/O and knows nothing of tokio, HTTP or the filesystem, so the CLI,
//! the daemon and the tests all agree on one definition of each value.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod error;
mod experiment;
mod fleet;
pub mod names;
pub mod platform;
pub mod source;
pub mod wire;

pub use error::{ErrorCode, error_chain};
pub use names::{NameError, PackageName, Version};

/// outpost's own version, reported by `/status` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
