//! A socket every local user may connect to ([`Server::bind_unix_public`]), for answers that
//! reveal nothing (the daemon's read-only status socket).
//!
//! The socket must never be seen at its path with another mode, and a file planted at the path
//! must never be followed or removed:
//! 1. the path is inspected as for [`Server::bind_unix`]: a live socket is refused
//!    ([`Error::SocketInUse`]), anything but a socket is refused and left alone
//!    ([`Error::NotASocket`]); a stale socket is left in place for step 4 to replace;
//! 2. the socket is bound under a temporary name beside it (`.<name>.<pid>.tmp`), born 0700
//!    (umask 077 around `bind(2)`, as the private socket);
//! 3. the temporary file is opened with `O_PATH | O_NOFOLLOW`, checked to be a socket, and
//!    given mode 0666 through that descriptor (`/proc/self/fd/N`), so no symlink swapped in
//!    can redirect the `chmod`;
//! 4. it is renamed over the final path in one step (a stale socket there is replaced
//!    atomically; a directory put there in between makes the rename fail) and checked to be
//!    the same inode, with mode 0666.
//!
//! On any failure the temporary socket is removed.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use tokio::net::UnixListener;

use super::{Server, SocketIdentity, UnixBinding, bind_private, file_kind, inspect_socket_path};
use crate::error::Error;

/// The mode of a public socket.
const PUBLIC_SOCKET_MODE: u32 = 0o666;

/// Removes the temporary socket unless disarmed.
struct TempSocket(Option<PathBuf>);

impl Drop for TempSocket {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs_err::remove_file(path);
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Server {
    /// Binds a Unix socket at `path` that every local user may connect to (mode 0666), set
    /// atomically (see the [module docs](self)). Serve only answers that reveal nothing on it:
    /// the access policy still decides who may mutate, but any user can read.
    ///
    /// # Errors
    /// As [`Server::bind_unix`]; also [`Error::Io`] when the mode cannot be set or the
    /// temporary socket cannot be moved into place.
    pub async fn bind_unix_public(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        fs_err::create_dir_all(&parent).map_err(io("create the socket directory", &parent))?;
        inspect_socket_path(&path).await?;
        let name = path.file_name().ok_or_else(|| Error::NotASocket {
            path: path.clone(),
            kind: "not a file name",
        })?;
        let temp = parent.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        // Left by an earlier process with the same pid: only a socket is removed.
        match fs_err::symlink_metadata(&temp) {
            Ok(meta) if meta.file_type().is_socket() => {
                fs_err::remove_file(&temp).map_err(io("remove a leftover socket", &temp))?;
            }
            Ok(meta) => {
                return Err(Error::NotASocket {
                    kind: file_kind(meta.file_type()),
                    path: temp,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io("inspect the socket path", &temp)(source)),
        }
        let std_listener = bind_private(&temp).map_err(|source| Error::Bind {
            path: temp.clone(),
            source,
        })?;
        let guard = TempSocket(Some(temp.clone()));

        // The mode, through a descriptor that cannot be a symlink's target.
        let fd = rustix::fs::open(
            &temp,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open the new socket", &temp)(e.into()))?;
        let st =
            rustix::fs::fstat(&fd).map_err(|e| io("inspect the new socket", &temp)(e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
            return Err(Error::NotASocket {
                kind: "replaced while binding",
                path: temp.clone(),
            });
        }
        let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::chmod(through.as_str(), Mode::from_raw_mode(PUBLIC_SOCKET_MODE))
            .map_err(|e| io("set the mode of the new socket", &temp)(e.into()))?;

        fs_err::rename(&temp, &path).map_err(io("move the new socket into place", &path))?;
        let mut guard = guard;
        guard.0 = None;
        let meta = fs_err::symlink_metadata(&path).map_err(io("inspect the new socket", &path))?;
        let identity = match SocketIdentity::of(&meta) {
            Some(id) if meta.ino() == st.st_ino && meta.dev() == st.st_dev => id,
            _ => {
                return Err(Error::NotASocket {
                    kind: "replaced while binding",
                    path,
                });
            }
        };
        if meta.permissions().mode() & 0o7777 != PUBLIC_SOCKET_MODE {
            return Err(io("set the mode of the new socket", &path)(
                std::io::Error::other(format!(
                    "mode is {:o}, not {PUBLIC_SOCKET_MODE:o}",
                    meta.permissions().mode() & 0o7777
                )),
            ));
        }
        drop(fd);
        let listener = std_listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(std_listener))
            .map_err(|source| Error::Bind {
                path: path.clone(),
                source,
            })?;
        tracing::info!(socket.path = %path.display(), "API listening (public socket, mode 0666)");
        self.unix = Some(UnixBinding {
            listener,
            identity,
            path,
        });
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Module;
    use crate::module::Api;

    fn api() -> Api {
        let mut b = Api::builder();
        b.mount(Module::root("t").get("/status", || async { "{}" }));
        b.build().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs_err::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn born_0666_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/status.sock");
        let server = Server::new(api()).bind_unix_public(&path).await.unwrap();
        assert_eq!(mode(&path), 0o666);
        let names: Vec<_> = fs_err::read_dir(dir.path().join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.sock")]);
        drop(server);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let old = fs_err::symlink_metadata(&path).unwrap().ino();
        let server = Server::new(api()).bind_unix_public(&path).await.unwrap();
        assert_ne!(fs_err::symlink_metadata(&path).unwrap().ino(), old);
        assert_eq!(mode(&path), 0o666);
        let err = Server::new(api())
            .bind_unix_public(&path)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::SocketInUse { .. }), "{err:?}");
        drop(server);
    }

    #[tokio::test]
    async fn planted_files_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs_err::write(&target, "keep").unwrap();
        fs_err::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();

        let link = dir.path().join("link.sock");
        fs_err::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Server::new(api())
            .bind_unix_public(&link)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotASocket { .. }), "{err:?}");
        assert!(fs_err::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(mode(&target), 0o600);

        let file = dir.path().join("file.sock");
        fs_err::write(&file, "planted").unwrap();
        let err = Server::new(api())
            .bind_unix_public(&file)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotASocket { .. }), "{err:?}");
        assert_eq!(fs_err::read_to_string(&file).unwrap(), "planted");

        let sub = dir.path().join("dir.sock");
        fs_err::create_dir(&sub).unwrap();
        let err = Server::new(api()).bind_unix_public(&sub).await.unwrap_err();
        assert!(matches!(err, Error::NotASocket { .. }), "{err:?}");
        assert!(sub.is_dir());
        // No temporary socket is left behind by a refusal.
        let leftovers: Vec<_> = fs_err::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.ends_with(".tmp").then_some(n)
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
