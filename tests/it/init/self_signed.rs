//! `IMAGESWAP_CERT_SOURCE=self-signed` (issue 12) against the in-process fake
//! API server: the first install creates the CA secret once and issues the
//! serving pair from it without any CSR; a restart writes nothing; replicas
//! starting together create one CA and converge on one pair; and the sidecar
//! renews the CA with the old one kept in the caBundle beside the new one,
//! the pair reissued under the new CA, then the old CA dropped once expired.

use std::sync::Arc;
use std::time::Duration;

use crate::support::init::*;
use imageswap::init::settings::CertSource;
use imageswap::init::tls_pair::{self, TlsPair};
use imageswap::init::{InitSettings, MwcOutcome, PairSource, run_with, watch_with};
use imageswap::telemetry::metrics::InitMetrics;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const CA_SECRET_NAME: &str = "imageswap-tls-self-signed-ca";
const DEADLINE: Duration = Duration::from_secs(30);

fn self_signed(root: &std::path::Path, pod: &str) -> InitSettings {
    InitSettings {
        cert_source: CertSource::SelfSigned,
        ..settings(root, pod)
    }
}

fn ca_bundle_of_secret(fake: &FakeApiServer) -> Vec<u8> {
    let secret: Secret = fake
        .get(&secrets_path(NAMESPACE), CA_SECRET_NAME)
        .expect("the CA secret");
    secret.data.unwrap()["ca.crt"].0.clone()
}

/// The live caBundle (empty while the MWC is not created yet: `init`
/// writes the pair first).
fn mwc_bundle(fake: &FakeApiServer) -> Vec<u8> {
    fake.get::<MutatingWebhookConfiguration>(MWC_PATH, MWC)
        .and_then(|mwc| mwc.webhooks?.first()?.client_config.ca_bundle.clone())
        .map(|bundle| bundle.0)
        .unwrap_or_default()
}

fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

fn matching_pair(dir: &std::path::Path) -> Option<TlsPair> {
    let pair = TlsPair {
        cert_pem: std::fs::read(dir.join("cert.pem")).ok()?,
        key_pem: std::fs::read(dir.join("key.pem")).ok()?,
    };
    tls_pair::inspect(&pair).ok().map(|_| pair)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn first_install_creates_the_ca_once_and_issues_without_a_csr() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = self_signed(dir.path(), "pod-a");

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert!(matches!(outcome.pair, PairSource::Issued { .. }), "{outcome:?}");
    assert_eq!(outcome.mwc, MwcOutcome::Created);
    assert!(fake.requests_to(CSR_PATH).is_empty(), "no CSR at all");
    let bundle = ca_bundle_of_secret(&fake);
    assert_eq!(ders(&bundle).len(), 1);
    let pair = pair_on_disk(&settings.tls_dir);
    assert_eq!(stored_pair(&fake).unwrap(), pair);
    tls_pair::verify_chain(&pair.cert_pem, &bundle).unwrap();
    tls_pair::verify_chain(&pair.cert_pem, fake.ca().pem.as_bytes()).unwrap_err();
    let info = tls_pair::check_managed(
        &pair,
        &service_names(),
        time::OffsetDateTime::now_utc().unix_timestamp(),
        300 * 86_400,
    )
    .expect("a year-long pair for the service names");
    assert!(info.not_after > 0);
    assert_eq!(
        mwc_bundle(&fake),
        bundle,
        "the caBundle is the own CA, not the cluster's"
    );

    // A restart: the CA and the pair are reused, nothing is written.
    fake.clear_requests();
    let again = run_with(fake.client(), &self_signed(dir.path(), "pod-b"))
        .await
        .unwrap();
    assert_eq!(again.pair, PairSource::Existing);
    assert_eq!(again.mwc, MwcOutcome::Unchanged);
    assert_eq!(fake.write_attempts_to("/"), 0, "{:?}", fake.requests());
    assert_eq!(pair_on_disk(&dir.path().join("pod-b/tls")), pair);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_create_one_ca_and_share_one_pair() {
    install_crypto_provider();
    let fake = Arc::new(FakeApiServer::start(NAMESPACE).await);
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for i in 0..5 {
        let settings = self_signed(dir.path(), &format!("pod-{i}"));
        let client = fake.client();
        tasks.push(tokio::spawn(async move {
            run_with(client, &settings).await.map(|o| (settings, o))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    let secrets = secrets_path(NAMESPACE);
    let ca_creates = fake
        .requests_to(&secrets)
        .iter()
        .filter(|r| r.method == http::Method::POST && r.succeeded())
        .count();
    // One create of the CA secret, one of the TLS secret.
    assert_eq!(ca_creates, 2, "{:?}", fake.requests_to(&secrets));
    let bundle = ca_bundle_of_secret(&fake);
    assert_eq!(ders(&bundle).len(), 1, "one CA");
    let stored = stored_pair(&fake).unwrap();
    tls_pair::verify_chain(&stored.cert_pem, &bundle).unwrap();
    for (settings, _) in &results {
        let on_disk = pair_on_disk(&settings.tls_dir);
        // Every pod ends with a pair from the one CA, matching its key.
        tls_pair::verify_chain(&on_disk.cert_pem, &bundle).unwrap();
    }
    assert!(results.iter().any(|(s, _)| pair_on_disk(&s.tls_dir) == stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_renews_the_ca_with_overlap_in_the_ca_bundle() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    // A CA of eight seconds renewed at half its life; pairs live as long as
    // they may (up to the CA's end).
    let settings = InitSettings {
        self_signed_ca_lifetime: Duration::from_secs(8),
        self_signed_cert_lifetime: Duration::from_secs(3600),
        renew_fraction: 0.5,
        watch_interval: Duration::from_millis(100),
        ..self_signed(dir.path(), "pod-a")
    };
    let tls_dir = settings.tls_dir.clone();
    let metrics = Arc::new(InitMetrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = fake.client();
    let task = tokio::spawn(async move {
        watch_with(client, &settings, metrics, |_| {}, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    eventually("the first pass", || {
        matching_pair(&tls_dir).is_some() && !mwc_bundle(&fake).is_empty()
    })
    .await;
    let first_ca = ders(&ca_bundle_of_secret(&fake)).remove(0);

    // The CA is renewed: ca.crt and the caBundle carry the new CA and the old.
    eventually("a renewed CA beside the old one in the caBundle", || {
        let bundle = ders(&mwc_bundle(&fake));
        bundle.len() == 2 && bundle[1] == first_ca
    })
    .await;
    let ca_secret = ca_bundle_of_secret(&fake);
    let new_ca = ders(&ca_secret).remove(0);
    assert_ne!(new_ca, first_ca);
    // The pair is reissued under the new CA.
    let new_ca_pem = imageswap::init::ca_bundle::pem_of(&CertificateDer::from(new_ca.clone()));
    eventually("the pair comes from the new CA", || {
        matching_pair(&tls_dir)
            .is_some_and(|p| tls_pair::verify_chain(&p.cert_pem, new_ca_pem.as_bytes()).is_ok())
    })
    .await;
    // Once the old CA expired, the caBundle drops it.
    eventually("the old CA leaves the caBundle after it expired", || {
        !ders(&mwc_bundle(&fake)).contains(&first_ca)
    })
    .await;
    assert!(fake.requests_to(CSR_PATH).is_empty(), "no CSR at all");
    let _ = stop.send(());
    task.await.unwrap();
}
