//! Exposes the interpreter PyO3 links against: its cfgs (`Py_3_12`, `Py_GIL_DISABLED`, ...),
//! the path of its `python` executable and library directory (for `outpost version` and the
//! interpreter's default home), and an rpath to its libpython for this crate's own tests and
//! benchmarks, so they run against the Python they were built for.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    println!(
        "cargo:rustc-env=OUTPOST_BUILD_PYTHON={}",
        config.executable().unwrap_or("")
    );
    println!(
        "cargo:rustc-env=OUTPOST_BUILD_PYTHON_LIBDIR={}",
        config.lib_dir().unwrap_or("")
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
}
