//! `outpost daemon`: the fleet daemon in the foreground, until SIGTERM or SIGINT (exit 0).
//! An unreadable configuration or a daemon that cannot start exits 1 with the reason.
//! `--listen ADDR` serves `GET /metrics` on a TCP address (overrides `telemetry.listen`).

use outpost_cli::ExitStatus;
use outpost_cli::args::{DaemonArgs, GlobalArgs};

/// Runs the daemon; logs go to stderr at info level (`-v`/`-q`, `OUTPOST_LOG`).
pub(crate) fn run(global: &GlobalArgs, args: &DaemonArgs) -> ExitStatus {
    outpost_cli::logging::init(
        args.log_format,
        global.verbose,
        global.quiet,
        tracing::Level::INFO,
    );
    let mut config = match global.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", outpost_types::error_chain(&e));
            return ExitStatus::Failure;
        }
    };
    if let Some(addr) = args.listen {
        config.telemetry.listen = Some(addr);
    }
    let options = outpost_daemon::RunOptions {
        root: global.root(),
        socket: global.socket(),
        config,
    };
    // Before any thread starts: fewer malloc arenas, large buffers returned whole.
    outpost_daemon::allocator::tune();
    // Two workers: status keeps answering while an operation runs, and the daemon stays small.
    let runtime = match outpost_cli::runtime::service("outpost-daemon", 2, Some(8)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the daemon's runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    match runtime.block_on(outpost_daemon::run(options)) {
        Ok(()) => ExitStatus::Success,
        Err(e) => {
            tracing::error!(error = %e, "daemon failed");
            eprintln!("error: {}", outpost_types::error_chain(&e));
            ExitStatus::Failure
        }
    }
}
