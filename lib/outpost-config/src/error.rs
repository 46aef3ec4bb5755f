//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use outpost_types::{ErrorCode, NameError};

use crate::operations::FileOp;

/// Why a path given to a file operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathProblem {
    /// The path is empty.
    Empty,
    /// The path names the config root itself where a file is needed.
    Root,
    /// A `..` segment.
    ParentSegment,
    /// A `.` segment.
    DotSegment,
    /// Two slashes in a row, a trailing slash, or more than one leading slash.
    EmptySegment,
    /// A NUL byte or a backslash.
    BadCharacter,
    /// Longer than [`crate::path::MAX_PATH_LEN`] bytes or a segment over 255 bytes.
    TooLong,
}

impl PathProblem {
    fn describe(self) -> &'static str {
        match self {
            Self::Empty => "the path is empty",
            Self::Root => "the path names the config root, not a file",
            Self::ParentSegment => "`..` would leave the config root",
            Self::DotSegment => "`.` segments are not allowed",
            Self::EmptySegment => {
                "empty segment (a double, trailing or second leading slash escapes the config root)"
            }
            Self::BadCharacter => "NUL bytes and backslashes are not allowed",
            Self::TooLong => "the path or one of its segments is too long",
        }
    }
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a line of a package's `outpost/config-files` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleProblem {
    /// Not two fields (`pattern mode`).
    Fields,
    /// The pattern does not start with `/`, has an empty, `.` or `..` segment, or uses a glob
    /// character other than `*`, `?` and a whole-segment `**`.
    Pattern,
    /// The mode is not 3 or 4 octal digits at most `0777`.
    Mode,
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fields => "expected two fields: `pattern mode`",
            Self::Pattern => {
                "invalid pattern: it starts with `/`, has no empty, `.` or `..` segment, and uses only `*`, `?` and whole-segment `**`"
            }
            Self::Mode => "invalid mode: expected octal digits at most 0777",
        })
    }
}

/// File formats a patch can be applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` and `.yml`.
    Yaml,
    /// `.json`.
    Json,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        })
    }
}

/// Why a config operation was refused or failed. Every variant names the operation (by its
/// index in `file_operations`) or the path it concerns. No variant ever carries the value of a
/// secret: secrets are named by their key only, and parse errors of a file give its line and
/// column, never its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A path is not a safe path inside the config root.
    #[error("file operation {index}: invalid path {path:?}: {problem}")]
    InvalidPath {
        /// The operation's index.
        index: usize,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// The path is not one of the package's allowed config files.
    #[error(
        "file operation {index}: {path} is not an allowed config file of package {package} (see its outpost/config-files)"
    )]
    NotAllowed {
        /// The operation's index.
        index: usize,
        /// The normalised path (`/conf.d/x.yaml`).
        path: String,
        /// The package.
        package: String,
    },
    /// The deployment id is not usable as a directory name.
    #[error("invalid deployment id {id:?}: {source}")]
    InvalidDeploymentId {
        /// The id as given.
        id: String,
        /// Why.
        #[source]
        source: NameError,
    },
    /// A field the operation needs is missing.
    #[error("file operation {index} ({op}): `{field}` is required")]
    MissingField {
        /// The operation's index.
        index: usize,
        /// The operation.
        op: FileOp,
        /// The missing field.
        field: &'static str,
    },
    /// A field the operation does not take is present.
    #[error("file operation {index} ({op}): `{field}` does not apply to this operation")]
    UnexpectedField {
        /// The operation's index.
        index: usize,
        /// The operation.
        op: FileOp,
        /// The field.
        field: &'static str,
    },
    /// A `patch` operation's patch is not an RFC 6902 JSON Patch document.
    #[error(
        "file operation {index} (patch): the patch is not a JSON Patch (RFC 6902) array: {source}"
    )]
    InvalidPatch {
        /// The operation's index.
        index: usize,
        /// serde's answer, about the patch as sent (placeholders, never secrets).
        #[source]
        source: serde_json::Error,
    },
    /// A patch targets a file that is neither YAML nor JSON.
    #[error(
        "file operation {index}: {path} is not a .yaml, .yml or .json file; only those can be patched"
    )]
    UnsupportedFormat {
        /// The operation's index.
        index: usize,
        /// The file.
        path: String,
    },
    /// An RFC 6902 patch did not apply (a `test` that failed, a path that does not exist).
    #[error("file operation {index}: the patch does not apply to {path}: {source}")]
    PatchFailed {
        /// The operation's index.
        index: usize,
        /// The file.
        path: String,
        /// Which patch operation and JSON pointer failed (never a value).
        #[source]
        source: json_patch::PatchError,
    },
    /// A file to patch could not be parsed.
    #[error("{path} is not valid {format}{}", location(*.line, *.column))]
    Parse {
        /// The file.
        path: String,
        /// Its format.
        format: Format,
        /// Where the parser stopped (1-based), when it says.
        line: Option<u64>,
        /// Column (1-based), when the parser says.
        column: Option<u64>,
    },
    /// A patched document could not be written in the file's format.
    #[error("the patched {path} cannot be written as {format}")]
    Encode {
        /// The file.
        path: String,
        /// Its format.
        format: Format,
    },
    /// A file is over the size a config file may have.
    #[error("{path} is {size} bytes, over the {limit} bytes a config file may have")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A placeholder `SEC[key]` has no secret of that key.
    #[error("secret {key:?} is used by a placeholder SEC[{key}] but was not provided")]
    MissingSecret {
        /// The key.
        key: String,
    },
    /// A placeholder sits where no secret may go (a path, an object key, a JSON pointer).
    #[error("file operation {index}: placeholder SEC[{key}] in {place}; secrets only go in values")]
    MisplacedSecret {
        /// The operation's index.
        index: usize,
        /// The key.
        key: String,
        /// Where it was found.
        place: &'static str,
    },
    /// The source of a copy or move does not exist.
    #[error("file operation {index}: {path} does not exist")]
    SourceMissing {
        /// The operation's index.
        index: usize,
        /// The file.
        path: String,
    },
    /// A file was expected and something else is there.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// A directory was expected (a parent of a path) and something else is there.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A symbolic link (or a device, socket or FIFO) inside the config tree; they are never
    /// followed or copied.
    #[error(
        "{path} is a symbolic link or a special file; config trees hold only files and directories"
    )]
    Symlink {
        /// The path.
        path: String,
    },
    /// A line of the package's `outpost/config-files` is invalid.
    #[error("{} line {line}: {problem}", .file.display())]
    Rules {
        /// The rules file.
        file: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        problem: RuleProblem,
    },
    /// An entry of the config catalog is invalid.
    #[error("config catalog entry {key:?}: {source}")]
    CatalogEntry {
        /// The entry's key.
        key: String,
        /// Why.
        #[source]
        source: Box<ConfigError>,
    },
    /// A config experiment names a deployment the config catalog does not have.
    #[error("config {id:?} is not in the config catalog")]
    NotInCatalog {
        /// The id asked for.
        id: String,
    },
    /// A config catalog entry's `id` differs from its key.
    #[error("config catalog entry {key:?}: its id {id:?} differs from its key")]
    CatalogId {
        /// The key.
        key: String,
        /// The id in the entry.
        id: String,
    },
    /// A filesystem step failed.
    #[error("could not {op} {}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The API's error code: a refusal of the request is `bad_request` (`package_not_found`
    /// for a deployment the config catalog lacks); a filesystem failure
    /// is `filesystem` (`not_enough_disk_space` when the disk is full); a document that cannot
    /// be written back is `internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Io { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                    ErrorCode::NotEnoughDiskSpace
                }
                _ => ErrorCode::Filesystem,
            },
            Self::Encode { .. } => ErrorCode::Internal,
            Self::CatalogEntry { source, .. } => source.code(),
            Self::NotInCatalog { .. } => ErrorCode::PackageNotFound,
            Self::InvalidPath { .. }
            | Self::NotAllowed { .. }
            | Self::InvalidDeploymentId { .. }
            | Self::MissingField { .. }
            | Self::UnexpectedField { .. }
            | Self::InvalidPatch { .. }
            | Self::UnsupportedFormat { .. }
            | Self::PatchFailed { .. }
            | Self::Parse { .. }
            | Self::TooLarge { .. }
            | Self::MissingSecret { .. }
            | Self::MisplacedSecret { .. }
            | Self::SourceMissing { .. }
            | Self::NotAFile { .. }
            | Self::NotADirectory { .. }
            | Self::Symlink { .. }
            | Self::Rules { .. }
            | Self::CatalogId { .. } => ErrorCode::BadRequest,
        }
    }

    /// The message followed by every cause, joined with `": "`.
    pub fn detail(&self) -> String {
        outpost_types::error_chain(self)
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = ConfigError::MissingSecret { key: "api".into() };
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(
            e.to_string(),
            "secret \"api\" is used by a placeholder SEC[api] but was not provided"
        );
        let full = ConfigError::io("write", "/x", io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.code(), ErrorCode::NotEnoughDiskSpace);
        let parse = ConfigError::Parse {
            path: "/datadog.yaml".into(),
            format: Format::Yaml,
            line: Some(3),
            column: Some(7),
        };
        assert_eq!(
            parse.to_string(),
            "/datadog.yaml is not valid YAML (line 3, column 7)"
        );
        let nested = ConfigError::CatalogEntry {
            key: "abc".into(),
            source: Box::new(full),
        };
        assert_eq!(nested.code(), ErrorCode::NotEnoughDiskSpace);
    }
}
