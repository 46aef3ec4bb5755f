//! The wire types of safe experiments (`docs/experiment-safety.md`): the policy an experiment
//! start or a catalog entry gives, the watch `/status` shows, and the history of past watches.
//! Re-exported from [`crate::wire`].
//!
//! Policies are decoded by hand rather than by serde's derive so that every refusal names the
//! field at fault (`health.interval: ...`), which is what a 400 answer must say.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A duration on the wire: a string with a unit (`150ms`, `10s`, `5m`, `1h`) or a number of
/// seconds (`30`, `0.5`). Serialised as a string in milliseconds or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WireDuration(pub Duration);

/// Why a duration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A number that is negative or not finite.
    #[error("invalid duration {0}: must be a non-negative number of seconds")]
    NotSeconds(String),
    /// A JSON value that is neither a string nor a number.
    #[error(
        "invalid duration {0}: expected a string with a unit (ms, s, m, h) or a number of seconds"
    )]
    WrongType(String),
    /// Text that is not a number followed by a unit.
    #[error("invalid duration {0:?}")]
    Malformed(String),
    /// A unit other than `ms`, `s`, `m`, `h`.
    #[error("invalid duration {0:?}: units are ms, s, m, h")]
    Unit(String),
    /// A value too large for a duration (as written, quoted when it was text).
    #[error("invalid duration {0}: too large")]
    TooLarge(String),
}

impl WireDuration {
    /// Parses a JSON value; the error says what is wrong, without the field name.
    ///
    /// # Errors
    /// A [`DurationError`] naming the value.
    pub fn from_value(v: &Value) -> Result<Self, DurationError> {
        match v {
            Value::Number(n) => {
                let secs = n
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| DurationError::NotSeconds(n.to_string()))?;
                Duration::try_from_secs_f64(secs)
                    .map(Self)
                    .map_err(|_| DurationError::TooLarge(n.to_string()))
            }
            Value::String(s) => Self::parse(s),
            other => Err(DurationError::WrongType(other.to_string())),
        }
    }

    /// Parses the textual form: digits (with an optional fraction) and a unit among
    /// `ms`, `s`, `m`, `h`; a bare number is seconds.
    ///
    /// # Errors
    /// A [`DurationError`] naming the text.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let s = text.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(|| DurationError::Malformed(text.to_owned()))?;
        let secs = match unit {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(DurationError::Unit(text.to_owned())),
        };
        Duration::try_from_secs_f64(secs)
            .map(Self)
            .map_err(|_| DurationError::TooLarge(format!("{text:?}")))
    }
}

impl fmt::Display for WireDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for WireDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WireDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_value(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How the daemon checks an experiment's health. Every field is optional: a missing one is
/// taken from the next source (experiment start, then catalog entry, then the defaults, with
/// the package's `outpost/health` file as the command of last resort).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealthPolicy {
    /// Program and arguments. A relative program path is taken inside the experiment's
    /// version directory; a bare name is looked up on the hooks' system `PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Time between the starts of two runs (default 10s). Must be above zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<WireDuration>,
    /// How long a run may take before its process group is killed and it counts as failed
    /// (default: the interval). Must be above zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<WireDuration>,
    /// Consecutive failures that stop the experiment (default 3). At least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Time after the start before the first run (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<WireDuration>,
}

/// Names a field under `prefix` for messages.
fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A positive duration, or the refusal naming `name`.
fn positive(v: &Value, name: &str) -> Result<WireDuration, String> {
    let d = WireDuration::from_value(v).map_err(|e| format!("{name}: {e}"))?;
    if d.0.is_zero() {
        return Err(format!("{name}: must be above zero"));
    }
    Ok(d)
}

impl HealthPolicy {
    /// Decodes a policy object; `prefix` names it in messages (`health`). Unknown keys and
    /// ill-typed values are refused with the field's full name.
    pub fn from_value(v: &Value, prefix: &str) -> Result<Self, String> {
        let Value::Object(map) = v else {
            return Err(format!("{prefix}: expected an object"));
        };
        let mut policy = Self::default();
        for (key, value) in map {
            let name = field(prefix, key);
            match key.as_str() {
                "command" => {
                    if value.is_null() {
                        continue;
                    }
                    let items = value
                        .as_array()
                        .filter(|a| !a.is_empty())
                        .ok_or_else(|| format!("{name}: expected a non-empty array of strings"))?;
                    let mut argv = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let arg = item
                            .as_str()
                            .ok_or_else(|| format!("{name}[{i}]: expected a string"))?;
                        if arg.contains('\0') {
                            return Err(format!("{name}[{i}]: contains a NUL byte"));
                        }
                        argv.push(arg.to_string());
                    }
                    if argv[0].is_empty() {
                        return Err(format!("{name}[0]: the program is empty"));
                    }
                    policy.command = Some(argv);
                }
                "interval" => policy.interval = Some(positive(value, &name)?),
                "timeout" => policy.timeout = Some(positive(value, &name)?),
                "grace" => {
                    policy.grace =
                        Some(WireDuration::from_value(value).map_err(|e| format!("{name}: {e}"))?)
                }
                "failures" => {
                    let n = value
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| format!("{name}: expected an integer from 1 to 1000"))?;
                    policy.failures = Some(n as u32);
                }
                _ => return Err(format!("{name}: unknown field")),
            }
        }
        Ok(policy)
    }

    /// This policy with the fields it lacks taken from `below`.
    pub fn or(&self, below: &HealthPolicy) -> HealthPolicy {
        HealthPolicy {
            command: self.command.clone().or_else(|| below.command.clone()),
            interval: self.interval.or(below.interval),
            timeout: self.timeout.or(below.timeout),
            failures: self.failures.or(below.failures),
            grace: self.grace.or(below.grace),
        }
    }
}

impl<'de> Deserialize<'de> for HealthPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_value(&Value::deserialize(d)?, "health").map_err(serde::de::Error::custom)
    }
}

/// Body of `POST /{package}/experiment/start`: the version, and the optional safety policy.
/// Other keys are ignored, as the Datadog daemon does with its task parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExperimentStartParams {
    /// The version to start.
    pub version: String,
    /// The health policy given with this start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthPolicy>,
    /// How long the experiment may run without a promote (clamped to 1 min..24 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<WireDuration>,
    /// Promote after this long without a failure (and at least one success); `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_promote_after: Option<WireDuration>,
}

impl ExperimentStartParams {
    /// Decodes the body object; every refusal names its field.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, String> {
        let mut params = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "version" => {
                    params.version = match value {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        _ => return Err("version: expected a string".into()),
                    }
                }
                "health" if !value.is_null() => {
                    params.health = Some(HealthPolicy::from_value(value, "health")?)
                }
                "max_duration" if !value.is_null() => {
                    params.max_duration = Some(positive(value, "max_duration")?)
                }
                "auto_promote_after" if !value.is_null() => {
                    params.auto_promote_after = Some(positive(value, "auto_promote_after")?)
                }
                _ => {}
            }
        }
        Ok(params)
    }
}

/// One run of a health command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// When the run ended (RFC 3339).
    pub at: String,
    /// Whether it passed: exit code 0 within the timeout.
    pub ok: bool,
    /// Its exit code; `null` when killed by a signal, timed out or never started.
    pub exit_code: Option<i32>,
    /// The last 4 KiB of its standard output and error, interleaved as written, plus a note
    /// on a timeout, a signal or a failure to start.
    pub output_tail: String,
}

/// The daemon's watch over a running experiment, in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentWatch {
    /// The experiment version the watch was started for; it never acts on another.
    pub version: String,
    /// When the experiment started (RFC 3339).
    pub started_at: String,
    /// When the experiment is stopped unless promoted first (RFC 3339).
    pub deadline: String,
    /// When it will be promoted if no run fails before (RFC 3339); `null`: never. Moves
    /// later with each failure.
    pub auto_promote_at: Option<String>,
    /// Failed runs since the last passing one.
    pub consecutive_failures: u32,
    /// The last run, if any.
    pub last_check: Option<HealthCheck>,
}

/// A past watch, in `GET /{package}/experiment/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSummary {
    /// The experiment version watched.
    pub version: String,
    /// The stable version beside it when it started.
    pub stable_version: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When the watch ended (RFC 3339).
    pub ended_at: String,
    /// How it ended: `promoted`, `stopped`, `auto_promoted`, `health_check_failed`,
    /// `experiment_expired`, `replaced`, `removed` or `abandoned`.
    pub outcome: String,
    /// Why, for people.
    pub message: String,
    /// Its last health runs, oldest first (at most 10).
    pub checks: Vec<HealthCheck>,
}

/// Body of `GET /{package}/experiment/history`: the last 20 watches, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentHistory {
    /// Package name.
    pub package: String,
    /// Past watches, oldest first.
    pub watches: Vec<WatchSummary>,
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-12-02T18:31:41.123Z`).
pub fn format_rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses the RFC 3339 form [`format_rfc3339`] writes (and any offset, fraction or none) back
/// into milliseconds since the epoch. `None` for anything else or a time before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let text = &frac[..digits.min(3)];
        ms = text.parse::<i64>().ok()? * 10i64.pow(3 - text.len() as u32);
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    let days = days_from_civil(y, mo, d);
    let total = ((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + ms;
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_take_units_and_seconds() {
        let ms = |v: Value| WireDuration::from_value(&v).map(|d| d.0.as_millis());
        assert_eq!(ms(json!("150ms")), Ok(150));
        assert_eq!(ms(json!("10s")), Ok(10_000));
        assert_eq!(ms(json!("5m")), Ok(300_000));
        assert_eq!(ms(json!("1h")), Ok(3_600_000));
        assert_eq!(ms(json!(30)), Ok(30_000));
        assert_eq!(ms(json!(0.25)), Ok(250));
        // A bare number in a string is seconds, like the configuration file's.
        assert_eq!(ms(json!("10")), Ok(10_000));
        for bad in [
            json!("1d"),
            json!("-1s"),
            json!(-1),
            json!(true),
            json!("s"),
        ] {
            assert!(ms(bad.clone()).is_err(), "{bad} accepted");
        }
        assert_eq!(
            WireDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(WireDuration(Duration::from_secs(60)).to_string(), "60s");
    }

    #[test]
    fn refusals_name_the_field() {
        let params = |v: Value| ExperimentStartParams::from_map(v.as_object().unwrap());
        let cases = [
            (
                json!({"version": "2", "health": {"interval": "soon"}}),
                "health.interval",
            ),
            (
                json!({"version": "2", "health": {"interval": 0}}),
                "health.interval",
            ),
            (
                json!({"version": "2", "health": {"failures": 0}}),
                "health.failures",
            ),
            (
                json!({"version": "2", "health": {"command": []}}),
                "health.command",
            ),
            (
                json!({"version": "2", "health": {"command": ["a", 1]}}),
                "health.command[1]",
            ),
            (
                json!({"version": "2", "health": {"cmd": ["a"]}}),
                "health.cmd",
            ),
            (json!({"version": "2", "health": "yes"}), "health"),
            (
                json!({"version": "2", "max_duration": "1y"}),
                "max_duration",
            ),
            (
                json!({"version": "2", "auto_promote_after": "0s"}),
                "auto_promote_after",
            ),
            (json!({"version": 2}), "version"),
        ];
        for (body, name) in cases {
            let e = params(body.clone()).unwrap_err();
            assert!(e.starts_with(&format!("{name}:")), "{body}: {e}");
        }
        let ok = params(json!({
            "version": "2",
            "health": {"command": ["/bin/true"], "interval": "100ms", "timeout": 1, "failures": 2, "grace": "0s"},
            "max_duration": "1h",
            "auto_promote_after": null,
            "install_args": ["x"],
        }))
        .unwrap();
        let health = ok.health.unwrap();
        assert_eq!(
            health.interval,
            Some(WireDuration(Duration::from_millis(100)))
        );
        assert_eq!(health.failures, Some(2));
        assert_eq!(ok.auto_promote_after, None);
    }

    #[test]
    fn policies_layer_field_by_field() {
        let top = HealthPolicy {
            interval: Some(WireDuration(Duration::from_secs(1))),
            ..Default::default()
        };
        let below = HealthPolicy {
            command: Some(vec!["check".into()]),
            interval: Some(WireDuration(Duration::from_secs(9))),
            ..Default::default()
        };
        let merged = top.or(&below);
        assert_eq!(merged.command, Some(vec!["check".into()]));
        assert_eq!(merged.interval, Some(WireDuration(Duration::from_secs(1))));
    }

    #[test]
    fn rfc3339_round_trips() {
        for ms in [
            0,
            1_000,
            951_782_400_123,
            1_796_232_701_999,
            4_102_444_800_000,
        ] {
            let text = format_rfc3339(ms);
            assert_eq!(parse_rfc3339(&text), Some(ms), "{text}");
        }
        assert_eq!(format_rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            parse_rfc3339("2000-02-29T01:00:00+01:00"),
            Some(951_782_400_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29"), None);
        assert_eq!(parse_rfc3339("2000-13-29T00:00:00Z"), None);
    }
}
