//! Harness for the `imageswap init` tests: the fake API server, a test CA
//! (the cluster's, and any other a test needs), settings pointing at temporary
//! directories, and helpers that read back what `init` wrote.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod fake_apiserver;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imageswap::init::InitSettings;
use imageswap::init::tls_pair::{self, TlsPair};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

pub use fake_apiserver::{CSR_PATH, FakeApiServer, MWC_PATH, SignerMode, configmaps_path, secrets_path};

pub const NAMESPACE: &str = "imageswap-system";
pub const SECRET: &str = "imageswap-tls";
pub const CA_SECRET: &str = "imageswap-tls-ca";
pub const MWC: &str = "imageswap-webhook";
pub const WEBHOOK: &str = "imageswap.webhook.k8s.twr.io";

/// The template in the original's shape (`$CA_BUNDLE` placeholder,
/// `admissionReviewVersions: "v1"`), as existing installations have it.
pub fn template_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/init/imageswap-mwc.yaml")
}

/// The service names the serving certificate must cover.
pub fn service_names() -> Vec<String> {
    vec![
        "imageswap".to_owned(),
        format!("imageswap.{NAMESPACE}"),
        format!("imageswap.{NAMESPACE}.svc"),
    ]
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Settings for one pod whose TLS directory is `<root>/<pod>/tls`.
pub fn settings(root: &Path, pod: &str) -> InitSettings {
    InitSettings {
        namespace: NAMESPACE.to_owned(),
        pod_name: pod.to_owned(),
        mwc_template: template_path(),
        tls_dir: root.join(pod).join("tls"),
        csr_timeout: Duration::from_secs(10),
        ..InitSettings::default()
    }
}

/// A CA: the fake cluster's, or another one for bring-your-own tests.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

impl TestCa {
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - days(1);
        params.not_after = now + days(3650);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> Self {
        let key = KeyPair::generate().expect("intermediate key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("intermediate params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - days(1);
        params.not_after = now + days(1825);
        let cert = params.signed_by(&key, &self.issuer).expect("signed intermediate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving pair for `dns`, valid from `from_days` to `to_days` (relative
    /// to now).
    pub fn issue(&self, dns: &[String], from_days: i64, to_days: i64) -> TlsPair {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(dns.to_vec()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "imageswap test leaf");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + days(from_days);
        params.not_after = now + days(to_days);
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        TlsPair {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    /// A certificate for an existing key (PKCS#8 PEM), e.g. an RSA key the
    /// original ImageSwap generated.
    pub fn issue_for_key(&self, key_pkcs8_pem: &str, dns: &[String], from_days: i64, to_days: i64) -> String {
        let key = KeyPair::from_pem(key_pkcs8_pem).expect("a PKCS#8 key");
        let mut params = CertificateParams::new(dns.to_vec()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("imageswap.{NAMESPACE}.svc"));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + days(from_days);
        params.not_after = now + days(to_days);
        params.signed_by(&key, &self.issuer).expect("signed leaf").pem()
    }

    /// [`TestCa::sign_csr`] for a certificate living `lifetime` from this
    /// second on (short lifetimes, for renewal tests).
    pub fn sign_csr_for(&self, csr_pem: &str, lifetime: Duration) -> Result<String, rcgen::Error> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(time::OffsetDateTime::now_utc());
        request.params.not_before = now;
        request.params.not_after = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::HOUR);
        request.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(request.signed_by(&self.issuer)?.pem())
    }

    /// What a kubelet-serving signer does with a CSR: keep its subject, names
    /// and key, add serving usages, sign for `valid_days`.
    pub fn sign_csr(&self, csr_pem: &str, valid_days: i64) -> Result<String, rcgen::Error> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = time::OffsetDateTime::now_utc();
        request.params.not_before = now - time::Duration::minutes(5);
        request.params.not_after = now + days(valid_days);
        request.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(request.signed_by(&self.issuer)?.pem())
    }
}

/// A TLS secret holding `pair`, with the given annotations.
pub fn tls_secret(pair: &TlsPair, annotations: &[(&str, &str)]) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(SECRET.to_owned());
    secret.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
    );
    secret.type_ = Some("Opaque".to_owned());
    secret.data = Some(
        [
            ("cert.pem".to_owned(), ByteString(pair.cert_pem.clone())),
            ("key.pem".to_owned(), ByteString(pair.key_pem.clone())),
        ]
        .into(),
    );
    secret
}

/// The bring-your-own CA secret with `rootca.pem`.
pub fn ca_secret(rootca_pem: &str) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(CA_SECRET.to_owned());
    secret.data = Some(
        [(
            "rootca.pem".to_owned(),
            ByteString(rootca_pem.as_bytes().to_vec()),
        )]
        .into(),
    );
    secret
}

/// The pair stored in the TLS secret.
pub fn stored_pair(fake: &FakeApiServer) -> Option<TlsPair> {
    let secret: Secret = fake.get(&secrets_path(NAMESPACE), SECRET)?;
    let data = secret.data.unwrap_or_default();
    Some(TlsPair {
        cert_pem: data
            .get("cert.pem")
            .map(|value| value.0.clone())
            .unwrap_or_default(),
        key_pem: data
            .get("key.pem")
            .map(|value| value.0.clone())
            .unwrap_or_default(),
    })
}

/// Reads the pair `init` wrote for the server and checks what the server
/// needs: both files, the key private (0600) and belonging to the certificate.
pub fn pair_on_disk(tls_dir: &Path) -> TlsPair {
    let pair = TlsPair {
        cert_pem: std::fs::read(tls_dir.join("cert.pem")).expect("cert.pem written"),
        key_pem: std::fs::read(tls_dir.join("key.pem")).expect("key.pem written"),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls_dir.join("key.pem"))
            .expect("key.pem")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key.pem must be private");
    }
    tls_pair::inspect(&pair).expect("the key on disk matches the certificate on disk");
    pair
}

/// Log lines emitted on this thread while the guard lives (tests run `init`
/// on a current-thread runtime, so all of its events land here).
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || SharedWriter(writer.clone()))
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        let bytes = self.buffer.lock().map(|bytes| bytes.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
