//! The client verbs: `status`, `catalog set|show`, `install`, `experiment start|stop|promote`,
//! `remove` (and the Datadog-style aliases). Each is one or two calls to the daemon's API.
//!
//! Output: a readable table or message by default, the API body with `--json`. Exit status
//! (`spec/cli.md`): 0 success, 1 the operation failed (the daemon's message on stderr,
//! prefixed by what was being done), 3 the daemon is not reachable.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use outpost_api::{ApiClient, ClientError, ClientErrorKind};
use outpost_types::wire::{Catalog, Empty, Phase, StatusResponse, TaskParams, TaskState};

use crate::cli::GlobalArgs;

/// Exit status when the operation failed.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit status when the daemon is not reachable.
pub(crate) const EXIT_UNREACHABLE: u8 = 3;

/// A client verb, ready to send.
#[derive(Debug)]
pub(crate) enum Verb {
    Status,
    CatalogShow,
    CatalogSet {
        source: String,
    },
    Install {
        package: String,
        version: Option<String>,
        install_args: Vec<String>,
    },
    StartExperiment {
        package: String,
        version: String,
        policy: crate::cli::ExperimentPolicyArgs,
    },
    StopExperiment {
        package: String,
    },
    PromoteExperiment {
        package: String,
    },
    Remove {
        package: String,
    },
}

impl Verb {
    /// What was being done, for error messages ("error installing: ...").
    fn doing(&self) -> &'static str {
        match self {
            Verb::Status => "getting status",
            Verb::CatalogShow => "getting the catalog",
            Verb::CatalogSet { .. } => "setting catalog",
            Verb::Install { .. } => "installing",
            Verb::StartExperiment { .. } => "starting experiment",
            Verb::StopExperiment { .. } => "stopping experiment",
            Verb::PromoteExperiment { .. } => "promoting experiment",
            Verb::Remove { .. } => "removing",
        }
    }

    /// The package whose task progress is worth showing while the call runs.
    fn long_running_package(&self) -> Option<&str> {
        match self {
            Verb::Install { package, .. } | Verb::StartExperiment { package, .. } => Some(package),
            _ => None,
        }
    }
}

/// Runs a client verb and returns the process exit status.
pub(crate) fn run(global: &GlobalArgs, verb: Verb) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let client = ApiClient::new(global.socket());
    let doing = verb.doing();
    match runtime.block_on(execute(&client, global, verb)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Local(message)) => {
            eprintln!("error {doing}: {message}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Client(e)) => report_client_error(global, doing, &e),
    }
}

enum Failure {
    /// Something went wrong before talking to the daemon (e.g. reading the catalog file).
    Local(String),
    /// The daemon call failed.
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

pub(crate) fn report_client_error(global: &GlobalArgs, doing: &str, e: &ClientError) -> ExitCode {
    match e.kind() {
        ClientErrorKind::NotReachable => {
            let cause = std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_default();
            eprintln!(
                "error {doing}: the outpost daemon is not reachable at {}: {cause}\n\
                 hint: start it with `outpost daemon` (and check --root / --socket / OUTPOST_SOCKET)",
                global.socket().display()
            );
            ExitCode::from(EXIT_UNREACHABLE)
        }
        ClientErrorKind::Api => {
            if let Some(api) = e.api_error() {
                if global.json {
                    let body = outpost_types::error::ErrorBody { error: api.clone() };
                    print_json(&body);
                }
                eprintln!("error {doing}: {}", api.message);
            }
            ExitCode::from(EXIT_FAILED)
        }
        ClientErrorKind::Protocol => {
            eprintln!("error {doing}: {}", outpost_types::error_chain(e));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth failing over.
    let _ = serde_json::to_writer_pretty(&mut out, value).map(|()| writeln!(out));
}

async fn execute(client: &ApiClient, global: &GlobalArgs, verb: Verb) -> Result<(), Failure> {
    let quiet = global.quiet > 0;
    match &verb {
        Verb::Status => {
            let status: StatusResponse = client.get("/status").await?;
            if global.json {
                print_json(&status);
            } else {
                print_status(&status);
            }
        }
        Verb::CatalogShow => {
            let catalog: Catalog = client.get("/catalog").await?;
            if global.json {
                print_json(&catalog);
            } else {
                print_catalog(&catalog);
            }
        }
        Verb::CatalogSet { source } => {
            let body = read_catalog(source).map_err(Failure::Local)?;
            let _: Empty = client.post("/catalog", Some(&body)).await?;
            let count = body
                .get("packages")
                .and_then(|p| p.as_array())
                .map_or(0, Vec::len);
            done(global, &format!("catalog set ({count} entries)"));
        }
        Verb::Install {
            package,
            version,
            install_args,
        } => {
            // Without a version the daemon takes the catalog's only one; the install
            // arguments still need a body (an empty version means "not given").
            let params = (version.is_some() || !install_args.is_empty()).then(|| TaskParams {
                version: version.clone().unwrap_or_default(),
                install_args: (!install_args.is_empty()).then(|| install_args.clone()),
            });
            let path = format!("/{}/install", path_segment(package));
            with_progress(client, global, &verb, async {
                client
                    .post::<TaskParams, Empty>(&path, params.as_ref())
                    .await
            })
            .await?;
            if !quiet {
                let status: StatusResponse = client.get("/status").await?;
                let stable = status
                    .packages
                    .get(package)
                    .map(|s| s.stable.clone())
                    .unwrap_or_default();
                done(global, &format!("{package} {stable} installed as stable"));
            } else if global.json {
                print_json(&Empty {});
            }
        }
        Verb::StartExperiment {
            package,
            version,
            policy,
        } => {
            let params = crate::experiment_cmd::start_body(version, policy);
            let path = format!("/{}/experiment/start", path_segment(package));
            with_progress(client, global, &verb, async {
                client
                    .post::<serde_json::Value, Empty>(&path, Some(&params))
                    .await
            })
            .await?;
            done(global, &format!("experiment {package} {version} started"));
        }
        Verb::StopExperiment { package } => {
            let _: Empty = client
                .post::<(), _>(&format!("/{}/experiment/stop", path_segment(package)), None)
                .await?;
            done(global, &format!("experiment of {package} stopped"));
        }
        Verb::PromoteExperiment { package } => {
            let _: Empty = client
                .post::<(), _>(
                    &format!("/{}/experiment/promote", path_segment(package)),
                    None,
                )
                .await?;
            done(
                global,
                &format!("experiment of {package} promoted to stable"),
            );
        }
        Verb::Remove { package } => {
            let _: Empty = client
                .post::<(), _>(&format!("/{}/remove", path_segment(package)), None)
                .await?;
            done(global, &format!("{package} removed"));
        }
    }
    Ok(())
}

/// Percent-encodes a path segment, so a name with `/` or `..` reaches the daemon as one
/// segment and is refused there with a clear message rather than routed elsewhere.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'~')
            || (b == b'.' && s != "." && s != "..")
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn done(global: &GlobalArgs, message: &str) {
    if global.json {
        print_json(&Empty {});
    } else if global.quiet == 0 {
        println!("{message}");
    }
}

/// Reads a catalog: `-` is stdin, a value starting with `{` is the JSON itself (as the
/// Datadog installer's `set-catalog` takes it), anything else a file path. The JSON is checked
/// locally so a typo is reported with its position before anything is sent.
fn read_catalog(source: &str) -> Result<serde_json::Value, String> {
    let (what, text) = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        ("stdin".to_string(), text)
    } else if source.trim_start().starts_with('{') {
        ("the argument".to_string(), source.to_string())
    } else {
        let text = fs_err::read_to_string(source).map_err(|e| {
            format!("{e}; the catalog is a file, `-` for stdin, or the JSON itself")
        })?;
        (source.to_string(), text)
    };
    serde_json::from_str(&text).map_err(|e| format!("invalid catalog JSON in {what}: {e}"))
}

/// Runs `call`, and while it runs on a terminal, polls `/status` and shows the task's
/// progress (phase, bytes and rate).
async fn with_progress<T>(
    client: &ApiClient,
    global: &GlobalArgs,
    verb: &Verb,
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let show = !global.json && global.quiet == 0 && std::io::stderr().is_terminal();
    let Some(package) = verb.long_running_package().filter(|_| show) else {
        return call.await;
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {bytes}/{total_bytes} ({bytes_per_sec}) [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("{} {package}", verb.doing()));
    bar.enable_steady_tick(Duration::from_millis(120));
    let poll = async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let Ok(status) = client.get::<StatusResponse>("/status").await else {
                continue;
            };
            let task = status
                .remote_config_state
                .iter()
                .find(|p| p.package == package)
                .and_then(|p| p.task.as_ref());
            if let Some(progress) = task
                .filter(|t| t.state == TaskState::Running)
                .and_then(|t| t.progress.as_ref())
            {
                let phase = match progress.phase {
                    Phase::Download => "downloading",
                    Phase::Unpack => "unpacking",
                    Phase::Switch => "switching",
                };
                bar.set_message(format!("{phase} {package}"));
                if let Some(total) = progress.bytes_total {
                    bar.set_length(total);
                }
                bar.set_position(progress.bytes_done);
            }
        }
    };
    let result = tokio::select! {
        r = call => r,
        () = poll => unreachable!("the progress poll never ends"),
    };
    bar.finish_and_clear();
    result
}

fn print_status(status: &StatusResponse) {
    println!("outpost daemon {}", status.version);
    if status.remote_config_state.is_empty() {
        println!("no packages installed");
        return;
    }
    let rows: Vec<[String; 4]> = status
        .remote_config_state
        .iter()
        .map(|p| {
            let task = match &p.task {
                None => String::new(),
                Some(t) => {
                    let state = match t.state {
                        TaskState::Running => "running",
                        TaskState::Done => "done",
                        TaskState::Error => "failed",
                    };
                    let mut s = format!(
                        "{} {} {state}",
                        t.operation,
                        t.version.as_deref().unwrap_or("")
                    )
                    .replace("  ", " ");
                    if let Some(e) = &t.error {
                        s.push_str(&format!(" ({}): {}", e.code, e.message));
                    }
                    s
                }
            };
            let dash = |v: &str| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.to_string()
                }
            };
            [
                p.package.clone(),
                dash(&p.stable_version),
                dash(&p.experiment_version),
                task,
            ]
        })
        .collect();
    print_table(&["PACKAGE", "STABLE", "EXPERIMENT", "LAST TASK"], &rows);
    crate::experiment_cmd::print_watches(status);
}

fn print_catalog(catalog: &Catalog) {
    if catalog.packages.is_empty() {
        println!("the catalog is empty");
        return;
    }
    let rows: Vec<[String; 4]> = catalog
        .packages
        .iter()
        .map(|p| {
            let target = match (p.platform.as_str(), p.arch.as_str()) {
                ("", "") => "any".to_string(),
                (os, arch) => format!(
                    "{}/{}",
                    if os.is_empty() { "*" } else { os },
                    if arch.is_empty() { "*" } else { arch }
                ),
            };
            [p.package.clone(), p.version.clone(), target, p.url.clone()]
        })
        .collect();
    print_table(&["PACKAGE", "VERSION", "PLATFORM", "URL"], &rows);
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        // A closed stdout is not worth failing over.
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("datadog-agent"), "datadog-agent");
        assert_eq!(path_segment("a.b"), "a.b");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("a/b"), "a%2Fb");
        assert_eq!(path_segment("a b"), "a%20b");
    }

    #[test]
    fn catalog_sources() {
        assert!(read_catalog(r#"{"packages": []}"#).is_ok());
        let err = read_catalog("{oops").unwrap_err();
        assert!(
            err.contains("invalid catalog JSON in the argument"),
            "{err}"
        );
        let err = read_catalog("/definitely/not/here.json").unwrap_err();
        assert!(err.contains("/definitely/not/here.json"), "{err}");
    }
}
