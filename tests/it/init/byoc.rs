//! `imageswap init`, spec §1.1 (bring your own certificate): the annotated
//! secret's pair is used as is and never rotated, the operator's CA goes into
//! the webhook configuration, and each thing that can be wrong with the pair
//! fails with one line that names it, before anything is written.

use imageswap::init::{MwcOutcome, PairSource, run_with};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;

use crate::support::init::*;
use crate::support::logs::LogCapture;

const BYOC: (&str, &str) = ("imageswap-byoc", "true");

#[tokio::test]
async fn a_good_byoc_pair_is_used_as_is_and_its_ca_goes_into_the_mwc() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let operator_ca = TestCa::new("operator CA");
    // 100 days left: a managed pair would be renewed, a BYOC pair never is.
    let pair = operator_ca.issue(&service_names(), -1, 100);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
    fake.seed(&secrets_path(NAMESPACE), &ca_secret(&operator_ca.pem));
    let before: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), "pod-a");

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Byoc);
    assert_eq!(outcome.mwc, MwcOutcome::Created);
    assert_eq!(pair_on_disk(&settings.tls_dir), pair);
    let after: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    assert!(fake.requests_to(CSR_PATH).is_empty());
    // The CA is the operator's, so the cluster CA ConfigMap is not read.
    assert!(fake.requests_to(&configmaps_path(NAMESPACE)).is_empty());
    let mwc: MutatingWebhookConfiguration = fake.get(MWC_PATH, MWC).unwrap();
    let hook = &mwc.webhooks.unwrap()[0];
    assert_eq!(
        hook.client_config.ca_bundle.as_ref().unwrap().0,
        operator_ca.pem.as_bytes()
    );
    // The only write: the MWC.
    assert_eq!(fake.writes(), 1);
    assert_eq!(fake.writes_to(MWC_PATH), 1);
}

#[tokio::test]
async fn a_byoc_chain_through_an_intermediate_verifies_against_the_root() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let root = TestCa::new("operator root");
    let intermediate = root.intermediate("operator intermediate");
    let mut pair = intermediate.issue(&service_names(), -1, 365);
    pair.cert_pem.extend_from_slice(intermediate.pem.as_bytes());
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
    fake.seed(&secrets_path(NAMESPACE), &ca_secret(&root.pem));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "pod-a");
    settings.disable_auto_mwc = true;

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Byoc);
    assert_eq!(
        pair_on_disk(&settings.tls_dir),
        pair,
        "the chain is written as given"
    );
    assert_eq!(fake.write_attempts_to("/"), 0);
}

#[tokio::test]
async fn a_byoc_pair_expiring_within_30_days_serves_with_a_warning() {
    install_crypto_provider();
    let logs = LogCapture::on_this_thread();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let operator_ca = TestCa::new("operator CA");
    let pair = operator_ca.issue(&service_names(), -300, 10);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
    fake.seed(&secrets_path(NAMESPACE), &ca_secret(&operator_ca.pem));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "pod-a");
    settings.disable_auto_mwc = true;

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Byoc);
    assert_eq!(pair_on_disk(&settings.tls_dir), pair);
    let text = logs.text();
    assert!(
        text.contains("WARN") && text.contains("expires within 30 days; renew it and update the secret"),
        "{text}"
    );
    assert_eq!(fake.write_attempts_to("/"), 0);
}

#[tokio::test]
async fn a_byoc_pair_without_the_short_service_names_serves_with_a_warning() {
    install_crypto_provider();
    let logs = LogCapture::on_this_thread();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let operator_ca = TestCa::new("operator CA");
    // The API server dials only <svc>.<ns>.svc.
    let pair = operator_ca.issue(&[format!("imageswap.{NAMESPACE}.svc")], -1, 365);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
    fake.seed(&secrets_path(NAMESPACE), &ca_secret(&operator_ca.pem));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "pod-a");
    settings.disable_auto_mwc = true;

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Byoc);
    let text = logs.text();
    assert!(text.contains("does not cover every service name"), "{text}");
    assert!(text.contains("imageswap, imageswap.imageswap-system"), "{text}");
}

/// Seeds one broken BYOC setup.
type Setup = fn(&FakeApiServer);

fn operator_pair(
    names: &[String],
    from_days: i64,
    to_days: i64,
) -> (TestCa, imageswap::init::tls_pair::TlsPair) {
    let ca = TestCa::new("operator CA");
    let pair = ca.issue(names, from_days, to_days);
    (ca, pair)
}

#[tokio::test]
async fn each_byoc_problem_fails_with_one_line_naming_it_and_writes_nothing() {
    install_crypto_provider();
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "missing key",
            |fake| {
                let (ca, pair) = operator_pair(&service_names(), -1, 365);
                let mut secret = tls_secret(&pair, &[BYOC]);
                secret.data.as_mut().unwrap().remove("key.pem");
                fake.seed(&secrets_path(NAMESPACE), &secret);
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&ca.pem));
            },
            "bring-your-own certificate in secret imageswap-system/imageswap-tls: \"key.pem\" is missing or empty",
        ),
        (
            "empty cert",
            |fake| {
                let (ca, mut pair) = operator_pair(&service_names(), -1, 365);
                pair.cert_pem.clear();
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&ca.pem));
            },
            "bring-your-own certificate in secret imageswap-system/imageswap-tls: \"cert.pem\" is missing or empty",
        ),
        (
            "missing CA secret",
            |fake| {
                let (_, pair) = operator_pair(&service_names(), -1, 365);
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
            },
            "secret imageswap-system/imageswap-tls is marked imageswap-byoc but its CA secret \
             imageswap-system/imageswap-tls-ca does not exist",
        ),
        (
            "empty rootca.pem",
            |fake| {
                let (_, pair) = operator_pair(&service_names(), -1, 365);
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(""));
            },
            "CA secret imageswap-system/imageswap-tls-ca has no \"rootca.pem\" or it is empty",
        ),
        (
            "key does not match",
            |fake| {
                let ca = TestCa::new("operator CA");
                let one = ca.issue(&service_names(), -1, 365);
                let two = ca.issue(&service_names(), -1, 365);
                let mixed = imageswap::init::tls_pair::TlsPair {
                    cert_pem: one.cert_pem,
                    key_pem: two.key_pem,
                };
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&mixed, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&ca.pem));
            },
            "\"key.pem\" does not match the certificate in \"cert.pem\": store the private key that belongs to the certificate",
        ),
        (
            "not signed by rootca.pem",
            |fake| {
                let (_, pair) = operator_pair(&service_names(), -1, 365);
                let unrelated = TestCa::new("unrelated CA");
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&unrelated.pem));
            },
            "the certificate is not signed by any CA in \"rootca.pem\"",
        ),
        (
            "wrong SANs",
            |fake| {
                let (ca, pair) = operator_pair(&["webhook.example.com".to_owned()], -1, 365);
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&ca.pem));
            },
            "the certificate does not cover imageswap.imageswap-system.svc (its DNS names: webhook.example.com): \
             reissue it with the DNS name imageswap.imageswap-system.svc",
        ),
        (
            "expired",
            |fake| {
                let (ca, pair) = operator_pair(&service_names(), -400, -2);
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&ca.pem));
            },
            "the certificate expired at ",
        ),
        (
            "garbage certificate",
            |fake| {
                let (ca, mut pair) = operator_pair(&service_names(), -1, 365);
                pair.cert_pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
                fake.seed(&secrets_path(NAMESPACE), &tls_secret(&pair, &[BYOC]));
                fake.seed(&secrets_path(NAMESPACE), &ca_secret(&ca.pem));
            },
            "\"cert.pem\" does not parse as an X.509 certificate",
        ),
    ];

    for (case, setup, expected) in cases {
        let fake = FakeApiServer::start(NAMESPACE).await;
        setup(&fake);
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), "pod-a");

        let err = run_with(fake.client(), &settings).await.unwrap_err();

        let line = err.to_string();
        assert!(line.contains(expected), "{case}: {line}");
        assert!(!line.contains('\n'), "{case}: {line}");
        assert_eq!(fake.write_attempts_to("/"), 0, "{case}: BYOC never writes");
        assert!(fake.requests_to(CSR_PATH).is_empty(), "{case}: BYOC never issues");
        assert!(
            fake.requests_to(MWC_PATH).is_empty(),
            "{case}: no MWC with a bad pair"
        );
        assert!(
            !settings.tls_dir.join("key.pem").exists(),
            "{case}: nothing written for the server"
        );
    }
}
