//! Applying a [`Plan`] to a config tree on disk, and copying a tree.
//!
//! Every path is walked from the root one segment at a time with `lstat`: a symbolic link or
//! a special file anywhere on the way is refused, never followed, so an operation can only
//! touch what lies below the root. Files are written under a temporary name with their final
//! mode already set, then renamed into place, so a file that receives a secret is never
//! readable by others, not even for an instant.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;

use fs_err::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ConfigError, Format};
use crate::operations::{Action, Plan, Step};
use crate::path::ConfigPath;
use crate::rules::Rules;
use crate::secrets;

/// `O_NOFOLLOW`: the last component is never followed, even if it became a link after the walk.
const NOFOLLOW: i32 = libc::O_NOFOLLOW;

/// The largest config file read or written.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Mode of the directories created in a config tree.
pub const DIR_MODE: u32 = 0o755;
/// The most a file that received a secret may allow: read and write for its owner.
pub const SECRET_MODE: u32 = 0o600;

impl Plan {
    /// Applies the operations, in order, to the tree at `root` (a private copy of the stable
    /// config: the caller discards it on error). `secrets` holds the plaintext of each key a
    /// placeholder names; it is used only in memory, for the patches that need it.
    ///
    /// # Errors
    /// The first operation that fails, by index and path. Never a secret's value.
    pub fn apply<S: AsRef<str>>(
        &self,
        root: &Path,
        secrets: &BTreeMap<String, S>,
    ) -> Result<(), ConfigError> {
        let none = Rules::none();
        let rules = self.rules.as_ref().unwrap_or(&none);
        let tree = Tree {
            root,
            rules,
            package: &self.package,
        };
        for step in &self.steps {
            tree.apply(step, secrets)?;
        }
        Ok(())
    }
}

/// What sits at a path, without following symbolic links.
enum Entry {
    Missing,
    File(std::fs::Metadata),
    Dir,
}

struct Tree<'a> {
    root: &'a Path,
    rules: &'a Rules,
    package: &'a str,
}

impl Tree<'_> {
    fn apply<S: AsRef<str>>(
        &self,
        step: &Step,
        secrets: &BTreeMap<String, S>,
    ) -> Result<(), ConfigError> {
        let index = step.index;
        match &step.action {
            Action::MergePatch { path, patch } => {
                let mut patch = patch.clone();
                if !step.secrets.is_empty() {
                    secrets::substitute_value(&mut patch, secrets)?;
                }
                self.patch_file(index, path, !step.secrets.is_empty(), |doc| {
                    json_patch::merge(doc, &patch);
                    Ok(())
                })
            }
            Action::Patch { path, patch } => {
                let mut patch = patch.clone();
                if !step.secrets.is_empty() {
                    for op in &mut patch {
                        secrets::substitute_patch_operation(op, secrets)?;
                    }
                }
                self.patch_file(index, path, !step.secrets.is_empty(), |doc| {
                    json_patch::patch(doc, &patch).map_err(|source| ConfigError::PatchFailed {
                        index,
                        path: path.to_string(),
                        source,
                    })
                })
            }
            Action::Delete { path } => match self.lookup(path, false)? {
                Entry::Missing => Ok(()),
                Entry::File(_) => remove_file(&path.under(self.root)),
                Entry::Dir => Err(ConfigError::NotAFile {
                    path: path.to_string(),
                }),
            },
            Action::DeleteAll { path } => self.delete_all(index, path),
            Action::Copy { from, to } => {
                let (bytes, mode) = self.read_source(index, from)?;
                let target_mode = self.mode(index, to)? & mode;
                self.lookup_target(to)?;
                write_file(&to.under(self.root), &bytes, target_mode)
            }
            Action::Move { from, to } => {
                let (_, mode) = self.read_source(index, from)?;
                let target_mode = self.mode(index, to)? & mode;
                self.lookup_target(to)?;
                let (src, dst) = (from.under(self.root), to.under(self.root));
                set_mode(&src, target_mode)?;
                fs_err::rename(&src, &dst).map_err(|e| ConfigError::io("move", &dst, e))
            }
        }
    }

    fn mode(&self, index: usize, path: &ConfigPath) -> Result<u32, ConfigError> {
        self.rules
            .mode_for(path)
            .ok_or_else(|| ConfigError::NotAllowed {
                index,
                path: path.to_string(),
                package: self.package.to_owned(),
            })
    }

    /// Reads, patches and writes back one YAML or JSON file (created empty when missing).
    fn patch_file(
        &self,
        index: usize,
        path: &ConfigPath,
        received_secret: bool,
        change: impl FnOnce(&mut Value) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let format = format_of(path).ok_or_else(|| ConfigError::UnsupportedFormat {
            index,
            path: path.to_string(),
        })?;
        let mut mode = self.mode(index, path)?;
        let full = path.under(self.root);
        let mut doc = match self.lookup_target(path)? {
            Entry::File(meta) => {
                // A mode never loosens: a file made stricter (by a secret) stays so.
                mode &= meta.permissions().mode() & 0o777;
                let text = read_limited(&full, path, &meta)?;
                parse(&text, format, path)?
            }
            Entry::Missing => Value::Object(serde_json::Map::new()),
            Entry::Dir => {
                return Err(ConfigError::NotAFile {
                    path: path.to_string(),
                });
            }
        };
        change(&mut doc)?;
        if received_secret {
            mode &= SECRET_MODE;
        }
        let bytes = encode(&doc, format, path)?;
        write_file(&full, &bytes, mode)
    }

    /// The source of a copy or move: an existing regular file, its content and mode.
    fn read_source(&self, index: usize, path: &ConfigPath) -> Result<(Vec<u8>, u32), ConfigError> {
        match self.lookup(path, false)? {
            Entry::File(meta) => {
                let full = path.under(self.root);
                let bytes = read_limited(&full, path, &meta)?;
                Ok((bytes, meta.permissions().mode() & 0o777))
            }
            Entry::Missing => Err(ConfigError::SourceMissing {
                index,
                path: path.to_string(),
            }),
            Entry::Dir => Err(ConfigError::NotAFile {
                path: path.to_string(),
            }),
        }
    }

    /// The entry at a path to be written: its parents are created; a directory there is
    /// refused.
    fn lookup_target(&self, path: &ConfigPath) -> Result<Entry, ConfigError> {
        match self.lookup(path, true)? {
            Entry::Dir => Err(ConfigError::NotAFile {
                path: path.to_string(),
            }),
            other => Ok(other),
        }
    }

    /// Walks `path` from the root without following anything: every parent must be a real
    /// directory (created with [`DIR_MODE`] when `create_parents`; else a missing parent means
    /// the path is missing), and the entry itself a file, a directory or nothing.
    fn lookup(&self, path: &ConfigPath, create_parents: bool) -> Result<Entry, ConfigError> {
        let segments = path.segments();
        let mut current = self.root.to_path_buf();
        let mut shown =
            ConfigPath::parse("/").map_err(|_| ConfigError::NotADirectory { path: "/".into() })?;
        for (i, segment) in segments.iter().enumerate() {
            current.push(segment);
            shown = shown.child(segment);
            let last = i + 1 == segments.len();
            match fs_err::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() || !(meta.is_dir() || meta.is_file()) => {
                    return Err(ConfigError::Symlink {
                        path: shown.to_string(),
                    });
                }
                Ok(meta) if last => {
                    return Ok(if meta.is_dir() {
                        Entry::Dir
                    } else {
                        Entry::File(meta)
                    });
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ConfigError::NotADirectory {
                        path: shown.to_string(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if last {
                        return Ok(Entry::Missing);
                    }
                    if !create_parents {
                        return Ok(Entry::Missing);
                    }
                    create_dir(&current)?;
                }
                Err(e) => return Err(ConfigError::io("inspect", &current, e)),
            }
        }
        // The root itself.
        Ok(Entry::Dir)
    }

    /// `delete-all`: a file (which must be allowed) or a directory whose every file is allowed
    /// and which holds no symbolic link; the root keeps existing, emptied.
    fn delete_all(&self, index: usize, path: &ConfigPath) -> Result<(), ConfigError> {
        match self.lookup(path, false)? {
            Entry::Missing => Ok(()),
            Entry::File(_) => {
                self.mode(index, path)?;
                remove_file(&path.under(self.root))
            }
            Entry::Dir => {
                self.check_all_allowed(index, path)?;
                let full = path.under(self.root);
                if path.is_root() {
                    for entry in list(&full)? {
                        remove_any(&full.join(entry))?;
                    }
                    Ok(())
                } else {
                    remove_any(&full)
                }
            }
        }
    }

    fn check_all_allowed(&self, index: usize, dir: &ConfigPath) -> Result<(), ConfigError> {
        let full = dir.under(self.root);
        for name in list(&full)? {
            let child = dir.child(&name);
            let meta = fs_err::symlink_metadata(full.join(&name))
                .map_err(|e| ConfigError::io("inspect", full.join(&name), e))?;
            if meta.is_dir() {
                self.check_all_allowed(index, &child)?;
            } else if meta.is_file() {
                self.mode(index, &child)?;
            } else {
                return Err(ConfigError::Symlink {
                    path: child.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Copies the config tree at `from` into the existing, empty directory `to`: directories and
/// regular files with their modes (permission bits only). A symbolic link or special file
/// anywhere is refused.
///
/// # Errors
/// [`ConfigError::Symlink`] naming the entry; [`ConfigError::Io`] for a failed step.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), ConfigError> {
    copy_dir(
        from,
        to,
        &ConfigPath::parse("/").map_err(|_| ConfigError::NotADirectory { path: "/".into() })?,
    )
}

fn copy_dir(from: &Path, to: &Path, shown: &ConfigPath) -> Result<(), ConfigError> {
    for name in list(from)? {
        let (src, dst) = (from.join(&name), to.join(&name));
        let child = shown.child(&name);
        let meta =
            fs_err::symlink_metadata(&src).map_err(|e| ConfigError::io("inspect", &src, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            create_dir(&dst)?;
            copy_dir(&src, &dst, &child)?;
            set_mode(&dst, mode)?;
        } else if meta.is_file() {
            let bytes = read_limited(&src, &child, &meta)?;
            write_file(&dst, &bytes, mode)?;
        } else {
            return Err(ConfigError::Symlink {
                path: child.to_string(),
            });
        }
    }
    Ok(())
}

fn format_of(path: &ConfigPath) -> Option<Format> {
    let name = path.file_name();
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "yaml" | "yml" => Some(Format::Yaml),
        "json" => Some(Format::Json),
        _ => None,
    }
}

fn parse(bytes: &[u8], format: Format, path: &ConfigPath) -> Result<Value, ConfigError> {
    let invalid = |line, column| ConfigError::Parse {
        path: path.to_string(),
        format,
        line,
        column,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(None, None))?;
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    // The parsers' own messages may quote the file, which can hold secrets: only the position
    // is kept.
    let value = match format {
        Format::Json => serde_json::from_str::<Value>(text)
            .map_err(|e| invalid(Some(e.line() as u64), Some(e.column() as u64)))?,
        Format::Yaml => serde_saphyr::from_str::<Option<Value>>(text)
            .map_err(|e| {
                let at = e.location();
                invalid(at.map(|l| l.line()), at.map(|l| l.column()))
            })?
            .unwrap_or(Value::Null),
    };
    Ok(if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    })
}

fn encode(doc: &Value, format: Format, path: &ConfigPath) -> Result<Vec<u8>, ConfigError> {
    let failed = || ConfigError::Encode {
        path: path.to_string(),
        format,
    };
    match format {
        Format::Json => {
            let mut bytes = serde_json::to_vec_pretty(doc).map_err(|_| failed())?;
            bytes.push(b'\n');
            Ok(bytes)
        }
        Format::Yaml => serde_saphyr::to_string(doc)
            .map(String::into_bytes)
            .map_err(|_| failed()),
    }
}

fn read_limited(
    full: &Path,
    shown: &ConfigPath,
    meta: &std::fs::Metadata,
) -> Result<Vec<u8>, ConfigError> {
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: shown.to_string(),
            size: meta.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let mut bytes = Vec::new();
    let file = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(full)
        .map_err(|e| ConfigError::io("open", full, e))?;
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::io("read", full, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: shown.to_string(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file created with `mode` (made exact whatever
/// the umask) and renamed over the target.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConfigError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.display().to_string(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp: PathBuf = path.with_file_name(format!(".{name}.outpost-tmp"));
    remove_any(&temp)?;
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(NOFOLLOW)
        .open(&temp)
        .map_err(|e| ConfigError::io("create", &temp, e))?;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| ConfigError::io("set the mode of", &temp, e))?;
    let written = file.write_all(bytes).and_then(|()| file.flush());
    drop(file);
    if let Err(e) = written {
        let _ = fs_err::remove_file(&temp);
        return Err(ConfigError::io("write", &temp, e));
    }
    fs_err::rename(&temp, path).map_err(|e| {
        let _ = fs_err::remove_file(&temp);
        ConfigError::io("rename into place", path, e)
    })
}

fn create_dir(path: &Path) -> Result<(), ConfigError> {
    fs_err::create_dir(path)
        .and_then(|()| fs_err::set_permissions(path, Permissions::from_mode(DIR_MODE)))
        .map_err(|e| ConfigError::io("create the directory", path, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ConfigError> {
    fs_err::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| ConfigError::io("set the mode of", path, e))
}

fn remove_file(path: &Path) -> Result<(), ConfigError> {
    fs_err::remove_file(path).map_err(|e| ConfigError::io("delete", path, e))
}

/// Deletes a file or a directory tree without following links; missing is fine.
fn remove_any(path: &Path) -> Result<(), ConfigError> {
    let meta = match fs_err::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConfigError::io("inspect", path, e)),
    };
    if meta.is_dir() {
        fs_err::remove_dir_all(path)
    } else {
        fs_err::remove_file(path)
    }
    .map_err(|e| ConfigError::io("delete", path, e))
}

/// The entry names of a directory, sorted; a name that is not UTF-8 is refused as unsafe.
fn list(dir: &Path) -> Result<Vec<String>, ConfigError> {
    let mut names = Vec::new();
    for entry in fs_err::read_dir(dir).map_err(|e| ConfigError::io("list", dir, e))? {
        let entry = entry.map_err(|e| ConfigError::io("list", dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|raw| ConfigError::NotAFile {
                path: dir.join(raw).display().to_string(),
            })?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}
