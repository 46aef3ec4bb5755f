//! One entry point for every package source: registries (`oci://`), HTTP(S) tarballs, OCI
//! layouts and tarballs on disk.
//!
//! A fetch has two steps, so that a caller can check disk space between them:
//! [`prepare`] resolves the source without downloading the payload (for a registry: the
//! index, the manifest and its annotations, which must name the package asked for), and
//! [`Prepared::fetch`] downloads and unpacks it into a staging directory. [`fetch`] and
//! [`required_space`] are shortcuts for one step or the other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_types::source::PackageSource;
use outpost_types::wire::ResolvedPackage;
use outpost_types::{PackageName, Version};

use outpost_archive::{Cancel, Digest, Expected, Limits, NoProgress, Progress, UnpackStats};
use outpost_oci::layout::{self, LayoutImage};
use outpost_oci::{RegistryImage, RegistrySettings};

use crate::error::FetchError;

/// What a fetch may use and must respect.
#[derive(Clone)]
pub struct FetchContext {
    /// How registries and HTTP servers are reached.
    pub registry: RegistrySettings,
    /// Bounds on what the unpack may write.
    pub limits: Limits,
    /// Cancels the fetch between chunks.
    pub cancel: Cancel,
    /// Receives progress reports: `download` for network sources (at least every 100 ms
    /// while bytes arrive), `unpack` for local ones.
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for FetchContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchContext")
            .field("registry", &self.registry)
            .field("limits", &self.limits)
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

impl FetchContext {
    /// A context with these settings, no progress reports and a fresh cancel flag.
    pub fn new(registry: RegistrySettings, limits: Limits) -> Self {
        Self {
            registry,
            limits,
            cancel: Cancel::new(),
            progress: Arc::new(NoProgress),
        }
    }

    /// The same context reporting progress to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// The same context cancelled through `cancel`.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }
}

/// What a fetch installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMeta {
    /// The package (for images, as their annotations say; always what was asked).
    pub name: PackageName,
    /// The version.
    pub version: Version,
    /// The size annotation of an image.
    pub size: Option<u64>,
    /// The digest of the index a registry reference or layout named, when it named one.
    pub index_digest: Option<Digest>,
    /// The digest of the image manifest that was installed (images only).
    pub manifest_digest: Option<Digest>,
    /// What was written.
    pub stats: UnpackStats,
}

/// A source resolved by [`prepare`], ready to be fetched.
#[derive(Debug)]
pub struct Prepared {
    resolved: ResolvedPackage,
    pub(crate) plan: Plan,
    /// Extension layers to unpack into `<dest>/ext/<name>/` ([`Prepared::with_extensions`]).
    pub(crate) extensions: Vec<(String, outpost_oci::oci::Descriptor)>,
}

#[derive(Debug)]
pub(crate) enum Plan {
    TarballFile { path: PathBuf, expect: Expected },
    TarballHttp { url: String, expect: Expected },
    Layout(Box<LayoutImage>),
    Registry(Box<RegistryImage>),
}

/// Resolves `resolved`'s source without downloading its payload: reads a layout's index and
/// manifest, a registry's index and manifest (checking that their annotations name the
/// package and version asked for), or checks that a tarball entry has its sha256.
///
/// # Errors
/// For a tarball without `sha256`: [`FetchError::MissingSha256`]. For images: every error of
/// [`layout::read`] or [`RegistryImage::resolve`], and [`OciError::PackageMismatch`](outpost_oci::OciError::PackageMismatch).
pub async fn prepare(
    resolved: &ResolvedPackage,
    ctx: &FetchContext,
) -> Result<Prepared, FetchError> {
    let expect = || -> Result<Expected, FetchError> {
        let sha256 = resolved
            .sha256
            .as_deref()
            .ok_or_else(|| FetchError::MissingSha256 {
                url: resolved.url.clone(),
            })?;
        Ok(Expected::sha256(sha256, resolved.size)?)
    };
    let plan = match &resolved.source {
        PackageSource::TarballFile(path) => Plan::TarballFile {
            path: path.clone(),
            expect: expect()?,
        },
        PackageSource::TarballHttp(url) => Plan::TarballHttp {
            url: url.clone(),
            expect: expect()?,
        },
        PackageSource::Layout(dir) => {
            let dir = dir.clone();
            let image = tokio::task::spawn_blocking(move || layout::read(&dir))
                .await
                .map_err(|source| FetchError::TaskFailed {
                    what: format!("reading {}", resolved.url),
                    source,
                })?
                .map_err(FetchError::from)?;
            image.meta.expect(&resolved.name, &resolved.version)?;
            Plan::Layout(Box::new(image))
        }
        PackageSource::Registry(reference) => Plan::Registry(Box::new(
            RegistryImage::resolve(
                &ctx.registry,
                reference,
                &resolved.name,
                &resolved.version,
                &ctx.cancel,
            )
            .await?,
        )),
    };
    Ok(Prepared {
        resolved: resolved.clone(),
        plan,
        extensions: Vec::new(),
    })
}

impl Prepared {
    /// The bytes the package is known to need on disk before anything is downloaded: for
    /// an image its size annotation, else the sum of its payload layers' sizes; for a
    /// tarball the catalog's `size`, else (on disk) the file's length. `None` when nothing
    /// is known (an HTTP tarball without a `size`).
    pub fn required_bytes(&self) -> Option<u64> {
        match &self.plan {
            Plan::TarballFile { path, expect } => expect
                .size
                .or_else(|| fs_err::metadata(path).ok().map(|m| m.len())),
            Plan::TarballHttp { expect, .. } => expect.size,
            Plan::Layout(image) => Some(
                image
                    .meta
                    .size
                    .unwrap_or_else(|| image.layers().map(|l| l.size).sum()),
            ),
            Plan::Registry(image) => Some(image.required_bytes()),
        }
    }

    /// The package entry being fetched.
    pub fn resolved(&self) -> &ResolvedPackage {
        &self.resolved
    }

    /// Downloads and unpacks the package into `dest`, an existing empty directory, verifying
    /// everything as it streams (see the crate documentation). On error `dest` holds a
    /// partial tree that the caller must discard; nothing is ever written outside it.
    ///
    /// # Errors
    /// Every error of the source's reader and of the unpacker.
    pub async fn fetch(self, dest: &Path, ctx: &FetchContext) -> Result<FetchedMeta, FetchError> {
        let Self {
            resolved,
            plan,
            extensions,
        } = self;
        let meta = |stats, size, index_digest, manifest_digest| FetchedMeta {
            name: resolved.name.clone(),
            version: resolved.version.clone(),
            size,
            index_digest,
            manifest_digest,
            stats,
        };
        match plan {
            Plan::TarballFile { path, expect } => {
                let (dest, limits, cancel, progress) = (
                    dest.to_owned(),
                    ctx.limits,
                    ctx.cancel.clone(),
                    ctx.progress.clone(),
                );
                let stats = blocking(&resolved.url, move || {
                    outpost_archive::unpack_tarball_file(
                        &path,
                        &expect,
                        &dest,
                        &limits,
                        &cancel,
                        progress.as_ref(),
                    )
                })
                .await?;
                Ok(meta(stats, None, None, None))
            }
            Plan::TarballHttp { url, expect } => {
                let stats = crate::http::fetch_tarball(
                    &url,
                    &expect,
                    dest,
                    &ctx.registry,
                    &ctx.limits,
                    &ctx.cancel,
                    ctx.progress.clone(),
                )
                .await?;
                Ok(meta(stats, None, None, None))
            }
            Plan::Layout(image) => {
                let (dest, limits, cancel, progress) = (
                    dest.to_owned(),
                    ctx.limits,
                    ctx.cancel.clone(),
                    ctx.progress.clone(),
                );
                let (name, version) = (resolved.name.clone(), resolved.version.clone());
                let dir = image.dir.clone();
                let unpacked = blocking(&resolved.url, move || {
                    let unpacked = layout::unpack(
                        &dir,
                        &name,
                        &version,
                        &dest,
                        &limits,
                        &cancel,
                        progress.as_ref(),
                    )?;
                    crate::extensions::unpack_from_layout(
                        &dir,
                        &extensions,
                        &dest,
                        &limits,
                        &cancel,
                    )?;
                    Ok::<_, FetchError>(unpacked)
                })
                .await?;
                Ok(meta(
                    unpacked.stats,
                    unpacked.size,
                    None,
                    Some(unpacked.manifest_digest),
                ))
            }
            Plan::Registry(image) => {
                let stats = image
                    .unpack(dest, &ctx.limits, &ctx.cancel, ctx.progress.clone())
                    .await?;
                crate::extensions::unpack_from_registry(&image, &extensions, dest, ctx).await?;
                tracing::info!(
                    package.name = %resolved.name,
                    package.version = %resolved.version,
                    reference = %image.what,
                    manifest.digest = %image.descriptor.digest,
                    files = stats.files,
                    bytes = stats.bytes,
                    source_bytes = stats.source_bytes,
                    "unpacked a registry image"
                );
                Ok(meta(
                    stats,
                    image.meta.size,
                    image.index_digest.clone(),
                    Some(image.descriptor.digest.clone()),
                ))
            }
        }
    }
}

async fn blocking<T: Send + 'static, E: Into<FetchError> + Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(move || f().map_err(Into::into))
        .await
        .map_err(|source| FetchError::TaskFailed {
            what: format!("unpacking {what}"),
            source,
        })?
}

/// Fetches `resolved` into `dest` (an existing empty directory): [`prepare`] then
/// [`Prepared::fetch`].
///
/// # Errors
/// Those of both steps.
pub async fn fetch(
    resolved: &ResolvedPackage,
    dest: &Path,
    ctx: &FetchContext,
) -> Result<FetchedMeta, FetchError> {
    prepare(resolved, ctx).await?.fetch(dest, ctx).await
}

/// The bytes `resolved` is known to need on disk ([`Prepared::required_bytes`]), found
/// without downloading its payload.
///
/// # Errors
/// Those of [`prepare`].
pub async fn required_space(
    resolved: &ResolvedPackage,
    ctx: &FetchContext,
) -> Result<Option<u64>, FetchError> {
    Ok(prepare(resolved, ctx).await?.required_bytes())
}
