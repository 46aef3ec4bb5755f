//! Who is calling: peer credentials, the [`Caller`] handlers see, the access policy for
//! mutating routes, and the TTL cache that resolves a caller's container.
//!
//! # Identity
//! On the Unix socket the kernel reports the peer's uid, gid and pid (`SO_PEERCRED`, read once
//! per connection at accept time). The container id is parsed from `/proc/<pid>/cgroup`
//! (docker, containerd, cri-o, podman and kubepods forms, cgroup v1 and v2) through a
//! [`CallerCache`].
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
use outpost_types::config::ApiConfig;
use outpost_types::ErrorCode;
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;

use crate::error::{Error, ErrorResponse};

/// Credentials the kernel reported for a Unix-socket peer (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// Effective uid of the peer when it connected.
    pub uid: u32,
    /// Effective gid of the peer when it connected.
    pub gid: u32,
    /// Pid of the peer, `None` when the kernel could not map it into our pid namespace.
    pub pid: Option<u32>,
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
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid().and_then(|p| u32::try_from(p).ok()).filter(|p| *p != 0),
        })
    }
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
/// whose (primary, as `SO_PEERCRED` reports it) gid is in `allow_gids`. Reads are open to
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
                || self.allow_gids.contains(&c.gid)
        })
    }

    /// The [`Caller`] for a connection, resolving the container through `cache`.
    pub fn caller(&self, peer: &Peer, cache: &CallerCache) -> Option<Caller> {
        match (peer.transport, peer.credentials) {
            (Transport::Unix, Some(creds)) => Some(cache.resolve(creds)),
            (Transport::Tcp(_), _) if self.trust_tcp => Some(Caller {
                uid: self.server_uid,
                gid: self.server_gid,
                pid: None,
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
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
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
            Ok(text) => (Resolution::Resolved(parse_container_id(&text)), self.config.ttl),
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
