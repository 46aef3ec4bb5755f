//! Config experiments on the command line (`docs/config-experiments.md`):
//! `config-catalog set|show`, `config-experiment start|stop|promote|watch` and `config show`.
//! `config-experiment start` takes the watch's policy flags of `experiment start`, and
//! `config-experiment watch` is `experiment watch` on the config experiment's watch.
//!
//! `config-experiment start` seals every `--secret` / `--secret-file` to the daemon's public
//! key (`secrets_pub_key` of `/status`) before anything is sent: a plaintext never crosses the
//! socket, and never reaches an error message. `config show` reads the files from
//! `<root>/config/<package>/` itself (the API never returns config files, which may hold
//! secrets); a file the caller may not read is listed, not printed.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use outpost_api::ApiClient;
use outpost_cli::ExitStatus;
use outpost_cli::args::{
    ConfigCatalogCommand, ConfigCommand, ConfigExperimentCommand, ConfigLink, ConfigShowArgs,
    ConfigStartArgs, GlobalArgs,
};
use outpost_cli::output::{print_error_json, print_json};
use outpost_config::{ConfigCatalog, ConfigOperations};
use outpost_secrets::PublicKey;
use outpost_secrets::zeroize::Zeroizing;
use outpost_types::wire::{Empty, PackageStatus, StatusResponse};
use serde::Serialize;
use serde_json::{Value, json};

use super::client::{path_segment, pick_socket, report_client_error};
use super::experiment::{Watched, follow, policy_fields};

/// The config commands that talk to the daemon.
#[derive(Debug)]
pub(crate) enum ConfigVerb {
    CatalogSet(String),
    CatalogShow,
    Start(Box<ConfigStartArgs>),
    Stop(String),
    Promote(String),
    Watch(String),
    Show(ConfigShowArgs),
}

impl ConfigVerb {
    fn doing(&self) -> &'static str {
        match self {
            Self::CatalogSet(_) => "setting the config catalog",
            Self::CatalogShow => "getting the config catalog",
            Self::Start(_) => "starting config experiment",
            Self::Stop(_) => "stopping config experiment",
            Self::Promote(_) => "promoting config experiment",
            Self::Watch(_) => "watching config experiment",
            Self::Show(_) => "showing config",
        }
    }
}

impl From<ConfigCatalogCommand> for ConfigVerb {
    fn from(c: ConfigCatalogCommand) -> Self {
        match c {
            ConfigCatalogCommand::Set(args) => Self::CatalogSet(args.file),
            ConfigCatalogCommand::Show => Self::CatalogShow,
        }
    }
}

impl From<ConfigExperimentCommand> for ConfigVerb {
    fn from(c: ConfigExperimentCommand) -> Self {
        match c {
            ConfigExperimentCommand::Start(args) => Self::Start(args),
            ConfigExperimentCommand::Stop(args) => Self::Stop(args.package),
            ConfigExperimentCommand::Promote(args) => Self::Promote(args.package),
            ConfigExperimentCommand::Watch(args) => Self::Watch(args.package),
        }
    }
}

impl From<ConfigCommand> for ConfigVerb {
    fn from(c: ConfigCommand) -> Self {
        match c {
            ConfigCommand::Show(args) => Self::Show(args),
        }
    }
}

/// What went wrong.
enum Failure {
    /// Before or beside the daemon: bad input, an unreadable file.
    Local(&'static str, String),
    Client(outpost_api::ClientError),
    /// Already said on the output: only the exit status is left.
    Reported(ExitStatus),
}

impl From<outpost_api::ClientError> for Failure {
    fn from(e: outpost_api::ClientError) -> Self {
        Self::Client(e)
    }
}

fn input(message: String) -> Failure {
    Failure::Local("invalid_input", message)
}

/// Runs a config command and returns the exit status.
pub(crate) fn run(global: &GlobalArgs, verb: ConfigVerb) -> ExitStatus {
    let doing = verb.doing();
    let runtime = match outpost_cli::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error {doing}: cannot start the I/O runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    let socket = pick_socket(&global.daemon_sockets());
    let client = ApiClient::new(&socket);
    match runtime.block_on(execute(&client, global, verb)) {
        Ok(()) => ExitStatus::Success,
        Err(Failure::Local(code, message)) => {
            eprintln!("error {doing}: {message}");
            if global.json {
                print_error_json(code, &message);
            }
            ExitStatus::Failure
        }
        Err(Failure::Client(e)) => report_client_error(global, doing, &socket, &e),
        Err(Failure::Reported(status)) => status,
    }
}

/// What a config mutation did, for `--json`.
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    package: &'a str,
    operation: &'static str,
    stable_config_version: String,
    experiment_config_version: String,
    changed: bool,
}

async fn config_versions(
    client: &ApiClient,
    package: &str,
) -> Result<(StatusResponse, Option<PackageStatus>), Failure> {
    let status: StatusResponse = client.get("/status").await?;
    let entry = status
        .remote_config_state
        .iter()
        .find(|p| p.package == package)
        .cloned();
    Ok((status, entry))
}

fn pair(entry: Option<&PackageStatus>) -> (String, String) {
    entry.map_or_else(Default::default, |p| {
        (
            p.stable_config_version.clone(),
            p.experiment_config_version.clone(),
        )
    })
}

async fn execute(client: &ApiClient, global: &GlobalArgs, verb: ConfigVerb) -> Result<(), Failure> {
    let say = |message: String| {
        if !global.json && global.quiet == 0 {
            println!("{message}");
        }
    };
    let promote = matches!(verb, ConfigVerb::Promote(_));
    match verb {
        ConfigVerb::CatalogSet(source) => {
            let value = read_document(&source, "config catalog")?;
            let catalog: ConfigCatalog = serde_json::from_value(value.clone())
                .map_err(|e| input(format!("invalid config catalog in {source}: {e}")))?;
            outpost_config::validate_catalog(&catalog).map_err(|e| {
                input(format!(
                    "invalid config catalog in {source}: {}",
                    e.detail()
                ))
            })?;
            let before: ConfigCatalog = client.get("/config_catalog").await?;
            let _: Empty = client.post("/config_catalog", Some(&value)).await?;
            let n = catalog.len();
            if global.json {
                print_json(
                    &json!({"operation": "set_config_catalog", "entries": n, "changed": before != catalog}),
                );
            }
            say(format!(
                "config catalog set ({n} {})",
                if n == 1 { "entry" } else { "entries" }
            ));
        }
        ConfigVerb::CatalogShow => {
            let catalog: ConfigCatalog = client.get("/config_catalog").await?;
            if global.json {
                print_json(&catalog);
            } else if catalog.is_empty() {
                println!("the config catalog is empty");
            } else {
                for (id, entry) in &catalog {
                    let n = entry.file_operations.len();
                    println!("{id}  {n} file operation{}", if n == 1 { "" } else { "s" });
                }
            }
        }
        ConfigVerb::Start(args) => {
            let (status, entry) = config_versions(client, &args.package).await?;
            let before = pair(entry.as_ref());
            let mut body = serde_json::Map::new();
            match (&args.id, &args.file) {
                (Some(id), None) => {
                    body.insert("version".into(), json!(id));
                }
                (None, Some(file)) => {
                    let value = read_document(file, "operations")?;
                    let ops: ConfigOperations = serde_json::from_value(value.clone())
                        .map_err(|e| input(format!("invalid operations in {file}: {e}")))?;
                    ops.validate().map_err(|e| {
                        input(format!("invalid operations in {file}: {}", e.detail()))
                    })?;
                    body.insert("operations".into(), value);
                }
                _ => return Err(input("give a config catalog ID or --file OPS".into())),
            }
            body.extend(policy_fields(&args.policy));
            let secrets = read_secrets(&args)?;
            if !secrets.is_empty() {
                let key = PublicKey::from_base64(&status.secrets_pub_key).map_err(|e| {
                    Failure::Local(
                        "protocol",
                        format!("the daemon's secrets_pub_key is unusable: {e}"),
                    )
                })?;
                let sealed: BTreeMap<&str, String> = secrets
                    .iter()
                    .map(|(k, v)| (k.as_str(), key.seal_base64(v.as_bytes())))
                    .collect();
                body.insert("encrypted_secrets".into(), json!(sealed));
            }
            let path = format!("/{}/config_experiment/start", path_segment(&args.package));
            let _: Empty = client.post(&path, Some(&Value::Object(body))).await?;
            let (_, entry) = config_versions(client, &args.package).await?;
            let after = pair(entry.as_ref());
            let changed = before != after;
            if global.json {
                print_json(&Outcome {
                    package: &args.package,
                    operation: "start_config_experiment",
                    stable_config_version: after.0.clone(),
                    experiment_config_version: after.1.clone(),
                    changed,
                });
            }
            say(if changed {
                format!("{} config {} started as experiment", args.package, after.1)
            } else {
                format!(
                    "{} config {} is already the experiment",
                    args.package, after.1
                )
            });
        }
        ConfigVerb::Stop(package) | ConfigVerb::Promote(package) => {
            let (_, entry) = config_versions(client, &package).await?;
            let before = pair(entry.as_ref());
            let (route, operation) = if promote {
                ("promote", "promote_config_experiment")
            } else {
                ("stop", "stop_config_experiment")
            };
            let path = format!("/{}/config_experiment/{route}", path_segment(&package));
            let _: Empty = client.post(&path, Some(&json!({}))).await?;
            let (_, entry) = config_versions(client, &package).await?;
            let after = pair(entry.as_ref());
            let changed = before != after;
            if global.json {
                print_json(&Outcome {
                    package: &package,
                    operation,
                    stable_config_version: after.0.clone(),
                    experiment_config_version: after.1.clone(),
                    changed,
                });
            }
            say(match (promote, changed) {
                (true, _) => format!("{package} config {} is now stable", after.0),
                (false, true) => format!("{package} config experiment {} stopped", before.1),
                (false, false) => format!("{package} has no config experiment"),
            });
        }
        ConfigVerb::Show(args) => show(client, global, &args).await?,
        ConfigVerb::Watch(package) => {
            let status = follow(client, global, &package, Watched::Config).await?;
            if status != ExitStatus::Success {
                return Err(Failure::Reported(status));
            }
        }
    }
    Ok(())
}

/// A JSON or YAML document: `-` is stdin, a value starting with `{` the JSON itself, anything
/// else a file.
fn read_document(source: &str, what: &str) -> Result<Value, Failure> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| input(format!("reading stdin: {e}")))?;
        text
    } else if source.trim_start().starts_with('{') {
        source.to_owned()
    } else {
        fs_err::read_to_string(source).map_err(|e| input(e.to_string()))?
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => Ok(v),
        Err(json_error) => serde_saphyr::from_str::<Value>(&text).map_err(|_| {
            input(format!(
                "the {what} in {source} is neither JSON ({json_error}) nor YAML"
            ))
        }),
    }
}

/// `--secret KEY=VALUE` and `--secret-file KEY=PATH`, in memory wiped on drop.
fn read_secrets(args: &ConfigStartArgs) -> Result<BTreeMap<String, Zeroizing<String>>, Failure> {
    let mut out = BTreeMap::new();
    let split = |s: &str, flag: &str| -> Result<(String, String), Failure> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(input(format!("{flag} takes KEY=..., with a non-empty KEY"))),
        }
    };
    for s in &args.secrets {
        let (key, value) = split(s, "--secret")?;
        out.insert(key, Zeroizing::new(value));
    }
    for s in &args.secret_files {
        let (key, path) = split(s, "--secret-file")?;
        let mut text =
            Zeroizing::new(fs_err::read_to_string(&path).map_err(|e| input(e.to_string()))?);
        if text.ends_with('\n') {
            text.pop();
        }
        out.insert(key, text);
    }
    Ok(out)
}

/// One file of a config, for `config show --json`.
#[derive(Debug, Serialize)]
struct ShownFile {
    path: String,
    mode: String,
    size: u64,
    /// The content, when the caller may read it and it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

async fn show(
    client: &ApiClient,
    global: &GlobalArgs,
    args: &ConfigShowArgs,
) -> Result<(), Failure> {
    let (_, entry) = config_versions(client, &args.package).await?;
    let Some(entry) = entry else {
        return Err(Failure::Local(
            "not_installed",
            format!("{} is not installed", args.package),
        ));
    };
    let (which, id) = match args.which {
        ConfigLink::Stable => ("stable", entry.stable_config_version),
        ConfigLink::Experiment => ("experiment", entry.experiment_config_version),
    };
    let dir = global.root().join("config").join(&args.package).join(&id);
    let files = if id.is_empty() {
        Vec::new()
    } else {
        let mut files = Vec::new();
        list_files(&dir, &dir, &mut files).map_err(|e| Failure::Local("filesystem", e))?;
        files
    };
    if global.json {
        print_json(&json!({
            "package": args.package,
            "config": which,
            "deployment_id": id,
            "directory": (!id.is_empty()).then(|| dir.display().to_string()),
            "files": files,
        }));
        return Ok(());
    }
    if id.is_empty() {
        match args.which {
            ConfigLink::Stable => println!("{}: the stable config is empty", args.package),
            ConfigLink::Experiment => println!("{}: no config experiment", args.package),
        }
        return Ok(());
    }
    println!("{} {which} config {id} ({})", args.package, dir.display());
    for f in &files {
        println!();
        println!("--- {} (mode {}, {} bytes)", f.path, f.mode, f.size);
        match &f.content {
            Some(text) => print!("{text}{}", if text.ends_with('\n') { "" } else { "\n" }),
            None => println!("(not shown: not readable by this user, or not text)"),
        }
    }
    Ok(())
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<ShownFile>) -> Result<(), String> {
    let mut entries: Vec<_> = fs_err::read_dir(dir)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs_err::symlink_metadata(&path).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            list_files(base, &path, out)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(base).unwrap_or(&path);
            out.push(ShownFile {
                path: format!("/{}", rel.display()),
                mode: format!("{:04o}", meta.permissions().mode() & 0o7777),
                size: meta.len(),
                content: fs_err::read(&path)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok()),
            });
        }
    }
    Ok(())
}
