//! `outpost status --brief`: is the daemon up? Asks the read-only status socket
//! (`<root>/run/status.sock`, open to every local user) for the daemon's version and the free
//! disk space of its root; needs no right on the main socket.

use outpost_api::ApiClient;
use outpost_cli::ExitStatus;
use outpost_cli::args::GlobalArgs;
use outpost_cli::output::print_json;
use outpost_types::wire::BriefStatus;

use super::client::{pick_socket, report_client_error};

const DOING: &str = "getting the brief status";

/// Runs `outpost status --brief`.
pub(crate) fn run(global: &GlobalArgs) -> ExitStatus {
    let runtime = match outpost_cli::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error {DOING}: cannot start the I/O runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    let candidates = global.status_sockets();
    let socket = pick_socket(&candidates);
    let client = ApiClient::new(&socket);
    match runtime.block_on(client.get::<BriefStatus>("/status")) {
        Ok(brief) => {
            if global.json {
                print_json(&brief);
            } else {
                println!(
                    "outpost daemon {} is up; {} free on its root's filesystem",
                    brief.installer_version,
                    human_bytes(brief.available_disk_space)
                );
            }
            ExitStatus::Success
        }
        Err(e) => report_client_error(global, DOING, &socket, &e),
    }
}

/// `1.5 GiB`-style sizes (binary units, one decimal).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
