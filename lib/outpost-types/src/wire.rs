//! The LocalAPI's JSON bodies (`spec/localapi.md`), with the Datadog installer daemon's field
//! names so that tooling written for that daemon works against outpost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::names::{NameError, PackageName, Version};
use crate::platform;
use crate::source::{PackageSource, SourceError, is_sha256_hex};

/// One catalog entry, as posted and stored. Field names are the Datadog ones.
///
/// Fields the Datadog client sends with zero values (`"sha256": ""`, `"size": 0`) mean "absent".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Package name.
    pub package: String,
    /// Exact version string.
    pub version: String,
    /// Where the package comes from (see [`PackageSource`]).
    pub url: String,
    /// Hex sha256 of the tarball; required for tarball URLs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Size of the tarball in bytes; checked when given (0 = unknown).
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_zero"
    )]
    pub size: u64,
    /// `GOOS`-style platform (`linux`), empty for any.
    #[serde(default)]
    pub platform: String,
    /// `GOARCH`-style architecture (`amd64`, `arm64`), empty for any.
    #[serde(default)]
    pub arch: String,
    /// The health policy of experiments of this version, below the one an experiment start
    /// gives and above the package's own `outpost/health` file (see [`HealthPolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthPolicy>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

/// A catalog entry whose every field has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    /// Package name.
    pub name: PackageName,
    /// Version.
    pub version: Version,
    /// Parsed location.
    pub source: PackageSource,
    /// Expected sha256 (hex) of a tarball.
    pub sha256: Option<String>,
    /// Expected size of a tarball, when known.
    pub size: Option<u64>,
    /// The URL as given, for messages.
    pub url: String,
}

impl CatalogEntry {
    /// Checks every field and returns the typed form.
    ///
    /// # Errors
    /// The first field at fault, as an [`EntryError`].
    pub fn resolve(&self) -> Result<ResolvedPackage, EntryError> {
        let name = PackageName::new(self.package.clone()).map_err(EntryError::Package)?;
        let version = Version::new(self.version.clone()).map_err(EntryError::Version)?;
        let source = PackageSource::parse(&self.url)?;
        if !self.sha256.is_empty() && !is_sha256_hex(&self.sha256) {
            return Err(EntryError::Sha256 {
                value: self.sha256.clone(),
            });
        }
        if source.is_tarball() && self.sha256.is_empty() {
            return Err(EntryError::Sha256Required {
                url: self.url.clone(),
            });
        }
        for (field, value) in [("platform", &self.platform), ("arch", &self.arch)] {
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || value.len() > 32
            {
                return Err(EntryError::Platform {
                    field,
                    value: value.clone(),
                });
            }
        }
        Ok(ResolvedPackage {
            name,
            version,
            source,
            sha256: (!self.sha256.is_empty()).then(|| self.sha256.clone()),
            size: (self.size != 0).then_some(self.size),
            url: self.url.clone(),
        })
    }

    /// True when this entry's platform and arch admit the given host.
    pub fn matches_host(&self, os: &str, arch: &str) -> bool {
        platform::matches(&self.platform, os) && platform::matches(&self.arch, arch)
    }
}

/// Why a catalog entry is refused: the first field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The package name breaks the naming rule.
    #[error(transparent)]
    Package(NameError),
    /// The version breaks the naming rule.
    #[error(transparent)]
    Version(NameError),
    /// The URL is not a source outpost can fetch.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sha256 is not 64 lowercase hex digits.
    #[error("invalid sha256 {value:?}: expected 64 lowercase hex digits")]
    Sha256 {
        /// The value as given.
        value: String,
    },
    /// A tarball URL without the sha256 that pins its content.
    #[error("sha256 is required for the tarball url {url:?}")]
    Sha256Required {
        /// The URL as given.
        url: String,
    },
    /// `platform` or `arch` is not up to 32 ASCII letters, digits or `_`.
    #[error("invalid {field} {value:?}")]
    Platform {
        /// `platform` or `arch`.
        field: &'static str,
        /// The value as given.
        value: String,
    },
}

/// The first invalid entry of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog entry {index} ({package:?} {version:?}): {reason}")]
pub struct CatalogError {
    /// Position of the entry in `packages`.
    pub index: usize,
    /// The entry's package, as given.
    pub package: String,
    /// The entry's version, as given.
    pub version: String,
    /// What is wrong with it.
    #[source]
    pub reason: EntryError,
}

/// The catalog: `{"packages": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Entries, in the order given; lookup takes the first match.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub packages: Vec<CatalogEntry>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CatalogEntry>, D::Error> {
    Ok(Option::<Vec<CatalogEntry>>::deserialize(d)?.unwrap_or_default())
}

impl Catalog {
    /// Validates every entry.
    ///
    /// # Errors
    /// The first invalid entry, by index, name and version, with why ([`CatalogError`]).
    pub fn validate(&self) -> Result<(), CatalogError> {
        for (index, entry) in self.packages.iter().enumerate() {
            entry.resolve().map_err(|reason| CatalogError {
                index,
                package: entry.package.clone(),
                version: entry.version.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// The first entry with this exact name and version whose platform and arch are empty or
    /// match the given host. No semver, no "latest".
    pub fn lookup(&self, name: &str, version: &str, os: &str, arch: &str) -> Option<&CatalogEntry> {
        self.position(name, version, os, arch)
            .map(|index| &self.packages[index])
    }

    /// The index of the entry [`Catalog::lookup`] finds (what a [`CatalogError`] names).
    pub fn position(&self, name: &str, version: &str, os: &str, arch: &str) -> Option<usize> {
        self.packages
            .iter()
            .position(|p| p.package == name && p.version == version && p.matches_host(os, arch))
    }

    /// [`Catalog::lookup`] for the host this process runs on.
    pub fn lookup_host(&self, name: &str, version: &str) -> Option<&CatalogEntry> {
        self.lookup(name, version, platform::host_os(), platform::host_arch())
    }

    /// [`Catalog::position`] for the host this process runs on.
    pub fn position_host(&self, name: &str, version: &str) -> Option<usize> {
        self.position(name, version, platform::host_os(), platform::host_arch())
    }

    /// The versions of `name` available to this host, in catalog order, without repeats.
    pub fn host_versions(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.packages {
            if p.package == name
                && p.matches_host(platform::host_os(), platform::host_arch())
                && !out.contains(&p.version.as_str())
            {
                out.push(&p.version);
            }
        }
        out
    }
}

/// Body of `install` and `experiment/start`. The Datadog daemon calls it `experimentTaskParams`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskParams {
    /// The version to install or start.
    #[serde(default)]
    pub version: String,
    /// Arguments passed through to the package's install hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_args: Option<Vec<String>>,
    /// The state the caller expects the package in; see [`ExpectedState`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_state: Option<ExpectedState>,
    /// Extensions to install with the version (`<version>/ext/<name>/`); absent: those
    /// installed with the version before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
}

pub use crate::expected::{ExpectedState, OperationParams};

/// One package's links, with the Datadog daemon's capitalised keys. `""` means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageState {
    /// The version `stable` points at.
    #[serde(rename = "Stable")]
    pub stable: String,
    /// The version `experiment` points at, or `""`.
    #[serde(rename = "Experiment")]
    pub experiment: String,
}

/// State of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Still running.
    Running,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Error,
    /// Refused because the package was not in the request's `expected_state`; nothing was
    /// done. The task's error holds both states.
    InvalidState,
}

/// Phase of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Bytes are arriving from the source.
    Download,
    /// Bytes are being written into the staging directory.
    Unpack,
    /// Links are being switched.
    Switch,
}

/// Progress of a running task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Bytes processed so far.
    pub bytes_done: u64,
    /// Total bytes expected, when known.
    pub bytes_total: Option<u64>,
}

/// The last task run for a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id.
    pub id: String,
    /// Operation: `install`, `start_experiment`, `stop_experiment`, `promote_experiment`, `remove`.
    #[serde(default)]
    pub operation: String,
    /// Version the task was asked for, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// State.
    pub state: TaskState,
    /// The error of a failed task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Progress of a running task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// When the task started (RFC 3339 UTC, milliseconds); absent on tasks recorded before
    /// the daemon kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the task finished (RFC 3339 UTC, milliseconds); absent while it runs and on a
    /// task a daemon stop interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// One entry of `remote_config_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageStatus {
    /// Package name.
    pub package: String,
    /// Stable version or `""`.
    pub stable_version: String,
    /// Experiment version or `""`.
    pub experiment_version: String,
    /// Deployment id of the stable config, `""` for a package whose stable config is empty.
    #[serde(default)]
    pub stable_config_version: String,
    /// Deployment id of the running config experiment, or `""`.
    #[serde(default)]
    pub experiment_config_version: String,
    /// Last task, if any ran since the state was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The daemon's watch over the running experiment, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_watch: Option<ExperimentWatch>,
    /// The daemon's watch over the running config experiment, while there is one (the shape
    /// of `experiment_watch`; its `version` is the config's deployment id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_experiment_watch: Option<ExperimentWatch>,
    /// The extensions installed with the package, sorted (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// Body of `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The daemon's version.
    pub version: String,
    /// Installed packages and their links.
    pub packages: BTreeMap<String, PackageState>,
    /// Per package: versions and last task.
    #[serde(default)]
    pub remote_config_state: Vec<PackageStatus>,
    /// The fleet poller's state, when `fleet:` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
    /// The daemon's X25519 public key for encrypted secrets (standard base64, 32 bytes).
    #[serde(default)]
    pub secrets_pub_key: String,
}

/// Body of `GET /status` on the read-only status socket (`<root>/run/status.sock`): whether
/// the daemon is up, and nothing about packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BriefStatus {
    /// The daemon's version.
    pub installer_version: String,
    /// Bytes free for an unprivileged writer on the filesystem of the daemon's root.
    pub available_disk_space: u64,
}

pub use crate::fleet::FleetStatus;

pub use crate::experiment::{
    DurationError, ExperimentHistory, ExperimentStartParams, ExperimentWatch, HealthCheck,
    HealthPolicy, WatchSummary, WireDuration, format_rfc3339, parse_rfc3339,
};

/// The empty success body `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "5e8848f8c1e7bd3a2b9a5ecb3dbb1bd9b3b3a5b0b2f1bd8e6fcd41ab2bfa42d8";

    fn entry(url: &str, sha: &str) -> CatalogEntry {
        CatalogEntry {
            package: "test-package".into(),
            version: "1.0.0".into(),
            url: url.into(),
            sha256: sha.into(),
            size: 0,
            platform: String::new(),
            arch: String::new(),
            health: None,
        }
    }

    #[test]
    fn datadog_client_body_decodes() {
        let body = r#"{"packages":[{"package":"p","version":"1","url":"oci://r.io/p:1","sha256":"","size":0,"platform":"","arch":"","extra":1}]}"#;
        let c: Catalog = serde_json::from_str(body).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.packages[0].size, 0);
    }

    #[test]
    fn validation_names_the_entry() {
        let c = Catalog {
            packages: vec![entry("file:///a.tar.gz", "")],
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err.index, 0);
        assert!(matches!(err.reason, EntryError::Sha256Required { .. }));
        let e = err.to_string();
        assert!(
            e.contains("catalog entry 0") && e.contains("sha256 is required"),
            "{e}"
        );
        let c = Catalog {
            packages: vec![entry("file:///a.tar.gz", SHA)],
        };
        assert!(c.validate().is_ok());
        let c = Catalog {
            packages: vec![entry("ftp://a", "")],
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("unsupported scheme")
        );
    }

    #[test]
    fn lookup_first_match_for_host() {
        let mut other = entry("oci://r.io/p:1", "");
        other.arch = "notanarch".into();
        let mut any = entry("oci://r.io/q:1", "");
        any.arch = String::new();
        let c = Catalog {
            packages: vec![other, any],
        };
        assert_eq!(
            c.lookup("test-package", "1.0.0", "linux", "amd64")
                .unwrap()
                .url,
            "oci://r.io/q:1"
        );
        assert!(
            c.lookup("test-package", "2.0.0", "linux", "amd64")
                .is_none()
        );
        assert_eq!(
            c.lookup("test-package", "1.0.0", "linux", "notanarch")
                .unwrap()
                .url,
            "oci://r.io/p:1"
        );
        // The index of what lookup finds: the one a refused entry's error names.
        assert_eq!(
            c.position("test-package", "1.0.0", "linux", "amd64"),
            Some(1)
        );
        assert_eq!(
            c.position("test-package", "1.0.0", "linux", "notanarch"),
            Some(0)
        );
        assert_eq!(c.position("test-package", "2.0.0", "linux", "amd64"), None);
    }

    #[test]
    fn status_shape() {
        let mut s = StatusResponse {
            version: "0.1.0".into(),
            ..Default::default()
        };
        s.packages.insert(
            "a".into(),
            PackageState {
                stable: "1".into(),
                experiment: String::new(),
            },
        );
        s.remote_config_state.push(PackageStatus {
            extensions: Vec::new(),
            package: "a".into(),
            stable_version: "1".into(),
            experiment_version: String::new(),
            stable_config_version: String::new(),
            experiment_config_version: String::new(),
            task: Some(Task {
                id: "t1".into(),
                operation: "install".into(),
                version: Some("1".into()),
                state: TaskState::Done,
                error: None,
                progress: None,
                started_at: None,
                finished_at: None,
            }),
            experiment_watch: None,
            config_experiment_watch: None,
        });
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["packages"]["a"]["Stable"], "1");
        assert_eq!(json["packages"]["a"]["Experiment"], "");
        assert_eq!(json["remote_config_state"][0]["task"]["state"], "DONE");
        assert_eq!(json["remote_config_state"][0]["stable_config_version"], "");
        assert_eq!(
            json["remote_config_state"][0]["experiment_config_version"],
            ""
        );
    }
}
