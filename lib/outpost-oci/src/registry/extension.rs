//! Extension layers fetched from a registry ([`crate::extension`]).

use super::*;

impl RegistryImage {
    /// Downloads the extension layer `layer` of this image and unpacks it into `dest` (an
    /// existing, empty directory), verifying it while it streams, with the retries and stall
    /// timeout of payload layers.
    ///
    /// # Errors
    /// Those of [`RegistryImage::unpack`] for one layer, and of
    /// [`crate::extension::unpack_layer`].
    pub async fn unpack_extension(
        &self,
        layer: &Descriptor,
        dest: &Path,
        limits: &Limits,
        cancel: &Cancel,
    ) -> Result<UnpackStats, OciError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = {
            let (layer, dest, limits, cancel) =
                (layer.clone(), dest.to_owned(), *limits, cancel.clone());
            tokio::task::spawn_blocking(move || {
                crate::extension::unpack_layer(
                    ChunkReader::new(rx),
                    &layer,
                    &dest,
                    &limits,
                    &cancel,
                )
            })
        };
        let mut progress = DownloadProgress::new(Arc::new(NoProgress), Some(layer.size));
        let downloaded = self
            .stream_layer(layer, &tx, cancel, &mut progress)
            .await
            .map(|_| ());
        drop(tx);
        let unpacked = worker.await.map_err(|source| OciError::TaskFailed {
            what: format!("unpacking an extension of {}", self.what),
            source,
        })?;
        finish(downloaded, unpacked)
    }
}
