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
}

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses the YAML text of a configuration file. An empty document gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Option<Config> =
            serde_saphyr::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        Ok(config.unwrap_or_default())
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

/// `registry:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    pub auths: BTreeMap<String, RegistryAuth>,
}

/// Credentials for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryAuth {
    /// Username.
    pub username: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
}

/// `agent:`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Directory of check configurations (`conf.d`).
    pub conf_dir: Option<PathBuf>,
    /// Directory of custom checks (`checks.d`).
    pub checks_dir: Option<PathBuf>,
    /// Python virtual environment whose site-packages the checks import from.
    pub python_venv: Option<PathBuf>,
    /// Number of runner threads.
    pub runners: usize,
    /// Track Python allocations per check.
    pub memtrack_enabled: bool,
    /// Hostname reported to checks; the system hostname when unset.
    pub hostname: Option<String>,
    /// Host tags.
    pub tags: Vec<String>,
    /// Version reported to checks; outpost's own when unset.
    pub version_reported_to_checks: Option<String>,
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
            runners: 4,
            memtrack_enabled: true,
            hostname: None,
            tags: Vec::new(),
            version_reported_to_checks: None,
            extra: BTreeMap::new(),
        }
    }
}

impl AgentConfig {
    /// Looks up a key of the `agent:` section; dotted keys walk nested maps. `None` when unset.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        let whole = serde_json::to_value(self).ok()?;
        let mut cur = &whole;
        for part in key.split('.') {
            cur = cur.as_object()?.get(part)?;
        }
        (!cur.is_null()).then(|| cur.clone())
    }
}

/// A duration written as `90`, `90s`, `500ms`, `15m`, `1h` or `2d` (bare numbers are seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses the textual form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(format!("invalid duration {s:?}: units are ms, s, m, h, d")),
        };
        Duration::try_from_secs_f64(secs)
            .map(Self)
            .map_err(|_| format!("invalid duration {s:?}"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NumOrStr::deserialize(d)?;
        match v {
            NumOrStr::Num(n) => Ok(Self(Duration::from_secs(n))),
            NumOrStr::Str(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A size written as `1048576`, `512KiB`, `64MiB`, `8GiB`, `1TiB`, or with SI units `KB`, `MB`, `GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the textual form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
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
            _ => {
                return Err(format!(
                    "invalid size {s:?}: units are B, KiB, MiB, GiB, TiB, KB, MB, GB, TB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(Self(n)),
            NumOrStr::Str(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Config::from_yaml("packages: {gc_interval: 1 fortnight}\n").is_err());
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
        assert!(ByteSize::parse("99999999999TiB").is_err());
    }
}
