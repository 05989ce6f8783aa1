//! The serving certificate and key as one watched file: read together,
//! checked (the key must match the certificate), published into the
//! [`CertStore`] that new TLS connections read, its expiry into
//! `imageswap_tls_cert_expiry_timestamp_seconds`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::telemetry::metrics::{Metrics, ReloadResult};
use crate::tls::{self, CertStore};

use super::watched::{WatchedFile, read_all, sha256_hex, unix_now};

/// The PEM pair and the store it is served from.
#[derive(Debug)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
}

impl TlsFiles {
    pub fn new(cert: PathBuf, key: PathBuf, store: Arc<CertStore>, metrics: Arc<Metrics>) -> TlsFiles {
        TlsFiles {
            cert,
            key,
            store,
            metrics,
        }
    }
}

impl WatchedFile for TlsFiles {
    type Value = CertifiedKey;

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }

    fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        read_all(&[&self.cert, &self.key])
    }

    fn build(&self, content: &[Vec<u8>]) -> Result<CertifiedKey, String> {
        let [cert_pem, key_pem] = content else {
            return Err("expected a certificate and a key".to_owned());
        };
        tls::pair_from_pem(cert_pem, key_pem, &self.cert, &self.key).map_err(|e| e.to_string())
    }

    fn publish(&self, pair: CertifiedKey, first: bool) {
        if let Some(not_after) = pair.end_entity_cert().ok().and_then(not_after) {
            self.metrics.tls_cert_expiry(not_after);
        }
        let sha256 = pair.cert.first().map(|leaf| sha256_hex(leaf)).unwrap_or_default();
        self.store.store(pair);
        self.metrics.tls_cert_loaded(&sha256, unix_now());
        let message = if first {
            "TLS certificate loaded."
        } else {
            "TLS certificate reloaded; new connections use it."
        };
        tracing::info!(cert = %self.cert.display(), %sha256, "{message}");
    }

    fn reject(&self, error: &str, kept: bool) {
        if kept {
            tracing::error!(error = %error, "Cannot reload the TLS certificate; keeping the last good one.");
        } else {
            tracing::error!(error = %error, "Cannot load the TLS certificate; no TLS connection until it can.");
        }
    }

    fn count(&self, result: ReloadResult) {
        self.metrics.tls_reload(result);
    }
}

/// The leaf's `notAfter`, in Unix seconds, for `imageswap_tls_cert_expiry_timestamp_seconds`.
fn not_after(leaf: &rustls_pki_types::CertificateDer<'_>) -> Option<i64> {
    x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::watched::Watched;

    #[tokio::test]
    async fn a_loaded_pair_is_served_and_named_by_its_certificate_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let generated = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).expect("rcgen");
        std::fs::write(&cert, generated.cert.pem()).expect("write");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");
        let store = Arc::new(CertStore::new());
        let metrics = Arc::new(Metrics::new());
        let mut watched = Watched::new(TlsFiles::new(cert, key, store.clone(), metrics.clone()));
        watched.check().await;
        assert!(store.is_loaded());
        let series = format!(
            "imageswap_tls_cert_loaded_timestamp_seconds{{sha256=\"{}\"}}",
            sha256_hex(generated.cert.der())
        );
        assert!(metrics.encode().contains(&series), "{}", metrics.encode());
    }
}
