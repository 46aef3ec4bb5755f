//! What could not be loaded, and which check and file it concerns.

use std::path::{Path, PathBuf};

use outpost_checks::CheckError;
use serde::Serialize;

/// A configuration, check or instance that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The check, when known.
    pub check: Option<String>,
    /// The configuration file, when known.
    pub config: Option<PathBuf>,
    /// The instance's index in its file, for an instance that failed on its own.
    pub index: Option<usize>,
    /// The ID the instance would have had.
    pub check_id: Option<String>,
    /// What went wrong.
    pub error: CheckError,
}

impl LoadError {
    pub(super) fn of_check(check: &str, config: &Path, error: &outpost_checks::Error) -> Self {
        Self {
            check: Some(check.to_owned()),
            config: Some(config.to_owned()),
            index: None,
            check_id: None,
            error: check_error(error),
        }
    }
}

pub(super) fn check_error(error: &outpost_checks::Error) -> CheckError {
    CheckError {
        message: error.to_string(),
        traceback: error.traceback().unwrap_or_default().to_owned(),
    }
}

/// What a configuration error is about: the check and file, from the error's fields.
pub(super) fn discovery_error(conf_dir: &Path, error: &outpost_checks::Error) -> LoadError {
    use outpost_checks::Error as E;
    let (check, config) = match error {
        E::ConfigYaml { path, .. } | E::ConfigShape { path, .. } | E::ConfigRead { path, .. } => {
            (check_name_of(conf_dir, path), Some(path.clone()))
        }
        E::InvalidCheckName { name } => (Some(name.clone()), None),
        _ => (None, None),
    };
    LoadError {
        check,
        config,
        index: None,
        check_id: None,
        error: check_error(error),
    }
}

/// The check a configuration path of `conf_dir` belongs to: `<name>.d/x.yaml` or
/// `<name>.yaml`.
pub(super) fn check_name_of(conf_dir: &Path, path: &Path) -> Option<String> {
    let parent = path.parent()?;
    if parent != conf_dir {
        let dir = parent.file_name()?.to_str()?;
        return dir.strip_suffix(".d").map(str::to_owned);
    }
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_their_check() {
        let conf = Path::new("/c/conf.d");
        assert_eq!(
            check_name_of(conf, Path::new("/c/conf.d/web.d/conf.yaml")).as_deref(),
            Some("web")
        );
        assert_eq!(
            check_name_of(conf, Path::new("/c/conf.d/disk.yml")).as_deref(),
            Some("disk")
        );
        assert_eq!(check_name_of(conf, Path::new("/c/conf.d/notes.txt")), None);
        assert_eq!(check_name_of(conf, Path::new("/elsewhere/x.yaml")), None);
    }
}
