//! Where a package comes from, parsed from a catalog entry's `url`.
//!
//! | url | source |
//! |---|---|
//! | `oci://host[:port]/repo:tag`, `oci://host/repo@sha256:<hex>` | an OCI registry |
//! | `file:///dir` (a directory holding `oci-layout` and `index.json`) | an OCI image layout |
//! | `file:///pkg.tar[.gz|.zst]`, `http(s)://host/pkg.tar.gz` | a tarball, checked against `sha256` |

use std::fmt;
use std::path::PathBuf;

/// A parsed package location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// An image in an OCI registry.
    Registry(OciReference),
    /// An OCI image layout directory on disk.
    Layout(PathBuf),
    /// A tarball on disk.
    TarballFile(PathBuf),
    /// A tarball served over HTTP(S); the string is the whole URL.
    TarballHttp(String),
}

impl PackageSource {
    /// True for the tarball sources, which need a `sha256` in their catalog entry.
    pub fn is_tarball(&self) -> bool {
        matches!(self, Self::TarballFile(_) | Self::TarballHttp(_))
    }
}

/// Why a package URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid package url {url:?}: {reason}")]
pub struct SourceError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// File name endings that mark a `file://` URL as a tarball rather than an OCI layout.
pub const TARBALL_SUFFIXES: [&str; 6] =
    [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tzst"];

impl PackageSource {
    /// Parses a catalog URL. Schemes: `oci`, `file`, `http`, `https`.
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let err = |reason: &str| SourceError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected scheme://, with scheme oci, file, http or https"))?;
        match scheme {
            "oci" => OciReference::parse(rest)
                .map(Self::Registry)
                .map_err(|r| err(&r)),
            "file" => {
                if !rest.starts_with('/') {
                    return Err(err("a file URL needs an absolute path: file:///path"));
                }
                let path = percent_decode(rest).ok_or_else(|| err("bad percent-encoding"))?;
                if path.contains('\0') {
                    return Err(err("NUL in path"));
                }
                if TARBALL_SUFFIXES.iter().any(|s| path.ends_with(s)) {
                    Ok(Self::TarballFile(PathBuf::from(path)))
                } else {
                    Ok(Self::Layout(PathBuf::from(path)))
                }
            }
            "http" | "https" => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                if host.is_empty() {
                    return Err(err("missing host"));
                }
                if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err("whitespace or control character in URL"));
                }
                Ok(Self::TarballHttp(url.to_string()))
            }
            _ => Err(err("unsupported scheme: expected oci, file, http or https")),
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A reference to an image in a registry: `host[:port]/repo/path(:tag|@sha256:hex)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `host` or `host:port`.
    pub registry: String,
    /// The repository path, e.g. `datadog/agent-package`.
    pub repository: String,
    /// The tag, if the reference has one.
    pub tag: Option<String>,
    /// The digest (`sha256:<64 hex>`), if the reference has one.
    pub digest: Option<String>,
}

impl OciReference {
    /// Parses `host[:port]/repo(:tag|@digest|:tag@digest)`. A tag or a digest is required:
    /// packages are versioned, so outpost never guesses `latest`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            validate_digest(d)?;
        }
        let (registry, path) = name
            .split_once('/')
            .ok_or("expected host/repository after oci://")?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(format!("invalid registry host {registry:?}"));
        }
        // A tag follows the last ':' of the last path component.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
            None => (path, None),
        };
        validate_repository(repository)?;
        if let Some(t) = tag {
            validate_tag(t)?;
        }
        if tag.is_none() && digest.is_none() {
            return Err("a tag (:1.2.3) or a digest (@sha256:...) is required".into());
        }
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// The same reference on another registry host (used for mirrors).
    pub fn with_registry(&self, registry: &str) -> Self {
        Self {
            registry: registry.to_string(),
            ..self.clone()
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Checks `sha256:<64 lowercase hex>`.
pub fn validate_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(()),
        _ => Err(format!(
            "invalid digest {d:?}: expected sha256:<64 lowercase hex digits>"
        )),
    }
}

/// True for exactly 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn validate_repository(r: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if r.len() <= 255 && r.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid repository {r:?}: expected lowercase path components"
        ))
    }
}

fn validate_tag(t: &str) -> Result<(), String> {
    let b = t.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {t:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2fa082d512a120a814e32ddb80454efce56595b5c84a37cc1a9f90cf9cc7ba85";

    #[test]
    fn oci_references() {
        let r = OciReference::parse("127.0.0.1:5000/pkgs/agent:7.50.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "pkgs/agent");
        assert_eq!(r.tag.as_deref(), Some("7.50.0"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/pkgs/agent:7.50.0");
        let r = OciReference::parse(&format!("ghcr.io/a/b@{D}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag, None);
        let r = OciReference::parse(&format!("ghcr.io/a/b:1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        for bad in [
            "ghcr.io/a/b",
            "ghcr.io",
            "/a:1",
            "ghcr.io/A:1",
            "ghcr.io/a:",
            "ghcr.io/a@sha256:12",
            "ghcr.io/../x:1",
            "gh cr.io/a:1",
        ] {
            assert!(OciReference::parse(bad).is_err(), "should refuse {bad:?}");
        }
    }

    #[test]
    fn sources() {
        assert!(
            matches!(PackageSource::parse("file:///srv/layout"), Ok(PackageSource::Layout(p)) if p == std::path::Path::new("/srv/layout"))
        );
        assert!(matches!(
            PackageSource::parse("file:///srv/p%20k.tar.gz"),
            Ok(PackageSource::TarballFile(p)) if p == std::path::Path::new("/srv/p k.tar.gz")
        ));
        assert!(
            PackageSource::parse("https://example.com/a.tar.zst")
                .unwrap()
                .is_tarball()
        );
        assert!(PackageSource::parse("oci://example.com/a:1").is_ok());
        for bad in [
            "ftp://x/y",
            "file://relative",
            "https:///x",
            "nonsense",
            "file:///a%zz",
        ] {
            assert!(PackageSource::parse(bad).is_err(), "should refuse {bad:?}");
        }
    }
}
