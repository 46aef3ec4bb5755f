//! Who is calling: peer credentials, the [`Caller`] handlers see, the access policy for
//! mutating routes, and the TTL cache that resolves a caller's container.
//!
//! # Identity
//! On the Unix socket the kernel reports the peer's uid, gid and pid (`SO_PEERCRED`, read once
//! per connection at accept time). The container id is parsed from `/proc/<pid>/cgroup`
//! (docker, containerd, cri-o, podman and kubepods forms, cgroup v1 and v2) through a
//! [`CallerCache`], once per connection (on its first request): a connection's credentials are
//! those of the process that connected and cannot change while it is open.
//!
//! # Cache key and reuse of pids
//! Entries are keyed by `(pid, uid, gid)` as the kernel reported them for the connection. uid
//! and gid are never taken from the cache: they come from the socket on every connection, so a
//! cached entry can only ever add a container id. A process that reuses a dead caller's pid
//! inherits that caller's container id only if it also has the same uid and gid, and only
//! until the entry's TTL runs out (default 10 s; the pid space has to wrap around within that
//! window first). Keying on the process start time would close that window, but costs a
//! `/proc/<pid>/stat` read on every lookup, which is most of what the cache saves.
//!
//! Failures (the process exited before we looked, `/proc` unreadable) are cached too, with
//! their own shorter TTL (default 2 s), so a burst of requests from a vanished pid does not
//! hammer `/proc`. [`CallerCache::sweep`] (run every `sweep_interval` by the server) removes
//! expired entries; moka bounds the number of entries.
//!
//! Time is read from tokio's clock ([`tokio::time::Instant`]), so tests drive the TTLs with
//! a paused clock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::serve::IncomingStream;
use http::request::Parts;
use moka::Expiry;
use outpost_types::ErrorCode;
use outpost_types::config::ApiConfig;
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;

use crate::error::{Error, ErrorResponse};

/// Credentials the kernel reported for a Unix-socket peer (`SO_PEERCRED`, `SO_PEERGROUPS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// Effective uid of the peer when it connected.
    pub uid: u32,
    /// Effective gid of the peer when it connected.
    pub gid: u32,
    /// Pid of the peer, `None` when the kernel could not map it into our pid namespace.
    pub pid: Option<u32>,
    /// Supplementary groups of the peer when it connected (empty when unknown).
    pub groups: Arc<[u32]>,
}

impl PeerCredentials {
    /// Reads `SO_PEERCRED` of a connected Unix socket.
    ///
    /// (Read through tokio rather than rustix: rustix's `UCred` holds the pid as a non-zero
    /// type, and the kernel reports pid 0 for a peer outside our pid namespace tree.)
    ///
    /// # Errors
    /// The `getsockopt` error.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        let groups = match peer_groups(stream) {
            Ok(groups) => groups.into(),
            Err(error) => {
                tracing::debug!(%error, "could not read the peer's supplementary groups");
                Arc::from([])
            }
        };
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred
                .pid()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p != 0),
            groups,
        })
    }
}

/// The supplementary groups of a Unix-socket peer, as the kernel recorded them at connect
/// time (`SO_PEERGROUPS`, Linux 4.13+).
#[cfg(target_os = "linux")]
fn peer_groups(stream: &tokio::net::UnixStream) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd as _;
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let capacity = groups.len() * std::mem::size_of::<libc::gid_t>();
        let mut len = libc::socklen_t::try_from(capacity).map_err(std::io::Error::other)?;
        // SAFETY: the buffer holds `len` bytes of gid_t, and the kernel writes at most `len`
        // bytes and reports the size it wrote (or needs) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = usize::try_from(len).unwrap_or(0) / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count.min(groups.len()));
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ERANGE) && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return Err(error);
    }
}

#[cfg(not(target_os = "linux"))]
fn peer_groups(_stream: &tokio::net::UnixStream) -> std::io::Result<Vec<u32>> {
    Ok(Vec::new())
}

/// How a connection reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The Unix socket.
    Unix,
    /// The optional TCP listener, from this address.
    Tcp(SocketAddr),
}

/// Per-connection information captured at accept time (axum's connect info).
///
/// Handlers normally want [`Caller`] instead.
#[derive(Debug, Clone)]
pub struct Peer {
    /// How the connection arrived.
    pub transport: Transport,
    /// Kernel-reported credentials; `None` for TCP and when `SO_PEERCRED` failed.
    pub credentials: Option<PeerCredentials>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let credentials = match PeerCredentials::of(stream.io()) {
            Ok(c) => Some(c),
            Err(error) => {
                tracing::warn!(%error, "could not read the peer credentials of a connection");
                None
            }
        };
        Self {
            transport: Transport::Unix,
            credentials,
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self {
            transport: Transport::Tcp(*stream.remote_addr()),
            credentials: None,
        }
    }
}

/// The identity of the process that made a request, available to every handler as an
/// extractor (`caller: Caller`, or `caller: Option<Caller>` on routes open to callers without
/// credentials).
///
/// Present for Unix-socket callers (from `SO_PEERCRED`) and for TCP callers when TCP was
/// enabled in the configuration (they are then treated as the server's own uid and gid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Pid, when known (never for TCP).
    pub pid: Option<u32>,
    /// Supplementary groups, when known.
    pub groups: Arc<[u32]>,
    /// The container the caller runs in, when its cgroup names one.
    pub container_id: Option<String>,
    /// How it connected.
    pub transport: Transport,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::Forbidden,
                "the caller's identity is unknown (no peer credentials)",
            )
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}

/// Who may call mutating routes.
///
/// Allowed: uid 0, the server's own effective uid, the configured `allow_uids`, and callers
/// whose gid or one of whose supplementary groups (`SO_PEERCRED`, `SO_PEERGROUPS`) is in
/// `allow_gids`. Reads are open to
/// anyone who can connect to the socket (whose mode 0700 is the first gate). TCP callers have
/// no credentials: they are treated as the server's own uid and gid only when the
/// configuration enabled TCP (`api.tcp`); otherwise they get no [`Caller`] and every mutating
/// route answers 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    server_uid: u32,
    server_gid: u32,
    allow_uids: Vec<u32>,
    allow_gids: Vec<u32>,
    trust_tcp: bool,
}

impl AccessPolicy {
    /// The policy for a configuration, with the running process's effective uid and gid as
    /// the server's own.
    pub fn from_config(config: &ApiConfig) -> Self {
        Self {
            server_uid: rustix::process::geteuid().as_raw(),
            server_gid: rustix::process::getegid().as_raw(),
            allow_uids: config.allow_uids.clone(),
            allow_gids: config.allow_gids.clone(),
            trust_tcp: config.tcp.is_some(),
        }
    }

    /// The same policy with another uid and gid standing for the server's own (for a server
    /// that serves on behalf of another account, and for tests).
    #[must_use]
    pub fn with_server_identity(mut self, uid: u32, gid: u32) -> Self {
        self.server_uid = uid;
        self.server_gid = gid;
        self
    }

    /// The server's effective uid, as the policy sees it.
    pub fn server_uid(&self) -> u32 {
        self.server_uid
    }

    /// Whether TCP callers are treated as the server's own uid.
    pub fn trusts_tcp(&self) -> bool {
        self.trust_tcp
    }

    /// Whether `caller` may use mutating routes (`None`: unknown caller, never).
    pub fn allows_mutation(&self, caller: Option<&Caller>) -> bool {
        caller.is_some_and(|c| {
            c.uid == 0
                || c.uid == self.server_uid
                || self.allow_uids.contains(&c.uid)
                || self
                    .allow_gids
                    .iter()
                    .any(|g| *g == c.gid || c.groups.contains(g))
        })
    }

    /// The [`Caller`] for a connection, resolving the container through `cache`.
    pub fn caller(&self, peer: &Peer, cache: &CallerCache) -> Option<Caller> {
        match (peer.transport, &peer.credentials) {
            (Transport::Unix, Some(creds)) => Some(cache.resolve(creds.clone())),
            (Transport::Tcp(_), _) if self.trust_tcp => Some(Caller {
                uid: self.server_uid,
                gid: self.server_gid,
                pid: None,
                groups: Arc::from([]),
                container_id: None,
                transport: peer.transport,
            }),
            _ => None,
        }
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::from_config(&ApiConfig::default())
    }
}

/// Finds the container id in the contents of a `/proc/<pid>/cgroup` file.
///
/// Looks at each line's cgroup path (cgroup v1 `N:controllers:/path` and v2 `0::/path`),
/// segment by segment from the last one, for a 64-hex-digit id, optionally wrapped as
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
/// (systemd driver), or bare (`/docker/<id>`, `/kubepods/.../pod<uid>/<id>`,
/// `/containerd/<id>`), and for the ECS Fargate `<32 hex>-<digits>` form. `None` when no line
/// names a container (a host process, or a container with a private cgroup namespace, whose
/// path is just `/`).
pub fn parse_container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(container_id_of_segment)
    })
}

fn container_id_of_segment(segment: &str) -> Option<String> {
    let seg = segment.strip_suffix(".scope").unwrap_or(segment);
    let seg = [
        "docker-",
        "cri-containerd-",
        "crio-conmon-",
        "crio-",
        "libpod-conmon-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|prefix| seg.strip_prefix(prefix))
    .unwrap_or(seg);
    let is_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if seg.len() == 64 && is_hex(seg) {
        return Some(seg.to_owned());
    }
    // ECS Fargate: <32 hex>-<task-unique digits>
    if let Some((hex, digits)) = seg.split_once('-')
        && hex.len() == 32
        && is_hex(hex)
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(seg.to_owned());
    }
    None
}

/// Settings of a [`CallerCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerCacheConfig {
    /// How long a resolved identity is trusted (default 10 s).
    pub ttl: Duration,
    /// How long a failed resolution is remembered (default 2 s).
    pub failure_ttl: Duration,
    /// How often the server sweeps expired entries (default 30 s).
    pub sweep_interval: Duration,
    /// The most entries kept (default 4096).
    pub max_entries: u64,
    /// Where `/proc` is (default `/proc`; tests point it at a temporary directory).
    pub proc_root: PathBuf,
}

impl Default for CallerCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            failure_ttl: Duration::from_secs(2),
            sweep_interval: Duration::from_secs(30),
            max_entries: 4096,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What the cache knows about one caller.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// The cgroup was read; the container id, if the caller runs in one.
    Resolved(Option<String>),
    /// The cgroup could not be read (remembered for `failure_ttl`).
    Failed(Arc<Error>),
}

#[derive(Debug, Clone)]
struct Entry {
    resolution: Resolution,
    expires_at: Instant,
    ttl: Duration,
}

type Key = (u32, u32, u32);

/// moka's own expiry mirrors ours in real time, so entries disappear even if nobody sweeps.
struct EntryExpiry;

impl Expiry<Key, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Entry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A TTL cache from a caller's credentials to its container. See the [module docs](self).
/// Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct CallerCache {
    entries: moka::sync::Cache<Key, Entry>,
    config: Arc<CallerCacheConfig>,
}

impl std::fmt::Debug for CallerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerCache")
            .field("entries", &self.entries.entry_count())
            .field("config", &self.config)
            .finish()
    }
}

impl Default for CallerCache {
    fn default() -> Self {
        Self::new(CallerCacheConfig::default())
    }
}

impl CallerCache {
    /// An empty cache.
    pub fn new(config: CallerCacheConfig) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(EntryExpiry)
            .build();
        Self {
            entries,
            config: Arc::new(config),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CallerCacheConfig {
        &self.config
    }

    /// The caller for a set of peer credentials. Never fails: a caller whose cgroup cannot be
    /// read gets no container id (the failure is cached and logged at debug level).
    pub fn resolve(&self, creds: PeerCredentials) -> Caller {
        let container_id = match creds.pid {
            Some(pid) => match self.lookup(pid, creds.uid, creds.gid) {
                Resolution::Resolved(id) => id,
                Resolution::Failed(error) => {
                    tracing::debug!(caller.pid = pid, error = %error, "caller's container is unknown");
                    None
                }
            },
            None => None,
        };
        Caller {
            uid: creds.uid,
            gid: creds.gid,
            pid: creds.pid,
            groups: creds.groups,
            container_id,
            transport: Transport::Unix,
        }
    }

    /// What is known about `(pid, uid, gid)`: from the cache while the entry is fresh,
    /// otherwise read from `/proc/<pid>/cgroup` now (and cached).
    pub fn lookup(&self, pid: u32, uid: u32, gid: u32) -> Resolution {
        let key = (pid, uid, gid);
        let now = Instant::now();
        if let Some(entry) = self.entries.get(&key)
            && entry.expires_at > now
        {
            return entry.resolution;
        }
        let path = self.config.proc_root.join(pid.to_string()).join("cgroup");
        let (resolution, ttl) = match fs_err::read_to_string(&path) {
            Ok(text) => (
                Resolution::Resolved(parse_container_id(&text)),
                self.config.ttl,
            ),
            Err(source) => (
                Resolution::Failed(Arc::new(Error::CallerLookup { pid, source })),
                self.config.failure_ttl,
            ),
        };
        self.entries.insert(
            key,
            Entry {
                resolution: resolution.clone(),
                expires_at: now + ttl,
                ttl,
            },
        );
        resolution
    }

    /// Removes every entry whose TTL has run out; returns how many were removed.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        for (key, entry) in self.entries.iter() {
            if entry.expires_at <= now {
                self.entries.invalidate(key.as_ref());
                removed += 1;
            }
        }
        self.entries.run_pending_tasks();
        removed
    }

    /// The number of entries held (exact after a [`CallerCache::sweep`]).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sweeps every `sweep_interval` until `shutdown` completes.
    pub async fn run_sweeper(&self, shutdown: impl Future<Output = ()>) {
        let mut interval = tokio::time::interval(self.config.sweep_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; there is nothing to sweep yet.
        interval.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = interval.tick() => {
                    let removed = self.sweep();
                    tracing::trace!(removed, "swept the caller cache");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8a7b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";

    #[test]
    fn container_ids_from_realistic_cgroup_files() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "docker, cgroup v1",
                &format!(
                    "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service\n"
                ),
                Some(ID),
            ),
            (
                "docker with the systemd driver, cgroup v2",
                &format!("0::/system.slice/docker-{ID}.scope\n"),
                Some(ID),
            ),
            (
                "kubepods, cgroup v1, cgroupfs driver",
                &format!(
                    "10:cpu,cpuacct:/kubepods/besteffort/pod9a4e7d3c-0d0b-4f5f-8a0e-5c3b2a1f0e9d/{ID}\n"
                ),
                Some(ID),
            ),
            (
                "kubepods + containerd, cgroup v2, systemd driver",
                &format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9a4e7d3c_0d0b_4f5f_8a0e_5c3b2a1f0e9d.slice/cri-containerd-{ID}.scope\n"
                ),
                Some(ID),
            ),
            (
                "cri-o, cgroup v2",
                &format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
                Some(ID),
            ),
            (
                "cri-o conmon",
                &format!("0::/machine.slice/crio-conmon-{ID}.scope\n"),
                Some(ID),
            ),
            (
                "podman rootful, cgroup v2",
                &format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                Some(ID),
            ),
            (
                "podman rootless",
                &format!(
                    "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
                ),
                Some(ID),
            ),
            (
                "containerd namespace",
                &format!("0::/default/{ID}\n"),
                Some(ID),
            ),
            (
                "ECS Fargate",
                "0::/ecs/8f0c1d2e3b4a59687766554433221100/8f0c1d2e3b4a59687766554433221100-1234567890\n",
                Some("8f0c1d2e3b4a59687766554433221100-1234567890"),
            ),
            (
                "host process, cgroup v2",
                "0::/user.slice/user-0.slice/session-3.scope\n",
                None,
            ),
            (
                "host service, cgroup v1",
                "12:pids:/system.slice/sshd.service\n1:name=systemd:/system.slice/sshd.service\n",
                None,
            ),
            ("private cgroup namespace", "0::/\n", None),
            (
                "upper-case hex is not an id",
                &format!("0::/docker/{}\n", ID.to_uppercase()),
                None,
            ),
            ("63 hex digits", &format!("0::/docker/{}\n", &ID[1..]), None),
            ("empty file", "", None),
            ("garbage", "not a cgroup line\n::\n", None),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_container_id(text).as_deref(), *expected, "{name}");
        }
    }

    fn proc_with(pid: u32, cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_cgroup(&dir, pid, cgroup);
        dir
    }

    fn write_cgroup(dir: &tempfile::TempDir, pid: u32, cgroup: &str) {
        let p = dir.path().join(pid.to_string());
        fs_err::create_dir_all(&p).unwrap();
        fs_err::write(p.join("cgroup"), cgroup).unwrap();
    }

    fn cache(proc_root: &std::path::Path) -> CallerCache {
        CallerCache::new(CallerCacheConfig {
            ttl: Duration::from_secs(10),
            failure_ttl: Duration::from_secs(2),
            sweep_interval: Duration::from_secs(30),
            max_entries: 100,
            proc_root: proc_root.to_path_buf(),
        })
    }

    fn creds(pid: u32, uid: u32) -> PeerCredentials {
        PeerCredentials {
            uid,
            gid: uid,
            pid: Some(pid),
            groups: Arc::from([]),
        }
    }

    const OTHER: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[tokio::test(start_paused = true)]
    async fn resolved_identity_is_kept_for_its_ttl() {
        let proc = proc_with(100, &format!("0::/docker/{ID}\n"));
        let cache = cache(proc.path());
        assert_eq!(
            cache.resolve(creds(100, 0)).container_id.as_deref(),
            Some(ID)
        );
        // The process changes (or the pid is reused): the cache still answers until the TTL.
        write_cgroup(&proc, 100, &format!("0::/docker/{OTHER}\n"));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(
            cache.resolve(creds(100, 0)).container_id.as_deref(),
            Some(ID)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            cache.resolve(creds(100, 0)).container_id.as_deref(),
            Some(OTHER)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_pid_with_another_uid_gets_a_fresh_lookup() {
        let proc = proc_with(100, &format!("0::/docker/{ID}\n"));
        let cache = cache(proc.path());
        assert_eq!(
            cache.resolve(creds(100, 0)).container_id.as_deref(),
            Some(ID)
        );
        write_cgroup(&proc, 100, "0::/user.slice\n");
        let other = cache.resolve(creds(100, 1000));
        assert_eq!(other.container_id, None);
        assert_eq!((other.uid, other.pid), (1000, Some(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_cached_for_their_own_ttl() {
        let proc = tempfile::tempdir().unwrap();
        let cache = cache(proc.path());
        let Resolution::Failed(error) = cache.lookup(200, 0, 0) else {
            panic!("no cgroup file")
        };
        assert!(matches!(
            error.as_ref(),
            Error::CallerLookup { pid: 200, .. }
        ));
        // The caller keeps its kernel credentials, without a container.
        let caller = cache.resolve(creds(200, 0));
        assert_eq!(
            (caller.uid, caller.pid, caller.container_id),
            (0, Some(200), None)
        );
        // The process shows up: the failure is still remembered until failure_ttl.
        write_cgroup(&proc, 200, &format!("0::/docker/{ID}\n"));
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(matches!(cache.lookup(200, 0, 0), Resolution::Failed(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(cache.lookup(200, 0, 0), Resolution::Resolved(Some(ref id)) if id == ID));
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_removes_only_expired_entries() {
        let proc = proc_with(1, "0::/\n");
        write_cgroup(&proc, 2, "0::/\n");
        let cache = cache(proc.path());
        cache.resolve(creds(1, 0)); // ttl 10 s
        cache.lookup(3, 0, 0); // failure, 2 s
        tokio::time::advance(Duration::from_secs(5)).await;
        cache.resolve(creds(2, 0)); // expires at 15 s
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.sweep(), 1, "the failure expired");
        assert_eq!(cache.len(), 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(cache.sweep(), 1, "pid 1 expired at 10 s");
        assert_eq!(cache.len(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(cache.sweep(), 1);
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn sweeper_runs_on_its_interval_until_shutdown() {
        let proc = proc_with(1, "0::/\n");
        let cache = cache(proc.path());
        cache.resolve(creds(1, 0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sweeper = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .run_sweeper(async {
                        let _ = rx.await;
                    })
                    .await
            })
        };
        // Let the sweeper start its interval at t = 0.
        tokio::task::yield_now().await;
        // Expired after 10 s, but not swept before the 30 s tick.
        tokio::time::advance(Duration::from_secs(29)).await;
        tokio::task::yield_now().await;
        assert_eq!(cache.len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..100 {
            if cache.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(cache.is_empty(), "swept at the 30 s tick");
        tx.send(()).unwrap();
        sweeper.await.unwrap();
    }

    #[test]
    fn access_policy_rules() {
        let config = ApiConfig {
            allow_uids: vec![1001],
            allow_gids: vec![50],
            tcp: None,
        };
        let policy = AccessPolicy::from_config(&config).with_server_identity(999, 999);
        let caller = |uid, gid| Caller {
            uid,
            gid,
            pid: Some(1),
            groups: Arc::from([7, 8]),
            container_id: None,
            transport: Transport::Unix,
        };
        assert!(policy.allows_mutation(Some(&caller(0, 0))), "root");
        assert!(
            policy.allows_mutation(Some(&caller(999, 1))),
            "the server's own uid"
        );
        assert!(
            policy.allows_mutation(Some(&caller(1001, 1))),
            "configured uid"
        );
        assert!(
            policy.allows_mutation(Some(&caller(1002, 50))),
            "configured gid"
        );
        assert!(!policy.allows_mutation(Some(&caller(1002, 51))));
        let member = Caller {
            groups: Arc::from([7, 50]),
            ..caller(1002, 51)
        };
        assert!(
            policy.allows_mutation(Some(&member)),
            "configured supplementary group"
        );
        assert!(!policy.allows_mutation(None), "unknown caller");

        let tcp = Peer {
            transport: Transport::Tcp("127.0.0.1:9".parse().unwrap()),
            credentials: None,
        };
        let cache = CallerCache::default();
        assert_eq!(policy.caller(&tcp, &cache), None, "TCP not configured");
        let trusting = AccessPolicy::from_config(&ApiConfig {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            ..config
        })
        .with_server_identity(999, 998);
        let c = trusting.caller(&tcp, &cache).unwrap();
        assert_eq!((c.uid, c.gid, c.pid), (999, 998, None));
        assert!(trusting.allows_mutation(Some(&c)));
    }
}
