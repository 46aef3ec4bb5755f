//! The configuration file, `outpost.yaml` (`spec/cli.md`). Every key is optional; an absent
//! file means the defaults. Unknown keys are refused in every section but `agent`, whose extra
//! keys are what checks read through `datadog_agent.get_config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The daemon's API listener and who may use it.
    pub api: ApiConfig,
    /// Repository and unpacking settings.
    pub packages: PackagesConfig,
    /// Registry access.
    pub registry: RegistryConfig,
    /// The check agent.
    pub agent: AgentConfig,
    /// The daemon's read-only metrics listener.
    pub telemetry: TelemetryConfig,
    /// Fleet convergence: the desired-state document this host polls. Off when absent.
    pub fleet: Option<FleetConfig>,
}

/// Default of `fleet.poll_interval`.
pub const DEFAULT_FLEET_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// `fleet:`: where the daemon polls its desired-state document, which keys may sign it, and
/// who this host is for cohorts and selectors (`docs/fleet.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The document's artifact: `oci://host[:port]/repo:tag` (or `@sha256:...`).
    pub source: FleetSource,
    /// Time between two polls (default 30s), scaled by a per-host factor in [0.9, 1.1].
    #[serde(default = "default_fleet_poll_interval")]
    pub poll_interval: HumanDuration,
    /// minisign public key files; a document signed by any of them is trusted.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Accept documents without a signature (a lab setting, reported loudly).
    #[serde(default)]
    pub allow_unsigned: bool,
    /// The host id for cohorts; `/etc/machine-id` when absent.
    #[serde(default)]
    pub host_id: Option<String>,
    /// This host's labels, matched by experiment selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_fleet_poll_interval() -> HumanDuration {
    HumanDuration(DEFAULT_FLEET_POLL_INTERVAL)
}

/// `fleet.source`: an `oci://` reference, checked when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSource(pub crate::source::OciReference);

impl fmt::Display for FleetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}", self.0)
    }
}

impl<'de> Deserialize<'de> for FleetSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let rest = s.strip_prefix("oci://").ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not an OCI reference: expected oci://host/repo:tag"
            ))
        })?;
        crate::source::OciReference::parse(rest)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// `telemetry:`: the daemon's read-only TCP listener (`GET /metrics`). Off unless `listen` is
/// set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of the read-only listener, e.g. `127.0.0.1:9465`; none when unset.
    pub listen: Option<SocketAddr>,
    /// Allow `listen` to be a non-loopback address (exposes the metrics to other hosts).
    pub allow_remote: bool,
}

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not YAML, or its top level is not a map of the known sections.
    #[error("{}{source}", file_prefix(file.as_deref()))]
    Syntax {
        /// The file, when the text came from one.
        file: Option<PathBuf>,
        /// The parser's error, with its line and column.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// One key is unknown, or its value has the wrong type or form.
    #[error("{}invalid {key}: {source}", file_prefix(file.as_deref()))]
    Key {
        /// The file, when the text came from one.
        file: Option<PathBuf>,
        /// The dotted path of the key, e.g. `packages.gc_interval`.
        key: String,
        /// The parser's error, with its line and column.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
}

fn file_prefix(file: Option<&std::path::Path>) -> String {
    file.map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// The file the text came from, when known.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Self::Syntax { file, .. } | Self::Key { file, .. } => file.as_deref(),
        }
    }

    /// The dotted path of the refused key, when one key is at fault.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Syntax { .. } => None,
            Self::Key { key, .. } => Some(key),
        }
    }

    fn in_file(mut self, path: &std::path::Path) -> Self {
        match &mut self {
            Self::Syntax { file, .. } | Self::Key { file, .. } => *file = Some(path.to_owned()),
        }
        self
    }
}

impl Config {
    /// Parses the YAML text of a configuration file. An empty document gives the defaults.
    /// Every key is parsed once, into its typed field.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming the key for an unknown key (outside `agent:`) or a value
    /// of the wrong type or form; [`ConfigError::Syntax`] for text that is not YAML.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut key: Option<String> = None;
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Option<Config>>(de).map_err(|e| {
                key = Some(e.path().to_string());
                e.into_inner()
            })
        });
        match parsed {
            Ok(config) => Ok(config.unwrap_or_default()),
            Err(source) => {
                let source = Box::new(source);
                match key.filter(|k| !k.is_empty() && k != ".") {
                    Some(key) => Err(ConfigError::Key {
                        file: None,
                        key,
                        source,
                    }),
                    None => Err(ConfigError::Syntax { file: None, source }),
                }
            }
        }
    }

    /// [`Config::from_yaml`] for the text of the file at `path`, whose errors name the file.
    ///
    /// # Errors
    /// As [`Config::from_yaml`], with [`ConfigError::file`] set.
    pub fn from_yaml_file_text(path: &std::path::Path, text: &str) -> Result<Self, ConfigError> {
        Self::from_yaml(text).map_err(|e| e.in_file(path))
    }
}

/// `api:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Uids allowed to call mutating routes, besides root and the daemon's own uid.
    pub allow_uids: Vec<u32>,
    /// Gids allowed to call mutating routes.
    pub allow_gids: Vec<u32>,
    /// An extra TCP listener, for tests and tools only. Off unless set.
    pub tcp: Option<SocketAddr>,
}

/// `packages:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackagesConfig {
    /// How often old versions are garbage-collected (default 1h).
    pub gc_interval: HumanDuration,
    /// How long a lifecycle hook may run (default 60s).
    pub hook_timeout: HumanDuration,
    /// Limit on the bytes one package may unpack to (default 8GiB).
    pub max_unpacked_bytes: ByteSize,
    /// Limit on the size of one file in a package (default 4GiB).
    pub max_file_bytes: ByteSize,
    /// Limit on the number of entries in a package (default 1,000,000).
    pub max_entries: u64,
    /// How long an experiment may run without a promote when its start did not say (default
    /// 1h); clamped by the daemon to 1 min..24 h.
    pub experiment_max_duration: HumanDuration,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        Self {
            gc_interval: HumanDuration(Duration::from_secs(3600)),
            hook_timeout: HumanDuration(Duration::from_secs(60)),
            max_unpacked_bytes: ByteSize(8 << 30),
            max_file_bytes: ByteSize(4 << 30),
            max_entries: 1_000_000,
            experiment_max_duration: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

/// Default of `registry.stall_timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `registry:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port]` values spoken to over plain HTTP. Nothing else is.
    pub insecure_hosts: Vec<String>,
    /// `host[:port]` that replaces every registry host.
    pub mirror: Option<String>,
    /// Default username for every registry.
    pub username: Option<String>,
    /// File holding the default password (one trailing newline is stripped).
    pub password_file: Option<PathBuf>,
    /// Per-host credentials, overriding the defaults.
    pub auths: BTreeMap<String, RegistryLogin>,
    /// How long a download from a registry or an HTTP server may wait without making
    /// progress (default 60s): a body that stops, or trickles less than 16 KiB in this
    /// much waiting, is a stall and fails with `download_failed` after its retries.
    pub stall_timeout: HumanDuration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            insecure_hosts: Vec::new(),
            mirror: None,
            username: None,
            password_file: None,
            auths: BTreeMap::new(),
            stall_timeout: HumanDuration(DEFAULT_STALL_TIMEOUT),
        }
    }
}

impl RegistryConfig {
    /// Whether `host` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_hosts.iter().any(|h| h == host)
    }

    /// The host a pull of a reference on `host` goes to: the mirror, when one is set (an
    /// empty mirror is none).
    pub fn pull_host<'a>(&'a self, host: &'a str) -> &'a str {
        self.mirror
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(host)
    }

    /// The login of hosts without their own entry in `auths`: `registry.username` and
    /// `registry.password_file`.
    pub fn default_login(&self) -> RegistryLogin {
        RegistryLogin {
            username: self.username.clone(),
            password_file: self.password_file.clone(),
        }
    }

    /// The login for `host` and the key it is configured under, for messages: its own entry
    /// (`registry.auths."<host>"`), else the default one (`registry`).
    pub fn login_for(&self, host: &str) -> (RegistryLogin, String) {
        match self.auths.get(host) {
            Some(login) => (login.clone(), format!("registry.auths.\"{host}\"")),
            None => (self.default_login(), "registry".to_owned()),
        }
    }
}

/// `registry.auths.<host>`: the configured credentials for one registry host, a username
/// and the file holding its password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryLogin {
    /// Username.
    pub username: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
}

/// Default of `agent.runners`.
pub const DEFAULT_RUNNERS: usize = 4;
/// Default of `agent.shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of `agent.python3_linter_timeout`, as in the Datadog agent.
pub const DEFAULT_PYTHON3_LINTER_TIMEOUT: Duration = Duration::from_secs(120);

/// `agent:`. Its typed keys are parsed once; every other key is kept for checks, which read
/// arbitrary keys through `datadog_agent.get_config` ([`AgentConfig::get`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Directory of check configurations (`conf.d`).
    pub conf_dir: Option<PathBuf>,
    /// Directory of custom checks (`checks.d`).
    pub checks_dir: Option<PathBuf>,
    /// Python virtual environment whose site-packages the checks import from.
    pub python_venv: Option<PathBuf>,
    /// Number of runner threads (default 4).
    pub runners: usize,
    /// Track Python allocations per check.
    pub memtrack_enabled: bool,
    /// Hostname reported to checks; the system hostname when unset.
    pub hostname: Option<String>,
    /// Host tags.
    pub tags: Vec<String>,
    /// Version reported to checks; outpost's own when unset.
    pub version_reported_to_checks: Option<String>,
    /// Run timeout of every check instance; each instance's interval when unset.
    pub check_timeout: Option<HumanDuration>,
    /// How long shutdown waits for runs in progress (default 5s).
    pub shutdown_timeout: HumanDuration,
    /// How long the validation of one custom check may take (default 120s).
    pub python3_linter_timeout: HumanDuration,
    /// Address of the agent's read-only listener (`GET /metrics`), e.g. `127.0.0.1:9464`;
    /// none when unset.
    pub listen: Option<SocketAddr>,
    /// Allow `listen` to be a non-loopback address (exposes the metrics to other hosts).
    pub allow_remote: bool,
    /// The most Python memory one check instance may keep (the memory tracker's estimate of
    /// what its runs allocated and did not free); an allocation past it fails with
    /// `MemoryError` and the run is reported as over the limit. None (the default): no limit.
    pub check_memory_limit: Option<ByteSize>,
    /// Every other key, readable by checks through `datadog_agent.get_config`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            conf_dir: None,
            checks_dir: None,
            python_venv: None,
            runners: DEFAULT_RUNNERS,
            memtrack_enabled: true,
            hostname: None,
            tags: Vec::new(),
            version_reported_to_checks: None,
            check_timeout: None,
            shutdown_timeout: HumanDuration(DEFAULT_SHUTDOWN_TIMEOUT),
            python3_linter_timeout: HumanDuration(DEFAULT_PYTHON3_LINTER_TIMEOUT),
            listen: None,
            allow_remote: false,
            check_memory_limit: None,
            extra: BTreeMap::new(),
        }
    }
}

impl AgentConfig {
    /// Looks up a key of the `agent:` section; dotted keys walk nested maps of the other
    /// keys. Typed keys answer their value (durations in seconds, defaults included);
    /// `None` when unset. Costs one map lookup per dotted part: only the value found is
    /// converted, never the whole section.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        let (head, rest) = match key.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (key, None),
        };
        let typed = match head {
            "conf_dir" => Some(serde_json::to_value(&self.conf_dir)),
            "checks_dir" => Some(serde_json::to_value(&self.checks_dir)),
            "python_venv" => Some(serde_json::to_value(&self.python_venv)),
            "runners" => Some(serde_json::to_value(self.runners)),
            "memtrack_enabled" => Some(serde_json::to_value(self.memtrack_enabled)),
            "hostname" => Some(serde_json::to_value(&self.hostname)),
            "tags" => Some(serde_json::to_value(&self.tags)),
            "version_reported_to_checks" => {
                Some(serde_json::to_value(&self.version_reported_to_checks))
            }
            "check_timeout" => Some(serde_json::to_value(self.check_timeout)),
            "shutdown_timeout" => Some(serde_json::to_value(self.shutdown_timeout)),
            "python3_linter_timeout" => Some(serde_json::to_value(self.python3_linter_timeout)),
            "listen" => Some(serde_json::to_value(self.listen)),
            "allow_remote" => Some(serde_json::to_value(self.allow_remote)),
            "check_memory_limit" => Some(serde_json::to_value(self.check_memory_limit)),
            _ => None,
        };
        if let Some(value) = typed {
            // Typed values are scalars or lists: a dotted key cannot walk into them.
            return match (value.ok()?, rest) {
                (serde_json::Value::Null, _) | (_, Some(_)) => None,
                (v, None) => Some(v),
            };
        }
        let mut cur = self.extra.get(head)?;
        if let Some(rest) = rest {
            for part in rest.split('.') {
                cur = cur.as_object()?.get(part)?;
            }
        }
        (!cur.is_null()).then(|| cur.clone())
    }
}

/// Why a duration or a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a number followed by a unit.
    #[error("invalid duration {text:?}")]
    Duration {
        /// The text.
        text: String,
    },
    /// A duration with an unknown unit.
    #[error("invalid duration {text:?}: units are ms, s, m, h, d")]
    DurationUnit {
        /// The text.
        text: String,
    },
    /// Not a number followed by a unit.
    #[error("invalid size {text:?}")]
    Size {
        /// The text.
        text: String,
    },
    /// A size with an unknown unit.
    #[error("invalid size {text:?}: units are B, KiB, MiB, GiB, TiB, KB, MB, GB, TB")]
    SizeUnit {
        /// The text.
        text: String,
    },
    /// A size beyond 2^64 bytes.
    #[error("size {text:?} is too large")]
    SizeTooLarge {
        /// The text.
        text: String,
    },
}

/// A duration written as `90`, `2.5`, `90s`, `500ms`, `15m`, `1h` or `2d` (bare numbers are
/// seconds). The one duration parser of the configuration; serialised as seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses the textual form.
    ///
    /// # Errors
    /// [`ValueError::Duration`] or [`ValueError::DurationUnit`].
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let s = s.trim();
        let bad = || ValueError::Duration { text: s.to_owned() };
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(ValueError::DurationUnit { text: s.to_owned() }),
        };
        Duration::try_from_secs_f64(secs)
            .map(Self)
            .map_err(|_| bad())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(n) => Ok(Self(Duration::from_secs(n))),
            NumOrStr::Float(n) => Duration::try_from_secs_f64(n).map(Self).map_err(|_| {
                serde::de::Error::custom(format!("{n} is not a non-negative number of seconds"))
            }),
            NumOrStr::Str(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A size written as `1048576`, `512KiB`, `64MiB`, `8GiB`, `1TiB`, or with SI units `KB`, `MB`,
/// `GB`. The one size parser of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the textual form.
    ///
    /// # Errors
    /// [`ValueError::Size`], [`ValueError::SizeUnit`] or [`ValueError::SizeTooLarge`].
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| ValueError::Size { text: s.to_owned() })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(ValueError::SizeUnit { text: s.to_owned() }),
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| ValueError::SizeTooLarge { text: s.to_owned() })
    }
}

/// Serialised as a number of bytes.
impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(n) => Ok(Self(n)),
            NumOrStr::Float(n) => Err(serde::de::Error::custom(format!(
                "{n} is not a whole number of bytes"
            ))),
            NumOrStr::Str(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Int(u64),
    Float(f64),
    Str(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_section() {
        assert_eq!(Config::default().fleet, None);
        let c = Config::from_yaml(
            "fleet:\n  source: oci://127.0.0.1:5000/fleet/doc:prod\n  trusted_keys: [/etc/k.pub]\n  \
             labels: {role: web}\n",
        )
        .unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.source.to_string(), "oci://127.0.0.1:5000/fleet/doc:prod");
        assert_eq!(f.poll_interval.0, DEFAULT_FLEET_POLL_INTERVAL);
        assert_eq!(f.trusted_keys, vec![PathBuf::from("/etc/k.pub")]);
        assert!(!f.allow_unsigned);
        assert_eq!(f.host_id, None);
        assert_eq!(f.labels["role"], "web");
        let c = Config::from_yaml(
            "fleet: {source: \"oci://r/d@sha256:0000000000000000000000000000000000000000000000000000000000000000\", \
             poll_interval: 5s, allow_unsigned: true, host_id: h1}\n",
        )
        .unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.poll_interval.0, Duration::from_secs(5));
        assert!(f.allow_unsigned);
        assert_eq!(f.host_id.as_deref(), Some("h1"));
        for (bad, key) in [
            ("fleet: {source: \"http://x/y:1\"}\n", "fleet.source"),
            ("fleet: {source: \"oci://x/y\"}\n", "fleet.source"),
            (
                "fleet: {source: \"oci://x/y:1\", pol_interval: 5s}\n",
                "fleet",
            ),
            ("fleet: {poll_interval: 5s}\n", "fleet"),
            (
                "fleet: {source: \"oci://x/y:1\", poll_interval: soon}\n",
                "fleet.poll_interval",
            ),
        ] {
            let e = Config::from_yaml(bad).unwrap_err();
            assert!(
                e.key().is_some_and(|k| k.starts_with(key)),
                "{bad}: {e} (key {:?})",
                e.key()
            );
        }
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        assert_eq!(Config::from_yaml("# nothing\n").unwrap(), Config::default());
        assert_eq!(
            Config::default().packages.gc_interval.0,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn listeners_are_typed_and_off_by_default() {
        let c = Config::default();
        assert_eq!(c.agent.listen, None);
        assert!(!c.agent.allow_remote);
        assert_eq!(c.telemetry, TelemetryConfig::default());
        let c = Config::from_yaml(
            "agent: {listen: \"127.0.0.1:9464\"}\n\
             telemetry: {listen: \"0.0.0.0:9465\", allow_remote: true}\n",
        )
        .unwrap();
        assert_eq!(c.agent.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(!c.agent.allow_remote);
        assert!(!c.agent.extra.contains_key("listen"));
        assert_eq!(
            c.agent.get("listen"),
            Some(serde_json::json!("127.0.0.1:9464"))
        );
        assert_eq!(c.telemetry.listen, Some("0.0.0.0:9465".parse().unwrap()));
        assert!(c.telemetry.allow_remote);
        let err = Config::from_yaml("agent: {listen: \"localhost\"}\n").unwrap_err();
        assert_eq!(err.key(), Some("agent.listen"), "{err}");
        let err =
            Config::from_yaml("telemetry: {listen: \"127.0.0.1:1\", allow: 1}\n").unwrap_err();
        assert_eq!(err.key(), Some("telemetry.allow"), "{err}");
    }

    #[test]
    fn full_file() {
        let text = r#"
api: {allow_uids: [1000], allow_gids: [], tcp: null}
packages: {gc_interval: 1h, hook_timeout: 60s, max_unpacked_bytes: 8GiB}
registry:
  insecure_hosts: ["127.0.0.1:5000"]
  mirror: null
  username: null
  password_file: null
  auths: {"ghcr.io": {username: u, password_file: /etc/outpost/ghcr.pass}}
agent: {runners: 2, memtrack_enabled: false, tags: [a:b], enable_metadata_collection: false, nested: {k: 3}}
"#;
        let c = Config::from_yaml(text).unwrap();
        assert_eq!(c.api.allow_uids, vec![1000]);
        assert_eq!(c.packages.max_unpacked_bytes, ByteSize(8 << 30));
        assert_eq!(c.registry.auths["ghcr.io"].username.as_deref(), Some("u"));
        assert!(c.registry.is_insecure("127.0.0.1:5000"));
        assert!(!c.registry.is_insecure("ghcr.io"));
        assert_eq!(c.registry.pull_host("ghcr.io"), "ghcr.io");
        let (login, key) = c.registry.login_for("ghcr.io");
        assert_eq!(login.username.as_deref(), Some("u"));
        assert_eq!(key, "registry.auths.\"ghcr.io\"");
        let (login, key) = c.registry.login_for("docker.io");
        assert_eq!(
            (login, key.as_str()),
            (RegistryLogin::default(), "registry")
        );
        let mirrored = Config::from_yaml("registry: {mirror: \"m:5000\"}\n").unwrap();
        assert_eq!(mirrored.registry.pull_host("ghcr.io"), "m:5000");
        assert_eq!(c.agent.runners, 2);
        assert_eq!(c.agent.get("nested.k"), Some(serde_json::json!(3)));
        assert_eq!(
            c.agent.get("enable_metadata_collection"),
            Some(serde_json::json!(false))
        );
        assert_eq!(c.agent.get("missing"), None);
    }

    #[test]
    fn typos_are_refused() {
        let e = Config::from_yaml("packages: {gc_intervall: 1h}\n").unwrap_err();
        assert!(e.to_string().contains("gc_intervall"), "{e}");
        let e = Config::from_yaml("packages: {gc_interval: 1 fortnight}\n").unwrap_err();
        assert_eq!(e.key(), Some("packages.gc_interval"), "{e}");
        assert!(e.to_string().contains("units are"), "{e}");
        // Unknown keys are kept under `agent:` only.
        assert!(Config::from_yaml("agent: {whatever: 1}\n").is_ok());
        assert!(Config::from_yaml("api: {whatever: 1}\n").is_err());
        assert!(Config::from_yaml("nosuchsection: {}\n").is_err());
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let path = std::path::Path::new("/etc/outpost/outpost.yaml");
        let e = Config::from_yaml_file_text(path, "agent: {check_timeout: soon}\n").unwrap_err();
        assert_eq!(e.key(), Some("agent.check_timeout"), "{e}");
        assert_eq!(e.file(), Some(path));
        let text = e.to_string();
        assert!(text.starts_with("/etc/outpost/outpost.yaml: "), "{text}");
        assert!(text.contains("agent.check_timeout"), "{text}");
        let e = Config::from_yaml_file_text(path, "- a\n- b\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert_eq!(e.key(), None);
        assert_eq!(e.file(), Some(path));
    }

    #[test]
    fn registry_stall_timeout_is_typed() {
        assert_eq!(
            Config::default().registry.stall_timeout.0,
            DEFAULT_STALL_TIMEOUT
        );
        let c = Config::from_yaml("registry: {stall_timeout: 300ms}\n").unwrap();
        assert_eq!(c.registry.stall_timeout.0, Duration::from_millis(300));
        let c = Config::from_yaml("registry: {stall_timeout: 90}\n").unwrap();
        assert_eq!(c.registry.stall_timeout.0, Duration::from_secs(90));
        let err = Config::from_yaml("registry: {stall_timeout: 3 weeks}\n").unwrap_err();
        assert!(err.to_string().contains("registry.stall_timeout"), "{err}");
    }

    #[test]
    fn check_memory_limit_is_a_size() {
        let c = Config::from_yaml("agent: {check_memory_limit: 64MiB}\n").unwrap();
        assert_eq!(c.agent.check_memory_limit, Some(ByteSize(64 << 20)));
        assert_eq!(
            c.agent.get("check_memory_limit"),
            Some(serde_json::json!(64 << 20))
        );
        assert!(!c.agent.extra.contains_key("check_memory_limit"));
        let c = Config::from_yaml("agent: {check_memory_limit: 1000000}\n").unwrap();
        assert_eq!(c.agent.check_memory_limit, Some(ByteSize(1_000_000)));
        assert_eq!(AgentConfig::default().check_memory_limit, None);
        assert_eq!(AgentConfig::default().get("check_memory_limit"), None);
        for bad in ["64 parsecs", "-1", "1.5"] {
            let e =
                Config::from_yaml(&format!("agent: {{check_memory_limit: {bad}}}\n")).unwrap_err();
            assert_eq!(e.key(), Some("agent.check_memory_limit"), "{bad}: {e}");
        }
    }

    #[test]
    fn agent_durations_are_typed() {
        let c = Config::from_yaml(
            "agent: {check_timeout: 2.5, shutdown_timeout: 500ms, python3_linter_timeout: 7}\n",
        )
        .unwrap();
        assert_eq!(
            c.agent.check_timeout,
            Some(HumanDuration(Duration::from_millis(2500)))
        );
        assert_eq!(c.agent.shutdown_timeout.0, Duration::from_millis(500));
        assert_eq!(c.agent.python3_linter_timeout.0, Duration::from_secs(7));
        // Checks read them as seconds.
        assert_eq!(c.agent.get("check_timeout"), Some(serde_json::json!(2.5)));
        assert_eq!(
            c.agent.get("python3_linter_timeout"),
            Some(serde_json::json!(7))
        );
        assert!(!c.agent.extra.contains_key("check_timeout"));
        let d = AgentConfig::default();
        assert_eq!(d.get("check_timeout"), None);
        assert_eq!(d.get("shutdown_timeout"), Some(serde_json::json!(5)));
        assert_eq!(d.get("runners"), Some(serde_json::json!(4)));
        assert_eq!(d.get("runners.x"), None);
        for bad in ["-1", "soon", "[1]", "\"5 parsecs\""] {
            let e = Config::from_yaml(&format!("agent: {{check_timeout: {bad}}}\n")).unwrap_err();
            assert_eq!(e.key(), Some("agent.check_timeout"), "{bad}: {e}");
        }
        assert_eq!(
            Config::default().packages.experiment_max_duration.0,
            Duration::from_secs(3600)
        );
        let c = Config::from_yaml("packages: {experiment_max_duration: 15m}\n").unwrap();
        assert_eq!(
            c.packages.experiment_max_duration.0,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn units() {
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("15m").unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(
            ByteSize::parse("99999999999TiB"),
            Err(ValueError::SizeTooLarge {
                text: "99999999999TiB".into()
            })
        );
        assert_eq!(
            HumanDuration::parse("3 weeks"),
            Err(ValueError::DurationUnit {
                text: "3 weeks".into()
            })
        );
    }
}
