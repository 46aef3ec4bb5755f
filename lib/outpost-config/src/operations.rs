//! The wire shape of config operations and of the config catalog, and their validation into
//! a [`Plan`].

use std::collections::{BTreeMap, BTreeSet};

use json_patch::PatchOperation;
use outpost_types::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ConfigError;
use crate::path::ConfigPath;
use crate::rules::Rules;
use crate::secrets;

/// One kind of file operation (`file_op` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOp {
    /// RFC 7396 JSON Merge Patch of a YAML or JSON file.
    MergePatch,
    /// RFC 6902 JSON Patch of a YAML or JSON file.
    Patch,
    /// Deletes a file (missing is fine).
    Delete,
    /// Deletes a file or a directory and everything below it (missing is fine).
    DeleteAll,
    /// Copies a file to `destination_path`.
    Copy,
    /// Moves a file to `destination_path`.
    Move,
}

impl FileOp {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MergePatch => "merge-patch",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteAll => "delete-all",
            Self::Copy => "copy",
            Self::Move => "move",
        }
    }
}

impl std::fmt::Display for FileOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file operation as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOperation {
    /// What to do.
    pub file_op: FileOp,
    /// The file (or, for `delete-all`, directory), relative to the config root.
    pub file_path: String,
    /// Where `copy` and `move` put it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_path: Option<String>,
    /// The patch of `merge-patch` (any JSON value) and `patch` (an RFC 6902 array). String
    /// values may hold `SEC[key]` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
}

/// A deployment: its id and its operations, applied in order to a copy of the stable config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOperations {
    /// The deployment id: the config version, the name of its directory.
    pub deployment_id: String,
    /// The operations, in order.
    #[serde(default)]
    pub file_operations: Vec<FileOperation>,
}

/// An entry of the config catalog: `{"id": "<id>", "file_operations": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigCatalogEntry {
    /// The deployment id; equal to the entry's key.
    pub id: String,
    /// The operations.
    #[serde(default)]
    pub file_operations: Vec<FileOperation>,
    /// The health policy of the watch of a config experiment started from this entry, below
    /// the one the start gives (the same form as a package catalog entry's `health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<outpost_types::wire::HealthPolicy>,
}

impl ConfigCatalogEntry {
    /// The entry as a deployment.
    pub fn operations(&self) -> ConfigOperations {
        ConfigOperations {
            deployment_id: self.id.clone(),
            file_operations: self.file_operations.clone(),
        }
    }
}

/// The config catalog, `{"<id>": {"id": "<id>", "file_operations": [...]}}`.
pub type ConfigCatalog = BTreeMap<String, ConfigCatalogEntry>;

/// Checks every entry of a catalog: its key equals its id and its operations are well formed
/// (see [`ConfigOperations::validate`]).
///
/// # Errors
/// [`ConfigError::CatalogId`] or [`ConfigError::CatalogEntry`] naming the first bad entry.
pub fn validate_catalog(catalog: &ConfigCatalog) -> Result<(), ConfigError> {
    for (key, entry) in catalog {
        if *key != entry.id {
            return Err(ConfigError::CatalogId {
                key: key.clone(),
                id: entry.id.clone(),
            });
        }
        entry
            .operations()
            .validate()
            .map_err(|e| ConfigError::CatalogEntry {
                key: key.clone(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// What one validated operation does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    MergePatch {
        path: ConfigPath,
        patch: Value,
    },
    Patch {
        path: ConfigPath,
        patch: Vec<PatchOperation>,
    },
    Delete {
        path: ConfigPath,
    },
    DeleteAll {
        path: ConfigPath,
    },
    Copy {
        from: ConfigPath,
        to: ConfigPath,
    },
    Move {
        from: ConfigPath,
        to: ConfigPath,
    },
}

/// One validated operation.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) index: usize,
    pub(crate) action: Action,
    /// The secret keys its patch uses.
    pub(crate) secrets: BTreeSet<String>,
}

/// Validated operations, ready to apply (see [`Plan::apply`](crate::Plan::apply)). Holds
/// placeholders, never secrets.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) deployment_id: Version,
    pub(crate) steps: Vec<Step>,
    pub(crate) rules: Option<Rules>,
    pub(crate) package: String,
}

impl Plan {
    /// The deployment id.
    pub fn deployment_id(&self) -> &Version {
        &self.deployment_id
    }

    /// The secret keys the operations use, all of which [`Plan::apply`](crate::Plan::apply)
    /// needs.
    pub fn secret_keys(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .flat_map(|s| s.secrets.iter().map(String::as_str))
            .collect()
    }
}

impl ConfigOperations {
    /// Checks the operations' shape, without any package's rules: the deployment id is a
    /// valid directory name, each operation has the fields it needs and no other, paths are
    /// safe, patches have the right shape, and placeholders sit only in values.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<Plan, ConfigError> {
        let deployment_id = Version::new(self.deployment_id.clone()).map_err(|source| {
            ConfigError::InvalidDeploymentId {
                id: self.deployment_id.clone(),
                source,
            }
        })?;
        let steps = self
            .file_operations
            .iter()
            .enumerate()
            .map(|(index, op)| step(index, op))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            deployment_id,
            steps,
            rules: None,
            package: String::new(),
        })
    }

    /// Validates the operations for `package` under its `rules`: [`ConfigOperations::validate`],
    /// then every path an operation writes, reads or deletes must be allowed (a `delete-all`
    /// of a directory is checked against the files found under it when it runs), and every
    /// placeholder must have a key among `secret_keys`.
    ///
    /// # Errors
    /// The first problem found: [`ConfigError::NotAllowed`], [`ConfigError::MissingSecret`], or
    /// one of [`ConfigOperations::validate`]'s.
    pub fn plan(
        &self,
        package: &str,
        rules: &Rules,
        secret_keys: &BTreeSet<&str>,
    ) -> Result<Plan, ConfigError> {
        let mut plan = self.validate()?;
        for step in &plan.steps {
            let allowed = |path: &ConfigPath| {
                if rules.mode_for(path).is_some() {
                    Ok(())
                } else {
                    Err(ConfigError::NotAllowed {
                        index: step.index,
                        path: path.to_string(),
                        package: package.to_owned(),
                    })
                }
            };
            match &step.action {
                Action::MergePatch { path, .. }
                | Action::Patch { path, .. }
                | Action::Delete { path } => allowed(path)?,
                // A directory is checked file by file when the operation runs.
                Action::DeleteAll { .. } => {}
                Action::Copy { from, to } | Action::Move { from, to } => {
                    allowed(from)?;
                    allowed(to)?;
                }
            }
            if let Some(key) = step
                .secrets
                .iter()
                .find(|k| !secret_keys.contains(k.as_str()))
            {
                return Err(ConfigError::MissingSecret { key: key.clone() });
            }
        }
        plan.rules = Some(rules.clone());
        plan.package = package.to_owned();
        Ok(plan)
    }
}

fn step(index: usize, op: &FileOperation) -> Result<Step, ConfigError> {
    let path = |raw: &str| {
        ConfigPath::parse(raw).map_err(|problem| ConfigError::InvalidPath {
            index,
            path: raw.to_owned(),
            problem,
        })
    };
    let file = |raw: &str| {
        let p = path(raw)?;
        if p.is_root() {
            return Err(ConfigError::InvalidPath {
                index,
                path: raw.to_owned(),
                problem: crate::error::PathProblem::Root,
            });
        }
        Ok(p)
    };
    let misplaced = |raw: &str, place| match secrets::placeholders(raw).next() {
        Some(key) => Err(ConfigError::MisplacedSecret {
            index,
            key: key.to_owned(),
            place,
        }),
        None => Ok(()),
    };
    misplaced(&op.file_path, "file_path")?;
    if let Some(dest) = &op.destination_path {
        misplaced(dest, "destination_path")?;
    }
    let missing = |field| ConfigError::MissingField {
        index,
        op: op.file_op,
        field,
    };
    let unexpected = |field| ConfigError::UnexpectedField {
        index,
        op: op.file_op,
        field,
    };
    let takes_patch = matches!(op.file_op, FileOp::MergePatch | FileOp::Patch);
    let takes_destination = matches!(op.file_op, FileOp::Copy | FileOp::Move);
    if !takes_patch && op.patch.is_some() {
        return Err(unexpected("patch"));
    }
    if !takes_destination && op.destination_path.is_some() {
        return Err(unexpected("destination_path"));
    }
    let destination = || {
        op.destination_path
            .as_deref()
            .ok_or_else(|| missing("destination_path"))
            .and_then(file)
    };
    let mut keys = BTreeSet::new();
    let action = match op.file_op {
        FileOp::MergePatch => {
            let patch = op.patch.clone().ok_or_else(|| missing("patch"))?;
            secrets::scan_value(&patch, index, &mut keys)?;
            Action::MergePatch {
                path: file(&op.file_path)?,
                patch,
            }
        }
        FileOp::Patch => {
            let raw = op.patch.clone().ok_or_else(|| missing("patch"))?;
            let patch: Vec<PatchOperation> = serde_json::from_value(raw)
                .map_err(|source| ConfigError::InvalidPatch { index, source })?;
            for operation in &patch {
                secrets::scan_patch_operation(operation, index, &mut keys)?;
            }
            Action::Patch {
                path: file(&op.file_path)?,
                patch,
            }
        }
        FileOp::Delete => Action::Delete {
            path: file(&op.file_path)?,
        },
        FileOp::DeleteAll => Action::DeleteAll {
            path: path(&op.file_path)?,
        },
        FileOp::Copy => Action::Copy {
            from: file(&op.file_path)?,
            to: destination()?,
        },
        FileOp::Move => Action::Move {
            from: file(&op.file_path)?,
            to: destination()?,
        },
    };
    Ok(Step {
        index,
        action,
        secrets: keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> ConfigOperations {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_wire_shape_round_trips() {
        let body = json!({
            "deployment_id": "abc-1",
            "file_operations": [
                {"file_op": "merge-patch", "file_path": "/datadog.yaml", "patch": {"log_level": "debug"}},
                {"file_op": "patch", "file_path": "/x.json", "patch": [{"op": "add", "path": "/a", "value": 1}]},
                {"file_op": "delete", "file_path": "/old.yaml"},
                {"file_op": "delete-all", "file_path": "/conf.d"},
                {"file_op": "copy", "file_path": "/a.yaml", "destination_path": "/b.yaml"},
                {"file_op": "move", "file_path": "/b.yaml", "destination_path": "/c.yaml"},
            ]
        });
        let parsed = ops(body.clone());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), body);
        let plan = parsed.validate().unwrap();
        assert_eq!(plan.steps.len(), 6);
        assert_eq!(plan.deployment_id().as_str(), "abc-1");
    }

    #[test]
    fn unknown_operations_and_fields_are_refused() {
        let bad = serde_json::from_value::<ConfigOperations>(json!({
            "deployment_id": "a", "file_operations": [{"file_op": "jq", "file_path": "/a.yaml"}]
        }));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
        let bad = serde_json::from_value::<ConfigOperations>(json!({
            "deployment_id": "a", "file_operations": [{"file_op": "delete", "file_path": "/a.yaml", "mode": 1}]
        }));
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn fields_are_checked_per_operation() {
        let cases = [
            (
                json!({"file_op": "merge-patch", "file_path": "/a.yaml"}),
                "`patch` is required",
            ),
            (
                json!({"file_op": "copy", "file_path": "/a.yaml"}),
                "`destination_path` is required",
            ),
            (
                json!({"file_op": "delete", "file_path": "/a.yaml", "patch": {}}),
                "`patch` does not apply",
            ),
            (
                json!({"file_op": "patch", "file_path": "/a.yaml", "destination_path": "/b.yaml", "patch": []}),
                "`destination_path` does not apply",
            ),
            (
                json!({"file_op": "patch", "file_path": "/a.yaml", "patch": {"op": "add"}}),
                "not a JSON Patch",
            ),
            (
                json!({"file_op": "delete", "file_path": "/"}),
                "names the config root",
            ),
            (
                json!({"file_op": "delete", "file_path": "../x.yaml"}),
                "`..` would leave",
            ),
            (
                json!({"file_op": "move", "file_path": "/a.yaml", "destination_path": "//etc/x.yaml"}),
                "escapes the config root",
            ),
        ];
        for (op, expected) in cases {
            let ops = ConfigOperations {
                deployment_id: "d".into(),
                file_operations: vec![serde_json::from_value(op.clone()).unwrap()],
            };
            let err = ops.validate().unwrap_err();
            assert!(err.to_string().contains(expected), "{op}: {err}");
            assert_eq!(err.code(), outpost_types::ErrorCode::BadRequest);
        }
    }

    #[test]
    fn deployment_ids_are_directory_names() {
        for id in ["", "..", "a/b", "stable", "experiment"] {
            let ops = ConfigOperations {
                deployment_id: id.into(),
                file_operations: vec![],
            };
            assert!(
                matches!(ops.validate(), Err(ConfigError::InvalidDeploymentId { .. })),
                "{id:?}"
            );
        }
    }

    #[test]
    fn plan_checks_rules_and_secret_keys() {
        let ops = ops(json!({
            "deployment_id": "d",
            "file_operations": [
                {"file_op": "merge-patch", "file_path": "/app.yaml", "patch": {"key": "SEC[api]"}},
                {"file_op": "copy", "file_path": "/app.yaml", "destination_path": "/conf.d/x.yaml"},
            ]
        }));
        let rules = Rules::defaults();
        let err = ops.plan("demo", &rules, &BTreeSet::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret \"api\" is used by a placeholder SEC[api] but was not provided"
        );
        let plan = ops.plan("demo", &rules, &BTreeSet::from(["api"])).unwrap();
        assert_eq!(plan.secret_keys(), BTreeSet::from(["api"]));
        let ops2 =
            ConfigOperations {
                deployment_id: "d".into(),
                file_operations: vec![serde_json::from_value(json!({
                "file_op": "copy", "file_path": "/app.yaml", "destination_path": "/etc/passwd"
            })).unwrap()],
            };
        let err = ops2.plan("demo", &rules, &BTreeSet::new()).unwrap_err();
        assert!(
            matches!(err, ConfigError::NotAllowed { index: 0, ref path, .. } if path == "/etc/passwd"),
            "{err}"
        );
    }

    #[test]
    fn catalog_entries_are_named() {
        let catalog: ConfigCatalog = serde_json::from_value(json!({
            "good": {"id": "good", "file_operations": []},
            "mismatch": {"id": "other", "file_operations": []},
        }))
        .unwrap();
        let err = validate_catalog(&catalog).unwrap_err();
        assert!(err.to_string().contains("\"mismatch\""), "{err}");
        let catalog: ConfigCatalog = serde_json::from_value(json!({
            "bad": {"id": "bad", "file_operations": [{"file_op": "delete", "file_path": "../x"}]},
        }))
        .unwrap();
        let err = validate_catalog(&catalog).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config catalog entry \"bad\": file operation 0"),
            "{err}"
        );
    }
}
