//! Validated package names and versions.
//!
//! Both reach the filesystem as single path components, so validation is the first line of
//! defence against path traversal: a value of these types never contains `/`, NUL, `..` or a
//! leading dot that could hide it, and never equals a link name of the repository.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a package name or version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The package name does not match `^[a-z0-9][a-z0-9._-]{0,99}$`.
    #[error(
        "invalid package name {0:?}: expected 1 to 100 of [a-z0-9._-], starting with a letter or digit"
    )]
    Package(String),
    /// The version is empty, too long or has a character outside `[A-Za-z0-9._+~-]`.
    #[error("invalid version {0:?}: expected 1 to 128 of [A-Za-z0-9._+~-]")]
    Version(String),
    /// The version is one of the names the repository reserves for itself.
    #[error("invalid version {0:?}: reserved name")]
    ReservedVersion(String),
}

/// A package name: `^[a-z0-9][a-z0-9._-]{0,99}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageName(String);

impl PackageName {
    /// Maximum length in bytes.
    pub const MAX_LEN: usize = 100;

    /// Validates `s` as a package name.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(s))
        } else {
            Err(NameError::Package(s))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A package version: 1 to 128 of `[A-Za-z0-9._+~-]`, neither `.` nor `..`, nor one of the link
/// names `stable` and `experiment`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    /// Maximum length in bytes.
    pub const MAX_LEN: usize = 128;
    /// Names a version may not take because the repository uses them for its links.
    pub const RESERVED: [&'static str; 4] = [".", "..", "stable", "experiment"];

    /// Validates `s` as a version.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        let bytes = s.as_bytes();
        let charset_ok = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes.iter().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'~' | b'-')
            });
        if !charset_ok {
            return Err(NameError::Version(s));
        }
        if Self::RESERVED.contains(&s.as_str()) {
            return Err(NameError::ReservedVersion(s));
        }
        Ok(Self(s))
    }

    /// The version as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<std::path::Path> for $t {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype_impls!(PackageName);
string_newtype_impls!(Version);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        for ok in ["a", "datadog-agent", "0pkg", "a.b_c-d", &"x".repeat(100)] {
            assert!(PackageName::new(ok).is_ok(), "should accept {ok:?}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a/b",
            "..",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(101),
        ] {
            assert!(PackageName::new(bad).is_err(), "should refuse {bad:?}");
        }
    }

    #[test]
    fn versions() {
        for ok in [
            "1",
            "7.50.0",
            "1.0.0-rc.1+build~2",
            "V_1",
            "...",
            &"9".repeat(128),
        ] {
            assert!(Version::new(ok).is_ok(), "should accept {ok:?}");
        }
        for bad in ["", "a/b", "1 0", "1\n", "é", &"9".repeat(129)] {
            assert_eq!(
                Version::new(bad),
                Err(NameError::Version(bad.to_string())),
                "{bad:?}"
            );
        }
        for reserved in [".", "..", "stable", "experiment"] {
            assert_eq!(
                Version::new(reserved),
                Err(NameError::ReservedVersion(reserved.to_string()))
            );
        }
    }

    #[test]
    fn serde_validates() {
        let v: Result<Version, _> = serde_json::from_str("\"../x\"");
        assert!(v.is_err());
        let v: Version = serde_json::from_str("\"1.2.3\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1.2.3\"");
    }
}
