//! Pulling a package image: resolving the reference, choosing and verifying the manifest,
//! streaming the layers into the unpacker.

use super::*;

#[derive(Deserialize)]
pub(super) struct Sniff {
    #[serde(default)]
    pub(super) media_type: Option<String>,
    #[serde(default)]
    pub(super) manifests: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) layers: Option<serde_json::Value>,
}

/// A package image resolved in a registry: its manifest is chosen, verified and read;
/// nothing of the payload was downloaded yet.
#[derive(Debug, Clone)]
pub struct RegistryImage {
    pub(super) session: Session,
    pub(super) reference: Reference,
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
    /// [`OciError::Remote`] (unreachable registry after retries, 401, 403, 404, TLS with a
    /// host not listed as insecure); [`ArchiveError::DigestMismatch`] for a document that is
    /// not what its digest says; [`OciError::NoMatchingImage`];
    /// [`OciError::PackageMismatch`]; the annotation errors of [`ImageMeta`];
    /// [`OciError::Credentials`] / [`OciError::BadSettings`] for the credentials.
    pub async fn resolve(
        settings: &RegistrySettings,
        r: &OciReference,
        name: &PackageName,
        version: &Version,
        cancel: &Cancel,
    ) -> Result<Self, OciError> {
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

    pub(super) async fn resolve_for(
        settings: &RegistrySettings,
        r: &OciReference,
        name: &PackageName,
        version: &Version,
        os: &str,
        arch: &str,
        cancel: &Cancel,
    ) -> Result<Self, OciError> {
        let host = settings.pull_host(&r.registry).to_owned();
        let what = describe(r, &host);
        let session = Session::open(settings, &host, what.clone())?;
        let reference = client_reference(&host, r);
        let top = session.manifest(&reference, what.clone(), cancel).await?;
        if top.len() as u64 > MAX_JSON_BYTES {
            return Err(OciError::BadImage {
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
                return Err(ArchiveError::DigestMismatch {
                    what,
                    expected,
                    actual: top_digest,
                }
                .into());
            }
        }
        let sniff: Sniff = parse_json(&top, &what)?;
        let is_index = match sniff.media_type.as_deref() {
            Some(media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST) => true,
            Some(media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST) => false,
            Some(other) => {
                return Err(OciError::BadImage {
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
    /// The manifest's config blob is fetched first (streamed under the stall timeout and
    /// the size cap like a layer) and verified against its descriptor; each layer's
    /// decompressed stream is then checked against the config's `rootfs.diff_ids`
    /// ([`layer_diff_ids`](crate::oci::layer_diff_ids)).
    ///
    /// Progress is reported as [`Phase::Download`](outpost_types::wire::Phase::Download),
    /// bytes of all layers received out of their sum, at least every 100 ms while bytes
    /// arrive. On error `dest` holds a partial tree that the caller must discard.
    ///
    /// # Errors
    /// [`OciError::Remote`] after retries or for a permanent failure (a stall, a body past
    /// its size: `download_failed`); for the config, [`ArchiveError::DigestMismatch`] /
    /// [`ArchiveError::SizeMismatch`] and [`OciError::ConfigMismatch`] (`integrity`); every
    /// unpacking and integrity error of [`LayerUnpacker`]; [`ArchiveError::Cancelled`].
    pub async fn unpack(
        &self,
        dest: &Path,
        limits: &Limits,
        cancel: &Cancel,
        progress: Arc<dyn Progress>,
    ) -> Result<UnpackStats, OciError> {
        // The config first: no layer is downloaded before it is verified.
        let config = fetch_config(
            &self.session,
            &self.reference,
            &self.manifest.config,
            cancel,
        )
        .await?;
        let diff_ids = crate::oci::layer_diff_ids(&self.manifest, &config)?;
        let layers: Vec<Descriptor> = self.layers().cloned().collect();
        let total: u64 = layers.iter().map(|l| l.size).sum();
        type Next = (Descriptor, Option<Digest>, mpsc::Receiver<Msg>);
        let (layer_tx, mut layer_rx) = mpsc::channel::<Next>(1);
        let worker = {
            let (dest, limits, cancel) = (dest.to_owned(), *limits, cancel.clone());
            tokio::task::spawn_blocking(move || {
                let mut unpacker = LayerUnpacker::new(&dest, &limits, &cancel)?;
                while let Some((layer, diff_id, rx)) = layer_rx.blocking_recv() {
                    unpacker.unpack_layer(
                        ChunkReader::new(rx),
                        &layer,
                        diff_id.as_ref(),
                        &NoProgress,
                        None,
                    )?;
                }
                Ok::<_, OciError>(unpacker.stats())
            })
        };
        let mut progress = DownloadProgress::new(progress, Some(total));
        let downloaded = async {
            for (layer, diff_id) in layers.iter().zip(&diff_ids) {
                let (tx, rx) = mpsc::channel(QUEUE);
                layer_tx
                    .send((layer.clone(), diff_id.clone(), rx))
                    .await
                    .map_err(|_| Stop::ReceiverGone)?;
                self.stream_layer(layer, &tx, cancel, &mut progress).await?;
            }
            Ok::<(), Stop>(())
        }
        .await;
        drop(layer_tx);
        let unpacked = worker.await.map_err(|source| OciError::TaskFailed {
            what: format!("unpacking {}", self.what),
            source,
        })?;
        finish(downloaded, unpacked)
    }

    pub(super) async fn stream_layer(
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
            stall_timeout: self.session.stall_timeout,
            is_end_check,
        };
        let open =
            |offset: u64| open_blob(&self.session, &self.reference, layer, cx.clone(), offset);
        stream_resumable(&spec, open, tx, &self.session.retry, cancel, progress).await
    }
}

/// Walks an index for the host platform, fetching nested indexes as `select_manifest` asks
/// for them.
pub(super) async fn select(
    session: &Session,
    reference: &Reference,
    index: &ImageIndex,
    os: &str,
    arch: &str,
    what: &str,
    cancel: &Cancel,
) -> Result<Descriptor, OciError> {
    let mut nested: BTreeMap<Digest, ImageIndex> = BTreeMap::new();
    loop {
        let mut wanted: Option<Descriptor> = None;
        let result = select_manifest(index, os, arch, what, |d| match nested.get(&d.digest) {
            Some(i) => Ok(i.clone()),
            None => {
                wanted = Some(d.clone());
                // Not an error the caller sees: the index is fetched and the walk repeated.
                Err(ArchiveError::Cancelled.into())
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
pub(super) async fn fetch_document(
    session: &Session,
    reference: &Reference,
    desc: &Descriptor,
    kind: &str,
    cancel: &Cancel,
) -> Result<Vec<u8>, OciError> {
    let what = format!("{kind} {} of {}", desc.digest, session.cx.what);
    if desc.size > MAX_JSON_BYTES {
        return Err(OciError::BadImage {
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

/// Starts a request for the blob `desc` from `offset` (a range request when `offset > 0`).
pub(super) fn open_blob(
    session: &Session,
    reference: &Reference,
    desc: &Descriptor,
    cx: ReqCtx,
    offset: u64,
) -> BoxFut<Result<Body, Failure>> {
    let (client, reference, auth) = (
        session.client.clone(),
        reference.clone(),
        session.auth.clone(),
    );
    let (digest, size) = (desc.digest.to_string(), desc.size);
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
                declared: s.content_length,
                stream: s.stream,
            }),
            Ok(BlobResponse::Partial(s)) => {
                if let Some(len) = s.content_length
                    && len != size.saturating_sub(offset)
                {
                    return Err(Failure::permanent(OciError::Remote {
                        what: cx.what.clone(),
                        problem: RemoteProblem::Protocol {
                            detail: format!(
                                "asked for bytes {offset}- of {size}, the registry sent {len} bytes"
                            ),
                        },
                        source: None,
                    }));
                }
                Ok(Body {
                    start: offset,
                    declared: s.content_length,
                    stream: s.stream,
                })
            }
            Err(e) => Err(classify(e, &cx)),
        }
    })
}

/// Fetches the manifest's config blob and verifies it against its descriptor. The blob
/// streams like a layer (retried, resumed, under the stall timeout, cut off past its size),
/// into memory: its descriptor's size is bounded by [`MAX_JSON_BYTES`] first.
pub(super) async fn fetch_config(
    session: &Session,
    reference: &Reference,
    desc: &Descriptor,
    cancel: &Cancel,
) -> Result<Vec<u8>, OciError> {
    let what = format!("config {} of {}", desc.digest, session.cx.what);
    if desc.size > MAX_JSON_BYTES {
        return Err(OciError::BadImage {
            what,
            reason: format!(
                "{} bytes is too large for a JSON document (at most {MAX_JSON_BYTES})",
                desc.size
            ),
        });
    }
    let cx = session.cx.for_what(what.clone());
    let spec = BlobSpec {
        what: &what,
        size: Some(desc.size),
        stall_timeout: session.stall_timeout,
        is_end_check,
    };
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let mut progress = DownloadProgress::new(Arc::new(NoProgress), None);
    let download = async {
        let tx = tx;
        let open = |offset: u64| open_blob(session, reference, desc, cx.clone(), offset);
        stream_resumable(&spec, open, &tx, &session.retry, cancel, &mut progress).await
    };
    let collect = async {
        let mut body = Vec::new();
        while let Some(Msg::Chunk(chunk)) = rx.recv().await {
            body.extend_from_slice(&chunk);
        }
        body
    };
    let (downloaded, body) = tokio::join!(download, collect);
    match downloaded {
        Ok(_) => {}
        Err(Stop::Failed(e)) => return Err(e),
        // The receiver lives until the download ends.
        Err(Stop::ReceiverGone) => {
            return Err(ArchiveError::HashThread {
                what: format!("{what}: the reader stopped"),
            }
            .into());
        }
    }
    read_verified(&body[..], desc, cancel)
}
