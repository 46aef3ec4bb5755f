//! Config experiments' file operations: the engine that turns a deployment (a list of file
//! operations) into a config tree, with no daemon and no HTTP.
//!
//! - [`ConfigOperations`] and [`ConfigCatalog`] are the wire shapes; [`ConfigOperations::validate`]
//!   checks one's form (for the catalog), [`ConfigOperations::plan`] also checks it against a
//!   package's [`Rules`] and the secret keys at hand.
//! - [`Plan::apply`] runs the operations, in order, on a private copy of the stable config
//!   (made by [`copy_tree`]): `merge-patch` (RFC 7396) and `patch` (RFC 6902) of YAML and JSON
//!   files, `delete`, `delete-all`, `copy` and `move`.
//! - Paths ([`ConfigPath`]) are relative to the config root; `..`, escapes, and symbolic links
//!   inside the tree are refused, and only the files a package allows (its
//!   `outpost/config-files`, see [`rules`]) are touched, with the mode its rule gives.
//! - `SEC[key]` placeholders in patch values are replaced with secrets in memory, just before
//!   a patch applies; a file that received one gets at most mode `0600`. No error carries a
//!   secret's value.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod apply;
mod error;
mod operations;
pub mod path;
pub mod rules;
pub mod secrets;

pub use apply::{DIR_MODE, MAX_FILE_BYTES, SECRET_MODE, copy_tree};
pub use error::{ConfigError, Format, PathProblem, RuleProblem};
pub use operations::{
    ConfigCatalog, ConfigCatalogEntry, ConfigOperations, FileOp, FileOperation, Plan,
    validate_catalog,
};
pub use path::ConfigPath;
pub use rules::{CONFIG_FILES, Rules};
