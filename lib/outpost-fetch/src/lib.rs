//! Package sources (OCI registries and layouts, tarballs), digest checks, safe unpacking, and packing.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]
