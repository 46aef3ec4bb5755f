//! Package extensions: optional parts of a package shipped as extra layers of its image, each
//! unpacked into `<version>/ext/<name>/` when asked for.
//!
//! An extension layer has the media type [`DATADOG_EXTENSION_LAYER`] or
//! [`OUTPOST_EXTENSION_LAYER`] (a zstd tar) and names its extension in the annotation
//! [`DATADOG_EXTENSION_NAME`] or [`OUTPOST_EXTENSION_NAME`]. It is not a payload layer: an
//! install without extensions never reads it. Its blob is verified against its descriptor while
//! it streams and unpacked with the same safe unpacker and limits as the payload, into a
//! directory of its own.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use outpost_archive::{
    Cancel, Compression, Expected, LayerWriter, Limits, NoProgress, UnpackStats,
};

use crate::error::OciError;
use crate::oci::{Descriptor, ImageManifest};

/// The Datadog extension layer (zstd tar).
pub const DATADOG_EXTENSION_LAYER: &str =
    "application/vnd.datadog.package.extension.layer.v1.tar+zstd";
/// outpost's extension layer (zstd tar).
pub const OUTPOST_EXTENSION_LAYER: &str =
    "application/vnd.outpost.package.extension.layer.v1.tar+zstd";
/// The extension's name, Datadog's key.
pub const DATADOG_EXTENSION_NAME: &str = "com.datadoghq.package.extension.name";
/// The extension's name, outpost's key.
pub const OUTPOST_EXTENSION_NAME: &str = "dev.outpost.package.extension.name";

/// Whether `media_type` is an extension layer's.
pub fn is_extension_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        DATADOG_EXTENSION_LAYER | OUTPOST_EXTENSION_LAYER
    )
}

/// Why an extension name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionNameError {
    /// Empty, or longer than 64 characters.
    #[error("extension name {0:?} must be 1 to 64 characters long")]
    Length(String),
    /// A character outside `a-z`, `0-9`, `.`, `_`, `-`, or a first character that is not a
    /// letter or digit.
    #[error(
        "extension name {0:?} may hold only a-z, 0-9, '.', '_' and '-', and must start with a \
         letter or digit"
    )]
    Characters(String),
}

/// Checks an extension name: 1 to 64 characters of `a-z`, `0-9`, `.`, `_`, `-`, starting with
/// a letter or digit (so it is one safe path component).
///
/// # Errors
/// The rule broken, as an [`ExtensionNameError`].
pub fn validate_name(name: &str) -> Result<(), ExtensionNameError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if name.is_empty() || name.len() > 64 {
        return Err(ExtensionNameError::Length(name.to_owned()));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        || !name.chars().all(ok_char)
    {
        return Err(ExtensionNameError::Characters(name.to_owned()));
    }
    Ok(())
}

/// The extension layers of `manifest`, by name. A layer with an extension media type but no
/// valid name annotation, or two layers of one name, make the image bad.
///
/// # Errors
/// [`OciError::BadImage`] naming the layer.
pub fn extension_layers(
    manifest: &ImageManifest,
) -> Result<BTreeMap<String, Descriptor>, OciError> {
    let mut out = BTreeMap::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| is_extension_layer(&l.media_type))
    {
        let what = format!("extension layer {}", layer.digest);
        let name = layer
            .annotations
            .get(DATADOG_EXTENSION_NAME)
            .or_else(|| layer.annotations.get(OUTPOST_EXTENSION_NAME))
            .ok_or_else(|| OciError::BadImage {
                what: what.clone(),
                reason: format!(
                    "it has no {DATADOG_EXTENSION_NAME} (or {OUTPOST_EXTENSION_NAME}) annotation"
                ),
            })?;
        validate_name(name).map_err(|e| OciError::BadImage {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        if out.insert(name.clone(), layer.clone()).is_some() {
            return Err(OciError::BadImage {
                what,
                reason: format!("extension {name:?} appears in two layers"),
            });
        }
    }
    Ok(out)
}

/// Picks the layers of `names` from `manifest`, in the order asked.
///
/// # Errors
/// [`OciError::ExtensionNotFound`] for the first name the image lacks (naming `image` and
/// what it has); those of [`extension_layers`].
pub fn select(
    manifest: &ImageManifest,
    names: &[String],
    image: &str,
) -> Result<Vec<(String, Descriptor)>, OciError> {
    let layers = extension_layers(manifest)?;
    names
        .iter()
        .map(|name| {
            layers
                .get(name)
                .map(|d| (name.clone(), d.clone()))
                .ok_or_else(|| OciError::ExtensionNotFound {
                    name: name.clone(),
                    image: image.to_owned(),
                    available: if layers.is_empty() {
                        "none".to_owned()
                    } else {
                        layers.keys().cloned().collect::<Vec<_>>().join(", ")
                    },
                })
        })
        .collect()
}

/// Unpacks one extension layer read from `reader` into `dest` (an existing, empty directory),
/// verifying the blob's digest and size while it streams, under the rules of safe unpacking.
///
/// # Errors
/// [`OciError::BadImage`] for a layer that is not an extension layer; every error of the safe
/// unpacker (an entry escaping `dest`, a link, a limit) and of the digest check.
pub fn unpack_layer(
    reader: impl Read,
    layer: &Descriptor,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<UnpackStats, OciError> {
    let what = format!("extension layer {}", layer.digest);
    if !is_extension_layer(&layer.media_type) {
        return Err(OciError::BadImage {
            what,
            reason: format!(
                "media type {:?} is not an extension layer",
                layer.media_type
            ),
        });
    }
    let mut writer = LayerWriter::new(dest, limits, cancel)?;
    let expect = Expected {
        digest: layer.digest.clone(),
        size: Some(layer.size),
    };
    writer.unpack_layer(
        reader,
        what,
        Compression::Zstd,
        &expect,
        None,
        &NoProgress,
        None,
    )?;
    Ok(writer.stats())
}

/// Unpacks the extension layer `layer` of the OCI layout at `layout` into `dest` (see
/// [`unpack_layer`]); the blob's path is built from its validated digest only.
///
/// # Errors
/// [`OciError::MissingBlob`]; those of [`unpack_layer`].
pub fn unpack_from_layout(
    layout: &Path,
    layer: &Descriptor,
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<UnpackStats, OciError> {
    let path = layer.digest.blob_path(layout);
    let blob = fs_err::File::open(&path).map_err(|source| OciError::MissingBlob {
        digest: layer.digest.clone(),
        path,
        source,
    })?;
    unpack_layer(blob, layer, dest, limits, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_type;
    use outpost_archive::Digest;

    fn layer(media: &str, n: u8, annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: media.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: None,
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn manifest(layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: layer(media_type::OCI_EMPTY, 0, &[]),
            layers,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn layers_are_found_by_either_key_on_either_media_type() {
        let m = manifest(vec![
            layer(
                media_type::OCI_LAYER_ZSTD,
                1,
                &[(DATADOG_EXTENSION_NAME, "payload")],
            ),
            layer(
                DATADOG_EXTENSION_LAYER,
                2,
                &[(DATADOG_EXTENSION_NAME, "python")],
            ),
            layer(
                OUTPOST_EXTENSION_LAYER,
                3,
                &[(OUTPOST_EXTENSION_NAME, "gpu")],
            ),
        ]);
        let found = extension_layers(&m).unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["gpu", "python"]);
        assert!(
            m.payload_layers().count() == 1,
            "extensions are not payload"
        );
        let picked = select(&m, &["python".into()], "img").unwrap();
        assert_eq!(picked[0].1.digest, Digest::of(&[2]));
        let err = select(&m, &["cuda".into()], "oci://r/p:1").unwrap_err();
        assert_eq!(err.code(), outpost_types::ErrorCode::ExtensionNotFound);
        assert_eq!(
            err.to_string(),
            "extension \"cuda\" is not in oci://r/p:1 (it has: gpu, python)"
        );
        let none = select(&manifest(vec![]), &["cuda".into()], "img").unwrap_err();
        assert!(none.to_string().ends_with("(it has: none)"), "{none}");
    }

    #[test]
    fn unnamed_badly_named_or_repeated_layers_make_the_image_bad() {
        for layers in [
            vec![layer(DATADOG_EXTENSION_LAYER, 1, &[])],
            vec![layer(
                DATADOG_EXTENSION_LAYER,
                1,
                &[(DATADOG_EXTENSION_NAME, "../x")],
            )],
            vec![
                layer(DATADOG_EXTENSION_LAYER, 1, &[(DATADOG_EXTENSION_NAME, "x")]),
                layer(OUTPOST_EXTENSION_LAYER, 2, &[(OUTPOST_EXTENSION_NAME, "x")]),
            ],
        ] {
            let err = extension_layers(&manifest(layers)).unwrap_err();
            assert!(matches!(err, OciError::BadImage { .. }), "{err}");
        }
    }

    #[test]
    fn names_are_one_safe_path_component() {
        for good in ["python", "a", "gpu-1.2_x"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "..", ".x", "a/b", "A", "x y", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
