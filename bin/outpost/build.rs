//! Link settings of the two binaries.
//!
//! * Relative relocations are packed (`-z pack-relative-relocs`; needs glibc 2.36 and
//!   binutils 2.38 or later, as on Debian 12): the loader then reads a few kilobytes of relocations at exec
//!   instead of ~700 KB, which is resident memory the root daemon would otherwise carry for
//!   its whole life. `OUTPOST_NO_RELR=1` turns it off for older targets.
//! * `outpost-agent` gets a RUNPATH to the libpython it was built against (PyO3's choice,
//!   from `PYO3_PYTHON`), so a build against a Python outside the system library path loads
//!   that very library and not another build of the same version. `OUTPOST_PYTHON_RPATH`
//!   replaces it, e.g. with `$ORIGIN/../lib` for a package that ships its own libpython
//!   (see `lib/outpost-checks/PYTHON.md`). `outpost` itself never links libpython.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OUTPOST_NO_RELR");
    println!("cargo:rerun-if-env-changed=OUTPOST_PYTHON_RPATH");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("OUTPOST_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let rpath = match std::env::var("OUTPOST_PYTHON_RPATH") {
        Ok(custom) => Some(custom),
        Err(_) => pyo3_build_config::get().lib_dir().map(str::to_owned),
    };
    if let Some(dir) = rpath.filter(|d| !d.is_empty()) {
        println!("cargo:rustc-link-arg-bin=outpost-agent=-Wl,-rpath,{dir}");
    }
}
