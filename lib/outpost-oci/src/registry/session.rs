//! A connection to one registry with its credentials, through which every request goes.

use super::*;

/// The manifest media types asked for.
pub(super) const ACCEPT: [&str; 4] = [
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST_LIST,
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
];

/// A connection to one registry with its credentials.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) auth: RegistryAuth,
    pub(super) cx: ReqCtx,
    pub(super) retry: RetryPolicy,
    /// `registry.stall_timeout`.
    pub(super) stall_timeout: Duration,
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
    pub(super) fn open(
        settings: &RegistrySettings,
        host: &str,
        what: String,
    ) -> Result<Self, OciError> {
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
            stall_timeout: settings.stall_timeout,
        })
    }

    /// Fetches a manifest or index document, retrying transient failures.
    pub(super) async fn manifest(
        &self,
        reference: &Reference,
        what: String,
        cancel: &Cancel,
    ) -> Result<Bytes, OciError> {
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
    pub(super) async fn call<T, Fut>(
        &self,
        cancel: &Cancel,
        cx: &ReqCtx,
        reference: &Reference,
        op: impl Fn(Client, RegistryAuth, Reference) -> Fut,
    ) -> Result<T, OciError>
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
pub(super) fn client_reference(host: &str, r: &OciReference) -> Reference {
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
pub(super) fn describe(r: &OciReference, host: &str) -> String {
    if host == r.registry {
        format!("oci://{r}")
    } else {
        format!("oci://{r} (through the mirror {host})")
    }
}
