//! TLS material, shared by the server, the reloader and the trace exporter:
//! the crypto provider (ring) every TLS object is built with, PEM parsing
//! into a checked pair (the key must match the certificate), the `--dev`
//! self-signed pair, and the [`CertStore`] that publishes the serving pair in
//! an `ArcSwap` a rustls `ResolvesServerCert` reads on every handshake.
//! Rotation is a store into that swap: new connections get the new pair,
//! established ones keep theirs, and a broken pair never replaces a good one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no usable private key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key in {key} does not belong to the certificate in {cert}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The crypto provider of every TLS object ImageSwap builds (ring), passed
/// explicitly so nothing depends on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current serving pair, read by rustls on every handshake.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertStore {
    pub fn new() -> CertStore {
        CertStore::default()
    }

    /// Publishes a checked pair for new connections.
    pub fn store(&self, pair: CertifiedKey) {
        self.current.store(Some(Arc::new(pair)));
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for CertStore {
    /// `None` (no pair loaded yet) aborts the handshake.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// Builds a checked pair from PEM bytes; the paths only name the files in
/// errors.
pub fn pair_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
        path: key.to_owned(),
        source,
    })?;
    checked_pair(chain, private_key, cert, key)
}

fn checked_pair(
    chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|source| TlsError::Key {
            path: key.to_owned(),
            source,
        })?;
    let pair = CertifiedKey::new(chain, signing_key);
    // Strict: a pair whose consistency cannot be shown is refused too.
    pair.keys_match().map_err(|source| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })?;
    Ok(pair)
}

/// A self-signed pair for `names` (DNS names or IP addresses), generated in
/// memory: `--dev` only.
pub fn self_signed(names: &[String]) -> Result<CertifiedKey, TlsError> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
    let chain = vec![generated.cert.der().clone()];
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|e| TlsError::Key {
        path: PathBuf::from("(generated)"),
        source: rustls::Error::General(e.to_owned()),
    })?;
    let generated_path = Path::new("(generated)");
    checked_pair(chain, key, generated_path, generated_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = pem_pair("a.example");
        let pair =
            pair_from_pem(cert.as_bytes(), key.as_bytes(), Path::new("c"), Path::new("k")).expect("loads");
        assert_eq!(pair.cert.len(), 1);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = pem_pair("a.example");
        let (_, other_key) = pem_pair("b.example");
        let err = pair_from_pem(
            cert.as_bytes(),
            other_key.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .expect_err("mismatch");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn garbage_and_empty_files_are_refused() {
        let (cert, key) = pem_pair("a.example");
        let no_cert = pair_from_pem(b"", key.as_bytes(), Path::new("c"), Path::new("k")).expect_err("empty");
        assert!(matches!(no_cert, TlsError::NoCertificate { .. }), "{no_cert}");
        let no_key =
            pair_from_pem(cert.as_bytes(), b"junk", Path::new("c"), Path::new("k")).expect_err("junk");
        assert!(no_key.to_string().contains('k'), "{no_key}");
    }

    #[test]
    fn the_store_serves_what_was_stored_last() {
        let store = CertStore::new();
        assert!(!store.is_loaded());
        let a = self_signed(&["localhost".into()]).expect("a");
        let a_der = a.cert[0].clone();
        store.store(a);
        assert_eq!(store.current().expect("loaded").cert[0], a_der);
        let b = self_signed(&["127.0.0.1".into()]).expect("b");
        let b_der = b.cert[0].clone();
        store.store(b);
        assert_eq!(store.current().expect("loaded").cert[0], b_der);
    }
}
