//! OCI image layouts on disk (`file:///path`): a directory holding `oci-layout`,
//! `index.json` and `blobs/sha256/<hex>`.
//!
//! Every blob read (nested index, manifest, config, layers) is checked against its
//! descriptor's digest and size while it streams, and each payload layer's decompressed
//! stream against its entry in the config's `rootfs.diff_ids` (see [`layer_diff_ids`]).
//! Blob paths are built from validated digests only, never from a path in a JSON document. `index.json` itself is the root of trust of a layout and
//! has no digest to check.

use std::io::Read;
use std::path::{Path, PathBuf};

use outpost_types::{PackageName, Version};
use serde::Deserialize;

use outpost_archive::ArchiveError;
use outpost_archive::{Cancel, Limits, Progress};

use crate::error::OciError;
use crate::oci::{
    Descriptor, ImageIndex, ImageManifest, ImageMeta, LayerUnpacker, MAX_JSON_BYTES, PackageMeta,
    layer_diff_ids, parse_json, read_verified, select_manifest,
};
use outpost_archive::Digest;

/// The image of a layout chosen for the host: its manifest and what it says.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// The index entry (or nested index entry) of the chosen manifest.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Name, version and size from the manifest's annotations.
    pub meta: ImageMeta,
    /// The uncompressed digest of each payload layer, in order, from the verified config
    /// ([`layer_diff_ids`]); `None` when the config does not list them.
    pub diff_ids: Vec<Option<Digest>>,
}

impl LayoutImage {
    /// The payload layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifest.payload_layers()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayoutFile {
    image_layout_version: String,
}

fn not_a_layout(dir: &Path, reason: impl Into<String>) -> OciError {
    OciError::NotALayout {
        path: dir.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a small top-level file of the layout (`oci-layout`, `index.json`).
fn read_small(dir: &Path, name: &str) -> Result<Vec<u8>, OciError> {
    let path = dir.join(name);
    let file = match fs_err::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_a_layout(dir, format!("no {name}")));
        }
        Err(source) => {
            return Err(ArchiveError::Read {
                what: path.display().to_string(),
                source,
            }
            .into());
        }
    };
    let mut data = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|source| ArchiveError::Read {
            what: path.display().to_string(),
            source,
        })?;
    if data.len() as u64 > MAX_JSON_BYTES {
        return Err(not_a_layout(
            dir,
            format!("{name} is over {MAX_JSON_BYTES} bytes"),
        ));
    }
    Ok(data)
}

fn open_blob(dir: &Path, desc: &Descriptor) -> Result<fs_err::File, OciError> {
    let path = desc.digest.blob_path(dir);
    fs_err::File::open(&path).map_err(|source| OciError::MissingBlob {
        digest: desc.digest.clone(),
        path,
        source,
    })
}

fn read_json_blob<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    desc: &Descriptor,
    cancel: &Cancel,
) -> Result<T, OciError> {
    let data = read_verified(open_blob(dir, desc)?, desc, cancel)?;
    parse_json(&data, &format!("blob {}", desc.digest))
}

/// Reads the layout at `dir` and chooses the image for the host platform
/// ([`outpost_types::platform::host_os`]/[`host_arch`](outpost_types::platform::host_arch)).
///
/// # Errors
/// [`OciError::NotALayout`] without `oci-layout` (version 1.0.0) or `index.json`;
/// [`OciError::NoMatchingImage`]; [`OciError::MissingBlob`]; digest or size mismatch of
/// a nested index, the manifest or the config; [`OciError::ConfigMismatch`] for a config
/// whose `rootfs.diff_ids` do not describe the manifest's layers; [`OciError::Json`] for a document that does not parse;
/// the annotation errors of [`ImageMeta::from_manifest`].
pub fn read(dir: &Path) -> Result<LayoutImage, OciError> {
    read_for(
        dir,
        outpost_types::platform::host_os(),
        outpost_types::platform::host_arch(),
        &Cancel::new(),
    )
}

fn read_for(dir: &Path, os: &str, arch: &str, cancel: &Cancel) -> Result<LayoutImage, OciError> {
    let marker: OciLayoutFile = parse_json(
        &read_small(dir, "oci-layout")?,
        &dir.join("oci-layout").display().to_string(),
    )?;
    if marker.image_layout_version != "1.0.0" {
        return Err(not_a_layout(
            dir,
            format!(
                "unsupported imageLayoutVersion {:?} (1.0.0 is supported)",
                marker.image_layout_version
            ),
        ));
    }
    let index: ImageIndex = parse_json(
        &read_small(dir, "index.json")?,
        &dir.join("index.json").display().to_string(),
    )?;
    let origin = format!("layout {}", dir.display());
    let descriptor = select_manifest(&index, os, arch, &origin, |d| {
        read_json_blob(dir, d, cancel)
    })?;
    let manifest: ImageManifest = read_json_blob(dir, &descriptor, cancel)?;
    let meta = ImageMeta::from_manifest(&manifest, &descriptor.digest)?;
    let config = read_verified(open_blob(dir, &manifest.config)?, &manifest.config, cancel)?;
    let diff_ids = layer_diff_ids(&manifest, &config)?;
    Ok(LayoutImage {
        dir: dir.to_owned(),
        descriptor,
        manifest,
        meta,
        diff_ids,
    })
}

/// Unpacks the package `want_name` `want_version` from the layout at `dir` into `dest`, an
/// existing empty directory.
///
/// The image is chosen as [`read`] does; its annotations must name the package and version
/// asked for. The payload layers are then unpacked in order (see [`LayerUnpacker`]), each
/// verified against its digest and size while it streams, and its decompressed stream
/// against the config's `rootfs.diff_ids`. Progress counts layer bytes read
/// out of the sum of the payload layers' sizes. On error `dest` holds a partial tree that
/// the caller must discard.
///
/// # Errors
/// Those of [`read`]; [`OciError::PackageMismatch`]; every unpacking error
/// ([`ArchiveError::UnsafeEntry`] naming the entry, also for a file present in two layers).
pub fn unpack(
    dir: &Path,
    want_name: &PackageName,
    want_version: &Version,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<PackageMeta, OciError> {
    let image = read_for(
        dir,
        outpost_types::platform::host_os(),
        outpost_types::platform::host_arch(),
        cancel,
    )?;
    image.meta.expect(want_name, want_version)?;
    let total: u64 = image.layers().map(|l| l.size).sum();
    let mut unpacker = LayerUnpacker::new(dest, limits, cancel)?;
    for (layer, diff_id) in image.layers().zip(&image.diff_ids) {
        let blob = open_blob(dir, layer)?;
        unpacker.unpack_layer(blob, layer, diff_id.as_ref(), progress, Some(total))?;
    }
    let stats = unpacker.stats();
    tracing::info!(
        package.name = %image.meta.name,
        package.version = %image.meta.version,
        manifest.digest = %image.descriptor.digest,
        files = stats.files,
        bytes = stats.bytes,
        "unpacked an OCI layout"
    );
    Ok(PackageMeta {
        name: image.meta.name,
        version: image.meta.version,
        size: image.meta.size,
        manifest_digest: image.descriptor.digest,
        stats,
    })
}
