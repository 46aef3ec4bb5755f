//! Extensions of a package ([`outpost_oci::extension`]): chosen when the source is prepared,
//! so an extension the image lacks fails before any download, and unpacked after the payload
//! into `<dest>/ext/<name>/` of the same staging tree, which the repository then switches to
//! as one.

use std::path::{Path, PathBuf};

use outpost_archive::{Cancel, Limits};
use outpost_oci::extension;
use outpost_oci::oci::Descriptor;
use outpost_oci::{OciError, RegistryImage};

use crate::error::FetchError;
use crate::source::{FetchContext, Plan, Prepared};

impl Prepared {
    /// Asks for the extensions `names` too (duplicates ignored): their layers are looked up
    /// now and unpacked by [`Prepared::fetch`] into `<dest>/ext/<name>/`.
    ///
    /// # Errors
    /// [`OciError::ExtensionNotFound`] (code `extension_not_found`) for a name the image does
    /// not have, or for any name when the source is a tarball (it has no layers);
    /// [`OciError::BadImage`] for an invalid name or a malformed extension layer.
    pub fn with_extensions(mut self, names: &[String]) -> Result<Self, FetchError> {
        let mut names: Vec<String> = names.to_vec();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(self);
        }
        for name in &names {
            extension::validate_name(name).map_err(|e| OciError::BadImage {
                what: format!("extension {name:?}"),
                reason: e.to_string(),
            })?;
        }
        let url = self.resolved().url.clone();
        let selected = match &self.plan {
            Plan::Layout(image) => extension::select(&image.manifest, &names, &url)?,
            Plan::Registry(image) => extension::select(&image.manifest, &names, &url)?,
            Plan::TarballFile { .. } | Plan::TarballHttp { .. } => {
                return Err(OciError::ExtensionNotFound {
                    name: names[0].clone(),
                    image: url,
                    available: "none: a tarball has no extension layers".into(),
                }
                .into());
            }
        };
        self.extensions = selected;
        Ok(self)
    }
}

/// Makes `<dest>/ext/<name>/`, empty. An `ext` of the payload is used if it is a real
/// directory; a payload that has `ext` as anything else, or `ext/<name>` already, is refused.
fn extension_dir(dest: &Path, name: &str) -> Result<PathBuf, FetchError> {
    let ext = dest.join("ext");
    match fs_err::symlink_metadata(&ext) {
        Ok(meta) if meta.file_type().is_dir() => {}
        Ok(_) => {
            return Err(OciError::BadImage {
                what: "the package payload".into(),
                reason: "its ext is not a directory, so extensions cannot be installed".into(),
            }
            .into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs_err::create_dir(&ext).map_err(OciError::Io)?;
        }
        Err(e) => return Err(OciError::Io(e).into()),
    }
    let dir = ext.join(name);
    match fs_err::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(OciError::BadImage {
            what: "the package payload".into(),
            reason: format!("it already has ext/{name}, where extension {name:?} goes"),
        }
        .into()),
        Err(e) => Err(OciError::Io(e).into()),
    }
}

/// Unpacks `extensions` from the OCI layout at `layout` into `dest` (blocking).
pub(crate) fn unpack_from_layout(
    layout: &Path,
    extensions: &[(String, Descriptor)],
    dest: &Path,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<(), FetchError> {
    for (name, layer) in extensions {
        let dir = extension_dir(dest, name)?;
        let stats = extension::unpack_from_layout(layout, layer, &dir, limits, cancel)?;
        tracing::info!(extension = %name, files = stats.files, bytes = stats.bytes, "unpacked an extension");
    }
    Ok(())
}

/// Downloads and unpacks `extensions` of a registry image into `dest`.
pub(crate) async fn unpack_from_registry(
    image: &RegistryImage,
    extensions: &[(String, Descriptor)],
    dest: &Path,
    ctx: &FetchContext,
) -> Result<(), FetchError> {
    for (name, layer) in extensions {
        let dir = extension_dir(dest, name)?;
        let stats = image
            .unpack_extension(layer, &dir, &ctx.limits, &ctx.cancel)
            .await?;
        tracing::info!(extension = %name, files = stats.files, bytes = stats.bytes, "unpacked an extension");
    }
    Ok(())
}
