//! Module router, Unix-socket HTTP server with peer credentials, caller cache, telemetry and API client.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]
