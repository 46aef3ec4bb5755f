//! The Python check runtime: embedded CPython with the aggregator and datadog_agent modules, loader, config, IDs, runner.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]
