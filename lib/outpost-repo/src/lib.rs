//! The on-disk package repository: versions, stable and experiment links, locks, GC, crash-safe switches.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]
