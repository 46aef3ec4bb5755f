//! Archive paths, validated before they reach the disk.
//!
//! [`SafeRelPath`] is the only way an entry's path gets to the filesystem code: it is built
//! from the raw bytes of the archive by [`SafeRelPath::from_archive`], which refuses anything
//! that could name a place outside the destination or that other tools would read differently.

use std::fmt;

use crate::error::UnsafeReason;

/// Longest path component the kernel accepts (`NAME_MAX`).
pub const MAX_COMPONENT: usize = 255;
/// Longest relative path accepted (`PATH_MAX` less the terminating NUL).
pub const MAX_PATH: usize = 4095;

/// A relative path inside the destination, normalised to `a/b/c` (no `.`, no empty
/// components, no trailing slash). The empty path is the destination itself.
///
/// # Guarantees
/// Every component is a plain name: not empty, not `.` or `..`, at most 255 bytes, UTF-8,
/// without `/`, `\`, NUL or other control characters. The whole path is at most 4095 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafeRelPath(String);

impl SafeRelPath {
    /// Validates an archive member's path.
    ///
    /// `.` components, repeated slashes and a trailing slash are dropped; `./` alone yields the
    /// root (empty) path. Refused, with the reason: an absolute path, a `..` component, bytes
    /// that are not UTF-8, NUL and other control characters, backslashes, over-long names.
    pub fn from_archive(raw: &[u8]) -> Result<Self, UnsafeReason> {
        let s = std::str::from_utf8(raw).map_err(|_| UnsafeReason::NotUtf8)?;
        check_chars(s)?;
        if s.is_empty() {
            return Err(UnsafeReason::EmptyPath);
        }
        if s.starts_with('/') {
            return Err(UnsafeReason::AbsolutePath);
        }
        let mut out = String::with_capacity(s.len());
        for comp in s.split('/') {
            match comp {
                "" | "." => continue,
                ".." => return Err(UnsafeReason::ParentComponent),
                name => {
                    if name.len() > MAX_COMPONENT {
                        return Err(UnsafeReason::TooLong);
                    }
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(name);
                }
            }
        }
        if out.len() > MAX_PATH {
            return Err(UnsafeReason::TooLong);
        }
        Ok(Self(out))
    }

    /// The destination itself.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// True for the destination itself (the archive's `./`).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalised path, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, outermost first (none for the root).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// How many directories the entry sits below (0 for an entry at the top).
    pub fn parent_depth(&self) -> usize {
        self.components().count().saturating_sub(1)
    }

    /// Splits into the parent path and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(&str, &str)> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", &self.0),
        })
    }
}

impl fmt::Display for SafeRelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_chars(s: &str) -> Result<(), UnsafeReason> {
    for c in s.chars() {
        if c.is_control() {
            return Err(UnsafeReason::ControlCharacter);
        }
        if c == '\\' {
            return Err(UnsafeReason::Backslash);
        }
    }
    Ok(())
}

/// Validates the target of a symlink entry at `link`, returning it as text.
///
/// The rule is lexical and sound: the target must be relative, and may only use `..` as its
/// leading components, at most as many as the link has parent directories; the rest are plain
/// names. Leading `..` climb real directories (every directory of the tree is created by the
/// unpacker, never through a link), and names only descend, following links that obey the
/// same rule, so the resolved target can never leave the destination, whatever order the
/// entries come in. `a/../b` is refused because only the filesystem could say where it goes
/// when `a` is itself a link.
pub fn symlink_target(link: &SafeRelPath, raw: &[u8]) -> Result<String, UnsafeReason> {
    let target = std::str::from_utf8(raw).map_err(|_| UnsafeReason::SymlinkBadTarget)?;
    if target.is_empty() || target.len() > MAX_PATH || target.chars().any(char::is_control) {
        return Err(UnsafeReason::SymlinkBadTarget);
    }
    if target.starts_with('/') {
        return Err(UnsafeReason::SymlinkAbsolute {
            target: target.to_owned(),
        });
    }
    let mut ups = 0usize;
    let mut seen_name = false;
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." if seen_name => {
                return Err(UnsafeReason::SymlinkInnerParent {
                    target: target.to_owned(),
                });
            }
            ".." => ups += 1,
            name => {
                if name.len() > MAX_COMPONENT || name.contains('\\') {
                    return Err(UnsafeReason::SymlinkBadTarget);
                }
                seen_name = true;
            }
        }
    }
    if ups > link.parent_depth() {
        return Err(UnsafeReason::SymlinkEscapes {
            target: target.to_owned(),
        });
    }
    Ok(target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths() {
        let long = "x".repeat(256);
        let max = "x".repeat(255);
        let cases: Vec<(&[u8], Result<&str, UnsafeReason>)> = vec![
            (b"a", Ok("a")),
            (b"a/b/c", Ok("a/b/c")),
            (b"a/b/", Ok("a/b")),
            (b"./a/./b", Ok("a/b")),
            (b"a//b", Ok("a/b")),
            (b".", Ok("")),
            (b"./", Ok("")),
            (b"...", Ok("...")),
            (b"..a/b..", Ok("..a/b..")),
            (b".hidden", Ok(".hidden")),
            (
                "caf\u{e9}/na\u{ef}ve".as_bytes(),
                Ok("caf\u{e9}/na\u{ef}ve"),
            ),
            (max.as_bytes(), Ok(max.as_str())),
            (b"", Err(UnsafeReason::EmptyPath)),
            (b"/", Err(UnsafeReason::AbsolutePath)),
            (b"/etc/passwd", Err(UnsafeReason::AbsolutePath)),
            (b"//etc", Err(UnsafeReason::AbsolutePath)),
            (b"..", Err(UnsafeReason::ParentComponent)),
            (b"../x", Err(UnsafeReason::ParentComponent)),
            (b"a/../b", Err(UnsafeReason::ParentComponent)),
            (b"a/..", Err(UnsafeReason::ParentComponent)),
            (b"./../x", Err(UnsafeReason::ParentComponent)),
            (b"a\0b", Err(UnsafeReason::ControlCharacter)),
            (b"a\nb", Err(UnsafeReason::ControlCharacter)),
            (b"a\x1b[31m", Err(UnsafeReason::ControlCharacter)),
            (b"a\x7f", Err(UnsafeReason::ControlCharacter)),
            ("a\u{85}".as_bytes(), Err(UnsafeReason::ControlCharacter)),
            (b"a\\b", Err(UnsafeReason::Backslash)),
            (b"..\\x", Err(UnsafeReason::Backslash)),
            (b"\xff\xfe", Err(UnsafeReason::NotUtf8)),
            (long.as_bytes(), Err(UnsafeReason::TooLong)),
        ];
        for (raw, expected) in cases {
            let got = SafeRelPath::from_archive(raw);
            let got = got.as_ref().map(SafeRelPath::as_str).map_err(Clone::clone);
            assert_eq!(
                got,
                expected,
                "archive member: {:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn whole_path_length() {
        let comp = "d".repeat(200);
        let path = vec![comp.as_str(); 21].join("/");
        assert!(path.len() > MAX_PATH);
        assert_eq!(
            SafeRelPath::from_archive(path.as_bytes()),
            Err(UnsafeReason::TooLong)
        );
        let ok = vec![comp.as_str(); 20].join("/");
        assert!(SafeRelPath::from_archive(ok.as_bytes()).is_ok());
    }

    #[test]
    fn split_and_depth() {
        let cases = [
            ("a", Some(("", "a")), 0),
            ("a/b", Some(("a", "b")), 1),
            ("a/b/c", Some(("a/b", "c")), 2),
            (".", None, 0),
        ];
        for (raw, split, depth) in cases {
            let p = SafeRelPath::from_archive(raw.as_bytes()).unwrap();
            assert_eq!(p.split_last(), split, "path {raw:?}");
            assert_eq!(p.parent_depth(), depth, "path {raw:?}");
        }
    }

    #[test]
    fn symlink_targets() {
        let escapes = |t: &str| UnsafeReason::SymlinkEscapes { target: t.into() };
        let inner = |t: &str| UnsafeReason::SymlinkInnerParent { target: t.into() };
        let abs = |t: &str| UnsafeReason::SymlinkAbsolute { target: t.into() };
        let cases: Vec<(&str, &[u8], Result<&str, UnsafeReason>)> = vec![
            ("l", b"x", Ok("x")),
            ("l", b"sub/x", Ok("sub/x")),
            ("l", b".", Ok(".")),
            ("l", b"./x", Ok("./x")),
            ("a/l", b"..", Ok("..")),
            ("a/l", b"../x", Ok("../x")),
            ("a/b/l", b"../../x/y", Ok("../../x/y")),
            ("a/b/l", b"../../", Ok("../../")),
            ("a/l", b"./../x", Ok("./../x")),
            ("l", b"..", Err(escapes(".."))),
            ("l", b"../x", Err(escapes("../x"))),
            ("a/b/l", b"../../../x", Err(escapes("../../../x"))),
            ("a/l", b"x/../y", Err(inner("x/../y"))),
            ("a/l", b"x/..", Err(inner("x/.."))),
            ("l", b"/etc/passwd", Err(abs("/etc/passwd"))),
            ("l", b"/", Err(abs("/"))),
            ("l", b"", Err(UnsafeReason::SymlinkBadTarget)),
            ("l", b"a\0b", Err(UnsafeReason::SymlinkBadTarget)),
            ("l", b"a\nb", Err(UnsafeReason::SymlinkBadTarget)),
            ("l", b"\xff", Err(UnsafeReason::SymlinkBadTarget)),
            ("l", b"..\\..\\x", Err(UnsafeReason::SymlinkBadTarget)),
        ];
        for (link, target, expected) in cases {
            let link = SafeRelPath::from_archive(link.as_bytes()).unwrap();
            let got = symlink_target(&link, target);
            let got = got.as_deref().map_err(Clone::clone);
            assert_eq!(
                got,
                expected,
                "link {link} -> {:?}",
                String::from_utf8_lossy(target)
            );
        }
    }
}
