//! `expected_state`: the state of a package a remote controller saw when it decided to act.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The state a request expects the host to be in, any subset of four fields; `""` means
/// "none" (no experiment, no config). A mutation whose package differs in any given field is
/// refused with `invalid_state` and nothing is done. Unknown fields are refused: a misspelt
/// field must not turn a guarded request into an unguarded one, and only a JSON object is
/// taken (serde alone would also read an array as the fields in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedState {
    /// The stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// The experiment version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The stable config version (deployment id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_config: Option<String>,
    /// The experiment config version (deployment id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_config: Option<String>,
}

/// The fields as the wire has them; [`ExpectedState`] decodes through it from an object only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(default)]
    stable: Option<String>,
    #[serde(default)]
    experiment: Option<String>,
    #[serde(default)]
    stable_config: Option<String>,
    #[serde(default)]
    experiment_config: Option<String>,
}

impl<'de> Deserialize<'de> for ExpectedState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = ExpectedState;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with stable, experiment, stable_config, experiment_config")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ExpectedState, A::Error> {
                let f = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ExpectedState {
                    stable: f.stable,
                    experiment: f.experiment,
                    stable_config: f.stable_config,
                    experiment_config: f.experiment_config,
                })
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

impl ExpectedState {
    /// The given fields as `(name, value)`, in wire order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("stable", &self.stable),
            ("experiment", &self.experiment),
            ("stable_config", &self.stable_config),
            ("experiment_config", &self.experiment_config),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// `{stable: "1.0.0", experiment: ""}`: the given fields, for messages.
impl fmt::Display for ExpectedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.fields().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {v:?}")?;
        }
        f.write_str("}")
    }
}

/// The body of `experiment/stop`, `experiment/promote` and `remove`: empty, or an
/// `expected_state`. Other fields are ignored, as they always were for these routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationParams {
    /// The state the caller expects; see [`ExpectedState`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_state: Option<ExpectedState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_subset_decodes_and_unknown_fields_are_refused() {
        let e: ExpectedState =
            serde_json::from_str(r#"{"stable": "1.0", "experiment": ""}"#).unwrap();
        assert_eq!(e.stable.as_deref(), Some("1.0"));
        assert_eq!(e.experiment.as_deref(), Some(""));
        assert_eq!(e.stable_config, None);
        assert_eq!(e.to_string(), r#"{stable: "1.0", experiment: ""}"#);
        let e: ExpectedState = serde_json::from_str("{}").unwrap();
        assert_eq!(e, ExpectedState::default());
        let err = serde_json::from_str::<ExpectedState>(r#"{"stabel": "1.0"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `stabel`"), "{err}");
        let err = serde_json::from_str::<ExpectedState>(r#"{"stable": 1}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = serde_json::from_str::<ExpectedState>(r#"["1.0"]"#).unwrap_err();
        assert!(err.to_string().contains("expected an object"), "{err}");
    }

    #[test]
    fn operation_params_ignore_other_fields() {
        let p: OperationParams =
            serde_json::from_str(r#"{"version": "x", "expected_state": {"stable": "1"}}"#).unwrap();
        assert_eq!(p.expected_state.unwrap().stable.as_deref(), Some("1"));
    }
}
