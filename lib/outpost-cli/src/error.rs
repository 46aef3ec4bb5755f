//! The errors of this crate.

use std::path::PathBuf;

/// What can go wrong in the shared command-line layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read (`--config` names a missing file, or any
    /// read error other than a missing default file). The source names the path.
    #[error("reading the configuration file")]
    ReadConfig(#[source] std::io::Error),
    /// The configuration file was read but is not a valid configuration.
    #[error("invalid configuration file {}", path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// Why it is invalid.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
