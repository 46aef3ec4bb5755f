//! OCI registries: pulling a package image (`oci://host[:port]/repo:tag` or
//! `oci://host/repo@sha256:...`) and pushing an image layout, through `oci-client`.
//!
//! # Pulling
//! The reference is resolved to an image index (or a manifest, when the reference names one
//! directly), the index is walked with [`oci::select_manifest`](crate::oci::select_manifest)
//! (the first manifest for the host platform wins), the manifest's annotations must name the
//! package and version asked for ([`ImageMeta`]), and the payload layers are then streamed,
//! in order, straight into the unpacker: each response body goes chunk by chunk through a
//! bounded channel to a blocking thread, so no layer is ever written to a temporary file or
//! held whole in memory.
//!
//! Every document is verified: the top document against the reference's digest when it has
//! one, nested indexes and the manifest against their descriptors, and every layer against
//! its descriptor while it streams (the unpacker hashes the whole blob once, across
//! resumptions).
//!
//! # Network behaviour
//! - Plain HTTP is used only for hosts listed in `registry.insecure_hosts` (loopback is not
//!   special); every other host is spoken to over TLS. A TLS failure with a host that is not
//!   listed says how to list it.
//! - Credentials: `registry.auths."host"` (username and password file) when present, else
//!   the default `registry.username` / `registry.password_file`, else anonymous. The
//!   password file is read at each operation, one trailing newline stripped. Basic and
//!   bearer-token authentication are both handled (`oci-client` follows the registry's
//!   `WWW-Authenticate` challenge). Passwords never appear in logs or error messages.
//! - `registry.mirror` replaces the host of every pulled reference (credentials and the
//!   insecure list then apply to the mirror). Pushes go to the host named.
//! - Transient failures (connection refused or reset, timeouts, HTTP 5xx and 429) are
//!   retried with exponential backoff ([`RetryPolicy`]); an interrupted layer resumes with a
//!   range request from the byte it stopped at, or, when the registry ignores the range,
//!   from the start with the bytes already unpacked skipped. Permanent failures (401, 403,
//!   404, a digest mismatch, no image for the platform) fail at once.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use outpost_types::config::RegistryConfig;
use outpost_types::source::OciReference;
use outpost_types::{PackageName, Version};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::control::{Cancel, Limits, NoProgress, UnpackStats};
use crate::digest::Digest;
use crate::error::{FetchError, RemoteProblem};
use crate::oci::{
    Descriptor, ImageIndex, ImageManifest, ImageMeta, LayerUnpacker, MAX_JSON_BYTES, media_type,
    parse_json, read_verified, select_manifest,
};
use crate::remote::{
    BlobSpec, Body, BoxFut, ChunkReader, DownloadProgress, Failure, Msg, QUEUE, RetryPolicy, Stop,
    stream_resumable, with_retries,
};

/// The `User-Agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("outpost/", env!("CARGO_PKG_VERSION"));

/// The manifest media types asked for.
const ACCEPT: [&str; 4] = [
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST_LIST,
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
];

/// Credentials for one registry, as configured: a username and the file holding the
/// password. The password itself is only read when a request needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    /// The username.
    pub username: Option<String>,
    /// The file holding the password (one trailing newline is stripped).
    pub password_file: Option<PathBuf>,
}

/// How registries and HTTP servers are reached: the `registry:` section of the
/// configuration, plus retry and timeout settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `host[:port]` values spoken to over plain HTTP. Nothing else is.
    pub insecure_hosts: Vec<String>,
    /// `host[:port]` that replaces the host of every pulled reference.
    pub mirror: Option<String>,
    /// Credentials for hosts without their own entry in `auths`.
    pub default_login: Login,
    /// Per-host credentials (`host[:port]`), overriding the defaults.
    pub auths: BTreeMap<String, Login>,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for any read on a connection (a stalled transfer fails after this, and
    /// is retried or resumed).
    pub read_timeout: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure_hosts: Vec::new(),
            mirror: None,
            default_login: Login::default(),
            auths: BTreeMap::new(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl RegistrySettings {
    /// The settings of the configuration file's `registry:` section, with the default
    /// retry policy and timeouts.
    pub fn from_config(c: &RegistryConfig) -> Self {
        Self {
            insecure_hosts: c.insecure_hosts.clone(),
            mirror: c.mirror.clone().filter(|m| !m.is_empty()),
            default_login: Login {
                username: c.username.clone(),
                password_file: c.password_file.clone(),
            },
            auths: c
                .auths
                .iter()
                .map(|(host, a)| {
                    (
                        host.clone(),
                        Login {
                            username: a.username.clone(),
                            password_file: a.password_file.clone(),
                        },
                    )
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Whether `host` is spoken to over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_hosts.iter().any(|h| h == host)
    }

    /// The host a pull of a reference on `host` goes to: the mirror, when one is set.
    pub fn pull_host<'a>(&'a self, host: &'a str) -> &'a str {
        self.mirror.as_deref().unwrap_or(host)
    }

    /// The login for `host`: its own entry in `auths`, else the default one.
    pub fn login_for(&self, host: &str) -> &Login {
        self.auths.get(host).unwrap_or(&self.default_login)
    }

    /// Reads the credentials for `host`.
    ///
    /// # Errors
    /// [`FetchError::BadSettings`] for a username without a password file or the reverse;
    /// [`FetchError::Credentials`] when the password file cannot be read.
    fn credentials(&self, host: &str) -> Result<Credentials, FetchError> {
        let (login, setting) = match self.auths.get(host) {
            Some(l) => (l, format!("registry.auths.\"{host}\"")),
            None => (&self.default_login, "registry".to_owned()),
        };
        match (&login.username, &login.password_file) {
            (None, None) => Ok(Credentials::Anonymous),
            (Some(_), None) => Err(FetchError::BadSettings {
                reason: format!("{setting} has a username but no password_file"),
            }),
            (None, Some(_)) => Err(FetchError::BadSettings {
                reason: format!("{setting} has a password_file but no username"),
            }),
            (Some(user), Some(path)) => {
                let mut password =
                    fs_err::read_to_string(path).map_err(|e| FetchError::Credentials {
                        host: host.to_owned(),
                        path: path.clone(),
                        source: e,
                    })?;
                if password.ends_with('\n') {
                    password.pop();
                    if password.ends_with('\r') {
                        password.pop();
                    }
                }
                Ok(Credentials::Basic {
                    username: user.clone(),
                    password: Secret(password),
                })
            }
        }
    }

    fn client(&self) -> Result<Client, FetchError> {
        crate::tls::ensure_provider();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure_hosts.clone()),
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.read_timeout),
            use_monolithic_push: true,
            platform_resolver: None,
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        Client::try_from(config).map_err(|e| FetchError::Remote {
            what: "the registry client".into(),
            problem: RemoteProblem::Protocol {
                detail: "cannot be set up".into(),
            },
            source: Some(Box::new(e)),
        })
    }
}

/// A password, never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
enum Credentials {
    Anonymous,
    Basic { username: String, password: Secret },
}

impl Credentials {
    fn username(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            Self::Basic { username, .. } => Some(username.clone()),
        }
    }

    fn to_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.0.clone())
            }
        }
    }
}

/// What a request concerns, for classifying its failures.
#[derive(Debug, Clone)]
struct ReqCtx {
    what: String,
    host: String,
    username: Option<String>,
    insecure: bool,
}

impl ReqCtx {
    fn remote(&self, problem: RemoteProblem, e: OciDistributionError) -> FetchError {
        FetchError::Remote {
            what: self.what.clone(),
            problem,
            source: Some(Box::new(e)),
        }
    }

    fn for_what(&self, what: String) -> Self {
        Self {
            what,
            ..self.clone()
        }
    }
}

/// Turns an `oci-client` error into a permanent or transient failure with a message a
/// person can act on.
fn classify(e: OciDistributionError, cx: &ReqCtx) -> Failure {
    use OciDistributionError as E;
    let unauthorized = || RemoteProblem::Unauthorized {
        host: cx.host.clone(),
        username: cx.username.clone(),
    };
    match &e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            Failure::permanent(cx.remote(unauthorized(), e))
        }
        E::RegistryError { envelope, .. } => {
            let detail = envelope
                .errors
                .iter()
                .map(|x| format!("{}: {}", code_name(&x.code), x.message))
                .collect::<Vec<_>>()
                .join("; ");
            match envelope.errors.first().map(|x| &x.code) {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
                    | OciErrorCode::ManifestBlobUnknown,
                ) => Failure::permanent(cx.remote(RemoteProblem::NotFound { detail }, e)),
                Some(OciErrorCode::Unauthorized) => {
                    Failure::permanent(cx.remote(unauthorized(), e))
                }
                Some(OciErrorCode::Denied) => Failure::permanent(cx.remote(
                    RemoteProblem::Forbidden {
                        host: cx.host.clone(),
                    },
                    e,
                )),
                Some(OciErrorCode::Toomanyrequests) => Failure::transient(cx.remote(
                    RemoteProblem::Status {
                        status: Some(429),
                        detail,
                    },
                    e,
                )),
                _ => Failure::permanent(cx.remote(
                    RemoteProblem::Status {
                        status: None,
                        detail,
                    },
                    e,
                )),
            }
        }
        E::ServerError { code, message, .. } => {
            let code = *code;
            let detail = short(message);
            let problem = match code {
                401 => unauthorized(),
                403 => RemoteProblem::Forbidden {
                    host: cx.host.clone(),
                },
                404 => RemoteProblem::NotFound { detail },
                _ => RemoteProblem::Status {
                    status: Some(code),
                    detail,
                },
            };
            let error = cx.remote(problem, e);
            if code >= 500 || code == 429 || code == 408 {
                Failure::transient(error)
            } else {
                Failure::permanent(error)
            }
        }
        E::RequestError(r) if r.status().is_some() => {
            let code = r.status().map_or(0, |s| s.as_u16());
            let problem = match code {
                401 => unauthorized(),
                403 => RemoteProblem::Forbidden {
                    host: cx.host.clone(),
                },
                404 => RemoteProblem::NotFound {
                    detail: "no such blob or manifest".into(),
                },
                _ => RemoteProblem::Status {
                    status: Some(code),
                    detail: "refused".into(),
                },
            };
            let error = cx.remote(problem, e);
            if code >= 500 || code == 429 || code == 408 {
                Failure::transient(error)
            } else {
                Failure::permanent(error)
            }
        }
        E::RequestError(r) => {
            if !cx.insecure && is_tls_failure(r) {
                Failure::permanent(cx.remote(
                    RemoteProblem::Tls {
                        host: cx.host.clone(),
                    },
                    e,
                ))
            } else if r.is_builder() {
                Failure::permanent(cx.remote(
                    RemoteProblem::Protocol {
                        detail: "invalid request".into(),
                    },
                    e,
                ))
            } else {
                Failure::transient(cx.remote(RemoteProblem::Network { attempts: 1 }, e))
            }
        }
        E::IoError(_) => Failure::transient(cx.remote(RemoteProblem::Network { attempts: 1 }, e)),
        E::DigestError(DigestError::VerificationError { expected, actual }) => {
            match (Digest::parse(expected), Digest::parse(actual)) {
                (Ok(expected), Ok(actual)) => Failure::permanent(FetchError::DigestMismatch {
                    what: cx.what.clone(),
                    expected,
                    actual,
                }),
                _ => Failure::permanent(cx.remote(
                    RemoteProblem::Protocol {
                        detail: "the content does not match its digest".into(),
                    },
                    e,
                )),
            }
        }
        _ => Failure::permanent(cx.remote(
            RemoteProblem::Protocol {
                detail: "unexpected answer from the registry".into(),
            },
            e,
        )),
    }
}

fn code_name(code: &OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{code:?}"),
    }
}

/// The first line of a server's message, at most 200 characters.
pub(crate) fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push_str("...");
    }
    if out.is_empty() {
        out.push_str("(no message)");
    }
    out
}

/// Whether a request failed in the TLS handshake.
pub(crate) fn is_tls_failure(e: &reqwest::Error) -> bool {
    crate::tls::is_tls_error(e)
}

/// Whether a stream error is `oci-client`'s own digest check at the end of a full body.
fn is_end_check(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<DigestError>())
}

/// A connection to one registry with its credentials.
#[derive(Clone)]
struct Session {
    client: Client,
    auth: RegistryAuth,
    cx: ReqCtx,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.cx.host)
            .field("username", &self.cx.username)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn open(settings: &RegistrySettings, host: &str, what: String) -> Result<Self, FetchError> {
        let credentials = settings.credentials(host)?;
        Ok(Self {
            client: settings.client()?,
            auth: credentials.to_auth(),
            cx: ReqCtx {
                what,
                host: host.to_owned(),
                username: credentials.username(),
                insecure: settings.is_insecure(host),
            },
            retry: settings.retry,
        })
    }

    /// Fetches a manifest or index document, retrying transient failures.
    async fn manifest(
        &self,
        reference: &Reference,
        what: String,
        cancel: &Cancel,
    ) -> Result<Bytes, FetchError> {
        let cx = self.cx.for_what(what);
        self.call(
            cancel,
            &cx,
            reference,
            |client, auth, reference| async move {
                client
                    .pull_manifest_raw(&reference, &auth, &ACCEPT)
                    .await
                    .map(|(body, _digest)| body)
            },
        )
        .await
    }

    /// One registry request, retried by the session's policy while it fails transiently, its
    /// errors classified for `cx`. `op` gets its own handles on the client, the credentials
    /// and the reference; the credentials are registered for the host first (a no-op after
    /// the first request), for the calls of `oci-client` that take none.
    async fn call<T, Fut>(
        &self,
        cancel: &Cancel,
        cx: &ReqCtx,
        reference: &Reference,
        op: impl Fn(Client, RegistryAuth, Reference) -> Fut,
    ) -> Result<T, FetchError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, OciDistributionError>> + Send + 'static,
    {
        with_retries(&self.retry, cancel, &cx.what, || {
            let (client, auth, reference, cx) = (
                self.client.clone(),
                self.auth.clone(),
                reference.clone(),
                cx.clone(),
            );
            let attempt = op(client.clone(), auth.clone(), reference.clone());
            Box::pin(async move {
                client
                    .store_auth_if_needed(reference.resolve_registry(), &auth)
                    .await;
                attempt.await.map_err(|e| classify(e, &cx))
            })
        })
        .await
    }
}

/// A registry reference as `oci-client` takes it: digest when there is one, else tag.
fn client_reference(host: &str, r: &OciReference) -> Reference {
    match (&r.digest, &r.tag) {
        (Some(d), _) => Reference::with_digest(host.to_owned(), r.repository.clone(), d.clone()),
        (None, Some(t)) => Reference::with_tag(host.to_owned(), r.repository.clone(), t.clone()),
        // OciReference::parse refuses a reference with neither.
        (None, None) => {
            Reference::with_tag(host.to_owned(), r.repository.clone(), "latest".to_owned())
        }
    }
}

/// Names a reference for messages: `oci://host/repo:tag`, and the mirror when one is used.
fn describe(r: &OciReference, host: &str) -> String {
    if host == r.registry {
        format!("oci://{r}")
    } else {
        format!("oci://{r} (through the mirror {host})")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sniff {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// A package image resolved in a registry: its manifest is chosen, verified and read;
/// nothing of the payload was downloaded yet.
#[derive(Debug, Clone)]
pub struct RegistryImage {
    session: Session,
    reference: Reference,
    /// `oci://...` as asked, for messages.
    pub what: String,
    /// The digest of the index the reference named, when it named an index.
    pub index_digest: Option<Digest>,
    /// The chosen manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Name, version and size from its annotations (equal to what was asked).
    pub meta: ImageMeta,
}

impl RegistryImage {
    /// Resolves `reference` for the host platform and checks that the image is package
    /// `name` `version`.
    ///
    /// # Errors
    /// [`FetchError::Remote`] (unreachable registry after retries, 401, 403, 404, TLS with a
    /// host not listed as insecure); [`FetchError::DigestMismatch`] for a document that is
    /// not what its digest says; [`FetchError::NoMatchingImage`];
    /// [`FetchError::PackageMismatch`]; the annotation errors of [`ImageMeta`];
    /// [`FetchError::Credentials`] / [`FetchError::BadSettings`] for the credentials.
    pub async fn resolve(
        settings: &RegistrySettings,
        r: &OciReference,
        name: &PackageName,
        version: &Version,
        cancel: &Cancel,
    ) -> Result<Self, FetchError> {
        Self::resolve_for(
            settings,
            r,
            name,
            version,
            outpost_types::platform::host_os(),
            outpost_types::platform::host_arch(),
            cancel,
        )
        .await
    }

    async fn resolve_for(
        settings: &RegistrySettings,
        r: &OciReference,
        name: &PackageName,
        version: &Version,
        os: &str,
        arch: &str,
        cancel: &Cancel,
    ) -> Result<Self, FetchError> {
        let host = settings.pull_host(&r.registry).to_owned();
        let what = describe(r, &host);
        let session = Session::open(settings, &host, what.clone())?;
        let reference = client_reference(&host, r);
        let top = session.manifest(&reference, what.clone(), cancel).await?;
        if top.len() as u64 > MAX_JSON_BYTES {
            return Err(FetchError::BadImage {
                what,
                reason: format!(
                    "the document is {} bytes, over the limit of {MAX_JSON_BYTES}",
                    top.len()
                ),
            });
        }
        let top_digest = Digest::of(&top);
        if let Some(pinned) = &r.digest {
            let expected = Digest::parse(pinned)?;
            if expected != top_digest {
                return Err(FetchError::DigestMismatch {
                    what,
                    expected,
                    actual: top_digest,
                });
            }
        }
        let sniff: Sniff = parse_json(&top, &what)?;
        let is_index = match sniff.media_type.as_deref() {
            Some(media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST) => true,
            Some(media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST) => false,
            Some(other) => {
                return Err(FetchError::BadImage {
                    what,
                    reason: format!("unsupported media type {other:?}"),
                });
            }
            None => sniff.manifests.is_some() && sniff.layers.is_none(),
        };
        let (index_digest, descriptor, manifest_bytes) = if is_index {
            let index: ImageIndex = parse_json(&top, &what)?;
            let descriptor = select(&session, &reference, &index, os, arch, &what, cancel).await?;
            let bytes =
                fetch_document(&session, &reference, &descriptor, "manifest", cancel).await?;
            (Some(top_digest), descriptor, bytes)
        } else {
            let descriptor = Descriptor {
                media_type: sniff
                    .media_type
                    .unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned()),
                digest: top_digest,
                size: top.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            };
            (None, descriptor, top.to_vec())
        };
        let manifest: ImageManifest =
            parse_json(&manifest_bytes, &format!("manifest {}", descriptor.digest))?;
        let meta = ImageMeta::from_manifest(&manifest, &descriptor.digest)?;
        meta.expect(name, version)?;
        tracing::debug!(
            reference = %what,
            index.digest = index_digest.as_ref().map(tracing::field::display),
            manifest.digest = %descriptor.digest,
            "resolved a registry image"
        );
        Ok(Self {
            session,
            reference,
            what,
            index_digest,
            descriptor,
            manifest,
            meta,
        })
    }

    /// The payload layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifest.payload_layers()
    }

    /// Bytes the package needs on disk: the size annotation, else the sum of the payload
    /// layers' sizes.
    pub fn required_bytes(&self) -> u64 {
        self.meta
            .size
            .unwrap_or_else(|| self.layers().map(|l| l.size).sum())
    }

    /// Downloads the payload layers and unpacks them, in order, into `dest` (an existing,
    /// empty directory), verifying each while it streams.
    ///
    /// Progress is reported as [`Phase::Download`](outpost_types::wire::Phase::Download),
    /// bytes of all layers received out of their sum, at least every 100 ms while bytes
    /// arrive. On error `dest` holds a partial tree that the caller must discard.
    ///
    /// # Errors
    /// [`FetchError::Remote`] after retries or for a permanent failure; every unpacking and
    /// integrity error of [`LayerUnpacker`]; [`FetchError::Cancelled`].
    pub async fn unpack(
        &self,
        dest: &Path,
        limits: &Limits,
        cancel: &Cancel,
        progress: Arc<dyn crate::Progress>,
    ) -> Result<UnpackStats, FetchError> {
        let layers: Vec<Descriptor> = self.layers().cloned().collect();
        let total: u64 = layers.iter().map(|l| l.size).sum();
        let (layer_tx, mut layer_rx) = mpsc::channel::<(Descriptor, mpsc::Receiver<Msg>)>(1);
        let worker = {
            let (dest, limits, cancel) = (dest.to_owned(), *limits, cancel.clone());
            tokio::task::spawn_blocking(move || {
                let mut unpacker = LayerUnpacker::new(&dest, &limits, &cancel)?;
                while let Some((layer, rx)) = layer_rx.blocking_recv() {
                    unpacker.unpack_layer(ChunkReader::new(rx), &layer, &NoProgress, None)?;
                }
                Ok::<_, FetchError>(unpacker.stats())
            })
        };
        let mut progress = DownloadProgress::new(progress, Some(total));
        let downloaded = async {
            for layer in &layers {
                let (tx, rx) = mpsc::channel(QUEUE);
                layer_tx
                    .send((layer.clone(), rx))
                    .await
                    .map_err(|_| Stop::ReceiverGone)?;
                self.stream_layer(layer, &tx, cancel, &mut progress).await?;
            }
            Ok::<(), Stop>(())
        }
        .await;
        drop(layer_tx);
        let unpacked = worker.await.map_err(|source| FetchError::TaskFailed {
            what: format!("unpacking {}", self.what),
            source,
        })?;
        finish(downloaded, unpacked)
    }

    async fn stream_layer(
        &self,
        layer: &Descriptor,
        tx: &mpsc::Sender<Msg>,
        cancel: &Cancel,
        progress: &mut DownloadProgress,
    ) -> Result<u64, Stop> {
        let what = format!("layer {} of {}", layer.digest, self.what);
        let cx = self.session.cx.for_what(what.clone());
        let spec = BlobSpec {
            what: &what,
            size: Some(layer.size),
            is_end_check,
        };
        let digest = layer.digest.to_string();
        let size = layer.size;
        let open = |offset: u64| -> BoxFut<Result<Body, Failure>> {
            let (client, reference, digest, cx, auth) = (
                self.session.client.clone(),
                self.reference.clone(),
                digest.clone(),
                cx.clone(),
                self.session.auth.clone(),
            );
            Box::pin(async move {
                // Registers the credentials for the host (a no-op after the first request).
                client
                    .store_auth_if_needed(reference.resolve_registry(), &auth)
                    .await;
                match client
                    .pull_blob_stream_partial(&reference, digest.as_str(), offset, None)
                    .await
                {
                    Ok(BlobResponse::Full(s)) => Ok(Body {
                        start: 0,
                        stream: s.stream,
                    }),
                    Ok(BlobResponse::Partial(s)) => {
                        if let Some(len) = s.content_length
                            && len != size.saturating_sub(offset)
                        {
                            return Err(Failure::permanent(FetchError::Remote {
                                what: cx.what.clone(),
                                problem: RemoteProblem::Protocol {
                                    detail: format!(
                                        "asked for bytes {offset}- of {size}, the registry sent \
                                         {len} bytes"
                                    ),
                                },
                                source: None,
                            }));
                        }
                        Ok(Body {
                            start: offset,
                            stream: s.stream,
                        })
                    }
                    Err(e) => Err(classify(e, &cx)),
                }
            })
        };
        stream_resumable(&spec, open, tx, &self.session.retry, cancel, progress).await
    }
}

/// Combines the outcome of a download and of the unpacker it fed: the download's own
/// failure wins (the unpacker then only saw its input stop), else the unpacker's.
pub(crate) fn finish(
    downloaded: Result<(), Stop>,
    unpacked: Result<UnpackStats, FetchError>,
) -> Result<UnpackStats, FetchError> {
    match (downloaded, unpacked) {
        (Err(Stop::Failed(e)), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(stats)) => Ok(stats),
        (Err(Stop::ReceiverGone), Ok(_)) => Err(FetchError::HashThread {
            what: "the unpacker stopped reading without an error".into(),
        }),
    }
}

/// Walks an index for the host platform, fetching nested indexes as `select_manifest` asks
/// for them.
async fn select(
    session: &Session,
    reference: &Reference,
    index: &ImageIndex,
    os: &str,
    arch: &str,
    what: &str,
    cancel: &Cancel,
) -> Result<Descriptor, FetchError> {
    let mut nested: BTreeMap<Digest, ImageIndex> = BTreeMap::new();
    loop {
        let mut wanted: Option<Descriptor> = None;
        let result = select_manifest(index, os, arch, what, |d| match nested.get(&d.digest) {
            Some(i) => Ok(i.clone()),
            None => {
                wanted = Some(d.clone());
                // Not an error the caller sees: the index is fetched and the walk repeated.
                Err(FetchError::Cancelled)
            }
        });
        let Some(d) = wanted else {
            return result;
        };
        let bytes = fetch_document(session, reference, &d, "index", cancel).await?;
        let idx: ImageIndex = parse_json(&bytes, &format!("index {}", d.digest))?;
        nested.insert(d.digest.clone(), idx);
    }
}

/// Fetches a document (nested index, manifest) by digest and verifies it against its
/// descriptor.
async fn fetch_document(
    session: &Session,
    reference: &Reference,
    desc: &Descriptor,
    kind: &str,
    cancel: &Cancel,
) -> Result<Vec<u8>, FetchError> {
    let what = format!("{kind} {} of {}", desc.digest, session.cx.what);
    if desc.size > MAX_JSON_BYTES {
        return Err(FetchError::BadImage {
            what,
            reason: format!(
                "{} bytes is too large for a JSON document (at most {MAX_JSON_BYTES})",
                desc.size
            ),
        });
    }
    let by_digest = reference.clone_with_digest(desc.digest.to_string());
    let body = session.manifest(&by_digest, what, cancel).await?;
    read_verified(&body[..], desc, cancel)
}

/// What [`push_layout`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// `oci://host/repo:tag`.
    pub reference: String,
    /// The digest the tag now names (the layout's `index.json`).
    pub index_digest: Digest,
    /// The manifests pushed, in the index's order.
    pub manifests: Vec<Digest>,
    /// Blobs uploaded.
    pub blobs_pushed: usize,
    /// Blobs the registry already had.
    pub blobs_present: usize,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
}

/// Pushes the OCI image layout at `layout` to `target` (`host[:port]/repo:tag`): every
/// blob the registry lacks (streamed from its file, never read whole into memory), then
/// each manifest by digest, then the layout's `index.json` under the tag. Digests are the
/// layout's: the tag names exactly the index of the layout.
///
/// Blobs and documents are verified against their descriptors as they are read; the
/// registry checks each upload's digest. Transient failures are retried as for pulls.
///
/// # Errors
/// [`FetchError::BadSettings`] for a target without a tag or with a digest;
/// [`FetchError::NotALayout`], [`FetchError::MissingBlob`], digest mismatches of the layout;
/// [`FetchError::Remote`] for the registry's refusals (401, 403, ...) and network failures.
pub async fn push_layout(
    settings: &RegistrySettings,
    layout: &Path,
    target: &OciReference,
    cancel: &Cancel,
) -> Result<PushedImage, FetchError> {
    let Some(tag) = target.tag.clone() else {
        return Err(FetchError::BadSettings {
            reason: format!(
                "cannot push to oci://{target}: a tag is required (oci://host/repo:tag)"
            ),
        });
    };
    if target.digest.is_some() {
        return Err(FetchError::BadSettings {
            reason: format!(
                "cannot push to oci://{target}: a digest names existing content; push to a tag"
            ),
        });
    }
    let what = format!("oci://{target}");
    let session = Session::open(settings, &target.registry, what.clone())?;
    let index_bytes = read_layout_file(layout, "index.json")?;
    let index: ImageIndex = parse_json(
        &index_bytes,
        &layout.join("index.json").display().to_string(),
    )?;
    let tagged = Reference::with_tag(target.registry.clone(), target.repository.clone(), tag);
    let mut pusher = Pusher {
        session: &session,
        reference: &tagged,
        layout,
        cancel,
        pushed: PushedImage {
            reference: what.clone(),
            index_digest: Digest::of(&index_bytes),
            manifests: Vec::new(),
            blobs_pushed: 0,
            blobs_present: 0,
            bytes_pushed: 0,
        },
    };
    for entry in &index.manifests {
        pusher.push_entry(entry, true).await?;
    }
    let index_type = index
        .media_type
        .clone()
        .unwrap_or_else(|| media_type::OCI_INDEX.to_owned());
    pusher
        .put_manifest(&tagged, Bytes::from(index_bytes), &index_type)
        .await?;
    let stored = pusher.stored_digest(&tagged).await?;
    if stored != pusher.pushed.index_digest {
        return Err(FetchError::Remote {
            what,
            problem: RemoteProblem::Protocol {
                detail: format!(
                    "the registry stored the index as {stored}, but the layout's index is {}",
                    pusher.pushed.index_digest
                ),
            },
            source: None,
        });
    }
    tracing::info!(
        reference = %what,
        index.digest = %pusher.pushed.index_digest,
        blobs_pushed = pusher.pushed.blobs_pushed,
        blobs_present = pusher.pushed.blobs_present,
        bytes = pusher.pushed.bytes_pushed,
        "pushed an image layout"
    );
    Ok(pusher.pushed)
}

fn read_layout_file(layout: &Path, name: &str) -> Result<Vec<u8>, FetchError> {
    let path = layout.join(name);
    let file = fs_err::File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            FetchError::NotALayout {
                path: layout.to_owned(),
                reason: format!("no {name}"),
            }
        } else {
            FetchError::Io(e)
        }
    })?;
    let mut data = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_JSON_BYTES {
        return Err(FetchError::NotALayout {
            path: layout.to_owned(),
            reason: format!("{name} is over {MAX_JSON_BYTES} bytes"),
        });
    }
    Ok(data)
}

struct Pusher<'a> {
    session: &'a Session,
    reference: &'a Reference,
    layout: &'a Path,
    cancel: &'a Cancel,
    pushed: PushedImage,
}

impl Pusher<'_> {
    /// Pushes what an index entry names: a manifest with its blobs, or (at the top level
    /// only) a nested index with its manifests.
    async fn push_entry(&mut self, entry: &Descriptor, top: bool) -> Result<(), FetchError> {
        let path = entry.digest.blob_path(self.layout);
        let file = fs_err::File::open(&path).map_err(|source| FetchError::MissingBlob {
            digest: entry.digest.clone(),
            path: path.clone(),
            source,
        })?;
        let bytes = read_verified(file, entry, self.cancel)?;
        let by_digest = self.reference.clone_with_digest(entry.digest.to_string());
        match entry.media_type.as_str() {
            media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => {
                let manifest: ImageManifest =
                    parse_json(&bytes, &format!("manifest {}", entry.digest))?;
                for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                    self.push_blob(blob).await?;
                }
                self.put_manifest(&by_digest, Bytes::from(bytes), &entry.media_type)
                    .await?;
                self.pushed.manifests.push(entry.digest.clone());
            }
            media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST if top => {
                let nested: ImageIndex = parse_json(&bytes, &format!("index {}", entry.digest))?;
                for m in &nested.manifests {
                    Box::pin(self.push_entry(m, false)).await?;
                }
                self.put_manifest(&by_digest, Bytes::from(bytes), &entry.media_type)
                    .await?;
            }
            other => {
                return Err(FetchError::BadImage {
                    what: format!("index entry {}", entry.digest),
                    reason: format!("cannot push an entry of media type {other:?}"),
                });
            }
        }
        Ok(())
    }

    async fn push_blob(&mut self, blob: &Descriptor) -> Result<(), FetchError> {
        let path = blob.digest.blob_path(self.layout);
        let meta = fs_err::metadata(&path).map_err(|source| FetchError::MissingBlob {
            digest: blob.digest.clone(),
            path: path.clone(),
            source,
        })?;
        if meta.len() != blob.size {
            return Err(FetchError::SizeMismatch {
                what: format!("blob {} in {}", blob.digest, self.layout.display()),
                expected: blob.size,
                actual: crate::SizeSeen::Exactly(meta.len()),
            });
        }
        let what = format!("pushing blob {} to {}", blob.digest, self.session.cx.what);
        let cx = self.session.cx.for_what(what.clone());
        let digest = blob.digest.to_string();
        let exists = self
            .session
            .call(self.cancel, &cx, self.reference, |client, _, reference| {
                let digest = digest.clone();
                async move { client.blob_exists(&reference, &digest).await }
            })
            .await?;
        if exists {
            self.pushed.blobs_present += 1;
            return Ok(());
        }
        let size = blob.size;
        self.session
            .call(self.cancel, &cx, self.reference, |client, _, reference| {
                let (digest, path) = (digest.clone(), path.clone());
                async move {
                    client
                        .push_blob_stream(&reference, file_stream(path), &digest, Some(size))
                        .await
                        .map(|_url| ())
                }
            })
            .await?;
        self.pushed.blobs_pushed += 1;
        self.pushed.bytes_pushed += size;
        Ok(())
    }

    async fn put_manifest(
        &self,
        reference: &Reference,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), FetchError> {
        let what = format!(
            "pushing manifest {} to {}",
            reference.digest().or(reference.tag()).unwrap_or_default(),
            self.session.cx.what
        );
        let cx = self.session.cx.for_what(what.clone());
        let header = reqwest::header::HeaderValue::from_str(content_type).map_err(|_| {
            FetchError::BadImage {
                what: what.clone(),
                reason: format!("invalid media type {content_type:?}"),
            }
        })?;
        self.session
            .call(self.cancel, &cx, reference, |client, _, reference| {
                let (body, header) = (body.clone(), header.clone());
                async move {
                    client
                        .push_manifest_raw(&reference, body, header)
                        .await
                        .map(|_url| ())
                }
            })
            .await
    }

    /// The digest the registry serves for a reference.
    async fn stored_digest(&self, reference: &Reference) -> Result<Digest, FetchError> {
        let cx = self.session.cx.clone();
        let stored = self
            .session
            .call(
                self.cancel,
                &cx,
                reference,
                |client, auth, reference| async move {
                    client.fetch_manifest_digest(&reference, &auth).await
                },
            )
            .await?;
        Digest::parse(&stored)
    }
}

/// A file's bytes as a stream of 1 MiB chunks, read on a blocking thread.
fn file_stream(
    path: PathBuf,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<oci_client::errors::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = match fs_err::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                // The receiver reports the failure; if it is gone the push already failed.
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        loop {
            let mut buf = BytesMut::zeroed(1 << 20);
            let mut n = 0;
            while n < buf.len() {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // As above: a gone receiver means the push already failed.
                        let _ = tx.blocking_send(Err(e.into()));
                        return;
                    }
                }
            }
            if n == 0 {
                return;
            }
            buf.truncate(n);
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_config() {
        let mut c = RegistryConfig {
            insecure_hosts: vec!["127.0.0.1:5000".into()],
            mirror: Some(String::new()),
            username: Some("u".into()),
            password_file: Some("/p".into()),
            ..RegistryConfig::default()
        };
        c.auths.insert(
            "ghcr.io".into(),
            outpost_types::config::RegistryLogin {
                username: Some("g".into()),
                password_file: Some("/g".into()),
            },
        );
        let s = RegistrySettings::from_config(&c);
        assert!(s.is_insecure("127.0.0.1:5000"));
        assert!(!s.is_insecure("127.0.0.1"));
        assert_eq!(s.mirror, None, "an empty mirror is no mirror");
        assert_eq!(s.pull_host("a.io"), "a.io");
        assert_eq!(s.login_for("ghcr.io").username.as_deref(), Some("g"));
        assert_eq!(s.login_for("other.io").username.as_deref(), Some("u"));
    }

    #[test]
    fn credentials_are_read_with_one_newline_stripped_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        fs_err::write(&file, "s3cret\n\n").unwrap();
        let mut s = RegistrySettings::default();
        s.auths.insert(
            "h:1".into(),
            Login {
                username: Some("me".into()),
                password_file: Some(file.clone()),
            },
        );
        let c = s.credentials("h:1").unwrap();
        let Credentials::Basic { username, password } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(username, "me");
        assert_eq!(password.0, "s3cret\n");
        assert!(!format!("{c:?}").contains("s3cret"));
        fs_err::write(&file, "crlf\r\n").unwrap();
        let Credentials::Basic { password, .. } = s.credentials("h:1").unwrap() else {
            panic!()
        };
        assert_eq!(password.0, "crlf");
        assert!(matches!(
            s.credentials("other").unwrap(),
            Credentials::Anonymous
        ));
    }

    #[test]
    fn incomplete_or_unreadable_credentials_are_refused() {
        let mut s = RegistrySettings {
            default_login: Login {
                username: Some("me".into()),
                password_file: None,
            },
            ..RegistrySettings::default()
        };
        let err = s.credentials("x").unwrap_err();
        assert!(
            err.to_string()
                .contains("registry has a username but no password_file"),
            "{err}"
        );
        s.auths.insert(
            "h".into(),
            Login {
                username: None,
                password_file: Some("/nonexistent/pass".into()),
            },
        );
        let err = s.credentials("h").unwrap_err();
        assert!(
            err.to_string()
                .contains("registry.auths.\"h\" has a password_file but no username"),
            "{err}"
        );
        s.auths.insert(
            "h".into(),
            Login {
                username: Some("u".into()),
                password_file: Some("/nonexistent/pass".into()),
            },
        );
        let err = s.credentials("h").unwrap_err();
        assert!(matches!(err, FetchError::Credentials { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/pass"), "{err}");
        assert_eq!(err.code(), outpost_types::ErrorCode::DownloadFailed);
    }

    fn cx() -> ReqCtx {
        ReqCtx {
            what: "oci://h/r:1".into(),
            host: "h".into(),
            username: Some("me".into()),
            insecure: false,
        }
    }

    #[test]
    fn registry_errors_are_classified() {
        let envelope = |code: &str| OciDistributionError::RegistryError {
            envelope: serde_json::from_str(&format!(
                r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#
            ))
            .unwrap(),
            url: "http://h/v2/r/manifests/1".into(),
        };
        let f = classify(envelope("MANIFEST_UNKNOWN"), &cx());
        assert!(!f.transient);
        assert_eq!(
            f.error
                .to_string()
                .split(": Registry error")
                .next()
                .unwrap(),
            "oci://h/r:1: not found (HTTP 404): MANIFEST_UNKNOWN: m"
        );
        let f = classify(envelope("TOOMANYREQUESTS"), &cx());
        assert!(f.transient);
        let f = classify(envelope("DENIED"), &cx());
        assert!(!f.transient);
        assert!(f.error.to_string().contains("HTTP 403"), "{}", f.error);
        let f = classify(
            OciDistributionError::UnauthorizedError {
                url: "http://h/v2/".into(),
            },
            &cx(),
        );
        assert!(!f.transient);
        assert!(
            f.error
                .to_string()
                .contains("refused the credentials of user \"me\""),
            "{}",
            f.error
        );
        for (code, transient) in [(500, true), (503, true), (429, true), (400, false)] {
            let f = classify(
                OciDistributionError::ServerError {
                    code,
                    url: "u".into(),
                    message: "<html>\nbody".into(),
                },
                &cx(),
            );
            assert_eq!(f.transient, transient, "{code}");
            assert!(
                f.error
                    .to_string()
                    .contains(&format!("HTTP {code}: <html>")),
                "{}",
                f.error
            );
            assert_eq!(
                f.error.code(),
                outpost_types::ErrorCode::DownloadFailed,
                "{code}"
            );
        }
        let a = Digest::of(b"a").to_string();
        let b = Digest::of(b"b").to_string();
        let f = classify(
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected: a,
                actual: b,
            }),
            &cx(),
        );
        assert!(!f.transient);
        assert_eq!(f.error.code(), outpost_types::ErrorCode::Integrity);
    }

    #[test]
    fn references_prefer_the_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciReference::parse(&format!("h:5/a/b:1@{d}")).unwrap();
        let c = client_reference("m:6", &r);
        assert_eq!(c.resolve_registry(), "m:6");
        assert_eq!(c.repository(), "a/b");
        assert_eq!(c.digest(), Some(d.as_str()));
        assert_eq!(c.tag(), None);
        assert_eq!(
            describe(&r, "m:6"),
            format!("oci://h:5/a/b:1@{d} (through the mirror m:6)")
        );
        let r = OciReference::parse("h:5/a:2").unwrap();
        assert_eq!(client_reference("h:5", &r).tag(), Some("2"));
        assert_eq!(describe(&r, "h:5"), "oci://h:5/a:2");
    }

    #[test]
    fn short_messages() {
        assert_eq!(short(""), "(no message)");
        assert_eq!(short("one\ntwo"), "one");
        assert_eq!(short(&"x".repeat(300)).len(), 203);
    }
}
