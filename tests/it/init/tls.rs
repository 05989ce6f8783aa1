//! `imageswap init`, spec §1 (the serving pair managed through the CSR API),
//! against the in-process fake API server: first install, restart with a
//! sound secret, renewal, unusable stored pairs, a signer that never signs or
//! refuses, and replicas racing on first install and on renewal.

use std::time::{Duration, Instant};

use imageswap::init::tls_pair::{self, TlsPair};
use imageswap::init::{InitOutcome, InitSettings, MwcOutcome, PairSource, run_with};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;

use crate::support::init::*;

const DAY: i64 = 86_400;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn without_mwc(settings: InitSettings) -> InitSettings {
    InitSettings {
        disable_auto_mwc: true,
        ..settings
    }
}

#[tokio::test]
async fn first_install_issues_through_a_csr_and_stores_the_pair() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), "imageswap-7d9f-abcde");

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    let PairSource::Issued { csr_name } = &outcome.pair else {
        panic!("expected an issued pair, got {outcome:?}");
    };
    assert_eq!(outcome.mwc, MwcOutcome::Created);

    // The CSR: named after the pod, the kubelet-serving signer, serving
    // usages, approved by us, signed by the fake signer.
    let csrs: Vec<CertificateSigningRequest> = fake.list(CSR_PATH);
    assert_eq!(csrs.len(), 1);
    let csr = &csrs[0];
    assert_eq!(csr.metadata.name.as_deref(), Some(csr_name.as_str()));
    assert!(
        csr_name.starts_with("imageswap.imageswap-system.imageswap-7d9f-abcde."),
        "{csr_name}"
    );
    assert_eq!(csr.spec.signer_name, "kubernetes.io/kubelet-serving");
    assert_eq!(
        csr.spec.usages.as_deref(),
        Some(
            &[
                "digital signature".to_owned(),
                "key encipherment".to_owned(),
                "server auth".to_owned()
            ][..]
        )
    );
    let status = csr.status.as_ref().unwrap();
    let approved = status.conditions.as_ref().unwrap();
    assert_eq!(approved.len(), 1);
    assert_eq!(
        (approved[0].type_.as_str(), approved[0].status.as_str()),
        ("Approved", "True")
    );
    assert!(status.certificate.is_some());

    // The secret: created once, holding the pair that is on disk, signed by
    // the cluster CA, covering the service names, far from expiry.
    let secret: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret
            .metadata
            .annotations
            .unwrap()
            .get("imageswap/updated-by-pod")
            .map(String::as_str),
        Some("imageswap-7d9f-abcde")
    );
    let stored = stored_pair(&fake).unwrap();
    let on_disk = pair_on_disk(&settings.tls_dir);
    assert_eq!(stored, on_disk);
    assert_eq!(stored.cert_pem, status.certificate.as_ref().unwrap().0);
    tls_pair::verify_chain(&stored.cert_pem, fake.ca().pem.as_bytes()).unwrap();
    let info = tls_pair::check_managed(&stored, &service_names(), now(), 180 * DAY).unwrap();
    assert_eq!(info.not_after, outcome.not_after);

    // Writes: CSR create + approval, one secret create, one MWC create.
    assert_eq!(fake.writes_to(CSR_PATH), 2);
    assert_eq!(
        fake.requests_to(&format!("{CSR_PATH}/{csr_name}/approval")).len(),
        1
    );
    assert_eq!(fake.writes_to(&secrets_path(NAMESPACE)), 1);
    assert_eq!(fake.writes_to(MWC_PATH), 1);
    assert_eq!(fake.writes(), 4);
    assert_eq!(
        fake.write_attempts_to("/"),
        4,
        "no failed write on a clean install"
    );
}

#[tokio::test]
async fn restart_with_a_valid_secret_issues_nothing_and_writes_nothing() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let existing = fake.ca().issue(&service_names(), -10, 300);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&existing, &[]));
    let dir = tempfile::tempdir().unwrap();
    let settings = without_mwc(settings(dir.path(), "pod-b"));

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Existing);
    assert_eq!(outcome.mwc, MwcOutcome::Disabled);
    assert_eq!(pair_on_disk(&settings.tls_dir), existing);
    assert_eq!(stored_pair(&fake).unwrap(), existing);
    assert!(fake.requests_to(CSR_PATH).is_empty(), "no CSR traffic at all");
    assert_eq!(fake.write_attempts_to("/"), 0);
    // One read: the secret.
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_certificate_within_the_renewal_threshold_is_reissued_in_place() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let old = fake.ca().issue(&service_names(), -265, 100);
    let mut seeded = tls_secret(&old, &[("owner-note", "kept")]);
    seeded
        .data
        .as_mut()
        .unwrap()
        .insert("extra".to_owned(), ByteString(b"kept too".to_vec()));
    fake.seed(&secrets_path(NAMESPACE), &seeded);
    let before: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = without_mwc(settings(dir.path(), "pod-c"));

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert!(matches!(outcome.pair, PairSource::Issued { .. }), "{outcome:?}");
    let after: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    let stored = stored_pair(&fake).unwrap();
    assert_ne!(stored, old);
    assert_eq!(pair_on_disk(&settings.tls_dir), stored);
    assert!(tls_pair::inspect(&stored).unwrap().seconds_left(now()) > 300 * DAY);
    // Replaced, not recreated: same uid, new resourceVersion, other keys and
    // annotations kept.
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_ne!(after.metadata.resource_version, before.metadata.resource_version);
    assert_eq!(after.data.as_ref().unwrap()["extra"].0, b"kept too");
    assert_eq!(after.metadata.annotations.as_ref().unwrap()["owner-note"], "kept");
    let secret_writes = fake.requests_to(&secrets_path(NAMESPACE));
    let writes: Vec<_> = secret_writes.iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, hyper::Method::PUT);
    assert_eq!(writes[0].path, format!("{}/{SECRET}", secrets_path(NAMESPACE)));
    assert_eq!(fake.writes_to(CSR_PATH), 2);
}

#[tokio::test]
async fn the_renewal_threshold_is_configurable() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let old = fake.ca().issue(&service_names(), -265, 100);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&old, &[]));
    let dir = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        renew_before: Duration::from_secs(30 * 86_400),
        ..without_mwc(settings(dir.path(), "pod-c"))
    };

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Existing);
    assert_eq!(fake.write_attempts_to("/"), 0);
}

/// Builds a bad stored pair from the cluster CA.
type MakePair = Box<dyn Fn(&TestCa) -> TlsPair>;

#[tokio::test]
async fn unusable_stored_pairs_are_reissued() {
    install_crypto_provider();
    let cases: Vec<(&str, MakePair)> = vec![
        (
            "empty",
            Box::new(|_| TlsPair {
                cert_pem: Vec::new(),
                key_pem: Vec::new(),
            }),
        ),
        (
            "not a certificate",
            Box::new(|ca| TlsPair {
                cert_pem: b"garbage".to_vec(),
                key_pem: ca.issue(&service_names(), -1, 300).key_pem,
            }),
        ),
        (
            "key of another pair",
            Box::new(|ca| TlsPair {
                cert_pem: ca.issue(&service_names(), -1, 300).cert_pem,
                key_pem: ca.issue(&service_names(), -1, 300).key_pem,
            }),
        ),
        (
            "wrong names",
            Box::new(|ca| ca.issue(&["other.example.com".to_owned()], -1, 300)),
        ),
        ("expired", Box::new(|ca| ca.issue(&service_names(), -400, -1))),
    ];
    for (case, make) in cases {
        let fake = FakeApiServer::start(NAMESPACE).await;
        let bad = make(fake.ca());
        fake.seed(&secrets_path(NAMESPACE), &tls_secret(&bad, &[]));
        let dir = tempfile::tempdir().unwrap();
        let settings = without_mwc(settings(dir.path(), "pod-d"));

        let outcome = run_with(fake.client(), &settings).await.unwrap();

        assert!(
            matches!(outcome.pair, PairSource::Issued { .. }),
            "{case}: {outcome:?}"
        );
        let stored = stored_pair(&fake).unwrap();
        tls_pair::check_managed(&stored, &service_names(), now(), 180 * DAY).unwrap();
        assert_eq!(pair_on_disk(&settings.tls_dir), stored, "{case}");
        assert_eq!(fake.writes_to(&secrets_path(NAMESPACE)), 1, "{case}");
    }
}

#[tokio::test]
async fn a_csr_that_is_never_signed_fails_with_one_clear_line() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    fake.set_signer(SignerMode::Never);
    let dir = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        csr_timeout: Duration::from_secs(1),
        ..settings(dir.path(), "pod-e")
    };

    let started = Instant::now();
    let err = run_with(fake.client(), &settings).await.unwrap_err();
    let waited = started.elapsed();

    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with("CertificateSigningRequest imageswap.imageswap-system.pod-e."),
        "{line}"
    );
    assert!(
        line.contains("was approved but kubernetes.io/kubelet-serving did not sign it within 1s"),
        "{line}"
    );
    assert!(line.contains("IMAGESWAP_CSR_SIGNER_NAME"), "{line}");
    assert!(line.contains("imageswap-byoc"), "{line}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Polled with backoff, not hammered: 100, 200, 400 ms, then the rest.
    let polls = fake
        .requests_to(CSR_PATH)
        .iter()
        .filter(|request| request.method == hyper::Method::GET)
        .count();
    assert!((3..=8).contains(&polls), "{polls} polls");
    // Nothing stored, nothing written for the server, no MWC touched.
    assert!(stored_pair(&fake).is_none());
    assert!(!settings.tls_dir.join("cert.pem").exists());
    assert!(fake.requests_to(MWC_PATH).is_empty());
}

#[tokio::test]
async fn a_csr_the_signer_refuses_fails_without_waiting_for_the_timeout() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    fake.set_signer(SignerMode::Fail);
    let dir = tempfile::tempdir().unwrap();
    let settings = without_mwc(settings(dir.path(), "pod-f"));

    let started = Instant::now();
    let err = run_with(fake.client(), &settings).await.unwrap_err();

    let line = err.to_string();
    assert!(
        line.contains("was marked failed (the fake signer refuses this request)"),
        "{line}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.write_attempts_to(&secrets_path(NAMESPACE)), 0);
}

/// Starts `replicas` inits at once against one fake, each with its own pod
/// name, TLS directory and client.
async fn race(
    fake: &FakeApiServer,
    root: &std::path::Path,
    replicas: usize,
) -> Vec<(InitSettings, InitOutcome)> {
    let mut tasks = Vec::new();
    for replica in 0..replicas {
        let settings = without_mwc(settings(root, &format!("imageswap-replica-{replica}")));
        let client = fake.client();
        tasks.push(tokio::spawn(async move {
            let outcome = run_with(client, &settings).await;
            (settings, outcome)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        let (settings, outcome) = task.await.unwrap();
        results.push((settings, outcome.unwrap()));
    }
    results
}

/// What every race must end with: one consistent pair in the secret, and
/// every pod serving exactly that pair (its key matches its certificate).
fn assert_converged(fake: &FakeApiServer, results: &[(InitSettings, InitOutcome)]) -> usize {
    let stored = stored_pair(fake).unwrap();
    tls_pair::check_managed(&stored, &service_names(), now(), 180 * DAY).unwrap();
    for (settings, _) in results {
        assert_eq!(
            pair_on_disk(&settings.tls_dir),
            stored,
            "{} serves another pair",
            settings.pod_name
        );
    }
    let issued: Vec<_> = results
        .iter()
        .filter(|(_, outcome)| matches!(outcome.pair, PairSource::Issued { .. }))
        .collect();
    assert_eq!(issued.len(), 1, "exactly one replica's pair was stored");
    assert_eq!(
        fake.writes_to(&secrets_path(NAMESPACE)),
        1,
        "one successful secret write"
    );
    // Every replica that issued a CSR either stored its pair or lost the
    // race and took the winner's.
    let issuers = results
        .iter()
        .filter(|(_, outcome)| matches!(outcome.pair, PairSource::Issued { .. } | PairSource::Winner))
        .count();
    assert_eq!(fake.list::<CertificateSigningRequest>(CSR_PATH).len(), issuers);
    issuers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_first_install_converge_on_one_pair() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    fake.set_sign_barrier(4);
    let dir = tempfile::tempdir().unwrap();

    let results = race(&fake, dir.path(), 4).await;

    // No CSR is signed before all four are approved, so all four read "no
    // secret", all four issue, and three creates lose with 409 AlreadyExists.
    let issuers = assert_converged(&fake, &results);
    assert_eq!(issuers, 4);
    let conflicts = fake
        .requests_to(&secrets_path(NAMESPACE))
        .iter()
        .filter(|request| request.is_write() && request.status == 409)
        .count();
    assert_eq!(conflicts, issuers - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_renewal_converge_on_one_pair() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let old = fake.ca().issue(&service_names(), -300, 60);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&old, &[]));
    fake.set_sign_barrier(4);
    let dir = tempfile::tempdir().unwrap();

    let results = race(&fake, dir.path(), 4).await;

    let issuers = assert_converged(&fake, &results);
    assert_ne!(stored_pair(&fake).unwrap(), old);
    assert_eq!(issuers, 4);
    // The losers' replaces carried the stale resourceVersion: 409 Conflict.
    let conflicts = fake
        .requests_to(&secrets_path(NAMESPACE))
        .iter()
        .filter(|request| request.method == hyper::Method::PUT && request.status == 409)
        .count();
    assert_eq!(conflicts, issuers - 1);
}

/// The secret as the original ImageSwap wrote it: type `tls`, a PKCS#1 RSA
/// key ("BEGIN RSA PRIVATE KEY"), its labels.
fn original_secret(fake: &FakeApiServer, to_days: i64) -> (Secret, TlsPair) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/init");
    let pkcs1 = std::fs::read_to_string(fixtures.join("original-rsa-pkcs1.key")).unwrap();
    let pkcs8 = std::fs::read_to_string(fixtures.join("original-rsa-pkcs8.key")).unwrap();
    let pair = TlsPair {
        cert_pem: fake
            .ca()
            .issue_for_key(
                &pkcs8,
                &format!("imageswap.{NAMESPACE}.svc"),
                &service_names(),
                -10,
                to_days,
            )
            .into_bytes(),
        key_pem: pkcs1.into_bytes(),
    };
    let mut secret = tls_secret(&pair, &[]);
    secret.type_ = Some("tls".to_owned());
    secret.metadata.labels = Some(
        [
            ("app".to_owned(), "imageswap".to_owned()),
            (
                "imageswap/updated-by-pod".to_owned(),
                "imageswap-old-pod".to_owned(),
            ),
        ]
        .into(),
    );
    (secret, pair)
}

#[tokio::test]
async fn a_pair_the_original_issued_is_reused_as_it_is() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let (secret, pair) = original_secret(&fake, 300);
    fake.seed(&secrets_path(NAMESPACE), &secret);
    let dir = tempfile::tempdir().unwrap();
    let settings = without_mwc(settings(dir.path(), "pod-new"));

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.pair, PairSource::Existing);
    let on_disk = pair_on_disk(&settings.tls_dir);
    assert_eq!(on_disk, pair);
    assert!(on_disk.key_pem.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(fake.write_attempts_to("/"), 0);
}

#[tokio::test]
async fn renewing_the_originals_secret_keeps_its_type() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let (secret, old) = original_secret(&fake, 90);
    fake.seed(&secrets_path(NAMESPACE), &secret);
    let dir = tempfile::tempdir().unwrap();
    let settings = without_mwc(settings(dir.path(), "pod-new"));

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    // A replace that changed `type` would have been rejected (422).
    assert!(matches!(outcome.pair, PairSource::Issued { .. }), "{outcome:?}");
    let after: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    assert_eq!(after.type_.as_deref(), Some("tls"));
    assert_eq!(after.metadata.labels.as_ref().unwrap()["app"], "imageswap");
    let stored = stored_pair(&fake).unwrap();
    assert_ne!(stored, old);
    assert_eq!(pair_on_disk(&settings.tls_dir), stored);
    assert_eq!(fake.writes_to(&secrets_path(NAMESPACE)), 1);
}
