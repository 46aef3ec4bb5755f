//! `expected_state`: a mutation acts only on the state its caller saw.
//!
//! Every mutating body may carry `"expected_state": {"stable", "experiment", "stable_config",
//! "experiment_config"}` (any subset). Under the operation lock, before anything is done, the
//! operation builds the package's [`HostState`] and calls [`check`]: on any difference the
//! operation does nothing and fails with [`DaemonError::UnexpectedState`] (409
//! `invalid_state`), which its task records with state `INVALID_STATE` and both states in the
//! message. This is how a remote controller acts only on what it saw.

use std::fmt;

use outpost_types::PackageName;
use outpost_types::wire::ExpectedState;

use super::Daemon;
use crate::error::DaemonError;

/// A package's state on this host, in the terms of [`ExpectedState`]; `""` means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// The stable version, `""` when the package is not installed.
    pub stable: String,
    /// The experiment version, `""` when there is none.
    pub experiment: String,
    /// The stable config version (deployment id), `""` when the package has no config.
    pub stable_config: String,
    /// The experiment config version, `""` when there is none.
    pub experiment_config: String,
}

impl HostState {
    /// The package versions of a repository state (`None`: not installed); the config fields
    /// are left `""` for the caller to fill.
    pub fn of_package(state: Option<&outpost_repo::PackageState>) -> HostState {
        match state {
            Some(s) => HostState {
                stable: s.stable.to_string(),
                experiment: s
                    .experiment
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                ..HostState::default()
            },
            None => HostState::default(),
        }
    }

    fn get(&self, field: &str) -> &str {
        match field {
            "stable" => &self.stable,
            "experiment" => &self.experiment,
            "stable_config" => &self.stable_config,
            _ => &self.experiment_config,
        }
    }
}

/// `{stable: "1.0.0", experiment: "", stable_config: "", experiment_config: ""}`.
impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{stable: {:?}, experiment: {:?}, stable_config: {:?}, experiment_config: {:?}}}",
            self.stable, self.experiment, self.stable_config, self.experiment_config
        )
    }
}

/// Refuses when any field `expected` gives differs from `host`.
///
/// # Errors
/// [`DaemonError::UnexpectedState`], naming the package and holding both states.
pub fn check(package: &str, expected: &ExpectedState, host: &HostState) -> Result<(), DaemonError> {
    if expected.fields().all(|(k, v)| host.get(k) == v) {
        return Ok(());
    }
    Err(DaemonError::UnexpectedState {
        package: package.to_owned(),
        expected: Box::new(expected.clone()),
        host: Box::new(host.clone()),
    })
}

impl Daemon {
    /// The state of `name` on this host, as `expected_state` compares it.
    pub fn host_state(&self, name: &PackageName) -> Result<HostState, DaemonError> {
        let id = |v: Option<outpost_types::Version>| v.map(|v| v.to_string()).unwrap_or_default();
        let config = self.repo.config_state(name)?;
        Ok(HostState {
            stable_config: id(config.stable),
            experiment_config: id(config.experiment),
            ..HostState::of_package(self.repo.state(name)?.as_ref())
        })
    }

    /// [`check`] of the request's `expected_state`, if it had one, against the host's state
    /// now. Called first in an operation's body, under the operation lock.
    pub(super) fn check_expected(
        &self,
        name: &PackageName,
        expected: Option<&ExpectedState>,
    ) -> Result<(), DaemonError> {
        match expected {
            Some(expected) => check(name.as_str(), expected, &self.host_state(name)?),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_types::ErrorCode;

    fn host() -> HostState {
        HostState {
            stable: "1.0.0".into(),
            experiment: "2.0.0".into(),
            stable_config: "cfg-a".into(),
            experiment_config: String::new(),
        }
    }

    #[test]
    fn every_field_given_must_match() {
        let ok = ExpectedState {
            stable: Some("1.0.0".into()),
            experiment: Some("2.0.0".into()),
            stable_config: Some("cfg-a".into()),
            experiment_config: Some(String::new()),
        };
        check("demo", &ok, &host()).unwrap();
        check("demo", &ExpectedState::default(), &host()).unwrap();
        let wrong = [
            ("stable", "9"),
            ("experiment", ""),
            ("stable_config", "cfg-b"),
            ("experiment_config", "cfg-c"),
        ];
        for (field, value) in wrong {
            let mut e = ok.clone();
            *match field {
                "stable" => &mut e.stable,
                "experiment" => &mut e.experiment,
                "stable_config" => &mut e.stable_config,
                _ => &mut e.experiment_config,
            } = Some(value.into());
            let err = check("demo", &e, &host()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidState);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{field}: {value:?}")), "{msg}");
            assert!(msg.contains(&host().to_string()), "{msg}");
            assert!(msg.starts_with("demo"), "{msg}");
        }
    }
}
