//! The on-disk package repository: versions, stable and experiment links, locks, GC, and
//! switches that survive a crash at any instant.
//!
//! # Layout
//! ```text
//! <root>/packages/<pkg>/<version>/           complete version trees (read-only by convention)
//! <root>/packages/<pkg>/stable -> <version>  relative symlink
//! <root>/packages/<pkg>/experiment -> <v>    only while an experiment runs
//! <root>/tmp/                                staging and trash; same filesystem as packages/
//! <root>/run/locks/<pkg>/<version>/<pid>     "in use" markers written by package users
//! <root>/run/repo.lock                       the writer lock (flock)
//! <root>/config/<pkg>/<deployment id>/       config trees, with their own `stable` and
//!                                            `experiment` links (see `Repository::config_state`)
//! ```
//! Package names and versions are validated [`PackageName`]s and [`Version`]s, so each is one
//! safe path component; temporary links are named `<link>@<random>`, a name no version can take.
//!
//! # Guarantees
//! - **The disk is the truth.** Nothing is cached; a fresh [`Repository`] on the same root sees
//!   exactly what the last process left.
//! - **A version directory appears only complete.** A staged tree is made durable (one
//!   `syncfs`, see below), renamed into `packages/<pkg>/<version>`, and the package directory
//!   is fsynced.
//! - **Links switch atomically.** A temporary symlink is created beside the link and renamed
//!   over it, then the directory is fsynced; removing `experiment` is one unlink plus fsync.
//! - **Switches never copy and never delete trees.** Replaced and stopped versions stay on disk,
//!   unreferenced, until [`Repository::gc`], which first renames a version directory into
//!   `tmp/`, fsyncs, and deletes it there, so a half-deleted tree never sits at a version path.
//!   Callers run GC after answering, keeping deletion out of a switch's latency.
//! - **Locked versions are kept.** A version with a lock file named by a live pid is never
//!   collected, is reused rather than replaced, and makes [`Repository::remove`] answer
//!   [`RepoError::Busy`]. Files named by dead pids (or numbers that are no pid, like `-1`) are
//!   deleted; non-numeric names are ignored with a warning.
//! - **Failures roll back.** Each operation records its changes as it makes them; an error at
//!   any step undoes them in reverse, leaving the previous state.
//!
//! # Crash model
//! A crash (power cut, `SIGKILL`, abort) can stop an operation between any two steps. After
//! it, for every package: `stable` resolves to a complete version directory (or the package
//! reads as not installed); `experiment` is absent or resolves to a complete one; no version
//! directory is partially written; nothing was written outside the root. More precisely, a
//! crash leaves each operation's old state or its new state, except `install` over a running
//! experiment, which may also leave "old stable, no experiment" (the experiment is dropped
//! first, so retrying the install completes it). Readers accept the intermediate shapes:
//! `experiment` naming the stable version (mid-promote) or dangling reads as no experiment.
//! Leftovers (temporary links, trees under `tmp/`) are repaired or cleaned by the next
//! operation on the package, by [`Repository::clean_staging`] at start-up, and by GC.
//!
//! Durability uses `syncfs` on the staged tree's filesystem rather than an fsync per file:
//! one journal commit and one device flush for the whole tree instead of one per entry (see
//! the reasoning on `sync_tree` in the source).
//!
//! # Failure points
//! Every filesystem step of every operation passes through [`failpoint::hit`] before and after
//! it (names in [`failpoint::ALL`]). Tests use them to crash a child process at each step
//! (`OUTPOST_FAILPOINT=<name>[#n]`, only with the `failpoints` cargo feature, which tests turn
//! on and release builds never have) or to inject an error on the current thread
//! ([`failpoint::inject`]) and check the invariants above. Unset, they cost next to nothing.
//!
//! # Concurrency
//! [`Repository`] is `Send + Sync + Clone`; changes are serialised by a mutex shared by every
//! handle on the same root in the process, and reads never wait. Only one process may change
//! a root: take [`Repository::acquire_writer_lock`]. Staging directories can be filled while
//! other operations run; GC leaves every live staging directory of the process alone.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod config_tree;
mod error;
pub mod failpoint;
mod fsutil;
mod gc;
mod guard;
mod link;
mod lock;
mod repository;
mod staging;
mod txn;

pub use config_tree::ConfigState;
pub use error::{InvalidStateReason, RepoError, UnsafeReason};
pub use gc::GcReport;
pub use lock::{VersionLock, WriterLock};
pub use outpost_types::{PackageName, Version};
pub use repository::{PackageState, Repository};
pub use staging::StagingDir;
