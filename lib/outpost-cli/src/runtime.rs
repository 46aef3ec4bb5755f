//! The tokio runtimes the commands run on. Failing to build one is reported by the caller,
//! which knows what the runtime was for.

use tokio::runtime::{Builder, Runtime};

/// A runtime on the calling thread, for one-shot clients (`status`, `agent status`, a push).
///
/// # Errors
/// The I/O driver could not be created (e.g. out of file descriptors).
pub fn current_thread() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// A runtime for a long-running service with `workers` worker threads named `thread_name`,
/// and at most `max_blocking_threads` blocking threads when given (tokio's default else).
///
/// # Errors
/// The threads or the I/O driver could not be created.
pub fn service(
    thread_name: &str,
    workers: usize,
    max_blocking_threads: Option<usize>,
) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(workers)
        .thread_name(thread_name)
        .enable_all();
    if let Some(max) = max_blocking_threads {
        builder.max_blocking_threads(max);
    }
    builder.build()
}
