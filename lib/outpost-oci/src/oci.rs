//! The parts of the OCI image format a package needs, and the rules for reading a package
//! out of an image, independent of where the image's blobs come from (a layout on disk here;
//! a registry for the network layer built on top).
//!
//! - [`select_manifest`] walks an index in order (one level of nested index) and picks the
//!   first manifest whose platform is absent or the host's.
//! - [`ImageMeta::from_manifest`] reads the package name, version and size annotations, in
//!   either key family (`com.datadoghq.package.*` or `dev.outpost.package.*`).
//! - [`LayerUnpacker`] writes the payload layers, in order, into one directory, verifying
//!   each blob's digest and size while it streams.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use outpost_types::{PackageName, Version};
use serde::{Deserialize, Deserializer, Serialize};

use outpost_archive::{
    Cancel, Compression, Digest, Expected, LayerWriter, Limits, Progress, UnpackStats,
};

use crate::error::OciError;

/// Media types outpost reads and writes.
pub mod media_type {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// A Docker manifest list (read like an OCI index).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// A Docker image manifest (read like an OCI manifest).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// An OCI image configuration.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A Docker image configuration (read like an OCI one).
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// The OCI empty descriptor's content, `{}` (the config of a platform-independent package).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// The Datadog package payload layer (zstd tar).
    pub const DATADOG_LAYER: &str = "application/vnd.datadog.package.layer.v1.tar+zstd";
    /// An OCI layer, plain tar.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// An OCI layer, gzip tar.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// An OCI layer, zstd tar.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
}

/// Annotation keys outpost reads and writes.
pub mod annotation {
    /// The package name, Datadog's key.
    pub const DATADOG_NAME: &str = "com.datadoghq.package.name";
    /// The package version, Datadog's key.
    pub const DATADOG_VERSION: &str = "com.datadoghq.package.version";
    /// The package size in bytes, Datadog's key.
    pub const DATADOG_SIZE: &str = "com.datadoghq.package.size";
    /// The package name, outpost's key.
    pub const OUTPOST_NAME: &str = "dev.outpost.package.name";
    /// The package version, outpost's key.
    pub const OUTPOST_VERSION: &str = "dev.outpost.package.version";
    /// The package size in bytes, outpost's key.
    pub const OUTPOST_SIZE: &str = "dev.outpost.package.size";
    /// The OCI reference name of an index entry (the tag).
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// How a payload layer of this media type is compressed; `None` for a layer that is not
/// payload (and is skipped).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        media_type::DATADOG_LAYER | media_type::OCI_LAYER_ZSTD => Some(Compression::Zstd),
        media_type::OCI_LAYER_GZIP => Some(Compression::Gzip),
        media_type::OCI_LAYER_TAR => Some(Compression::None),
        _ => None,
    }
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST
    )
}

fn is_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST
    )
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A content descriptor. Its digest is validated when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the content (empty when the document left it out).
    #[serde(default, deserialize_with = "null_as_default")]
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// The platform, in an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations, sorted by key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// The platform of an index entry, in Go's names (`linux`, `amd64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant (ignored when matching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// True when this platform admits the given os and architecture (an empty field admits
    /// any value; the variant is not considered).
    pub fn matches(&self, os: &str, arch: &str) -> bool {
        outpost_types::platform::matches(&self.os, os)
            && outpost_types::platform::matches(&self.architecture, arch)
    }
}

/// An image index (`index.json` of a layout, or a nested index blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    /// Annotations, sorted by key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The configuration blob.
    pub config: Descriptor,
    /// The layers, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    /// Annotations, sorted by key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// The payload layers, in order: those whose media type is one of the four tar layer
    /// types. Other layers are not outpost's to unpack.
    pub fn payload_layers(&self) -> impl Iterator<Item = &Descriptor> {
        self.layers
            .iter()
            .filter(|l| layer_compression(&l.media_type).is_some())
    }
}

/// Picks the manifest to install from an index: entries are walked in order, an entry that
/// is itself an index is opened with `open_index` and walked in turn (one level deep; deeper
/// indexes are skipped), and the first manifest whose platform is absent or admits
/// `os`/`arch` wins. An index entry whose own platform does not match is skipped whole.
///
/// # Errors
/// [`OciError::NoMatchingImage`] (`no matching image found in the index`), naming
/// `origin`; whatever `open_index` returns.
pub fn select_manifest(
    index: &ImageIndex,
    os: &str,
    arch: &str,
    origin: &str,
    mut open_index: impl FnMut(&Descriptor) -> Result<ImageIndex, OciError>,
) -> Result<Descriptor, OciError> {
    let admits = |d: &Descriptor| d.platform.as_ref().is_none_or(|p| p.matches(os, arch));
    for entry in &index.manifests {
        if !admits(entry) {
            continue;
        }
        if is_manifest(&entry.media_type) {
            return Ok(entry.clone());
        }
        if is_index(&entry.media_type) {
            let nested = open_index(entry)?;
            if let Some(found) = nested
                .manifests
                .iter()
                .find(|d| is_manifest(&d.media_type) && admits(d))
            {
                return Ok(found.clone());
            }
            continue;
        }
        tracing::debug!(
            media_type = %entry.media_type,
            digest = %entry.digest,
            "skipping an index entry that is neither a manifest nor an index"
        );
    }
    Err(OciError::NoMatchingImage {
        origin: origin.to_owned(),
        os: os.to_owned(),
        arch: arch.to_owned(),
    })
}

/// What the manifest's annotations say about the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// `com.datadoghq.package.name` or `dev.outpost.package.name`.
    pub name: PackageName,
    /// `com.datadoghq.package.version` or `dev.outpost.package.version`.
    pub version: Version,
    /// `com.datadoghq.package.size` or `dev.outpost.package.size`, when present.
    pub size: Option<u64>,
}

impl ImageMeta {
    /// Reads the annotations of the manifest whose digest is `digest`. Either key family is
    /// accepted; when both are present they must agree.
    ///
    /// # Errors
    /// [`OciError::MissingAnnotation`] when name or version is absent;
    /// [`OciError::BadImage`] for an invalid value or two families that disagree.
    pub fn from_manifest(manifest: &ImageManifest, digest: &Digest) -> Result<Self, OciError> {
        let what = format!("manifest {digest}");
        let pick = |dd: &str, op: &str| -> Result<Option<&String>, OciError> {
            match (manifest.annotations.get(dd), manifest.annotations.get(op)) {
                (Some(a), Some(b)) if a != b => Err(OciError::BadImage {
                    what: what.clone(),
                    reason: format!("annotations {dd} ({a:?}) and {op} ({b:?}) disagree"),
                }),
                (Some(a), _) | (None, Some(a)) => Ok(Some(a)),
                (None, None) => Ok(None),
            }
        };
        let missing = |field| OciError::MissingAnnotation {
            manifest: digest.clone(),
            field,
        };
        let bad = |e: outpost_types::NameError| OciError::BadImage {
            what: what.clone(),
            reason: format!("package annotation: {e}"),
        };
        let name = pick(annotation::DATADOG_NAME, annotation::OUTPOST_NAME)?
            .ok_or_else(|| missing("name"))?;
        let version = pick(annotation::DATADOG_VERSION, annotation::OUTPOST_VERSION)?
            .ok_or_else(|| missing("version"))?;
        let size = pick(annotation::DATADOG_SIZE, annotation::OUTPOST_SIZE)?
            .map(|s| {
                s.parse::<u64>().map_err(|_| OciError::BadImage {
                    what: what.clone(),
                    reason: format!("package size annotation {s:?} is not a byte count"),
                })
            })
            .transpose()?;
        Ok(Self {
            name: PackageName::new(name.as_str()).map_err(bad)?,
            version: Version::new(version.as_str()).map_err(bad)?,
            size,
        })
    }

    /// Checks that this is the package asked for.
    ///
    /// # Errors
    /// [`OciError::PackageMismatch`] naming both.
    pub fn expect(&self, name: &PackageName, version: &Version) -> Result<(), OciError> {
        if &self.name == name && &self.version == version {
            return Ok(());
        }
        Err(OciError::PackageMismatch {
            want_name: name.to_string(),
            want_version: version.to_string(),
            found_name: self.name.to_string(),
            found_version: self.version.to_string(),
        })
    }
}

/// The package an image unpack installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageMeta {
    /// From the manifest's annotations (equal to what was asked).
    pub name: PackageName,
    /// From the manifest's annotations (equal to what was asked).
    pub version: Version,
    /// The size annotation, when present.
    pub size: Option<u64>,
    /// The digest of the manifest that was used.
    pub manifest_digest: Digest,
    /// What was written.
    pub stats: UnpackStats,
}

/// What outpost reads of an image configuration: the uncompressed digests of the layers.
#[derive(Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    rootfs: Option<RootFsDoc>,
}

#[derive(Deserialize)]
struct RootFsDoc {
    #[serde(default, deserialize_with = "null_as_default")]
    diff_ids: Vec<Digest>,
}

/// The uncompressed digest each payload layer must have, in the order of
/// [`ImageManifest::payload_layers`], read from the manifest's config blob `config` (already
/// verified against the manifest's config descriptor, see [`read_verified`]).
///
/// An image configuration (`application/vnd.oci.image.config.v1+json` or Docker's) must
/// list one `rootfs.diff_ids` entry per layer of the manifest, in order; the entry of each
/// payload layer is returned. A config of any other media type (the OCI empty config `{}` of
/// a platform-independent package, an artifact's own config) says nothing of the layers:
/// every entry is then `None`.
///
/// # Errors
/// [`OciError::ConfigMismatch`] (code `integrity`) for an image configuration without
/// `rootfs.diff_ids` or with another number of entries than the manifest has layers;
/// [`OciError::Json`] when it does not parse.
pub fn layer_diff_ids(
    manifest: &ImageManifest,
    config: &[u8],
) -> Result<Vec<Option<Digest>>, OciError> {
    let payload = manifest.payload_layers().count();
    if !matches!(
        manifest.config.media_type.as_str(),
        media_type::OCI_CONFIG | media_type::DOCKER_CONFIG
    ) {
        return Ok(vec![None; payload]);
    }
    let digest = &manifest.config.digest;
    let doc: ConfigDoc = parse_json(config, &format!("config {digest}"))?;
    let mismatch = |reason: String| OciError::ConfigMismatch {
        config: digest.clone(),
        reason,
    };
    let diff_ids = doc
        .rootfs
        .ok_or_else(|| mismatch("it has no rootfs".into()))?
        .diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(mismatch(format!(
            "it lists {} rootfs.diff_ids for the manifest's {} layers",
            diff_ids.len(),
            manifest.layers.len()
        )));
    }
    Ok(manifest
        .layers
        .iter()
        .zip(diff_ids)
        .filter(|(l, _)| layer_compression(&l.media_type).is_some())
        .map(|(_, d)| Some(d))
        .collect())
}

/// Largest JSON document (index, manifest, config) read into memory.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// Reads a small blob (a manifest or a nested index) whole, verifying its digest and size.
///
/// # Errors
/// [`OciError::BadImage`] when the descriptor's size is over [`MAX_JSON_BYTES`];
/// [`ArchiveError::SizeMismatch`](outpost_archive::ArchiveError::SizeMismatch),
/// [`ArchiveError::DigestMismatch`](outpost_archive::ArchiveError::DigestMismatch),
/// [`ArchiveError::Read`](outpost_archive::ArchiveError::Read).
pub fn read_verified(
    reader: impl Read,
    desc: &Descriptor,
    cancel: &Cancel,
) -> Result<Vec<u8>, OciError> {
    let what = format!("blob {}", desc.digest);
    if desc.size > MAX_JSON_BYTES {
        return Err(OciError::BadImage {
            what,
            reason: format!(
                "{} bytes is too large for a JSON document (at most {MAX_JSON_BYTES})",
                desc.size
            ),
        });
    }
    Ok(outpost_archive::read_verified(
        reader,
        what,
        &desc.digest,
        desc.size,
        cancel,
    )?)
}

/// Parses a JSON document, naming it in the error.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(
    data: &[u8],
    what: &str,
) -> Result<T, OciError> {
    serde_json::from_slice(data).map_err(|source| OciError::Json {
        what: what.to_owned(),
        source,
    })
}

/// Writes the payload layers of one image, in order, into one directory.
///
/// Each layer is unpacked under the rules of safe unpacking, sharing the [`Limits`] (they
/// bound the package, not each layer); a directory may appear in several layers, any other
/// path in only one. Each layer's blob is hashed while it streams and read to its end; a
/// digest or size mismatch fails the layer. On any error the directory holds a partial
/// tree that the caller must discard.
#[derive(Debug)]
pub struct LayerUnpacker<'a> {
    writer: LayerWriter<'a>,
}

impl<'a> LayerUnpacker<'a> {
    /// Starts writing into `dest`, which must be an existing, empty directory.
    ///
    /// # Errors
    /// [`ArchiveError::DestinationNotEmpty`](outpost_archive::ArchiveError::DestinationNotEmpty),
    /// or an I/O error opening `dest`.
    pub fn new(dest: &Path, limits: &Limits, cancel: &'a Cancel) -> Result<Self, OciError> {
        Ok(Self {
            writer: LayerWriter::new(dest, limits, cancel)?,
        })
    }

    /// Unpacks one layer blob read from `reader`, as `layer` describes it; when `diff_id`
    /// is given (the layer's entry in the config's `rootfs.diff_ids`, [`layer_diff_ids`]),
    /// the decompressed stream must hash to it.
    ///
    /// Progress is reported as bytes of all layers so far out of `progress_total`.
    ///
    /// # Errors
    /// [`OciError::BadImage`] for a media type that is not a tar layer; every error of
    /// [`unpack_tarball`](outpost_archive::unpack_tarball);
    /// [`ArchiveError::DigestMismatch`](outpost_archive::ArchiveError::DigestMismatch) for a
    /// decompressed stream that is not `diff_id`.
    pub fn unpack_layer(
        &mut self,
        reader: impl Read,
        layer: &Descriptor,
        diff_id: Option<&Digest>,
        progress: &dyn Progress,
        progress_total: Option<u64>,
    ) -> Result<(), OciError> {
        let what = format!("layer {}", layer.digest);
        let compression =
            layer_compression(&layer.media_type).ok_or_else(|| OciError::BadImage {
                what: what.clone(),
                reason: format!("media type {:?} is not a tar layer", layer.media_type),
            })?;
        let expect = Expected {
            digest: layer.digest.clone(),
            size: Some(layer.size),
        };
        self.writer.unpack_layer(
            reader,
            what,
            compression,
            &expect,
            diff_id,
            progress,
            progress_total,
        )?;
        tracing::debug!(layer.digest = %layer.digest, layer.size, "layer unpacked");
        Ok(())
    }

    /// What was written so far.
    pub fn stats(&self) -> UnpackStats {
        self.writer.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str, n: u8, platform: Option<(&str, &str)>) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: platform.map(|(os, arch)| Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: None,
            }),
            annotations: BTreeMap::new(),
        }
    }

    fn index(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests,
            annotations: BTreeMap::new(),
        }
    }

    fn no_nested(_: &Descriptor) -> Result<ImageIndex, OciError> {
        panic!("no nested index expected")
    }

    #[test]
    fn first_matching_manifest_wins() {
        let m = media_type::OCI_MANIFEST;
        let idx = index(vec![
            desc(m, 1, Some(("linux", "arm64"))),
            desc("application/vnd.example.unknown", 2, None),
            desc(m, 3, Some(("linux", "amd64"))),
            desc(m, 4, None),
        ]);
        let got = select_manifest(&idx, "linux", "amd64", "t", no_nested).unwrap();
        assert_eq!(got.digest, Digest::of(&[3]));
        let got = select_manifest(&idx, "linux", "arm64", "t", no_nested).unwrap();
        assert_eq!(got.digest, Digest::of(&[1]));
        let got = select_manifest(&idx, "darwin", "arm64", "t", no_nested).unwrap();
        assert_eq!(
            got.digest,
            Digest::of(&[4]),
            "a manifest without platform admits any"
        );
    }

    #[test]
    fn no_match() {
        let idx = index(vec![desc(
            media_type::OCI_MANIFEST,
            1,
            Some(("linux", "s390x")),
        )]);
        let err = select_manifest(&idx, "linux", "amd64", "layout /x", no_nested).unwrap_err();
        assert!(
            err.to_string()
                .contains("no matching image found in the index"),
            "{err}"
        );
        assert_eq!(err.code(), outpost_types::ErrorCode::DownloadFailed);
        let empty = index(vec![]);
        assert!(matches!(
            select_manifest(&empty, "linux", "amd64", "t", no_nested),
            Err(OciError::NoMatchingImage { .. })
        ));
    }

    #[test]
    fn nested_index_one_level() {
        let nested_digest = Digest::of(&[9]);
        let outer = index(vec![
            desc(media_type::OCI_INDEX, 8, Some(("windows", "amd64"))),
            desc(media_type::OCI_INDEX, 9, None),
        ]);
        let mut opened = Vec::new();
        let got = select_manifest(&outer, "linux", "amd64", "t", |d| {
            opened.push(d.digest.clone());
            Ok(index(vec![
                desc(media_type::OCI_INDEX, 20, None),
                desc(media_type::DOCKER_MANIFEST, 21, Some(("linux", "arm64"))),
                desc(media_type::DOCKER_MANIFEST, 22, Some(("linux", "amd64"))),
            ]))
        })
        .unwrap();
        assert_eq!(got.digest, Digest::of(&[22]));
        assert_eq!(
            opened,
            vec![nested_digest],
            "a non-matching nested index is not opened"
        );
    }

    fn manifest(annotations: &[(&str, &str)]) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: desc(media_type::OCI_CONFIG, 0, None),
            layers: vec![],
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn annotations_either_family() {
        let d = Digest::of(b"m");
        let dd = manifest(&[
            (annotation::DATADOG_NAME, "datadog-agent"),
            (annotation::DATADOG_VERSION, "7.66.0-1"),
            (annotation::DATADOG_SIZE, "1234"),
        ]);
        let meta = ImageMeta::from_manifest(&dd, &d).unwrap();
        assert_eq!(meta.name.as_str(), "datadog-agent");
        assert_eq!(meta.version.as_str(), "7.66.0-1");
        assert_eq!(meta.size, Some(1234));
        let op = manifest(&[
            (annotation::OUTPOST_NAME, "tool"),
            (annotation::OUTPOST_VERSION, "1.0"),
        ]);
        let meta = ImageMeta::from_manifest(&op, &d).unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.version.as_str(), meta.size),
            ("tool", "1.0", None)
        );
        meta.expect(
            &PackageName::new("tool").unwrap(),
            &Version::new("1.0").unwrap(),
        )
        .unwrap();
        let err = meta
            .expect(
                &PackageName::new("tool").unwrap(),
                &Version::new("2.0").unwrap(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("tool 1.0, but tool 2.0"), "{err}");
    }

    #[test]
    fn annotation_errors() {
        let d = Digest::of(b"m");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![(annotation::OUTPOST_VERSION, "1")],
                "missing the package name",
            ),
            (
                vec![(annotation::OUTPOST_NAME, "a")],
                "missing the package version",
            ),
            (
                vec![
                    (annotation::OUTPOST_NAME, "a"),
                    (annotation::DATADOG_NAME, "b"),
                    (annotation::OUTPOST_VERSION, "1"),
                ],
                "disagree",
            ),
            (
                vec![
                    (annotation::OUTPOST_NAME, "../x"),
                    (annotation::OUTPOST_VERSION, "1"),
                ],
                "invalid package name",
            ),
            (
                vec![
                    (annotation::OUTPOST_NAME, "a"),
                    (annotation::OUTPOST_VERSION, "stable"),
                ],
                "reserved",
            ),
            (
                vec![
                    (annotation::OUTPOST_NAME, "a"),
                    (annotation::OUTPOST_VERSION, "1"),
                    (annotation::OUTPOST_SIZE, "-3"),
                ],
                "not a byte count",
            ),
        ];
        for (ann, want) in cases {
            let err = ImageMeta::from_manifest(&manifest(&ann), &d).unwrap_err();
            assert!(err.to_string().contains(want), "{ann:?}: {err}");
            assert_eq!(err.code(), outpost_types::ErrorCode::BadRequest, "{ann:?}");
        }
    }

    #[test]
    fn parses_real_shapes() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}",
            "digest":"{}","size":7,"platform":{{"architecture":"amd64","os":"linux","variant":"v3"}},
            "annotations":null}}],"annotations":{{"x":"y"}}}}"#,
            media_type::OCI_INDEX,
            media_type::OCI_MANIFEST,
            Digest::of(b"x")
        );
        let idx: ImageIndex = parse_json(json.as_bytes(), "index").unwrap();
        assert_eq!(idx.manifests[0].size, 7);
        assert!(
            idx.manifests[0]
                .platform
                .as_ref()
                .unwrap()
                .matches("linux", "amd64")
        );
        let bad = json.replace(&Digest::of(b"x").to_string(), "sha256:../../etc/passwd");
        let err = parse_json::<ImageIndex>(bad.as_bytes(), "index").unwrap_err();
        assert!(err.to_string().contains("invalid digest"), "{err}");
    }
}
