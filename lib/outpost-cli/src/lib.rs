//! The command line of outpost, shared by its two binaries: `outpost` (the fleet daemon and its
//! clients; never maps libpython) and `outpost-agent` (the commands that embed CPython).
//!
//! Both parse the one definition in [`args`], so help, completions and flags stay one thing;
//! both end through one [`ExitStatus`]; both print through [`output`], report an unreachable
//! daemon or agent through [`report`], and set up logging, runtimes and signals the same way.
//!
//! This crate must not depend on `outpost-checks` or pyo3: `outpost` links it.
#![warn(missing_docs)]

pub mod args;
mod error;
mod exit;
pub mod logging;
pub mod output;
pub mod process;
pub mod report;
pub mod runtime;

pub use error::Error;
pub use exit::ExitStatus;
