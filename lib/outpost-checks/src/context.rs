//! The agent-side data behind the `datadog_agent` module: hostname, version, configuration,
//! persistent cache, process start time. Set once when the runtime starts.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use outpost_types::config::AgentConfig;
use serde_json::{Value as Json, json};

use crate::cache::PersistentCache;

/// The keys [`default_for`] answers.
const DEFAULT_KEYS: &[&str] = &[
    "enable_metadata_collection",
    "log_level",
    "logs_enabled",
    "integration_tracing",
    "integration_tracing_futures",
    "integration_tracing_exhaustive",
    "integration_profiling",
    "tracemalloc_debug",
    "disable_py3_validation",
    "python3_linter_timeout",
    "skip_ssl_validation",
    "min_collection_interval",
    "check_runners",
    "hostname",
    "run_path",
    "version_reported_to_checks",
];

/// Datadog agent defaults for keys checks read through `get_config` when the configuration
/// file is silent. Keys read by datadog-checks-base 38.5.0 at import or instantiation whose
/// "unset" (`None`) meaning differs from the agent's default are here; keys whose default is
/// "unset" (proxy, trusted providers, tracing excludes) are not.
fn default_for(key: &str, agent: &AgentContextInputs) -> Option<Json> {
    Some(match key {
        "enable_metadata_collection" => json!(true),
        "log_level" => json!("info"),
        "logs_enabled" => json!(false),
        "integration_tracing"
        | "integration_tracing_futures"
        | "integration_tracing_exhaustive" => {
            json!(false)
        }
        "integration_profiling" => json!(false),
        "tracemalloc_debug" => json!(false),
        "disable_py3_validation" => json!(false),
        "python3_linter_timeout" => json!(120),
        "skip_ssl_validation" => json!(false),
        "min_collection_interval" => json!(15),
        "check_runners" => json!(agent.runners),
        "hostname" => json!(agent.hostname),
        "run_path" => json!(agent.run_dir.display().to_string()),
        "version_reported_to_checks" => json!(agent.version),
        _ => return None,
    })
}

/// What [`default_for`] needs.
#[derive(Debug)]
struct AgentContextInputs {
    runners: usize,
    hostname: String,
    run_dir: PathBuf,
    version: String,
}

/// The agent's answers to the `datadog_agent` functions.
#[derive(Debug)]
pub(crate) struct AgentContext {
    pub(crate) hostname: String,
    pub(crate) version: String,
    pub(crate) config: AgentConfig,
    pub(crate) cache: PersistentCache,
    pub(crate) process_start_time: f64,
    pub(crate) host_tags_json: String,
    /// The `agentConfig` dict of legacy constructors: every default of [`default_for`],
    /// overridden by what the `agent:` section sets.
    pub(crate) settings: Json,
    inputs: AgentContextInputs,
}

impl AgentContext {
    pub(crate) fn new(config: AgentConfig, run_dir: PathBuf) -> Self {
        let hostname = config
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(system_hostname);
        let version = config
            .version_reported_to_checks
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| outpost_types::VERSION.to_owned());
        let host_tags_json = if config.tags.is_empty() {
            "{}".to_owned()
        } else {
            json!({ "system": config.tags }).to_string()
        };
        let inputs = AgentContextInputs {
            runners: config.runners,
            hostname: hostname.clone(),
            run_dir: run_dir.clone(),
            version: version.clone(),
        };
        Self {
            hostname,
            version,
            cache: PersistentCache::new(run_dir.join("checks-cache")),
            process_start_time: process_start_time(),
            host_tags_json,
            settings: settings(&config, &inputs),
            config,
            inputs,
        }
    }

    /// `get_config(key)`: the `agent:` section (dotted keys walk maps), else the Datadog
    /// default, else `None`.
    pub(crate) fn get_config(&self, key: &str) -> Option<Json> {
        self.config
            .get(key)
            .or_else(|| default_for(key, &self.inputs))
    }

    /// `get_clustername()`.
    pub(crate) fn cluster_name(&self) -> String {
        match self.config.get("cluster_name") {
            Some(Json::String(s)) => s,
            _ => String::new(),
        }
    }

    /// `tracemalloc_enabled()`.
    pub(crate) fn tracemalloc_enabled(&self) -> bool {
        matches!(self.config.get("tracemalloc_debug"), Some(Json::Bool(true)))
    }
}

/// The agent's settings as one JSON object, what the Go agent passes as `agentConfig` (its
/// `AllSettings()`): the defaults `get_config` answers, then every key the `agent:` section
/// sets (`null`s, the unset optional keys, leave the default in place).
fn settings(config: &AgentConfig, inputs: &AgentContextInputs) -> Json {
    let mut map: serde_json::Map<String, Json> = DEFAULT_KEYS
        .iter()
        .filter_map(|k| default_for(k, inputs).map(|v| ((*k).to_owned(), v)))
        .collect();
    match serde_json::to_value(config) {
        Ok(Json::Object(file)) => map.extend(file.into_iter().filter(|(_, v)| !v.is_null())),
        Ok(other) => {
            tracing::warn!(settings = %other, "the agent section is not a map; agentConfig holds the defaults only");
        }
        Err(e) => {
            tracing::warn!(error = %e, "the agent section cannot be serialised; agentConfig holds the defaults only");
        }
    }
    Json::Object(map)
}

static CONTEXT: OnceLock<Arc<AgentContext>> = OnceLock::new();

/// Installs the context (once per process; later calls keep the first).
pub(crate) fn install(ctx: Arc<AgentContext>) -> Arc<AgentContext> {
    Arc::clone(CONTEXT.get_or_init(|| ctx))
}

/// The installed context, if the runtime started.
pub(crate) fn get() -> Option<&'static Arc<AgentContext>> {
    CONTEXT.get()
}

/// The kernel's host name (`uname -n`).
pub(crate) fn system_hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// When this process started, in seconds since the epoch (from `/proc/self/stat` and the
/// boot time), or now if that cannot be read.
fn process_start_time() -> f64 {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let stat = fs_err::read_to_string("/proc/self/stat").ok();
    let boot = fs_err::read_to_string("/proc/stat").ok();
    let (Some(stat), Some(boot)) = (stat, boot) else {
        return now();
    };
    // Field 22 (starttime), counted after the closing parenthesis of the command name.
    let start_ticks = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|s| s.parse::<u64>().ok());
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse::<u64>().ok());
    let hz = rustix::param::clock_ticks_per_second();
    match (start_ticks, btime) {
        (Some(t), Some(b)) if hz > 0 => b as f64 + t as f64 / hz as f64,
        _ => now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_then_defaults() {
        let mut config = AgentConfig::default();
        config.extra.insert("log_level".into(), json!("debug"));
        config.extra.insert("nested".into(), json!({"k": {"j": 1}}));
        config.hostname = Some("box".into());
        let ctx = AgentContext::new(config, PathBuf::from("/r/run"));
        assert_eq!(ctx.get_config("log_level"), Some(json!("debug")));
        assert_eq!(ctx.get_config("nested.k.j"), Some(json!(1)));
        assert_eq!(
            ctx.get_config("enable_metadata_collection"),
            Some(json!(true))
        );
        assert_eq!(ctx.get_config("run_path"), Some(json!("/r/run")));
        assert_eq!(ctx.get_config("hostname"), Some(json!("box")));
        assert_eq!(ctx.get_config("no_such_key"), None);
        assert_eq!(ctx.hostname, "box");
        assert_eq!(ctx.version, outpost_types::VERSION);
        assert_eq!(ctx.host_tags_json, "{}");
        assert!(!ctx.tracemalloc_enabled());
    }

    #[test]
    fn settings_are_the_defaults_overridden_by_the_file() {
        let mut config = AgentConfig::default();
        config.extra.insert("log_level".into(), json!("debug"));
        config
            .extra
            .insert("proxy".into(), json!({"http": "http://p:3128"}));
        config.runners = 2;
        let ctx = AgentContext::new(config, PathBuf::from("/r/run"));
        let s = ctx.settings.as_object().unwrap();
        for key in DEFAULT_KEYS {
            assert!(s.contains_key(*key), "{key} in {s:?}");
            assert!(
                default_for(key, &ctx.inputs).is_some(),
                "{key} has a default"
            );
        }
        assert_eq!(s["log_level"], json!("debug"), "the file wins");
        assert_eq!(s["enable_metadata_collection"], json!(true));
        assert_eq!(s["proxy"], json!({"http": "http://p:3128"}));
        assert_eq!(s["runners"], json!(2));
        assert_eq!(s["check_runners"], json!(2));
        assert_eq!(
            s["hostname"],
            json!(ctx.hostname),
            "an unset key keeps its default"
        );
        assert_eq!(s["run_path"], json!("/r/run"));
        assert_eq!(s["version_reported_to_checks"], json!(ctx.version));
        for (key, value) in s {
            assert!(!value.is_null(), "{key} is null");
            assert_eq!(
                ctx.get_config(key).as_ref(),
                Some(value),
                "get_config({key})"
            );
        }
    }

    #[test]
    fn version_and_hostname_fallbacks() {
        let config = AgentConfig {
            version_reported_to_checks: Some("7.52.0".into()),
            tags: vec!["env:x".into()],
            ..AgentConfig::default()
        };
        let ctx = AgentContext::new(config, PathBuf::from("/r/run"));
        assert_eq!(ctx.version, "7.52.0");
        assert_eq!(ctx.hostname, system_hostname());
        assert!(!ctx.hostname.is_empty());
        assert_eq!(ctx.host_tags_json, r#"{"system":["env:x"]}"#);
    }

    #[test]
    fn start_time_is_in_the_past() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let t = process_start_time();
        assert!(t <= now + 1.0 && t > now - 86_400.0 * 365.0, "{t} vs {now}");
    }
}
