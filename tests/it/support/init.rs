//! Around the `imageswap init` tests: the names `init` works with, settings
//! pointing at temporary directories, the secrets a test seeds into the fake
//! API server, and helpers that read back what `init` wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use imageswap::init::InitSettings;
use imageswap::init::tls_pair::{self, TlsPair};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

pub use super::ca::TestCa;
pub use super::fake_apiserver::{
    CSR_PATH, FakeApiServer, MWC_PATH, SignerMode, configmaps_path, secrets_path,
};

pub const NAMESPACE: &str = "imageswap-system";
pub const SECRET: &str = "imageswap-tls";
pub const CA_SECRET: &str = "imageswap-tls-ca";
pub const MWC: &str = "imageswap-webhook";
pub const WEBHOOK: &str = "imageswap.webhook.k8s.twr.io";

/// The template in the original's shape (`$CA_BUNDLE` placeholder,
/// `admissionReviewVersions: "v1"`), as existing installations have it.
pub fn template_path() -> PathBuf {
    super::fixtures_dir().join("init/imageswap-mwc.yaml")
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

/// Settings for one pod whose TLS directory is `<root>/<pod>/tls`, with the
/// cluster's signer (`csr`): most init tests are about the CSR flow; the
/// self-signed ones set their source.
pub fn settings(root: &Path, pod: &str) -> InitSettings {
    InitSettings {
        cert_source: imageswap::init::settings::CertSource::Csr,
        namespace: NAMESPACE.to_owned(),
        pod_name: pod.to_owned(),
        mwc_template: template_path(),
        tls_dir: root.join(pod).join("tls"),
        csr_timeout: Duration::from_secs(10),
        ..InitSettings::default()
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
