//! TLS for registries and HTTP(S) tarballs: rustls with the ring provider, installed once as
//! the process default before the first client is built (reqwest and oci-client are built
//! without a provider of their own). Certificates are verified against the platform's trust
//! store.

use std::sync::Once;

/// Installs ring as the process-wide rustls provider, once. Another provider installed first
/// (by an embedding program) is kept.
pub fn ensure_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Whether an error chain holds a TLS failure (handshake, certificate). The rustls error
/// travels inside `io::Error`s (tokio-rustls wraps it, and connectors wrap that again), whose
/// `source()` skips the wrapped error, so each `io::Error` is also opened with `get_ref`.
pub(crate) fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && is_tls_error(inner)
    {
        return true;
    }
    e.source().is_some_and(is_tls_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_recognised_through_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert!(is_tls_error(&io));
        assert!(!is_tls_error(&std::io::Error::other("plain")));
    }

    #[test]
    fn clients_build_with_the_provider() {
        ensure_provider();
        ensure_provider();
        assert!(reqwest::Client::builder().build().is_ok());
    }
}
