//! The host platform in the vocabulary of OCI image indexes and the Datadog catalog
//! (`GOOS`/`GOARCH` names: `linux`, `amd64`, `arm64`).

/// The host operating system as OCI and Go name it.
pub fn host_os() -> &'static str {
    go_os(std::env::consts::OS)
}

/// The host architecture as OCI and Go name it.
pub fn host_arch() -> &'static str {
    go_arch(std::env::consts::ARCH)
}

/// Maps a Rust `target_os` to its Go/OCI name.
pub fn go_os(os: &'static str) -> &'static str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

/// Maps a Rust `target_arch` to its Go/OCI name.
pub fn go_arch(arch: &'static str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// True when a platform constraint (`""` meaning any) admits the host value.
pub fn matches(constraint: &str, host: &str) -> bool {
    constraint.is_empty() || constraint == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_os("linux"), "linux");
        assert!(matches("", "amd64"));
        assert!(matches("amd64", "amd64"));
        assert!(!matches("arm64", "amd64"));
    }
}
