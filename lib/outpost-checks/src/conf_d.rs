//! Check configuration files: `conf.d/<name>.d/*.yaml` and `conf.d/<name>.yaml`.
//!
//! A file holds `init_config` (a mapping, or null for none) and `instances` (a list of
//! mappings). Files are parsed in Rust into [`Value`] trees; an invalid file gives an error
//! that names the file and, for YAML errors, the line and column.
//!
//! Lookup for a check `name` in a configuration directory:
//! 1. every `*.yaml` / `*.yml` file of `<name>.d/` except `auto_conf.yaml`, in name order;
//!    when there is none, the `*.yaml.default` files there;
//! 2. then `<name>.yaml` / `<name>.yml` beside the `.d` directories.
//!
//! A file with no `instances` but a `logs` section is a logs-only configuration and is not
//! a check configuration; it is skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{ConfigProblem, Error};
use crate::id::config_digest;
use crate::value::Value;

/// Default interval between two runs of an instance.
pub const DEFAULT_MIN_COLLECTION_INTERVAL: Duration = Duration::from_secs(15);

/// One configuration file of one check, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfigFile {
    /// The check name (module name).
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// `init_config`; an empty mapping when the file has none or null.
    pub init_config: Value,
    /// `instances`, each a mapping.
    pub instances: Vec<Value>,
    /// The configuration digest (see [`crate::id`]), input of every instance's ID.
    pub digest: u64,
}

/// The reserved keys of one instance, as the agent (not the check) reads them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSettings {
    /// `min_collection_interval` (seconds; default 15; values <= 0 mean the default).
    pub min_collection_interval: Duration,
    /// `empty_default_hostname`: submissions without a hostname keep none, instead of the
    /// agent's hostname.
    pub empty_default_hostname: bool,
    /// `tags` (non-string items skipped). The check itself decides whether to add them to
    /// its submissions, as in the Datadog agent.
    pub tags: Vec<String>,
    /// `service`, else `init_config.service`: adds `service:<x>` to every submission.
    pub service: Option<String>,
    /// `name`, used in the check ID.
    pub name: Option<String>,
    /// `namespace`, used in the check ID when there is no `name`.
    pub namespace: Option<String>,
    /// `no_index`: submissions are flagged not to be indexed.
    pub no_index: bool,
}

impl CheckConfigFile {
    /// Reads and parses `path` as a configuration of check `name`.
    ///
    /// Returns `Ok(None)` for a logs-only file (no `instances`, but `logs`).
    pub fn read(name: &str, path: &Path) -> Result<Option<Self>, Error> {
        validate_check_name(name)?;
        let text = fs_err::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(name, path, &text)
    }

    /// Parses `text`, the content of `path`, as a configuration of check `name`.
    ///
    /// Returns `Ok(None)` for a logs-only file (no `instances`, but `logs`).
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Option<Self>, Error> {
        let doc = Value::from_yaml(text).map_err(|source| {
            let location = source.location();
            Error::ConfigYaml {
                path: path.to_owned(),
                line: location.map(|l| l.line()),
                column: location.map(|l| l.column()),
                source: Box::new(source),
            }
        })?;
        let shape = |problem: ConfigProblem| Error::ConfigShape {
            path: path.to_owned(),
            problem,
        };
        if !matches!(doc, Value::Map(_)) {
            return Err(shape(ConfigProblem::NotAMapping { found: doc.kind() }));
        }
        let init_config = match doc.get("init_config") {
            None | Some(Value::Null) => Value::Map(Vec::new()),
            Some(v @ Value::Map(_)) => v.clone(),
            Some(other) => {
                return Err(shape(ConfigProblem::InitConfig {
                    found: other.kind(),
                }));
            }
        };
        let instances = match doc.get("instances") {
            Some(Value::Seq(items)) => items.clone(),
            None if doc.get("logs").is_some() => return Ok(None),
            None => return Err(shape(ConfigProblem::MissingInstances)),
            Some(other) => {
                return Err(shape(ConfigProblem::Instances {
                    found: other.kind(),
                }));
            }
        };
        for (i, instance) in instances.iter().enumerate() {
            if !matches!(instance, Value::Map(_)) {
                return Err(shape(ConfigProblem::Instance {
                    index: i,
                    found: instance.kind(),
                }));
            }
        }
        let digest = config_digest(name, &init_config, &instances);
        Ok(Some(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            init_config,
            instances,
            digest,
        }))
    }

    /// The reserved-key settings of instance `index` (`None` when out of range).
    pub fn instance_settings(&self, index: usize) -> Option<InstanceSettings> {
        let instance = self.instances.get(index)?;
        let string = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let flag = |v: Option<&Value>| matches!(v, Some(Value::Bool(true)));
        let interval = match instance.get("min_collection_interval") {
            Some(Value::Int(n)) if *n > 0 => {
                Duration::from_secs(u64::try_from(*n).unwrap_or(u64::MAX))
            }
            Some(Value::Float(f)) if f.is_finite() && *f > 0.0 => {
                Duration::try_from_secs_f64(*f).unwrap_or(DEFAULT_MIN_COLLECTION_INTERVAL)
            }
            _ => DEFAULT_MIN_COLLECTION_INTERVAL,
        };
        let tags = match instance.get("tags") {
            Some(Value::Seq(items)) => items
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let service = string(instance.get("service"))
            .filter(|s| !s.is_empty())
            .or_else(|| string(self.init_config.get("service")).filter(|s| !s.is_empty()));
        Some(InstanceSettings {
            min_collection_interval: interval,
            empty_default_hostname: flag(instance.get("empty_default_hostname")),
            tags,
            service,
            name: string(instance.get("name")),
            namespace: string(instance.get("namespace")),
            no_index: flag(instance.get("no_index")),
        })
    }
}

/// Refuses names that are not module names (they would also allow path tricks in conf.d).
pub fn validate_check_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidCheckName {
            name: name.to_owned(),
        })
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn is_default(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".yaml.default") || n.ends_with(".yml.default"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = fs_err::read_dir(dir).map_err(|source| Error::ConfigRead {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| Error::ConfigRead {
            path: dir.to_owned(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

/// The configuration files of check `name` in `conf_dir`, in lookup order (module docs).
fn files_for(conf_dir: &Path, name: &str) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let d = conf_dir.join(format!("{name}.d"));
    if d.is_dir() {
        let entries = sorted_entries(&d)?;
        let regular: Vec<PathBuf> = entries
            .iter()
            .filter(|p| p.is_file() && is_yaml(p))
            .filter(|p| p.file_name().is_some_and(|n| n != "auto_conf.yaml"))
            .cloned()
            .collect();
        if regular.is_empty() {
            files.extend(entries.into_iter().filter(|p| p.is_file() && is_default(p)));
        } else {
            files.extend(regular);
        }
    }
    for ext in ["yaml", "yml"] {
        let f = conf_dir.join(format!("{name}.{ext}"));
        if f.is_file() {
            files.push(f);
        }
    }
    Ok(files)
}

/// The parsed configuration files of check `name` in `conf_dir`.
///
/// Fails on the first unreadable or invalid file (naming it), and with
/// [`Error::NoConfig`] when the check has no configuration file at all.
pub fn find(conf_dir: &Path, name: &str) -> Result<Vec<CheckConfigFile>, Error> {
    validate_check_name(name)?;
    let files = files_for(conf_dir, name)?;
    let mut configs = Vec::new();
    for file in &files {
        if let Some(c) = CheckConfigFile::read(name, file)? {
            configs.push(c);
        }
    }
    if configs.is_empty() {
        return Err(Error::NoConfig {
            name: name.to_owned(),
            conf_dir: conf_dir.to_owned(),
        });
    }
    Ok(configs)
}

/// Everything [`discover`] found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Valid configurations, by check name then file name.
    pub configs: Vec<CheckConfigFile>,
    /// Files that could not be used, each error naming its file.
    pub errors: Vec<Error>,
}

/// Finds the configuration of every check in `conf_dir`. A bad file is reported in
/// [`Discovery::errors`] and does not hide the others. Entries whose name is not a valid
/// check name are reported too. Fails only when `conf_dir` itself cannot be read.
pub fn discover(conf_dir: &Path) -> Result<Discovery, Error> {
    let mut names = Vec::new();
    for path in sorted_entries(conf_dir)? {
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let name = if path.is_dir() {
            file_name.strip_suffix(".d")
        } else if is_yaml(&path) {
            file_name
                .strip_suffix(".yaml")
                .or_else(|| file_name.strip_suffix(".yml"))
        } else {
            None
        };
        if let Some(name) = name
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut found = Discovery::default();
    for name in names {
        if let Err(e) = validate_check_name(&name) {
            found.errors.push(e);
            continue;
        }
        let files = match files_for(conf_dir, &name) {
            Ok(f) => f,
            Err(e) => {
                found.errors.push(e);
                continue;
            }
        };
        for file in files {
            match CheckConfigFile::read(&name, &file) {
                Ok(Some(c)) => found.configs.push(c),
                Ok(None) => {}
                Err(e) => found.errors.push(e),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(&p, text).unwrap();
        p
    }

    #[test]
    fn finds_d_directory_files_then_flat_file() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path();
        write(c, "web.d/b.yaml", "instances: [{port: 2}]\n");
        write(c, "web.d/a.yml", "init_config:\ninstances: [{port: 1}]\n");
        write(c, "web.d/auto_conf.yaml", "instances: [{port: 9}]\n");
        write(c, "web.d/notes.txt", "not yaml");
        write(c, "web.yaml", "instances: [{port: 3}]\n");
        let found = find(c, "web").unwrap();
        let ports: Vec<_> = found
            .iter()
            .map(|f| f.instances[0].get("port").cloned().unwrap())
            .collect();
        assert_eq!(ports, vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
        assert_eq!(found[0].init_config, Value::Map(vec![]));
    }

    #[test]
    fn default_files_only_when_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path();
        write(c, "disk.d/conf.yaml.default", "instances: [{a: 1}]\n");
        assert_eq!(find(c, "disk").unwrap().len(), 1);
        write(c, "disk.d/conf.yaml", "instances: [{a: 2}]\n");
        let found = find(c, "disk").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].instances[0].get("a"), Some(&Value::Int(2)));
    }

    #[test]
    fn missing_config_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = find(tmp.path(), "nope").unwrap_err();
        assert!(matches!(e, Error::NoConfig { .. }), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn invalid_yaml_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "bad.d/conf.yaml",
            "init_config:\ninstances:\n  - host: a\n    port: [1, 2\n  - host: b\n",
        );
        let e = find(tmp.path(), "bad").unwrap_err();
        let Error::ConfigYaml { path, line, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(path, &p);
        assert!(line.is_some_and(|l| (4..=5).contains(&l)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn shape_errors_name_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            ("- a\n- b\n", "must be a mapping"),
            (
                "init_config: [1]\ninstances: []\n",
                "`init_config` must be a mapping",
            ),
            ("instances: {a: 1}\n", "`instances` must be a list"),
            ("instances: [1]\n", "instance 0 must be a mapping"),
            (
                "instances: [{a: 1}, null]\n",
                "instance 1 must be a mapping",
            ),
            ("init_config: {}\n", "missing `instances`"),
        ];
        for (text, expected) in cases {
            let e = CheckConfigFile::parse("x", &tmp.path().join("x.yaml"), text).unwrap_err();
            assert!(
                matches!(e, Error::ConfigShape { .. }) && e.to_string().contains(expected),
                "{text:?}: {e}"
            );
        }
        // Logs-only configurations are not check configurations.
        assert!(
            CheckConfigFile::parse("x", Path::new("x.yaml"), "logs: [{type: file}]\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["../etc", "a/b", "", "1abc", "a-b", "a.b", "a b"] {
            let e = find(tmp.path(), name).unwrap_err();
            assert!(matches!(e, Error::InvalidCheckName { .. }), "{name:?}: {e}");
        }
    }

    #[test]
    fn reserved_keys() {
        let f = CheckConfigFile::parse(
            "x",
            Path::new("x.yaml"),
            "init_config: {service: base}\ninstances:\n\
             - {min_collection_interval: 30, tags: [a:b, 3, c], empty_default_hostname: true, no_index: true, name: nm, namespace: ns}\n\
             - {service: mine, min_collection_interval: 0}\n\
             - {min_collection_interval: 2.5}\n",
        )
        .unwrap()
        .unwrap();
        let s0 = f.instance_settings(0).unwrap();
        assert_eq!(s0.min_collection_interval, Duration::from_secs(30));
        assert_eq!(s0.tags, vec!["a:b", "c"]);
        assert!(s0.empty_default_hostname && s0.no_index);
        assert_eq!(s0.service.as_deref(), Some("base"));
        assert_eq!(s0.name.as_deref(), Some("nm"));
        assert_eq!(s0.namespace.as_deref(), Some("ns"));
        let s1 = f.instance_settings(1).unwrap();
        assert_eq!(s1.service.as_deref(), Some("mine"));
        assert_eq!(s1.min_collection_interval, DEFAULT_MIN_COLLECTION_INTERVAL);
        assert!(!s1.empty_default_hostname && !s1.no_index);
        let s2 = f.instance_settings(2).unwrap();
        assert_eq!(s2.min_collection_interval, Duration::from_millis(2500));
        assert!(f.instance_settings(3).is_none());
    }

    #[test]
    fn discover_reports_bad_files_without_hiding_good_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path();
        write(c, "good.d/conf.yaml", "instances: [{a: 1}]\n");
        write(c, "bad.yaml", "instances: [\n");
        write(c, "logs_only.d/conf.yaml", "logs: [{type: file}]\n");
        write(c, "bad-name.yaml", "instances: [{}]\n");
        let found = discover(c).unwrap();
        assert_eq!(found.configs.len(), 1);
        assert_eq!(found.configs[0].name, "good");
        assert_eq!(found.errors.len(), 2, "{:?}", found.errors);
        assert!(
            found
                .errors
                .iter()
                .any(|e| matches!(e, Error::ConfigYaml { path, .. } if path.ends_with("bad.yaml")))
        );
        assert!(
            found
                .errors
                .iter()
                .any(|e| matches!(e, Error::InvalidCheckName { .. }))
        );
        assert!(discover(&c.join("missing")).is_err());
    }
}
