//! `outpost pack DIR --name N --version V --out LAYOUT [--format zstd|gzip] [--platform os/arch|any]`:
//! builds a deterministic OCI image layout from a directory.

use std::process::ExitCode;

use outpost_fetch::pack::{PackFormat as Format, PackOptions};
use outpost_types::{PackageName, Version};

use crate::cli::{GlobalArgs, PackArgs, PackFormat};

/// Runs `outpost pack`.
pub(crate) fn run(global: &GlobalArgs, args: &PackArgs) -> ExitCode {
    match pack(global, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error packing: {message}");
            ExitCode::from(crate::client_cmd::EXIT_FAILED)
        }
    }
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
    if args.push.is_some() {
        return Err("--push needs registry support, which this build does not have yet".into());
    }
    let Some(out) = &args.out else {
        return Err("--out is required".into());
    };
    let packed = outpost_fetch::pack::pack(&args.dir, &name, &version, &opts, out)
        .map_err(|e| e.to_string())?;
    if global.json {
        let body = serde_json::json!({
            "layout": packed.out,
            "index_digest": packed.index_digest.to_string(),
            "manifest_digest": packed.manifest.digest.to_string(),
            "layer_digest": packed.layer.digest.to_string(),
            "layer_size": packed.layer.size,
            "unpacked_size": packed.unpacked_size,
            "entries": packed.entries,
        });
        println!("{body:#}");
    } else if global.quiet == 0 {
        println!(
            "packed {name} {version} into {} ({} entries, {} bytes unpacked, layer {} bytes)\nmanifest {}",
            packed.out.display(),
            packed.entries,
            packed.unpacked_size,
            packed.layer.size,
            packed.manifest.digest
        );
    }
    Ok(())
}
