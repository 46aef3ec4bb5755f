//! Arbitrary bytes as OCI index and manifest documents: parsing, platform selection and
//! annotation reading never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_oci::oci::{ImageIndex, ImageManifest, ImageMeta, select_manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        let _ = select_manifest(&index, "linux", "amd64", "fuzz", |_| Ok(index.clone()));
    }
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        let digest = manifest.config.digest.clone();
        let _ = ImageMeta::from_manifest(&manifest, &digest);
        let _ = manifest.payload_layers().count();
    }
});
