//! Pushing an image layout: blobs the registry lacks, then manifests, then the index.

use super::*;

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
/// [`OciError::BadSettings`] for a target without a tag or with a digest;
/// [`OciError::NotALayout`], [`OciError::MissingBlob`], digest mismatches of the layout;
/// [`OciError::Remote`] for the registry's refusals (401, 403, ...) and network failures.
pub async fn push_layout(
    settings: &RegistrySettings,
    layout: &Path,
    target: &OciReference,
    cancel: &Cancel,
) -> Result<PushedImage, OciError> {
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
        return Err(OciError::Remote {
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

pub(super) fn read_layout_file(layout: &Path, name: &str) -> Result<Vec<u8>, OciError> {
    let path = layout.join(name);
    let file = fs_err::File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OciError::NotALayout {
                path: layout.to_owned(),
                reason: format!("no {name}"),
            }
        } else {
            OciError::Io(e)
        }
    })?;
    let mut data = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_JSON_BYTES {
        return Err(OciError::NotALayout {
            path: layout.to_owned(),
            reason: format!("{name} is over {MAX_JSON_BYTES} bytes"),
        });
    }
    Ok(data)
}

pub(super) struct Pusher<'a> {
    pub(super) session: &'a Session,
    pub(super) reference: &'a Reference,
    pub(super) layout: &'a Path,
    pub(super) cancel: &'a Cancel,
    pub(super) pushed: PushedImage,
}

impl Pusher<'_> {
    /// Pushes what an index entry names: a manifest with its blobs, or (at the top level
    /// only) a nested index with its manifests.
    pub(super) async fn push_entry(
        &mut self,
        entry: &Descriptor,
        top: bool,
    ) -> Result<(), OciError> {
        let path = entry.digest.blob_path(self.layout);
        let file = fs_err::File::open(&path).map_err(|source| OciError::MissingBlob {
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
                return Err(OciError::BadImage {
                    what: format!("index entry {}", entry.digest),
                    reason: format!("cannot push an entry of media type {other:?}"),
                });
            }
        }
        Ok(())
    }

    pub(super) async fn push_blob(&mut self, blob: &Descriptor) -> Result<(), OciError> {
        let path = blob.digest.blob_path(self.layout);
        let meta = fs_err::metadata(&path).map_err(|source| OciError::MissingBlob {
            digest: blob.digest.clone(),
            path: path.clone(),
            source,
        })?;
        if meta.len() != blob.size {
            return Err(ArchiveError::SizeMismatch {
                what: format!("blob {} in {}", blob.digest, self.layout.display()),
                expected: blob.size,
                actual: outpost_archive::SizeSeen::Exactly(meta.len()),
            }
            .into());
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

    pub(super) async fn put_manifest(
        &self,
        reference: &Reference,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), OciError> {
        let what = format!(
            "pushing manifest {} to {}",
            reference.digest().or(reference.tag()).unwrap_or_default(),
            self.session.cx.what
        );
        let cx = self.session.cx.for_what(what.clone());
        let header = reqwest::header::HeaderValue::from_str(content_type).map_err(|_| {
            OciError::BadImage {
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
    pub(super) async fn stored_digest(&self, reference: &Reference) -> Result<Digest, OciError> {
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
        Ok(Digest::parse(&stored)?)
    }
}

/// A file's bytes as a stream of 1 MiB chunks, read on a blocking thread.
pub(super) fn file_stream(
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
