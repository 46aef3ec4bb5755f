//! The client verbs: `status`, `catalog set|show`, `install`, `experiment start|stop|promote`,
//! `remove` (and the Datadog-style aliases). Each is one or two calls to the daemon's API.
//!
//! Output: a readable table or message by default, the API body with `--json`. Exit status
//! (`spec/cli.md`): 0 success, 1 the operation failed (the daemon's message on stderr,
//! prefixed by what was being done), 3 the daemon is not reachable.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::catalog;
use outpost_api::{ApiClient, ClientError, ClientErrorKind};
use outpost_cli::ExitStatus;
use outpost_cli::args::{ExperimentStartArgs, GlobalArgs, InstallArgs, PackageArgs, StatusArgs};
use outpost_cli::output::{print_error_json, print_json, print_table};
use outpost_cli::report::{self, Service};
use outpost_types::wire::{
    Catalog, Empty, PackageState, PackageStatus, Phase, StatusResponse, Task, TaskParams,
    TaskState, parse_rfc3339,
};
use serde::Serialize;

/// A client verb, ready to send.
#[derive(Debug)]
pub(crate) enum Verb {
    Status(StatusArgs),
    CatalogShow,
    /// `catalog set` and `set-catalog`: a file, `-` for stdin, or the JSON itself.
    CatalogSet {
        source: String,
        /// `--allow-empty`: a catalog without entries is meant.
        allow_empty: bool,
    },
    Install(InstallArgs),
    StartExperiment(ExperimentStartArgs),
    StopExperiment(PackageArgs),
    PromoteExperiment(PackageArgs),
    Remove(PackageArgs),
}

impl Verb {
    /// What was being done, for error messages ("error installing: ...").
    fn doing(&self) -> &'static str {
        match self {
            Verb::Status(_) => "getting status",
            Verb::CatalogShow => "getting the catalog",
            Verb::CatalogSet { .. } => "setting catalog",
            Verb::Install(_) => "installing",
            Verb::StartExperiment(_) => "starting experiment",
            Verb::StopExperiment(_) => "stopping experiment",
            Verb::PromoteExperiment(_) => "promoting experiment",
            Verb::Remove(_) => "removing",
        }
    }

    /// The package whose task progress is worth showing while the call runs.
    fn long_running_package(&self) -> Option<&str> {
        match self {
            Verb::Install(InstallArgs { package, .. })
            | Verb::StartExperiment(ExperimentStartArgs { package, .. }) => Some(package),
            _ => None,
        }
    }
}

/// Runs a client verb and returns the process exit status.
pub(crate) fn run(global: &GlobalArgs, verb: Verb) -> ExitStatus {
    let doing = verb.doing();
    let runtime = match outpost_cli::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            return fail_local(
                global,
                doing,
                "local",
                &format!("cannot start the I/O runtime: {e}"),
            );
        }
    };
    let candidates = global.daemon_sockets();
    let socket = pick_socket(&candidates);
    let client = ApiClient::new(&socket);
    match runtime.block_on(execute(&client, global, verb)) {
        Ok(()) => ExitStatus::Success,
        Err(Failure::Local { code, message }) => fail_local(global, doing, code, &message),
        Err(Failure::Client(e)) => {
            let status = report_client_error(global, doing, &socket, &e);
            if e.kind() == ClientErrorKind::NotReachable && candidates.len() > 1 {
                let others: Vec<String> = candidates
                    .iter()
                    .filter(|c| **c != socket)
                    .map(|c| c.display().to_string())
                    .collect();
                eprintln!("note: also tried {}", others.join(", "));
            }
            status
        }
    }
}

/// The first socket a daemon answers on (or refuses us on: that is worth reporting), else
/// the first candidate, whose failure is the one reported.
pub(super) fn pick_socket(candidates: &[PathBuf]) -> PathBuf {
    candidates
        .iter()
        .find(|c| match std::os::unix::net::UnixStream::connect(c) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        })
        .or_else(|| candidates.first())
        .cloned()
        .unwrap_or_default()
}

fn fail_local(global: &GlobalArgs, doing: &str, code: &str, message: &str) -> ExitStatus {
    eprintln!("error {doing}: {message}");
    if global.json {
        print_error_json(code, message);
    }
    ExitStatus::Failure
}

enum Failure {
    /// Something went wrong before talking to the daemon (e.g. reading the catalog file).
    Local {
        /// The `--json` error code.
        code: &'static str,
        message: String,
    },
    /// The daemon call failed.
    Client(ClientError),
}

impl Failure {
    fn input(message: String) -> Self {
        Failure::Local {
            code: "invalid_input",
            message,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

pub(super) fn report_client_error(
    global: &GlobalArgs,
    doing: &str,
    socket: &Path,
    e: &ClientError,
) -> ExitStatus {
    match e.kind() {
        ClientErrorKind::NotReachable => report::unreachable(
            Some(doing),
            Service::Daemon,
            socket,
            e,
            &global.given_location(),
            global.json,
        ),
        ClientErrorKind::Api => {
            if let Some(api) = e.api_error() {
                if global.json {
                    let body = outpost_types::error::ErrorBody { error: api.clone() };
                    print_json(&body);
                }
                eprintln!("error {doing}: {}", api.message);
            }
            ExitStatus::Failure
        }
        ClientErrorKind::Protocol => {
            let message = outpost_types::error_chain(e);
            eprintln!("error {doing}: {message}");
            if global.json {
                print_error_json("protocol", &message);
            }
            ExitStatus::Failure
        }
    }
}

/// What a mutation did, printed by `--json`: the package, the operation (the API's task
/// names), the version it concerned and whether anything changed (from `/status` before and
/// after).
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    package: &'a str,
    operation: &'static str,
    version: Option<String>,
    changed: bool,
}

/// What `catalog set --json` prints.
#[derive(Debug, Serialize)]
struct CatalogOutcome {
    operation: &'static str,
    entries: usize,
    changed: bool,
}

/// The stable and experiment versions of `package` (`None`: not installed).
async fn links(client: &ApiClient, package: &str) -> Result<Option<PackageState>, ClientError> {
    let status: StatusResponse = client.get("/status").await?;
    Ok(status.packages.get(package).cloned())
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

async fn execute(client: &ApiClient, global: &GlobalArgs, verb: Verb) -> Result<(), Failure> {
    match &verb {
        Verb::Status(args) => {
            let status: StatusResponse = client.get("/status").await?;
            if let (true, Some(package)) = (global.json, &args.package) {
                let entry = status
                    .remote_config_state
                    .iter()
                    .find(|p| &p.package == package)
                    .ok_or_else(|| Failure::Local {
                        code: "not_installed",
                        message: format!("{package} is not installed"),
                    })?;
                print_json(entry);
            } else if global.json {
                print_json(&status);
            } else {
                print_status(&status, args, &global.given_location())?;
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
        Verb::CatalogSet {
            source,
            allow_empty,
        } => {
            let (body, count) = catalog::read(source, *allow_empty).map_err(Failure::input)?;
            let before: Catalog = client.get("/catalog").await?;
            let _: Empty = client.post("/catalog", Some(&body)).await?;
            let after: Catalog = client.get("/catalog").await?;
            let entries = if count == 1 { "entry" } else { "entries" };
            done(
                global,
                &CatalogOutcome {
                    operation: "set_catalog",
                    entries: count,
                    changed: before != after,
                },
                &format!("catalog set ({count} {entries})"),
            );
        }
        Verb::Install(InstallArgs {
            package,
            version,
            install_args,
            extensions,
        }) => {
            // Sent even when the version is already stable: the daemon decides (it checks
            // the caller's rights and makes it a no-op); the status before only chooses the
            // words.
            let before = links(client, package).await?;
            // Without a version the daemon takes the catalog's only one; the install
            // arguments still need a body (an empty version means "not given").
            let params = (version.is_some() || !install_args.is_empty() || !extensions.is_empty())
                .then(|| TaskParams {
                    version: version.clone().unwrap_or_default(),
                    install_args: (!install_args.is_empty()).then(|| install_args.clone()),
                    extensions: (!extensions.is_empty()).then(|| extensions.clone()),
                    expected_state: None,
                });
            let path = format!("/{}/install", path_segment(package));
            with_progress(client, global, &verb, async {
                client
                    .post::<TaskParams, Empty>(&path, params.as_ref())
                    .await
            })
            .await?;
            let after = links(client, package).await?;
            let stable = after.as_ref().map(|l| l.stable.clone()).unwrap_or_default();
            let changed = before != after;
            let outcome = Outcome {
                package,
                operation: "install",
                version: non_empty(&stable),
                changed,
            };
            let message = if changed {
                format!("{package} {stable} installed as stable")
            } else {
                format!("{package} {stable} is already stable")
            };
            done(global, &outcome, &message);
        }
        Verb::StartExperiment(ExperimentStartArgs {
            package,
            version,
            policy,
        }) => {
            let before = links(client, package).await?;
            let params = super::experiment::start_body(version, policy);
            let path = format!("/{}/experiment/start", path_segment(package));
            with_progress(client, global, &verb, async {
                client
                    .post::<serde_json::Value, Empty>(&path, Some(&params))
                    .await
            })
            .await?;
            let after = links(client, package).await?;
            let outcome = Outcome {
                package,
                operation: "start_experiment",
                version: Some(version.clone()),
                changed: before != after,
            };
            done(
                global,
                &outcome,
                &format!("experiment {package} {version} started"),
            );
        }
        Verb::StopExperiment(PackageArgs { package }) => {
            let before = links(client, package).await?;
            let experiment = before
                .as_ref()
                .map(|l| l.experiment.clone())
                .unwrap_or_default();
            // Sent even with no experiment (the daemon checks the caller's rights and makes
            // it a no-op); the status before only chooses the words.
            let _: Empty = client
                .post::<(), _>(&format!("/{}/experiment/stop", path_segment(package)), None)
                .await?;
            let after = links(client, package).await?;
            let outcome = Outcome {
                package,
                operation: "stop_experiment",
                version: non_empty(&experiment),
                changed: before != after,
            };
            let message = if experiment.is_empty() {
                format!("{package} has no experiment: nothing to stop")
            } else {
                format!("experiment of {package} stopped")
            };
            done(global, &outcome, &message);
        }
        Verb::PromoteExperiment(PackageArgs { package }) => {
            let before = links(client, package).await?;
            let _: Empty = client
                .post::<(), _>(
                    &format!("/{}/experiment/promote", path_segment(package)),
                    None,
                )
                .await?;
            let after = links(client, package).await?;
            let outcome = Outcome {
                package,
                operation: "promote_experiment",
                version: after.as_ref().and_then(|l| non_empty(&l.stable)),
                changed: before != after,
            };
            done(
                global,
                &outcome,
                &format!("experiment of {package} promoted to stable"),
            );
        }
        Verb::Remove(PackageArgs { package }) => {
            let before = links(client, package).await?;
            let _: Empty = client
                .post::<(), _>(&format!("/{}/remove", path_segment(package)), None)
                .await?;
            let after = links(client, package).await?;
            let outcome = Outcome {
                package,
                operation: "remove",
                version: before.as_ref().and_then(|l| non_empty(&l.stable)),
                changed: before != after,
            };
            done(global, &outcome, &format!("{package} removed"));
        }
    }
    Ok(())
}

/// Percent-encodes a path segment, so a name with `/` or `..` reaches the daemon as one
/// segment and is refused there with a clear message rather than routed elsewhere.
pub(super) fn path_segment(s: &str) -> String {
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

/// Reports a mutation: `outcome` with `--json`, else `message` unless `-q`.
fn done(global: &GlobalArgs, outcome: &impl Serialize, message: &str) {
    if global.json {
        print_json(outcome);
    } else if global.quiet == 0 {
        println!("{message}");
    }
}

/// The progress display before the total size is known: the bytes so far and the rate.
const SPINNER_TEMPLATE: &str =
    "{spinner} {msg} {binary_bytes} ({binary_bytes_per_sec}) [{elapsed}]";
/// The progress display against a known total.
const BAR_TEMPLATE: &str =
    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)";

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
    // Sizes in human units (`12.3 MiB`); until the total is known (or when the source does
    // not say), a spinner with the bytes so far, then a bar against the total.
    let style = |template: &str| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
            .progress_chars("=> ")
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(style(SPINNER_TEMPLATE));
    let mut has_total = false;
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
                if let Some(total) = progress.bytes_total.filter(|t| *t > 0) {
                    if !has_total {
                        has_total = true;
                        bar.set_style(style(BAR_TEMPLATE));
                    }
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

/// How wide a task's error may be in the status table before it is cut (without `--wide`).
pub(super) const SHORT_ERROR: usize = 60;

/// Whether `p` is what is left of a removed package (nothing installed, last task a finished
/// `remove`): not worth a line.
fn is_removed(p: &PackageStatus) -> bool {
    p.stable_version.is_empty()
        && p.experiment_version.is_empty()
        && p.task
            .as_ref()
            .is_some_and(|t| t.operation == "remove" && t.state == TaskState::Done)
}

/// `s` up to its first line and `max` characters, with `…` when anything was cut.
pub(super) fn one_line(s: &str, max: usize) -> (String, bool) {
    let first = s.lines().next().unwrap_or("");
    let mut out: String = first.chars().take(max).collect();
    let cut = out.len() < s.trim_end().len();
    if cut {
        out.push('…');
    }
    (out, cut)
}

/// The last task as one cell: `<operation> [<version>] running|done|failed`, then
/// ` (<code>): <message>` for a failed one, the message shortened unless `wide`. Returns
/// whether the message was shortened.
fn task_cell(t: &Task, wide: bool) -> (String, bool) {
    let state = match t.state {
        TaskState::Running => "running",
        TaskState::Done => "done",
        TaskState::Error => "failed",
        TaskState::InvalidState => "refused",
    };
    let mut s = match t.version.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => format!("{} {v} {state}", t.operation),
        None => format!("{} {state}", t.operation),
    };
    let mut cut = false;
    if let Some(e) = &t.error {
        let message = if wide {
            e.message.clone()
        } else {
            let (m, c) = one_line(&e.message, SHORT_ERROR);
            cut = c;
            m
        };
        s.push_str(&format!(" ({}): {message}", e.code));
    }
    (s, cut)
}

/// How long ago the task finished (started, while it runs), as `kubectl` writes ages: `42s`,
/// `7m`, `5h`, `3d`; `-` when the task carries no time (recorded by an older daemon).
fn task_age(t: &Task) -> String {
    let Some(at) = t
        .finished_at
        .as_deref()
        .or(t.started_at.as_deref())
        .and_then(parse_rfc3339)
    else {
        return "-".to_string();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    compact_age(Duration::from_millis(now.saturating_sub(at)))
}

/// `42s`, `7m`, `5h` (under two days), `3d`.
pub(super) fn compact_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn print_status(status: &StatusResponse, args: &StatusArgs, given: &str) -> Result<(), Failure> {
    let dash = |v: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(package) = &args.package {
        let Some(p) = status
            .remote_config_state
            .iter()
            .find(|p| &p.package == package)
        else {
            return Err(Failure::Local {
                code: "not_installed",
                message: format!("{package} is not installed"),
            });
        };
        println!("package:     {}", p.package);
        println!("stable:      {}", dash(&p.stable_version));
        println!("experiment:  {}", dash(&p.experiment_version));
        match &p.task {
            None => println!("last task:   -"),
            Some(t) => {
                let (cell, _) = task_cell(
                    &Task {
                        error: None,
                        ..t.clone()
                    },
                    true,
                );
                println!("last task:   {cell}");
                println!("task id:     {}", t.id);
                if let Some(at) = &t.started_at {
                    println!("started:     {at}");
                }
                if let Some(at) = &t.finished_at {
                    println!("finished:    {at} ({} ago)", task_age(t));
                }
                if let Some(e) = &t.error {
                    println!("error code:  {}", e.code);
                    println!("error:");
                    for line in e.message.lines() {
                        println!("  {line}");
                    }
                }
            }
        }
        return Ok(());
    }
    println!("outpost daemon {}", status.version);
    let mut any_cut = false;
    if let Some(fleet) = &status.fleet {
        any_cut |= super::fleet::print_status_lines(fleet, args.wide);
    }
    let shown: Vec<&PackageStatus> = status
        .remote_config_state
        .iter()
        .filter(|p| !is_removed(p))
        .collect();
    if shown.is_empty() {
        println!("no packages installed");
        if any_cut {
            println!("(errors shortened: `outpost status --wide{given}` shows them in full)");
        }
        return Ok(());
    }
    let rows: Vec<[String; 5]> = shown
        .iter()
        .map(|p| {
            let task = match &p.task {
                None => String::new(),
                Some(t) => {
                    let (cell, cut) = task_cell(t, args.wide);
                    any_cut |= cut;
                    cell
                }
            };
            [
                p.package.clone(),
                dash(&p.stable_version),
                dash(&p.experiment_version),
                p.task.as_ref().map_or_else(|| "-".to_string(), task_age),
                task,
            ]
        })
        .collect();
    print_table(
        &["PACKAGE", "STABLE", "EXPERIMENT", "AGE", "LAST TASK"],
        &rows,
    );
    super::experiment::print_watches(status);
    if any_cut {
        println!(
            "(errors shortened: `outpost status PACKAGE{given}` or `outpost status --wide{given}` \
             shows them in full)"
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h"),
            (172_799, "47h"),
            (172_800, "2d"),
        ] {
            assert_eq!(compact_age(Duration::from_secs(secs)), text);
        }
        let mut t = Task {
            id: "t".into(),
            operation: "install".into(),
            version: None,
            state: TaskState::Done,
            error: None,
            progress: None,
            started_at: None,
            finished_at: None,
        };
        assert_eq!(task_age(&t), "-");
        t.started_at = Some("2000-01-01T00:00:00.000Z".into());
        assert!(task_age(&t).ends_with('d'), "{}", task_age(&t));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        t.finished_at = Some(outpost_types::wire::format_rfc3339(now - 125_000));
        assert_eq!(task_age(&t), "2m");
    }

    #[test]
    fn the_progress_templates_are_valid() {
        for template in [SPINNER_TEMPLATE, BAR_TEMPLATE] {
            assert!(
                indicatif::ProgressStyle::with_template(template).is_ok(),
                "{template}"
            );
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("datadog-agent"), "datadog-agent");
        assert_eq!(path_segment("a.b"), "a.b");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("a/b"), "a%2Fb");
        assert_eq!(path_segment("a b"), "a%20b");
    }
}
