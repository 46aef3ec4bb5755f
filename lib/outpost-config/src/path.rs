//! Paths inside a config tree: parsed once, safe by construction.

use std::path::{Path, PathBuf};

use crate::error::PathProblem;

/// The longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// The longest segment accepted, in bytes (the usual file name limit).
const MAX_SEGMENT_LEN: usize = 255;

/// A path relative to a config root, as file operations name them (`/conf.d/x.yaml` or
/// `conf.d/x.yaml`). A value of this type has no `..`, `.` or empty segment, no NUL and no
/// backslash, so joined to a root it can only name something below that root (symlinks are
/// refused separately, when the tree is walked). The root itself is a `ConfigPath` with no
/// segment; only `delete-all` accepts it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigPath {
    segments: Vec<String>,
}

impl ConfigPath {
    /// Parses `raw`: one leading `/` is allowed and means the config root; `"/"` alone is the
    /// root itself.
    ///
    /// # Errors
    /// The [`PathProblem`] that makes the path unsafe or ambiguous.
    pub fn parse(raw: &str) -> Result<Self, PathProblem> {
        if raw.is_empty() {
            return Err(PathProblem::Empty);
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(PathProblem::TooLong);
        }
        if raw.contains(['\0', '\\']) {
            return Err(PathProblem::BadCharacter);
        }
        let rest = raw.strip_prefix('/').unwrap_or(raw);
        if rest.is_empty() {
            return Ok(Self {
                segments: Vec::new(),
            });
        }
        let mut segments = Vec::new();
        for segment in rest.split('/') {
            match segment {
                "" => return Err(PathProblem::EmptySegment),
                "." => return Err(PathProblem::DotSegment),
                ".." => return Err(PathProblem::ParentSegment),
                s if s.len() > MAX_SEGMENT_LEN => return Err(PathProblem::TooLong),
                s => segments.push(s.to_owned()),
            }
        }
        Ok(Self { segments })
    }

    /// Whether this is the config root itself.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The last segment (`""` for the root).
    pub fn file_name(&self) -> &str {
        self.segments.last().map_or("", String::as_str)
    }

    /// The path as a relative filesystem path (`conf.d/x.yaml`; empty for the root).
    pub fn relative(&self) -> PathBuf {
        self.segments.iter().collect()
    }

    /// `root` joined with this path.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.relative())
    }

    /// The path of a child entry.
    pub fn child(&self, name: &str) -> Self {
        let mut segments = self.segments.clone();
        segments.push(name.to_owned());
        Self { segments }
    }
}

/// The normalised form, with one leading slash (`/conf.d/x.yaml`; `/` for the root).
impl std::fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slash_is_optional() {
        let a = ConfigPath::parse("/conf.d/x.yaml").unwrap();
        let b = ConfigPath::parse("conf.d/x.yaml").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "/conf.d/x.yaml");
        assert_eq!(a.relative(), PathBuf::from("conf.d/x.yaml"));
        assert!(ConfigPath::parse("/").unwrap().is_root());
    }

    #[test]
    fn escapes_are_refused() {
        for (raw, problem) in [
            ("", PathProblem::Empty),
            ("../etc/passwd", PathProblem::ParentSegment),
            ("/conf.d/../../x.yaml", PathProblem::ParentSegment),
            ("//etc/passwd", PathProblem::EmptySegment),
            ("/a//b.yaml", PathProblem::EmptySegment),
            ("/a/", PathProblem::EmptySegment),
            ("/./a.yaml", PathProblem::DotSegment),
            ("/a\0.yaml", PathProblem::BadCharacter),
            ("\\a.yaml", PathProblem::BadCharacter),
        ] {
            assert_eq!(ConfigPath::parse(raw), Err(problem), "{raw:?}");
        }
        assert_eq!(
            ConfigPath::parse(&"a".repeat(300)),
            Err(PathProblem::TooLong)
        );
        assert_eq!(
            ConfigPath::parse(&"a/".repeat(600)),
            Err(PathProblem::TooLong)
        );
    }
}
