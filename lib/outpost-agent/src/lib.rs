//! The check agent: scheduler, sinks, memory tracking exports and the agent API modules.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]
