//! The fleet daemon: catalog, serialised package operations, task state and the LocalAPI routes.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]
