//! The serving certificate and key as one watched file: read together,
//! checked (the key must match the certificate), published into the
//! [`CertStore`] that new TLS connections read, its expiry into
//! `imageswap_tls_cert_expiry_timestamp_seconds`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::telemetry::metrics::{Metrics, ReloadResult};
use crate::tls::{self, CertStore};

use super::watched::{WatchedFile, read_all};

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
        self.store.store(pair);
        let message = if first {
            "TLS certificate loaded."
        } else {
            "TLS certificate reloaded; new connections use it."
        };
        tracing::info!(cert = %self.cert.display(), "{message}");
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
