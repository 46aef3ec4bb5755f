//! `outpost pack`: a deterministic OCI image layout from a directory.
//!
//! # Determinism
//! The same tree gives the same digests, whatever the files' times, owners or the order the
//! filesystem lists them in: entries are sorted by name (parents before children), every
//! header has mtime 0, uid and gid 0 and no user or group names, modes are normalised to
//! 0644/0755 (directories 0755), and the compression level is fixed ([`ZSTD_LEVEL`],
//! [`GZIP_LEVEL`]). Nothing time-dependent goes into the config, manifest or index. (The
//! digests may change with the version of the compression library outpost is built with.)
//!
//! # What is refused
//! Sockets, fifos and devices; symlinks that point outside the directory or to an absolute
//! path (see [`symlink_target`]); names that unpacking would
//! refuse (not UTF-8, control characters, backslashes, over-long). Hard-linked files are
//! stored as separate copies.

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;
use outpost_types::{PackageName, Version};
use serde::Serialize;
use tar::{EntryType, Header};

mod pipeline;

use crate::error::OciError;
use crate::oci::{Descriptor, ImageIndex, ImageManifest, Platform, annotation, media_type};
use outpost_archive::Digest;
use outpost_archive::normalized_mode;
use outpost_archive::path::{SafeRelPath, symlink_target};
use pipeline::TarSink;

/// The zstd level of packed layers.
pub const ZSTD_LEVEL: i32 = 3;
/// The gzip level of packed layers.
pub const GZIP_LEVEL: u32 = 6;

/// How the layer is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PackFormat {
    /// `application/vnd.oci.image.layer.v1.tar+zstd` (the default).
    #[default]
    Zstd,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`.
    Gzip,
}

impl PackFormat {
    /// The layer's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Zstd => media_type::OCI_LAYER_ZSTD,
            Self::Gzip => media_type::OCI_LAYER_GZIP,
        }
    }
}

/// Options of [`pack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOptions {
    /// Layer compression.
    pub format: PackFormat,
    /// `(os, architecture)` in Go's names, recorded in the index entry and the image config;
    /// `None` makes a package for any platform (no platform in the index, an empty config).
    pub platform: Option<(String, String)>,
}

impl Default for PackOptions {
    /// zstd, for the host platform.
    fn default() -> Self {
        Self::host(PackFormat::Zstd)
    }
}

impl PackOptions {
    /// A package for the host platform.
    pub fn host(format: PackFormat) -> Self {
        Self {
            format,
            platform: Some((
                outpost_types::platform::host_os().to_owned(),
                outpost_types::platform::host_arch().to_owned(),
            )),
        }
    }

    /// A package for any platform.
    pub fn any(format: PackFormat) -> Self {
        Self {
            format,
            platform: None,
        }
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedImage {
    /// The layout directory.
    pub out: PathBuf,
    /// The digest of `index.json`.
    pub index_digest: Digest,
    /// The manifest, as the index lists it.
    pub manifest: Descriptor,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blob.
    pub layer: Descriptor,
    /// The extension layers, in the order given.
    pub extensions: Vec<Descriptor>,
    /// The digest of the uncompressed layer (the config's `diff_id`).
    pub diff_id: Digest,
    /// The sum of the regular files' sizes (the size annotation).
    pub unpacked_size: u64,
    /// Entries in the layer.
    pub entries: u64,
}

/// Packs the tree at `dir` as package `name` `version` into a new OCI image layout at `out`.
///
/// The layout holds one layer (the tree, its root being the version directory), a config,
/// a manifest annotated with both key families (`com.datadoghq.package.{name,version,size}`
/// and `dev.outpost.package.*`), and an index whose one entry carries the platform (unless
/// `opts.platform` is `None`) and `org.opencontainers.image.ref.name` = `version`.
///
/// The layout is built in a temporary directory beside `out`, synced, then renamed into
/// place, so `out` is either absent/empty or complete. An existing, non-empty `out` is
/// refused.
///
/// # Errors
/// [`OciError::OutputExists`]; [`OciError::PackInput`] for something in `dir` that cannot
/// be packed (or `out` inside `dir`); [`OciError::Io`] for I/O failures (naming the path).
pub fn pack(
    dir: &Path,
    name: &PackageName,
    version: &Version,
    opts: &PackOptions,
    out: &Path,
) -> Result<PackedImage, OciError> {
    pack_with_extensions(dir, name, version, opts, &[], out)
}

/// [`pack`], with one extension layer per `(name, directory)` of `extensions` after the
/// payload layer: media type
/// [`DATADOG_EXTENSION_LAYER`](crate::extension::DATADOG_EXTENSION_LAYER) (always zstd),
/// annotated with the extension's name in both key families
/// ([`crate::extension`]). Their `diff_id`s follow the payload's in the config.
///
/// # Errors
/// Those of [`pack`]; [`OciError::PackInput`] for an invalid or repeated extension name or a
/// directory that cannot be packed.
pub fn pack_with_extensions(
    dir: &Path,
    name: &PackageName,
    version: &Version,
    opts: &PackOptions,
    extensions: &[(String, PathBuf)],
    out: &Path,
) -> Result<PackedImage, OciError> {
    let mut seen = std::collections::BTreeSet::new();
    for (ext, ext_dir) in extensions {
        crate::extension::validate_name(ext).map_err(|e| OciError::PackInput {
            path: ext_dir.clone(),
            reason: e.to_string(),
        })?;
        if !seen.insert(ext) {
            return Err(OciError::PackInput {
                path: ext_dir.clone(),
                reason: format!("extension {ext:?} is given twice"),
            });
        }
        match ext_dir.metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(OciError::PackInput {
                    path: ext_dir.clone(),
                    reason: "not a directory".into(),
                });
            }
            Err(e) => {
                return Err(OciError::PackInput {
                    path: ext_dir.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    let input = |reason: String| OciError::PackInput {
        path: dir.to_owned(),
        reason,
    };
    match dir.metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(input("not a directory".into())),
        // The error names the path already; the io error alone says what is wrong with it.
        Err(e) => return Err(input(e.to_string())),
    }
    match fs_err::symlink_metadata(out) {
        Ok(m) if m.is_dir() && fs_err::read_dir(out)?.next().is_none() => {}
        Ok(_) => {
            return Err(OciError::OutputExists {
                path: out.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let canon_dir = fs_err::canonicalize(dir)?;
    let canon_parent = fs_err::canonicalize(&parent)?;
    if canon_parent.starts_with(&canon_dir) {
        return Err(OciError::PackInput {
            path: out.to_owned(),
            reason: format!(
                "the output is inside the packed directory {}",
                dir.display()
            ),
        });
    }

    let tmp = tempfile::Builder::new()
        .prefix(".outpost-pack-")
        .tempdir_in(&parent)
        .map_err(OciError::Io)?;
    let blobs = tmp.path().join("blobs").join("sha256");
    fs_err::create_dir_all(&blobs)?;

    let layer = write_layer(dir, &blobs, opts.format)?;
    let mut ext_layers = Vec::with_capacity(extensions.len());
    for (ext, ext_dir) in extensions {
        let written = write_layer(ext_dir, &blobs, PackFormat::Zstd)?;
        let desc = Descriptor {
            media_type: crate::extension::DATADOG_EXTENSION_LAYER.into(),
            digest: written.digest.clone(),
            size: written.size,
            platform: None,
            annotations: [
                (crate::extension::DATADOG_EXTENSION_NAME, ext.as_str()),
                (crate::extension::OUTPOST_EXTENSION_NAME, ext.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        ext_layers.push((desc, written.diff_id));
    }
    let (config_type, config_json) = match &opts.platform {
        Some((os, arch)) => (
            media_type::OCI_CONFIG,
            to_json(&ImageConfig {
                architecture: arch,
                os,
                rootfs: RootFs {
                    kind: "layers",
                    diff_ids: std::iter::once(&layer.diff_id)
                        .chain(ext_layers.iter().map(|(_, d)| d))
                        .map(ToString::to_string)
                        .collect(),
                },
            })?,
        ),
        None => (media_type::OCI_EMPTY, b"{}".to_vec()),
    };
    let config = write_blob(&blobs, config_type, &config_json)?;
    let layer_desc = Descriptor {
        media_type: opts.format.media_type().into(),
        digest: layer.digest.clone(),
        size: layer.size,
        platform: None,
        annotations: Default::default(),
    };
    let size = layer.unpacked.to_string();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config.clone(),
        layers: std::iter::once(layer_desc.clone())
            .chain(ext_layers.iter().map(|(d, _)| d.clone()))
            .collect(),
        annotations: [
            (annotation::DATADOG_NAME, name.as_str()),
            (annotation::DATADOG_VERSION, version.as_str()),
            (annotation::DATADOG_SIZE, size.as_str()),
            (annotation::OUTPOST_NAME, name.as_str()),
            (annotation::OUTPOST_VERSION, version.as_str()),
            (annotation::OUTPOST_SIZE, size.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let mut manifest_desc = write_blob(&blobs, media_type::OCI_MANIFEST, &to_json(&manifest)?)?;
    manifest_desc.platform = opts.platform.as_ref().map(|(os, arch)| Platform {
        architecture: arch.clone(),
        os: os.clone(),
        variant: None,
    });
    manifest_desc
        .annotations
        .insert(annotation::REF_NAME.into(), version.to_string());
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![manifest_desc.clone()],
        annotations: Default::default(),
    };
    let index_json = to_json(&index)?;
    write_synced(&tmp.path().join("index.json"), &index_json)?;
    write_synced(
        &tmp.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for d in [blobs.as_path(), &tmp.path().join("blobs"), tmp.path()] {
        fs_err::File::open(d)?.sync_all()?;
    }
    fs_err::set_permissions(tmp.path(), Permissions::from_mode(0o755))?;
    match fs_err::rename(tmp.path(), out) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOTEMPTY.raw_os_error() || c == rustix::io::Errno::EXIST.raw_os_error()) =>
        {
            return Err(OciError::OutputExists {
                path: out.to_owned(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    // The layout now lives at `out`; the temporary directory's name no longer exists.
    let _kept = tmp.keep();
    fs_err::File::open(&parent)?.sync_all()?;
    tracing::info!(
        package.name = %name,
        package.version = %version,
        manifest.digest = %manifest_desc.digest,
        out = %out.display(),
        "packed an OCI layout"
    );
    Ok(PackedImage {
        out: out.to_owned(),
        index_digest: Digest::of(&index_json),
        manifest: manifest_desc,
        config,
        layer: layer_desc,
        extensions: ext_layers.into_iter().map(|(d, _)| d).collect(),
        diff_id: layer.diff_id,
        unpacked_size: layer.unpacked,
        entries: layer.entries,
    })
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, OciError> {
    serde_json::to_vec(v).map_err(|source| OciError::Json {
        what: "packed image document".into(),
        source,
    })
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), OciError> {
    let mut f = fs_err::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn write_blob(blobs: &Path, media_type: &str, data: &[u8]) -> Result<Descriptor, OciError> {
    let digest = Digest::of(data);
    write_synced(&blobs.join(digest.hex()), data)?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as u64,
        platform: None,
        annotations: Default::default(),
    })
}

struct Layer {
    digest: Digest,
    size: u64,
    diff_id: Digest,
    unpacked: u64,
    entries: u64,
}

type LayerSink = TarSink;

fn write_layer(dir: &Path, blobs: &Path, format: PackFormat) -> Result<Layer, OciError> {
    let tmp_path = blobs.join(".layer.tmp");
    let file = fs_err::File::create(&tmp_path)?;
    let tar_err = |e: io::Error| {
        OciError::Io(io::Error::new(
            e.kind(),
            format!("writing the layer to {}: {e}", tmp_path.display()),
        ))
    };
    let sink = TarSink::new(format, file).map_err(tar_err)?;
    let mut walker = Walker {
        builder: tar::Builder::new(sink),
        unpacked: 0,
        entries: 0,
    };
    walker.walk(dir, "")?;
    let Walker {
        builder,
        unpacked,
        entries,
    } = walker;
    let sink = builder.into_inner().map_err(tar_err)?;
    let (output, diff_id) = sink.finish().map_err(tar_err)?;
    let (file, digest, size) = output.finish().map_err(tar_err)?;
    file.sync_all()?;
    drop(file);
    fs_err::rename(&tmp_path, blobs.join(digest.hex()))?;
    Ok(Layer {
        digest,
        size,
        diff_id,
        unpacked,
        entries,
    })
}

struct Walker {
    builder: tar::Builder<LayerSink>,
    unpacked: u64,
    entries: u64,
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl Walker {
    /// Appends the children of `abs` (whose path in the archive is `rel`), sorted by name,
    /// each directory followed by its own children.
    fn walk(&mut self, abs: &Path, rel: &str) -> Result<(), OciError> {
        let mut names = fs_err::read_dir(abs)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = abs.join(&name);
            let refuse = |reason: String| OciError::PackInput {
                path: child.clone(),
                reason,
            };
            let name = name
                .to_str()
                .ok_or_else(|| refuse("the name is not UTF-8".into()))?;
            let rel_child = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let safe = SafeRelPath::from_archive(rel_child.as_bytes())
                .map_err(|r| refuse(format!("the name would be refused on unpacking: {r}")))?;
            let meta = fs_err::symlink_metadata(&child)?;
            let ft = meta.file_type();
            let tar_err = |e: io::Error| {
                OciError::Io(io::Error::new(
                    e.kind(),
                    format!("adding {} to the layer: {e}", child.display()),
                ))
            };
            self.entries += 1;
            if ft.is_dir() {
                let mut h = header(EntryType::Directory, 0o755, 0);
                self.builder
                    .append_data(&mut h, format!("{rel_child}/"), io::empty())
                    .map_err(tar_err)?;
                self.walk(&child, &rel_child)?;
            } else if ft.is_file() {
                let size = meta.len();
                let mut file = fs_err::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&child)?;
                let mut h = header(
                    EntryType::Regular,
                    normalized_mode(meta.permissions().mode()),
                    size,
                );
                // The header (and any long-name record) first, with no data: `tar` pads
                // nothing after an entry it copied no bytes for. The data and its padding
                // are then read in large blocks straight into the layer's chunk, instead of
                // through `tar`'s 8 KiB copy loop.
                self.builder
                    .append_data(&mut h, &rel_child, io::empty())
                    .map_err(tar_err)?;
                self.builder
                    .get_mut()
                    .copy_file(&mut file, size)
                    .map_err(tar_err)?;
                self.unpacked += size;
            } else if ft.is_symlink() {
                let target = fs_err::read_link(&child)?;
                let target = symlink_target(&safe, target.as_os_str().as_bytes())
                    .map_err(|r| refuse(format!("{r}")))?;
                let mut h = header(EntryType::Symlink, 0o777, 0);
                self.builder
                    .append_link(&mut h, &rel_child, &target)
                    .map_err(tar_err)?;
            } else {
                return Err(refuse(
                    "only regular files, directories and symlinks can be packed".into(),
                ));
            }
        }
        Ok(())
    }
}
