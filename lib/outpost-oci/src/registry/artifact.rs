//! OCI artifacts of a few small blobs (a fleet's desired-state document and its signature):
//! polling one by its manifest digest, and pushing one.
//!
//! # Polling
//! [`ArtifactSource`] keeps one HTTP client and the authorization the registry asked for, so
//! that a poll of an artifact that did not change costs **exactly one request**: a `HEAD` of the
//! manifest, whose `Docker-Content-Digest` is compared with the digest of the artifact already
//! held. Only a new digest fetches the manifest (by digest, verified) and its blobs (verified
//! against their descriptors, at most `max_blob` bytes each). The first request to a registry
//! that wants a token or basic credentials costs the challenge's round trip once; the
//! authorization is then sent up front until the registry refuses it again.
//!
//! Failures follow the one retry rule of [`crate::transfer`]: network failures, 5xx, 408 and
//! 429 are retried with backoff; 401, 403, 404 fail at once.
//!
//! # Pushing
//! [`push_artifact`] uploads the blobs the registry lacks, an empty config
//! (`application/vnd.oci.empty.v1+json`), then an OCI image manifest with an `artifactType`
//! under the tag, and checks that the tag names the manifest it pushed.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::push::Pusher;
use super::settings::Credentials;
use super::*;
use crate::transfer::{Classified, Failure, USER_AGENT, is_retryable_status};

/// Media type of the empty config blob of an artifact.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config blob: `{}`.
const EMPTY_CONFIG: &[u8] = b"{}";

/// One blob of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBlob {
    /// The blob's media type (from the manifest's layer descriptor).
    pub media_type: String,
    /// Its bytes, verified against the descriptor's digest and size.
    pub bytes: Vec<u8>,
}

/// An artifact fetched from a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The digest of its manifest.
    pub digest: Digest,
    /// The manifest's `artifactType`, when it has one.
    pub artifact_type: Option<String>,
    /// The layers, in the manifest's order.
    pub blobs: Vec<ArtifactBlob>,
}

impl Artifact {
    /// The bytes of the first blob of `media_type`.
    pub fn blob(&self, media_type: &str) -> Option<&[u8]> {
        self.blobs
            .iter()
            .find(|b| b.media_type == media_type)
            .map(|b| b.bytes.as_slice())
    }
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactPoll {
    /// The reference still names the manifest already held: nothing was downloaded.
    Unchanged {
        /// The digest, as the registry gave it.
        digest: Digest,
    },
    /// The reference names another manifest, fetched whole.
    Changed(Artifact),
}

/// A manifest as an artifact needs it: the layers and the artifact type.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// A source of one artifact (`oci://host[:port]/repo:tag` or `...@sha256:...`), polled again
/// and again. Cheap to keep for the life of a poller; not meant to be cloned per request.
pub struct ArtifactSource {
    reference: OciReference,
    host: String,
    base: String,
    reference_part: String,
    http: reqwest::Client,
    credentials: Credentials,
    insecure: bool,
    retry: RetryPolicy,
    what: String,
    /// The `Authorization` header the registry last accepted (a bearer token or basic).
    authorization: Arc<tokio::sync::Mutex<Option<HeaderValue>>>,
}

impl std::fmt::Debug for ArtifactSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactSource")
            .field("reference", &self.what)
            .finish_non_exhaustive()
    }
}

impl ArtifactSource {
    /// A source for `reference`, reached through `settings` (insecure hosts, credentials,
    /// mirror, timeouts). The password file is read here, once per source.
    ///
    /// # Errors
    /// [`OciError::BadSettings`] / [`OciError::Credentials`] for the credentials,
    /// [`OciError::Remote`] when the HTTP client cannot be built.
    pub fn new(settings: &RegistrySettings, reference: &OciReference) -> Result<Self, OciError> {
        let host = settings.pull_host(&reference.registry).to_owned();
        let what = describe(reference, &host);
        let credentials = settings.credentials(&host)?;
        let insecure = settings.is_insecure(&host);
        crate::tls::ensure_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.stall_timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| OciError::Remote {
                what: what.clone(),
                problem: RemoteProblem::Protocol {
                    detail: "the HTTP client cannot be set up".into(),
                },
                source: Some(Box::new(e)),
            })?;
        let scheme = if insecure { "http" } else { "https" };
        let reference_part = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        };
        Ok(Self {
            base: format!("{scheme}://{host}/v2/{}", reference.repository),
            reference: reference.clone(),
            host,
            reference_part,
            http,
            credentials,
            insecure,
            retry: settings.retry,
            what,
            authorization: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// The reference polled, as `oci://host/repo:tag`.
    pub fn reference(&self) -> &OciReference {
        &self.reference
    }

    /// Polls the artifact: one `HEAD` of the manifest; when its digest is `known`, that is all
    /// ([`ArtifactPoll::Unchanged`]). Otherwise the manifest is fetched by digest and verified,
    /// then every layer (each at most `max_blob` bytes, verified against its descriptor).
    ///
    /// # Errors
    /// [`OciError::Remote`] for the registry's refusals and network failures (after the
    /// retries), [`OciError::BadImage`] for a manifest that is not one or a layer over
    /// `max_blob`, an integrity error for content that does not match its digest.
    pub async fn poll(
        &self,
        known: Option<&Digest>,
        max_blob: u64,
        cancel: &Cancel,
    ) -> Result<ArtifactPoll, OciError> {
        let manifest_url = format!("{}/manifests/{}", self.base, self.reference_part);
        let head = self
            .request(Method::HEAD, &manifest_url, true, 0, cancel)
            .await?;
        let digest = match head.digest {
            Some(d) => d,
            None => {
                // A registry that does not say the digest on HEAD: the manifest's own bytes.
                let got = self
                    .request(Method::GET, &manifest_url, true, MAX_JSON_BYTES, cancel)
                    .await?;
                Digest::of(&got.body)
            }
        };
        if let Some(want) = &self.reference.digest {
            let want = Digest::parse(want)?;
            if want != digest {
                return Err(ArchiveError::DigestMismatch {
                    what: format!("manifest of {}", self.what),
                    expected: want,
                    actual: digest,
                }
                .into());
            }
        }
        if known == Some(&digest) {
            return Ok(ArtifactPoll::Unchanged { digest });
        }
        let by_digest = format!("{}/manifests/{digest}", self.base);
        let got = self
            .request(Method::GET, &by_digest, true, MAX_JSON_BYTES, cancel)
            .await?;
        let actual = Digest::of(&got.body);
        if actual != digest {
            return Err(ArchiveError::DigestMismatch {
                what: format!("manifest of {}", self.what),
                expected: digest,
                actual,
            }
            .into());
        }
        let manifest: ArtifactManifest =
            parse_json(&got.body, &format!("manifest {digest} of {}", self.what))?;
        let mut blobs = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            if layer.size > max_blob {
                return Err(OciError::BadImage {
                    what: format!("layer {} of {}", layer.digest, self.what),
                    reason: format!(
                        "it is {} bytes, over the limit of {max_blob} bytes",
                        layer.size
                    ),
                });
            }
            let url = format!("{}/blobs/{}", self.base, layer.digest);
            let got = self
                .request(Method::GET, &url, false, layer.size, cancel)
                .await?;
            let actual = Digest::of(&got.body);
            if actual != layer.digest || got.body.len() as u64 != layer.size {
                return Err(ArchiveError::DigestMismatch {
                    what: format!("layer of {}", self.what),
                    expected: layer.digest.clone(),
                    actual,
                }
                .into());
            }
            blobs.push(ArtifactBlob {
                media_type: layer.media_type.clone(),
                bytes: got.body,
            });
        }
        Ok(ArtifactPoll::Changed(Artifact {
            digest,
            artifact_type: manifest.artifact_type,
            blobs,
        }))
    }

    /// One request with the retry rule. `limit` caps the body read (0 for `HEAD`).
    async fn request(
        &self,
        method: Method,
        url: &str,
        manifest: bool,
        limit: u64,
        cancel: &Cancel,
    ) -> Result<Answer, OciError> {
        with_retries(&self.retry, cancel, &self.what, || {
            let (method, url) = (method.clone(), url.to_owned());
            // The attempt borrows nothing: everything it needs is cloned in.
            let this = AttemptCtx {
                http: self.http.clone(),
                host: self.host.clone(),
                insecure: self.insecure,
                what: self.what.clone(),
                repository: self.reference.repository.clone(),
                credentials: self.credentials.clone(),
            };
            let auth = self.authorization.clone();
            Box::pin(async move { this.attempt(method, &url, manifest, limit, &auth).await })
        })
        .await
    }
}

/// An answer: the digest the registry named, and the body read.
struct Answer {
    digest: Option<Digest>,
    body: Vec<u8>,
}

struct AttemptCtx {
    http: reqwest::Client,
    host: String,
    insecure: bool,
    what: String,
    repository: String,
    credentials: Credentials,
}

impl AttemptCtx {
    fn remote(&self, problem: RemoteProblem) -> OciError {
        OciError::Remote {
            what: self.what.clone(),
            problem,
            source: None,
        }
    }

    fn transport(&self, e: reqwest::Error) -> Failure {
        let Classified { problem, transient } = transport_problem(&e, &self.host, self.insecure);
        Failure {
            error: OciError::Remote {
                what: self.what.clone(),
                problem,
                source: Some(Box::new(e)),
            },
            transient,
        }
    }

    async fn send(
        &self,
        method: &Method,
        url: &str,
        manifest: bool,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, Failure> {
        let mut req = self.http.request(method.clone(), url);
        if manifest {
            req = req.header(ACCEPT, ACCEPT_MANIFEST);
        }
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req.send().await.map_err(|e| self.transport(e))
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        manifest: bool,
        limit: u64,
        auth: &tokio::sync::Mutex<Option<HeaderValue>>,
    ) -> Result<Answer, Failure> {
        let held = auth.lock().await.clone();
        let mut resp = self.send(&method, url, manifest, held.as_ref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // The registry wants (new) credentials: answer its challenge, then try once more.
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let fresh = self.authorize(challenge.as_deref()).await?;
            *auth.lock().await = Some(fresh.clone());
            resp = self.send(&method, url, manifest, Some(&fresh)).await?;
        }
        let status = resp.status();
        if !status.is_success() {
            let code = status.as_u16();
            let body = if method == Method::HEAD {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            let detail = short(&body);
            let problem = match code {
                401 => RemoteProblem::Unauthorized {
                    host: self.host.clone(),
                    username: self.credentials.username(),
                },
                403 => RemoteProblem::Forbidden {
                    host: self.host.clone(),
                },
                404 => RemoteProblem::NotFound {
                    detail: if body.is_empty() {
                        format!("HTTP 404 for {url}")
                    } else {
                        detail
                    },
                },
                _ => RemoteProblem::Status {
                    status: Some(code),
                    detail,
                },
            };
            return Err(Failure::for_status(code, self.remote(problem)));
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let mut body = Vec::new();
        if method != Method::HEAD {
            if let Some(len) = resp.content_length()
                && len > limit
            {
                return Err(Failure::permanent(
                    self.remote(RemoteProblem::TooLong { size: limit }),
                ));
            }
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if (body.len() + chunk.len()) as u64 > limit {
                            return Err(Failure::permanent(
                                self.remote(RemoteProblem::TooLong { size: limit }),
                            ));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(self.transport(e)),
                }
            }
        }
        Ok(Answer { digest, body })
    }

    /// Answers a `WWW-Authenticate` challenge: a bearer token from the realm it names (with
    /// the configured credentials, if any), or basic credentials.
    async fn authorize(&self, challenge: Option<&str>) -> Result<HeaderValue, Failure> {
        let unauthorized = || {
            Failure::permanent(self.remote(RemoteProblem::Unauthorized {
                host: self.host.clone(),
                username: self.credentials.username(),
            }))
        };
        let challenge = challenge.ok_or_else(unauthorized)?;
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = |c: &Credentials| -> Option<HeaderValue> {
            let Credentials::Basic { username, password } = c else {
                return None;
            };
            use ct_codecs::Encoder as _;
            let token =
                ct_codecs::Base64::encode_to_string(format!("{username}:{}", password.0)).ok()?;
            HeaderValue::from_str(&format!("Basic {token}")).ok()
        };
        if scheme.eq_ignore_ascii_case("basic") {
            return basic(&self.credentials).ok_or_else(unauthorized);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized());
        }
        let params = challenge_params(params);
        let realm = params.get("realm").ok_or_else(unauthorized)?;
        let mut query = vec![(
            "scope".to_owned(),
            format!("repository:{}:pull", self.repository),
        )];
        if let Some(service) = params.get("service") {
            query.push(("service".to_owned(), service.clone()));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(b) = basic(&self.credentials) {
            req = req.header(AUTHORIZATION, b);
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(if is_retryable_status(status) {
                Failure::transient(self.remote(RemoteProblem::Status {
                    status: Some(status),
                    detail: "the token service failed".into(),
                }))
            } else {
                unauthorized()
            });
        }
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        let token: Token = serde_json::from_str(&text).map_err(|_| {
            Failure::permanent(self.remote(RemoteProblem::Protocol {
                detail: "the token service answered something that is not a token".into(),
            }))
        })?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(unauthorized)?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| unauthorized())
    }
}

/// The manifest types an artifact may have.
const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
                               application/vnd.docker.distribution.manifest.v2+json";

/// The `key="value"` parameters of a challenge.
fn challenge_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// What [`push_artifact`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedArtifact {
    /// `oci://host/repo:tag`.
    pub reference: String,
    /// The digest of the manifest the tag now names.
    pub digest: Digest,
}

/// Pushes an artifact of `blobs` (media type and bytes, in order) with `artifact_type` to
/// `target` (`host[:port]/repo:tag`): the blobs the registry lacks, the empty config, then the
/// manifest under the tag. The tag is checked to name the pushed manifest.
///
/// # Errors
/// [`OciError::BadSettings`] for a target without a tag or with a digest;
/// [`OciError::Remote`] for the registry's refusals and network failures.
pub async fn push_artifact(
    settings: &RegistrySettings,
    target: &OciReference,
    artifact_type: &str,
    blobs: &[(&str, &[u8])],
    cancel: &Cancel,
) -> Result<PushedArtifact, OciError> {
    let Some(tag) = target.tag.clone() else {
        return Err(OciError::BadSettings {
            reason: format!(
                "cannot push to oci://{target}: a tag is required (oci://host/repo:tag)"
            ),
        });
    };
    if target.digest.is_some() {
        return Err(OciError::BadSettings {
            reason: format!(
                "cannot push to oci://{target}: a digest names existing content; push to a tag"
            ),
        });
    }
    let what = format!("oci://{target}");
    let session = Session::open(settings, &target.registry, what.clone())?;
    let tagged = Reference::with_tag(target.registry.clone(), target.repository.clone(), tag);
    let descriptor = |media_type: &str, bytes: &[u8]| {
        serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::of(bytes).to_string(),
            "size": bytes.len(),
        })
    };
    let mut config = descriptor(EMPTY_CONFIG_MEDIA_TYPE, EMPTY_CONFIG);
    config["data"] = serde_json::Value::String("e30=".into());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": blobs.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| OciError::BadImage {
        what: what.clone(),
        reason: format!("cannot encode the manifest: {e}"),
    })?;
    for bytes in std::iter::once(EMPTY_CONFIG).chain(blobs.iter().map(|(_, b)| *b)) {
        let digest = Digest::of(bytes).to_string();
        let cx = session
            .cx
            .for_what(format!("pushing blob {digest} to {what}"));
        let exists = session
            .call(cancel, &cx, &tagged, |client, _, reference| {
                let digest = digest.clone();
                async move { client.blob_exists(&reference, &digest).await }
            })
            .await?;
        if exists {
            continue;
        }
        let data = Bytes::copy_from_slice(bytes);
        session
            .call(cancel, &cx, &tagged, |client, _, reference| {
                let (digest, data) = (digest.clone(), data.clone());
                async move {
                    client
                        .push_blob(&reference, data, &digest)
                        .await
                        .map(|_| ())
                }
            })
            .await?;
    }
    let pusher = Pusher {
        session: &session,
        reference: &tagged,
        layout: Path::new(""),
        cancel,
        pushed: PushedImage {
            reference: what.clone(),
            index_digest: Digest::of(&manifest_bytes),
            manifests: Vec::new(),
            blobs_pushed: 0,
            blobs_present: 0,
            bytes_pushed: 0,
        },
    };
    let digest = Digest::of(&manifest_bytes);
    pusher
        .put_manifest(
            &tagged,
            Bytes::from(manifest_bytes),
            media_type::OCI_MANIFEST,
        )
        .await?;
    let stored = pusher.stored_digest(&tagged).await?;
    if stored != digest {
        return Err(OciError::Remote {
            what,
            problem: RemoteProblem::Protocol {
                detail: format!(
                    "the registry stored the manifest as {stored}, but the pushed one is {digest}"
                ),
            },
            source: None,
        });
    }
    tracing::info!(reference = %what, manifest.digest = %digest, "pushed an artifact");
    Ok(PushedArtifact {
        reference: what,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters() {
        let p = challenge_params(
            r#"realm="http://127.0.0.1:5001/token",service="reg",scope="repository:a:pull""#,
        );
        assert_eq!(p["realm"], "http://127.0.0.1:5001/token");
        assert_eq!(p["service"], "reg");
        assert_eq!(p["scope"], "repository:a:pull");
        let p = challenge_params("realm=x, service=y");
        assert_eq!(p["realm"], "x");
        assert_eq!(p["service"], "y");
        assert!(challenge_params("").is_empty());
    }
}
