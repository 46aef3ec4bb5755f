//! Who may connect to the daemon's socket.
//!
//! The socket is born with mode 0700 (umask around `bind`), so only its owner (root) can
//! connect. The configuration may allow more callers to change packages: `api.allow_uids` and
//! `api.allow_gids`. Those callers must be able to connect first, so when either list is set
//! the daemon grants exactly them read-write access to the socket with a POSIX access ACL:
//!
//! ```text
//! user::rwx   user:<each allowed uid>:rw-   group::---   group:<each allowed gid>:rw-
//! mask::rw-   other::---
//! ```
//!
//! Everybody else still cannot connect (`ls -l` shows `srwxrw----+`: the group bits show the
//! ACL mask). A member of an allowed group, as its primary or a supplementary group, can
//! connect and mutate (the API reads both, `SO_PEERCRED` and `SO_PEERGROUPS`).
//!
//! Why an ACL rather than a wider mode: a mode can name one group and "everyone", not a list
//! of uids, and opening the socket to everyone would expose `/status` to every local user.
//!
//! The ACL is written to the path (no `fchmod`-like call exists for a bound socket's inode)
//! with `lsetxattr`, which never follows a symlink; the path is checked to be a socket owned
//! by the daemon before and to be the same inode after. The directories above the socket must
//! let those callers through (search permission); the daemon does not change them. A
//! filesystem without ACL support makes start-up fail with a message saying so, rather than
//! silently leaving the configured callers locked out.

use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

/// The socket could not be opened to the configured callers.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot let api.allow_uids / api.allow_gids connect to the socket {}: {reason}",
    path.display()
)]
pub struct SocketAccessError {
    /// The socket path.
    pub path: PathBuf,
    /// What went wrong, for people.
    pub reason: String,
    /// The system error, when there is one.
    #[source]
    pub source: Option<io::Error>,
}

const ACL_XATTR: &str = "system.posix_acl_access";
const ACL_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const RWX: u16 = 7;
const RW: u16 = 6;

/// The xattr value of the ACL described in the module docs (entries sorted by tag, then id,
/// as the kernel requires).
fn acl_bytes(uids: &[u32], gids: &[u32]) -> Vec<u8> {
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    let mut gids = gids.to_vec();
    gids.sort_unstable();
    gids.dedup();
    let mut entries = vec![(TAG_USER_OBJ, RWX, ACL_UNDEFINED_ID)];
    entries.extend(uids.iter().map(|u| (TAG_USER, RW, *u)));
    entries.push((TAG_GROUP_OBJ, 0, ACL_UNDEFINED_ID));
    entries.extend(gids.iter().map(|g| (TAG_GROUP, RW, *g)));
    entries.push((TAG_MASK, RW, ACL_UNDEFINED_ID));
    entries.push((TAG_OTHER, 0, ACL_UNDEFINED_ID));
    let mut out = Vec::with_capacity(4 + 8 * entries.len());
    out.extend_from_slice(&ACL_VERSION.to_le_bytes());
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Grants the configured uids and gids access to the socket at `path` (see the module docs).
/// Does nothing when both lists are empty.
///
/// # Errors
/// [`SocketAccessError`] when the path is not the daemon's socket, or the ACL cannot be set
/// (for instance a filesystem without POSIX ACLs).
pub(crate) fn grant(path: &Path, uids: &[u32], gids: &[u32]) -> Result<(), SocketAccessError> {
    if uids.is_empty() && gids.is_empty() {
        return Ok(());
    }
    let fail = |reason: String, source: Option<io::Error>| SocketAccessError {
        path: path.to_path_buf(),
        reason,
        source,
    };
    let owner = rustix::process::geteuid().as_raw();
    let inspect = || -> Result<(u64, u64), SocketAccessError> {
        let meta = fs_err::symlink_metadata(path)
            .map_err(|e| fail("cannot inspect it".into(), Some(e)))?;
        if !meta.file_type().is_socket() || meta.uid() != owner {
            return Err(fail(
                "it is no longer the socket this daemon created".into(),
                None,
            ));
        }
        Ok((meta.dev(), meta.ino()))
    };
    let before = inspect()?;
    rustix::fs::lsetxattr(
        path,
        ACL_XATTR,
        &acl_bytes(uids, gids),
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|errno| {
        let reason = if errno == rustix::io::Errno::OPNOTSUPP {
            "its filesystem does not support POSIX ACLs; put the socket (--socket) on one that does"
        } else {
            "setting its ACL failed"
        };
        fail(reason.into(), Some(io::Error::from(errno)))
    })?;
    if inspect()? != before {
        return Err(fail(
            "it was replaced while its ACL was being set".into(),
            None,
        ));
    }
    tracing::info!(
        socket.path = %path.display(),
        allow_uids = %uids.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        allow_gids = %gids.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        "socket opened to the configured uids and gids"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_layout_is_sorted_and_deduplicated() {
        let bytes = acl_bytes(&[1000, 7, 1000], &[50]);
        let entries: Vec<(u16, u16, u32)> = bytes[4..]
            .chunks(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    u16::from_le_bytes([c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        assert_eq!(
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            2
        );
        assert_eq!(
            entries,
            vec![
                (TAG_USER_OBJ, RWX, ACL_UNDEFINED_ID),
                (TAG_USER, RW, 7),
                (TAG_USER, RW, 1000),
                (TAG_GROUP_OBJ, 0, ACL_UNDEFINED_ID),
                (TAG_GROUP, RW, 50),
                (TAG_MASK, RW, ACL_UNDEFINED_ID),
                (TAG_OTHER, 0, ACL_UNDEFINED_ID),
            ]
        );
    }

    #[test]
    fn a_socket_gets_the_acl_and_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        grant(&sock, &[65534], &[]).unwrap();
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::lgetxattr(&sock, ACL_XATTR, &mut buf).unwrap();
        assert_eq!(&buf[..n], acl_bytes(&[65534], &[]).as_slice());
        // The group bits now show the mask.
        let mode = fs_err::symlink_metadata(&sock).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "others must stay locked out: {mode:o}");

        let file = dir.path().join("file");
        fs_err::write(&file, "").unwrap();
        let err = grant(&file, &[65534], &[]).unwrap_err();
        assert!(err.to_string().contains("no longer the socket"), "{err}");
        // Nothing configured: nothing done, even on a non-socket.
        grant(&file, &[], &[]).unwrap();
    }
}
