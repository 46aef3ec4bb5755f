//! The desired-state document: its JSON form, its typed form, and its validation.
//!
//! Parsing is strict: unknown fields are refused with their path, duplicate package names are
//! refused, every name and version is validated with [`PackageName`] and [`Version`], the
//! catalog with [`Catalog::validate`], and every version a package names must have an entry in
//! the document's own catalog. A [`Document`] value is therefore always consistent.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use outpost_types::config::HumanDuration;
use outpost_types::wire::Catalog;
use outpost_types::{PackageName, Version};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::FleetError;

/// Media type of the document blob of the OCI artifact.
pub const MEDIA_TYPE: &str = "application/vnd.outpost.fleet.v1+json";

/// Media type of the signature blob of the OCI artifact: the text of a minisign signature file
/// of the document's bytes.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.outpost.fleet.signature.v1+minisign";

/// Largest document accepted, in bytes. A desired state is a short list of packages; anything
/// bigger is refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// A validated desired-state document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Monotonic generation: a host applies a document only above the generation it applied.
    pub generation: u64,
    /// After this instant the document is refused.
    pub expires: Timestamp,
    /// Where the versions the document names come from.
    pub catalog: Catalog,
    /// The managed packages, by name.
    pub packages: BTreeMap<PackageName, PackageSpec>,
}

/// The desired state of one managed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// The stable version every host must have.
    pub stable: Version,
    /// The experiment hosts of its cohort run beside `stable`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentSpec>,
}

/// An experiment and the hosts it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The version to run as the experiment. Never equal to the package's `stable`.
    pub version: Version,
    /// Share of the hosts matching `selector` that run it.
    pub percent: Percent,
    /// Labels a host must all carry, with these values, to be considered. Empty: every host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The health policy the daemon's experiment watch applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthPolicy>,
    /// Longest life of the experiment before the watch stops it.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// Healthy time after which the watch promotes the experiment.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_promote_after: Option<Duration>,
}

impl ExperimentSpec {
    /// The experiment policy to hand to the daemon's experiment start.
    pub fn policy(&self) -> ExperimentPolicy {
        ExperimentPolicy {
            health: self.health.clone(),
            max_duration: self.max_duration,
            auto_promote_after: self.auto_promote_after,
        }
    }
}

/// The policy of an experiment start: health watch, deadline, automatic promotion. Fields
/// left out are taken by the daemon from its lower sources (catalog entry, package, defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExperimentPolicy {
    /// How the experiment's health is checked.
    pub health: Option<HealthPolicy>,
    /// Longest life of the experiment.
    pub max_duration: Option<Duration>,
    /// Healthy time after which the experiment is promoted.
    pub auto_promote_after: Option<Duration>,
}

/// How the daemon checks an experiment's health:
/// `{"command": ["/path", "arg"], "interval": "10s", "timeout": "5s", "failures": 3, "grace": "30s"}`.
/// Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPolicy {
    /// Program and arguments; never empty when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Time between the starts of two runs; above zero.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// How long one run may take; above zero.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Consecutive failures that stop the experiment; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Time after the start before the first run.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace: Option<Duration>,
}

/// A share of hosts, in basis points (hundredths of a percent): `0..=10_000`.
///
/// On the wire it is a JSON number of percent from 0 to 100 with at most two decimals
/// (`10`, `2.5`, `0.01`); anything finer is refused rather than rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

impl Percent {
    /// All hosts.
    pub const ALL: Percent = Percent(10_000);
    /// No host.
    pub const NONE: Percent = Percent(0);

    /// The share in basis points, `None` above 10 000.
    pub fn from_basis_points(bp: u16) -> Option<Self> {
        (bp <= 10_000).then_some(Self(bp))
    }

    /// Parses a number of percent: finite, within 0..=100, at most two decimals.
    pub fn from_percent(p: f64) -> Result<Self, String> {
        if !p.is_finite() || !(0.0..=100.0).contains(&p) {
            return Err(format!(
                "invalid percent {p}: expected a number from 0 to 100"
            ));
        }
        let scaled = p * 100.0;
        let bp = scaled.round();
        if (scaled - bp).abs() > 1e-6 {
            return Err(format!(
                "invalid percent {p}: at most two decimals (a hundredth of a percent)"
            ));
        }
        // In range by the check above: 0.0 ..= 10_000.0.
        Ok(Self(bp as u16))
    }

    /// The share in basis points.
    pub fn basis_points(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            write!(f, "{whole}.{frac:02}%")
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            s.serialize_u16(self.0 / 100)
        } else {
            s.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = f64::deserialize(d)?;
        Self::from_percent(p).map_err(de::Error::custom)
    }
}

/// A duration: a string with a unit (`500ms`, `10s`, `5m`, `1h`; parsed by
/// [`HumanDuration::parse`], which also knows `d`) or a JSON number of seconds (`30`, `0.5`).
fn parse_duration_value(v: &serde_json::Value) -> Result<Duration, String> {
    match v {
        serde_json::Value::String(s) => HumanDuration::parse(s)
            .map(|d| d.0)
            .map_err(|e| e.to_string()),
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                format!("invalid duration {n}: expected a non-negative number of seconds")
            }),
        other => Err(format!(
            "invalid duration {other}: expected a string with a unit (ms, s, m, h) or a number of seconds"
        )),
    }
}

/// Writes a duration the way it is best read back: whole seconds as `"30s"`, whole
/// milliseconds as `"250ms"`, anything finer as a number of seconds.
fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        None => s.serialize_none(),
        Some(d) if d.subsec_nanos() == 0 => s.collect_str(&format_args!("{}s", d.as_secs())),
        Some(d) if d.subsec_nanos().is_multiple_of(1_000_000) => {
            s.collect_str(&format_args!("{}ms", d.as_millis()))
        }
        Some(d) => s.serialize_f64(d.as_secs_f64()),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    v.map(|v| parse_duration_value(&v).map_err(de::Error::custom))
        .transpose()
}

/// The top-level object as it is on the wire; typed fields validate themselves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDocument {
    generation: u64,
    expires: String,
    catalog: Catalog,
    #[serde(deserialize_with = "unique_packages")]
    packages: BTreeMap<PackageName, PackageSpec>,
}

/// `packages` as a map that refuses a name given twice: JSON parsers disagree on which of two
/// equal keys wins, and a signed document must mean one thing.
fn unique_packages<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<PackageName, PackageSpec>, D::Error> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = BTreeMap<PackageName, PackageSpec>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of package name to package policy")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = map.next_key::<PackageName>()? {
                if out.contains_key(&name) {
                    return Err(de::Error::custom(format!("package {name} is given twice")));
                }
                let spec = map.next_value::<PackageSpec>()?;
                out.insert(name, spec);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

impl Document {
    /// Parses and validates the bytes of a document.
    ///
    /// # Errors
    /// [`FleetError::Malformed`] naming the field at fault: bytes over
    /// [`MAX_DOCUMENT_BYTES`], invalid JSON or trailing data, an unknown or missing field, an
    /// invalid name, version, percent or duration, a package given twice, an `expires` that
    /// is not RFC 3339 with an offset, an invalid catalog entry, a version absent from the
    /// catalog, an experiment whose version is the stable one, a health policy with an empty
    /// command, a zero interval or timeout, or zero failures.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FleetError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(FleetError::Malformed(format!(
                "{} bytes, above the limit of {MAX_DOCUMENT_BYTES}",
                bytes.len()
            )));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let wire: WireDocument = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                FleetError::Malformed(e.inner().to_string())
            } else {
                FleetError::Malformed(format!("{path}: {}", e.inner()))
            }
        })?;
        de.end()
            .map_err(|e| FleetError::Malformed(format!("after the document: {e}")))?;
        let expires: Timestamp = wire.expires.parse().map_err(|e| {
            FleetError::Malformed(format!(
                "expires: invalid RFC 3339 time {:?}: {e}",
                wire.expires
            ))
        })?;
        let doc = Document {
            generation: wire.generation,
            expires,
            catalog: wire.catalog,
            packages: wire.packages,
        };
        doc.validate().map_err(FleetError::Malformed)?;
        Ok(doc)
    }

    /// Checks the rules that span fields; the error names the field at fault.
    fn validate(&self) -> Result<(), String> {
        self.catalog
            .validate()
            .map_err(|e| format!("catalog: {e}"))?;
        for (name, spec) in &self.packages {
            self.require_in_catalog(name, &spec.stable, "stable")?;
            let Some(exp) = &spec.experiment else {
                continue;
            };
            let at = format!("packages.{name}.experiment");
            self.require_in_catalog(name, &exp.version, "experiment.version")?;
            if exp.version == spec.stable {
                return Err(format!(
                    "{at}.version: {} is the stable version; an experiment runs another one",
                    exp.version
                ));
            }
            for (key, value) in &exp.selector {
                if key.is_empty() {
                    return Err(format!(
                        "{at}.selector: an empty label name (value {value:?})"
                    ));
                }
            }
            if let Some(h) = &exp.health {
                if h.command
                    .as_ref()
                    .is_some_and(|c| c.is_empty() || c[0].is_empty())
                {
                    return Err(format!("{at}.health.command: an empty command"));
                }
                for (field, d) in [("interval", h.interval), ("timeout", h.timeout)] {
                    if d.is_some_and(|d| d.is_zero()) {
                        return Err(format!("{at}.health.{field}: must be above zero"));
                    }
                }
                if h.failures == Some(0) {
                    return Err(format!("{at}.health.failures: must be at least 1"));
                }
            }
            if exp.max_duration.is_some_and(|d| d.is_zero()) {
                return Err(format!("{at}.max_duration: must be above zero"));
            }
        }
        Ok(())
    }

    fn require_in_catalog(
        &self,
        name: &PackageName,
        version: &Version,
        field: &str,
    ) -> Result<(), String> {
        let found = self
            .catalog
            .packages
            .iter()
            .any(|e| e.package == name.as_str() && e.version == version.as_str());
        if found {
            Ok(())
        } else {
            Err(format!(
                "packages.{name}.{field}: version {version} of {name} has no entry in the document's catalog"
            ))
        }
    }

    /// The document as JSON (indented), which [`Document::from_json`] reads back into an equal
    /// value. Sign the bytes that are published, not a re-serialisation of them.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            generation: u64,
            expires: String,
            catalog: &'a Catalog,
            packages: &'a BTreeMap<PackageName, PackageSpec>,
        }
        let out = Out {
            generation: self.generation,
            expires: self.expires.to_string(),
            catalog: &self.catalog,
            packages: &self.packages,
        };
        // Every part is a map with string keys, a string, a number or a sequence of these,
        // which serde_json always writes.
        #[allow(clippy::expect_used)]
        serde_json::to_vec_pretty(&out).expect("a document always serialises to JSON")
    }

    /// True when `now` is at or past `expires`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires
    }

    /// The packages the document manages: local mutations of them are refused while it is
    /// applied, the other packages stay local.
    pub fn is_managed(&self, package: &PackageName) -> bool {
        self.packages.contains_key(package)
    }
}
