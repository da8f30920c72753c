//! The process-wide rustls crypto provider. serin builds with one provider (ring) and installs it
//! explicitly, so no dependency can pick another at run time. No I/O.

/// Installs ring as the process-wide rustls crypto provider. Calling it again is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already (a second call in tests).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn install_is_idempotent() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
