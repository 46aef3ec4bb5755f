//! Process set-up shared by both binaries.

/// Gives SIGPIPE back its default action, so `outpost status | head` ends quietly the way
/// other command-line tools do, instead of failing to print (Rust starts with SIGPIPE
/// ignored). Only for one-shot commands: the daemon and the agent must survive a client that
/// hangs up, and keep ignoring it. Call it at start-up, before any thread is spawned.
pub fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL at start-up, before any thread is
    // spawned, has no memory-safety implications.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
