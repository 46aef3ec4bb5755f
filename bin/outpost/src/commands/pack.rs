//! `outpost pack DIR --name N --version V [--out LAYOUT] [--push oci://host/repo:tag]
//! [--format zstd|gzip] [--platform os/arch|any]`: builds a deterministic OCI image layout
//! from a directory, and pushes it to a registry with the registry settings of `--config`
//! (the tag then names the layout's image index; digests are the layout's). Without
//! `--out`, the layout is built in a temporary directory and removed after the push.

use std::path::{Path, PathBuf};

use outpost_fetch::pack::{PackFormat as Format, PackOptions};
use outpost_fetch::{Cancel, PushedImage, RegistrySettings};
use outpost_types::source::OciReference;
use outpost_types::{PackageName, Version};

use outpost_cli::ExitStatus;
use outpost_cli::args::{GlobalArgs, PackArgs, PackFormat};

/// Runs `outpost pack`.
pub(crate) fn run(global: &GlobalArgs, args: &PackArgs) -> ExitStatus {
    match pack(global, args) {
        Ok(()) => ExitStatus::Success,
        Err(message) => {
            eprintln!("error packing: {message}");
            if global.json {
                outpost_cli::output::print_error_json("local", &message);
            }
            ExitStatus::Failure
        }
    }
}

/// Refuses what would only fail later or produce a useless package: a missing or empty
/// source directory, an `--out` whose parent directory does not exist.
fn check_paths(args: &PackArgs) -> Result<(), String> {
    let dir = &args.dir;
    let mut entries = fs_err::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("directory {} does not exist", dir.display()),
        _ => e.to_string(),
    })?;
    if entries.next().is_none() {
        return Err(format!(
            "directory {} is empty: there is nothing to pack",
            dir.display()
        ));
    }
    if let Some(out) = &args.out {
        let parent = match out.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => Path::new("/"),
        };
        if !parent.is_dir() {
            return Err(format!(
                "cannot write --out {}: its parent directory {} does not exist",
                out.display(),
                parent.display()
            ));
        }
    }
    Ok(())
}

fn pack(global: &GlobalArgs, args: &PackArgs) -> Result<(), String> {
    let name = PackageName::new(args.name.clone()).map_err(|e| e.to_string())?;
    let version = Version::new(args.version.clone()).map_err(|e| e.to_string())?;
    let format = match args.format {
        PackFormat::Zstd => Format::Zstd,
        PackFormat::Gzip => Format::Gzip,
    };
    let opts = match args.platform.as_deref() {
        None => PackOptions::host(format),
        Some("any") => PackOptions::any(format),
        Some(p) => {
            let (os, arch) = p
                .split_once('/')
                .filter(|(os, arch)| !os.is_empty() && !arch.is_empty() && !arch.contains('/'))
                .ok_or_else(|| {
                    format!("invalid --platform {p:?}: expected os/arch (e.g. linux/amd64) or any")
                })?;
            PackOptions {
                format,
                platform: Some((os.to_string(), arch.to_string())),
            }
        }
    };
    check_paths(args)?;
    let extensions = args
        .extensions
        .iter()
        .map(|e| {
            e.split_once('=')
                .filter(|(n, d)| !n.is_empty() && !d.is_empty())
                .map(|(n, d)| (n.to_owned(), PathBuf::from(d)))
                .ok_or_else(|| format!("invalid --extension {e:?}: expected NAME=DIR"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    // Everything about the push is checked before anything is packed.
    let push = match &args.push {
        Some(p) => {
            let target = push_target(p)?;
            let config = global
                .load_config()
                .map_err(|e| outpost_types::error_chain(&e))?;
            Some((target, RegistrySettings::from_config(&config.registry)))
        }
        None => None,
    };
    let temp;
    let out: PathBuf = match &args.out {
        Some(out) => out.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("outpost-pack-")
                .tempdir()
                .map_err(|e| format!("creating a temporary directory for the layout: {e}"))?;
            temp.path().join("layout")
        }
    };
    let packed = outpost_fetch::pack::pack_with_extensions(
        &args.dir,
        &name,
        &version,
        &opts,
        &extensions,
        &out,
    )
    .map_err(|e| e.to_string())?;
    let pushed = match push {
        Some((target, settings)) => Some(push_layout(&settings, &out, &target)?),
        None => None,
    };
    if global.json {
        let body = serde_json::json!({
            "layout": args.out.as_ref().map(|_| &packed.out),
            "index_digest": packed.index_digest.to_string(),
            "manifest_digest": packed.manifest.digest.to_string(),
            "layer_digest": packed.layer.digest.to_string(),
            "layer_size": packed.layer.size,
            "extensions": packed.extensions.iter().zip(&extensions).map(|(d, (n, _))| serde_json::json!({
                "name": n,
                "layer_digest": d.digest.to_string(),
                "layer_size": d.size,
            })).collect::<Vec<_>>(),
            "unpacked_size": packed.unpacked_size,
            "entries": packed.entries,
            "pushed": pushed.as_ref().map(|p| serde_json::json!({
                "reference": p.reference,
                "index_digest": p.index_digest.to_string(),
                "blobs_pushed": p.blobs_pushed,
                "blobs_present": p.blobs_present,
                "bytes_pushed": p.bytes_pushed,
            })),
        });
        outpost_cli::output::print_json(&body);
    } else if global.quiet == 0 {
        let place = match &args.out {
            Some(_) => format!(" into {}", packed.out.display()),
            None => String::new(),
        };
        println!(
            "packed {name} {version}{place} ({} entries, {} bytes unpacked, layer {} bytes)\nmanifest {}",
            packed.entries, packed.unpacked_size, packed.layer.size, packed.manifest.digest
        );
        if let Some(p) = &pushed {
            println!(
                "pushed {} (index {}; {} blobs uploaded, {} already there)",
                p.reference, p.index_digest, p.blobs_pushed, p.blobs_present
            );
        }
    }
    Ok(())
}

/// Parses `--push oci://host[:port]/repo:tag`.
fn push_target(value: &str) -> Result<OciReference, String> {
    let rest = value.strip_prefix("oci://").ok_or_else(|| {
        format!("invalid --push {value:?}: expected oci://host[:port]/repository:tag")
    })?;
    let target = OciReference::parse(rest).map_err(|e| format!("invalid --push {value:?}: {e}"))?;
    if target.tag.is_none() || target.digest.is_some() {
        return Err(format!(
            "invalid --push {value:?}: push to a tag (oci://host[:port]/repository:tag), \
             without a digest"
        ));
    }
    Ok(target)
}

/// Pushes the layout at `layout` on a runtime of its own.
fn push_layout(
    settings: &RegistrySettings,
    layout: &std::path::Path,
    target: &OciReference,
) -> Result<PushedImage, String> {
    let runtime = outpost_cli::runtime::current_thread()
        .map_err(|e| format!("cannot start the runtime for the push: {e}"))?;
    runtime
        .block_on(outpost_fetch::push_layout(
            settings,
            layout,
            target,
            &Cancel::new(),
        ))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_targets() {
        let t = push_target("oci://127.0.0.1:5000/pkgs/agent:7.50.0").unwrap();
        assert_eq!(
            (t.registry.as_str(), t.repository.as_str(), t.tag.as_deref()),
            ("127.0.0.1:5000", "pkgs/agent", Some("7.50.0"))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        for (bad, why) in [
            ("127.0.0.1:5000/agent:1", "expected oci://"),
            ("oci://127.0.0.1:5000/agent", "a tag"),
            (&format!("oci://h/agent@{digest}") as &str, "push to a tag"),
            (&format!("oci://h/agent:1@{digest}"), "without a digest"),
            ("oci://h/Agent:1", "invalid repository"),
        ] {
            let err = push_target(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
