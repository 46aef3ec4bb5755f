//! The `stable` and `experiment` links: reading them strictly, switching them atomically.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use outpost_types::Version;

use crate::error::RepoError;
use crate::failpoint::{LINK_RENAME, LINK_SYMLINK};
use crate::fsutil::{self, nonce, point};

/// Name of the link to the stable version.
pub(crate) const STABLE: &str = "stable";
/// Name of the link to the running experiment.
pub(crate) const EXPERIMENT: &str = "experiment";
/// Separates a link name from the nonce in a temporary link's name. It is outside the version
/// alphabet, so a temporary link can never be mistaken for a version directory.
pub(crate) const TEMP_MARK: char = '@';

/// What a link on disk says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    /// No entry of that name.
    Absent,
    /// A symlink that resolves to the version directory beside it.
    Valid(Version),
    /// An entry that is not a usable link: not a symlink, dangling, naming something that is
    /// not a version, or resolving somewhere other than the version directory beside it.
    /// Reported as absent and repaired by the next operation or GC.
    Broken(PathBuf),
}

impl Link {
    pub(crate) fn version(&self) -> Option<&Version> {
        match self {
            Self::Valid(v) => Some(v),
            Self::Absent | Self::Broken(_) => None,
        }
    }

    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, Self::Absent)
    }
}

/// For logs: `absent`, the version, or `broken (<path>)`.
impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => f.write_str("absent"),
            Self::Valid(v) => write!(f, "{v}"),
            Self::Broken(path) => write!(f, "broken ({})", path.display()),
        }
    }
}

/// Reads `dir/name`. The link is valid when its target's last component is a version `V` and
/// following the link lands on the very directory `dir/V` (same device and inode), so relative
/// links (`V`, what the repository writes) and absolute ones both work, and a link that points
/// out of the package directory never does.
///
/// Reading is two steps (read the target, then look it up), so a switch or a GC in between can
/// make a valid link look broken for an instant; a broken result is therefore read again a few
/// times before it is believed. `Valid` and `Absent` are always true of some instant.
pub(crate) fn read(dir: &Path, name: &str) -> io::Result<Link> {
    let mut link = read_once(dir, name)?;
    for _ in 1..READ_ATTEMPTS {
        if !matches!(link, Link::Broken(_)) {
            break;
        }
        link = read_once(dir, name)?;
    }
    Ok(link)
}

/// How many times a link that looks broken is read before it is believed broken.
const READ_ATTEMPTS: usize = 4;

fn read_once(dir: &Path, name: &str) -> io::Result<Link> {
    let path = dir.join(name);
    let target = match fs_err::read_link(&path) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Link::Absent),
        // EINVAL: something that is not a symlink sits at the link's name.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Ok(Link::Broken(path));
        }
        Err(e) => return Err(e),
    };
    let Some(version) = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| Version::new(n).ok())
    else {
        return Ok(Link::Broken(target));
    };
    let version_dir = dir.join(version.as_str());
    let dir_meta = match fs_err::symlink_metadata(&version_dir) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => return Ok(Link::Broken(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Link::Broken(target)),
        Err(e) => return Err(e),
    };
    let resolved = match fs_err::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Link::Broken(target)),
        Err(e) => return Err(e),
    };
    if resolved.dev() == dir_meta.dev() && resolved.ino() == dir_meta.ino() {
        Ok(Link::Valid(version))
    } else {
        Ok(Link::Broken(target))
    }
}

/// The raw target of `dir/name`, `None` when there is no such entry.
pub(crate) fn raw_target(path: &Path) -> io::Result<Option<PathBuf>> {
    match fs_err::read_link(path) {
        Ok(target) => Ok(Some(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `name` is a temporary link name (`<link>@<nonce>`).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.contains(TEMP_MARK)
}

/// Points `dir/name` at `target` atomically: creates the symlink `dir/name@<nonce>` and renames
/// it over `dir/name`, so a reader sees the old link or the new one, never neither. Does not
/// fsync `dir` (the caller does, once per change). With `guarded`, each step passes its
/// failure points; `on_renamed` runs right after the rename succeeded (to record an undo
/// before the next point can fail). On failure the temporary link is removed.
pub(crate) fn replace(
    dir: &Path,
    name: &str,
    target: &Path,
    guarded: bool,
    on_renamed: impl FnOnce(),
) -> Result<(), RepoError> {
    let link = dir.join(name);
    let temp = dir.join(format!("{name}{TEMP_MARK}{}", nonce()));
    let guard = |p: &'static str, path: &Path| {
        if guarded {
            point(p, "switch the link", path)
        } else {
            Ok(())
        }
    };
    guard(LINK_SYMLINK.before, &temp)?;
    fs_err::os::unix::fs::symlink(target, &temp)
        .map_err(|e| RepoError::fs("create the temporary link", &temp, e))?;
    let renamed = guard(LINK_SYMLINK.after, &temp)
        .and_then(|()| guard(LINK_RENAME.before, &link))
        .and_then(|()| {
            fs_err::rename(&temp, &link).map_err(|e| RepoError::fs("switch the link", &link, e))
        });
    if let Err(err) = renamed {
        if let Err(cleanup) = fsutil::remove_any(&temp) {
            tracing::warn!(path = %temp.display(), error = %cleanup,
                "could not remove a temporary link; the next operation or GC will");
        }
        return Err(err);
    }
    on_renamed();
    guard(LINK_RENAME.after, &link)
}

#[cfg(test)]
mod tests {
    //! The intents of the Datadog repository's link tests: read, exists, set, set when it
    //! exists, delete, all with target directories that hold files.
    use super::*;

    fn version_dir(dir: &Path, v: &str) -> Version {
        let path = dir.join(v);
        fs_err::create_dir(&path).unwrap();
        fs_err::write(path.join("file"), v).unwrap();
        Version::new(v).unwrap()
    }

    #[test]
    fn links_read_as_words_in_logs() {
        assert_eq!(Link::Absent.to_string(), "absent");
        assert_eq!(
            Link::Valid(Version::new("2.0.0").unwrap()).to_string(),
            "2.0.0"
        );
        assert_eq!(
            Link::Broken(PathBuf::from("/p/experiment")).to_string(),
            "broken (/p/experiment)"
        );
    }

    fn set(dir: &Path, name: &str, v: &Version) {
        replace(dir, name, Path::new(v.as_str()), true, || {}).unwrap();
    }

    #[test]
    fn link_read_resolves_to_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let v = version_dir(dir.path(), "7.55.0-rc.2-1");
        set(dir.path(), STABLE, &v);
        assert_eq!(read(dir.path(), STABLE).unwrap(), Link::Valid(v.clone()));
        let via_link = fs_err::read_to_string(dir.path().join(STABLE).join("file")).unwrap();
        assert_eq!(via_link, v.as_str());
        assert_eq!(
            fs_err::canonicalize(dir.path().join(STABLE)).unwrap(),
            fs_err::canonicalize(dir.path().join(v.as_str())).unwrap()
        );
    }

    #[test]
    fn link_exists_only_after_it_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let v = version_dir(dir.path(), "1.0");
        assert_eq!(read(dir.path(), STABLE).unwrap(), Link::Absent);
        set(dir.path(), STABLE, &v);
        assert!(read(dir.path(), STABLE).unwrap().version().is_some());
    }

    #[test]
    fn link_set_when_it_exists_replaces_it_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let old = version_dir(dir.path(), "7.55.0-rc.2-1");
        let new = version_dir(
            dir.path(),
            "7.54.0-installer-0.0.8-rc.1.git.16.bcd53a6.pipeline.34898077-1",
        );
        set(dir.path(), STABLE, &old);
        set(dir.path(), STABLE, &new);
        assert_eq!(read(dir.path(), STABLE).unwrap(), Link::Valid(new.clone()));
        // The old target is untouched (a switch never deletes) and no temporary link is left.
        assert!(dir.path().join(old.as_str()).join("file").is_file());
        let names: Vec<String> = fs_err::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !is_temp_name(n)), "{names:?}");
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn link_delete_makes_it_absent() {
        let dir = tempfile::tempdir().unwrap();
        let v = version_dir(dir.path(), "1.0");
        set(dir.path(), EXPERIMENT, &v);
        fs_err::remove_file(dir.path().join(EXPERIMENT)).unwrap();
        assert_eq!(read(dir.path(), EXPERIMENT).unwrap(), Link::Absent);
        assert!(dir.path().join("1.0/file").is_file());
    }

    #[test]
    fn replacing_a_link_does_not_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs_err::write(outside.path().join("keep"), "x").unwrap();
        fs_err::os::unix::fs::symlink(outside.path(), dir.path().join(STABLE)).unwrap();
        let v = version_dir(dir.path(), "1.0");
        set(dir.path(), STABLE, &v);
        assert_eq!(read(dir.path(), STABLE).unwrap(), Link::Valid(v));
        assert!(outside.path().join("keep").is_file());
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_switch_keeps_the_old_link_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let old = version_dir(dir.path(), "1.0");
        let new = version_dir(dir.path(), "2.0");
        set(dir.path(), STABLE, &old);
        for point in [LINK_SYMLINK.after, LINK_RENAME.before] {
            let _injection = crate::failpoint::inject(point, 1);
            let err =
                replace(dir.path(), STABLE, Path::new(new.as_str()), true, || {}).unwrap_err();
            assert!(crate::failpoint::injected_name(&err).is_some());
            assert_eq!(read(dir.path(), STABLE).unwrap(), Link::Valid(old.clone()));
            assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 3, "{point}");
        }
    }

    #[test]
    fn hostile_links_are_broken() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let v = version_dir(dir.path(), "1.0");
        let elsewhere = outside.path().join("1.0");
        fs_err::create_dir(&elsewhere).unwrap();
        let cases: [(&str, PathBuf); 5] = [
            ("dangling", PathBuf::from("2.0")),
            ("not-a-version", PathBuf::from("../../etc")),
            ("escapes", elsewhere.clone()),
            ("reserved", PathBuf::from("stable")),
            ("absolute-ok", dir.path().join("1.0")),
        ];
        for (name, target) in cases {
            fs_err::os::unix::fs::symlink(&target, dir.path().join(name)).unwrap();
            let link = read(dir.path(), name).unwrap();
            if name == "absolute-ok" {
                assert_eq!(link, Link::Valid(v.clone()));
            } else {
                assert!(matches!(link, Link::Broken(_)), "{name}: {link:?}");
            }
        }
        fs_err::create_dir(dir.path().join("plain-dir")).unwrap();
        assert!(matches!(
            read(dir.path(), "plain-dir").unwrap(),
            Link::Broken(_)
        ));
    }
}
