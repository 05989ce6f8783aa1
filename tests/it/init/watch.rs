//! `imageswap init --watch` (issue 12) against the in-process fake API
//! server, with a live in-process `imageswap serve` reading the pair the
//! sidecar writes, over real TLS: renewal while connections are served, a
//! cluster CA rotation end to end (a client trusting only the webhook's
//! `caBundle` at every step), a bring-your-own secret renewed by
//! cert-manager, an edited webhook configuration put back with one write,
//! five sidecars racing on one renewal, and the API server away for a while.
//! Time is made short with short certificate lifetimes and a 100 ms watch
//! interval; every wait is for a condition, with a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::init::*;
use imageswap::config::{Limits, ServeConfig, TlsSource, Transport};
use imageswap::init::tls_pair::{self, TlsPair};
use imageswap::init::{InitOutcome, InitSettings, watch_with};
use imageswap::rules::RulesSource;
use imageswap::server::Server;
use imageswap::telemetry::metrics::{InitMetrics, Metrics};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(30);

/// The settings of one sidecar: watch every 100 ms.
fn watch_settings(root: &Path, pod: &str) -> InitSettings {
    InitSettings {
        watch_interval: INTERVAL,
        ..settings(root, pod)
    }
}

/// One running sidecar.
struct Sidecar {
    tls_dir: PathBuf,
    metrics: Arc<InitMetrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Sidecar {
    /// Starts `init --watch` and returns once its first pass wrote the pair.
    async fn start(fake: &FakeApiServer, settings: InitSettings) -> Sidecar {
        let metrics = Arc::new(InitMetrics::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<InitOutcome>();
        let client = fake.client();
        let tls_dir = settings.tls_dir.clone();
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            watch_with(
                client,
                &settings,
                task_metrics,
                move |outcome| {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(outcome.clone());
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("the first pass succeeds");
        });
        tokio::time::timeout(DEADLINE, ready_rx)
            .await
            .expect("the first pass within the deadline")
            .expect("the first pass succeeds");
        Sidecar {
            tls_dir,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// The pair on disk (read again while caught between two renames), its
    /// key private.
    fn pair(&self) -> TlsPair {
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(pair) = matching_pair(&self.tls_dir) {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(self.tls_dir.join("key.pem"))
                        .unwrap()
                        .permissions()
                        .mode();
                    assert_eq!(mode & 0o777, 0o600, "key.pem must be private");
                }
                return pair;
            }
            assert!(std::time::Instant::now() < until, "a matching pair on disk");
            std::thread::yield_now();
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("the sidecar stops")
            .expect("the sidecar task");
    }
}

/// A live `imageswap serve` whose TLS pair is the sidecar's directory.
struct LiveServer {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    _maps: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_server(tls_dir: &Path) -> LiveServer {
    let maps = tempfile::tempdir().unwrap();
    let maps_file = maps.path().join("imageswap-maps.conf");
    std::fs::write(&maps_file, "default:\n").unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Tls(TlsSource::Files {
            cert: tls_dir.join("cert.pem"),
            key: tls_dir.join("key.pem"),
        }),
        rules: RulesSource::Maps(maps_file),
        keep_images: vec!["auto".to_owned()],
        disable_label: "k8s.twr.io/imageswap".to_owned(),
        pod_name: Some("imageswap-watch-test".to_owned()),
        namespace: Some(NAMESPACE.to_owned()),
        limits: Limits {
            max_body_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrency: 1024,
            memory_budget_bytes: 64 * 1024 * 1024,
            tls_handshake_timeout: imageswap::config::TLS_HANDSHAKE_TIMEOUT,
            first_request_timeout: imageswap::config::FIRST_REQUEST_TIMEOUT,
        },
        cache_capacity: 1000,
        shutdown_grace: Duration::from_secs(5),
        shutdown_delay: Duration::ZERO,
        metrics_listen: None,
        shadow: false,
        dev: false,
        reload_poll: Duration::from_millis(500),
        traces: None,
        log_swaps: false,
        loop_threshold: imageswap::server::loops::DEFAULT_LOOP_THRESHOLD,
        verify: crate::support::server::verify_args(
            false,
            imageswap::verify::OnError::Swap,
            Duration::from_secs(1),
        ),
        pull_secrets: Default::default(),
    };
    let metrics = Arc::new(Metrics::new());
    let server = Server::bind(config, metrics.clone())
        .await
        .expect("the server binds");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    LiveServer {
        addr,
        metrics,
        _maps: maps,
        stop: Some(stop),
    }
}

/// A TLS client that trusts exactly the certificates of `roots_pem` and
/// checks the name the API server dials.
fn client_config(roots_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(der.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(imageswap::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A new TLS connection to the server, verified as the API server would.
async fn connect(addr: SocketAddr, roots_pem: &[u8]) -> Result<Tls, String> {
    let connector = tokio_rustls::TlsConnector::from(client_config(roots_pem));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(format!("imageswap.{NAMESPACE}.svc")).unwrap();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

fn peer_certificate(stream: &Tls) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// `GET /healthz` on a kept-alive connection; the status.
async fn healthz(stream: &mut Tls) -> Result<u16, String> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: imageswap\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A new connection and one request: the certificate presented.
async fn request(addr: SocketAddr, roots_pem: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = connect(addr, roots_pem).await?;
    let cert = peer_certificate(&stream);
    match healthz(&mut stream).await? {
        200 => Ok(cert),
        other => Err(format!("/healthz answered {other}")),
    }
}

/// Polls `check` every 20 ms until it holds or the deadline passes.
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

/// The pair in `dir` when its key matches its certificate: `None` while a
/// reader catches the sidecar between its two renames (the server's
/// reloader refuses such a read and looks again, so must the tests).
fn matching_pair(dir: &Path) -> Option<TlsPair> {
    let pair = TlsPair {
        cert_pem: std::fs::read(dir.join("cert.pem")).ok()?,
        key_pem: std::fs::read(dir.join("key.pem")).ok()?,
    };
    tls_pair::inspect(&pair).ok().map(|_| pair)
}

fn live_mwc(fake: &FakeApiServer) -> MutatingWebhookConfiguration {
    fake.get(MWC_PATH, MWC).expect("the MWC exists")
}

fn ca_bundle(fake: &FakeApiServer) -> Vec<u8> {
    live_mwc(fake).webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0
}

fn bundle_size(bundle: &[u8]) -> usize {
    CertificateDer::pem_slice_iter(bundle).count()
}

fn leaf_der(cert_pem: &[u8]) -> Vec<u8> {
    CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_while_serving_never_fails_a_connection() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    // Four-second certificates renewed at half their life: a renewal every
    // two seconds.
    fake.set_cert_lifetime(Duration::from_secs(4));
    let dir = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        renew_fraction: 0.5,
        ..watch_settings(dir.path(), "pod-a")
    };
    let sidecar = Sidecar::start(&fake, settings).await;
    let first = sidecar.pair();
    let server = start_server(&sidecar.tls_dir).await;
    let cluster_ca = fake.ca().pem.clone();

    // One connection kept alive throughout, and a new one every round.
    let mut kept = connect(server.addr, cluster_ca.as_bytes()).await.unwrap();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut requests = 0;
    let until = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "two renewals within the deadline; saw {}",
            seen.len()
        );
        let cert = request(server.addr, cluster_ca.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("request {requests} failed during renewal: {e}"));
        assert_eq!(healthz(&mut kept).await, Ok(200), "the kept-alive connection");
        requests += 1;
        if !seen.contains(&cert) {
            seen.push(cert);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen[0],
        leaf_der(&first.cert_pem),
        "the first pair served is the first written"
    );
    // Each served certificate is one the signer issued for the service.
    let latest = sidecar.pair();
    tls_pair::verify_chain(&latest.cert_pem, cluster_ca.as_bytes()).unwrap();
    let info = tls_pair::inspect(&latest).unwrap();
    // The server's expiry gauge follows the pair it serves.
    let metrics = server.metrics.clone();
    eventually("the server's expiry gauge is the served pair's", || {
        matching_pair(&sidecar.tls_dir).is_some_and(|pair| {
            let now_served = tls_pair::inspect(&pair).unwrap();
            metric(&metrics.encode(), "imageswap_tls_cert_expiry_timestamp_seconds")
                == now_served.not_after as f64
        })
    })
    .await;
    assert!(info.not_after > 0);
    let text = sidecar.metrics.encode();
    assert!(
        metric(&text, "imageswap_init_actions_total{action=\"pair_issued\"}") >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "imageswap_init_reconcile_total{result=\"error\"}"),
        0.0,
        "{text}"
    );
    sidecar.stop().await;
}

/// What the trust checker saw: successful requests, failures, the sizes of
/// the `caBundle` in the order they appeared.
type CheckerReport = (usize, Vec<String>, Vec<usize>);

/// Runs a client that trusts only the webhook's live `caBundle` against the
/// server every few milliseconds, recording every failure and the bundle
/// sizes it saw, until told to stop.
fn trust_checker(
    fake: Arc<FakeApiServer>,
    addr: SocketAddr,
) -> (oneshot::Sender<()>, JoinHandle<CheckerReport>) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut ok = 0;
        let mut failures = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        loop {
            if stopped.try_recv().is_ok() {
                break;
            }
            let bundle = ca_bundle(&fake);
            let size = bundle_size(&bundle);
            if sizes.last() != Some(&size) {
                sizes.push(size);
            }
            match request(addr, &bundle).await {
                Ok(_) => ok += 1,
                Err(e) => failures.push(format!("with a bundle of {size}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        (ok, failures, sizes)
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ca_rotation_keeps_the_api_server_trusting_the_webhook() {
    install_crypto_provider();
    let fake = Arc::new(FakeApiServer::start(NAMESPACE).await);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&fake, watch_settings(dir.path(), "pod-a")).await;
    let server = start_server(&sidecar.tls_dir).await;
    let old_ca = fake.ca().pem.clone();
    assert_eq!(ca_bundle(&fake), old_ca.as_bytes());
    let (stop_checker, checker) = trust_checker(fake.clone(), server.addr);
    let csrs_before = fake
        .list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
        .len();

    // 1. The cluster gains a new CA (kube-root-ca.crt carries both) and its
    //    signer switches to it: the pair is reissued under the new CA, the
    //    caBundle carries both.
    let new_ca = fake.rotate_signer(TestCa::new("fake cluster CA, rotated"));
    let both = format!("{old_ca}{}", new_ca.pem);
    fake.set_cluster_ca(NAMESPACE, &both);
    eventually("the pair is reissued under the new CA and served", || {
        matching_pair(&sidecar.tls_dir)
            .is_some_and(|pair| tls_pair::verify_chain(&pair.cert_pem, new_ca.pem.as_bytes()).is_ok())
    })
    .await;
    assert_eq!(bundle_size(&ca_bundle(&fake)), 2);
    let stored: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    assert!(
        stored
            .metadata
            .annotations
            .unwrap()
            .contains_key("imageswap/cluster-ca-fingerprint"),
        "the renewed pair records the bundle it was issued under"
    );
    let csrs_after_reissue = fake
        .list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
        .len();
    assert_eq!(csrs_after_reissue, csrs_before + 1, "one reissue");

    // 2. The old CA leaves kube-root-ca.crt: the caBundle keeps it for the
    //    grace period (replicas still adopting), then carries only the new CA.
    fake.set_cluster_ca(NAMESPACE, &new_ca.pem);
    eventually("the caBundle is the new CA only", || {
        ca_bundle(&fake) == new_ca.pem.as_bytes()
    })
    .await;
    // The pair already came from the newest CA: no second reissue.
    assert_eq!(
        fake.list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
            .len(),
        csrs_after_reissue
    );
    // A few more rounds of the checker on the final state.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_checker.send(());
    let (ok, failures, sizes) = checker.await.unwrap();
    assert!(
        failures.is_empty(),
        "a client trusting only the caBundle failed: {failures:?}"
    );
    assert!(ok > 20, "the checker ran ({ok} requests)");
    assert_eq!(
        sizes,
        [1, 2, 1],
        "the caBundle: the old CA, both, then the new CA"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_cluster_ca_replacement_keeps_the_old_ca_until_the_new_pair_is_served() {
    install_crypto_provider();
    let fake = Arc::new(FakeApiServer::start(NAMESPACE).await);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&fake, watch_settings(dir.path(), "pod-a")).await;
    let server = start_server(&sidecar.tls_dir).await;
    let (stop_checker, checker) = trust_checker(fake.clone(), server.addr);

    // kube-root-ca.crt is replaced outright (the original's issue #115).
    let new_ca = fake.rotate_signer(TestCa::new("fake cluster CA, replaced"));
    fake.set_cluster_ca(NAMESPACE, &new_ca.pem);
    eventually("the new pair is written", || {
        matching_pair(&sidecar.tls_dir)
            .is_some_and(|pair| tls_pair::verify_chain(&pair.cert_pem, new_ca.pem.as_bytes()).is_ok())
    })
    .await;
    eventually("the caBundle is the new CA only", || {
        ca_bundle(&fake) == new_ca.pem.as_bytes()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_checker.send(());
    let (ok, failures, sizes) = checker.await.unwrap();
    assert!(
        failures.is_empty(),
        "a client trusting only the caBundle failed: {failures:?}"
    );
    assert!(ok > 20, "the checker ran ({ok} requests)");
    assert_eq!(
        sizes,
        [1, 2, 1],
        "the caBundle: the old CA, old + new, then the new CA"
    );
    sidecar.stop().await;
}

/// A cert-manager secret: `tls.crt`, `tls.key`, `ca.crt`, type
/// `kubernetes.io/tls`, marked for ImageSwap with the annotation.
fn cert_manager_secret(pair: &TlsPair, ca_pem: &str) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(SECRET.to_owned());
    secret.metadata.annotations = Some([("imageswap-byoc".to_owned(), "cert-manager".to_owned())].into());
    secret.type_ = Some("kubernetes.io/tls".to_owned());
    secret.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(pair.cert_pem.clone())),
            ("tls.key".to_owned(), ByteString(pair.key_pem.clone())),
            ("ca.crt".to_owned(), ByteString(ca_pem.as_bytes().to_vec())),
        ]
        .into(),
    );
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_cert_manager_secret_is_followed_and_a_broken_one_refused() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let own_ca = TestCa::new("cert-manager CA");
    let first = own_ca.issue(&service_names(), -1, 90);
    fake.seed(
        &secrets_path(NAMESPACE),
        &cert_manager_secret(&first, &own_ca.pem),
    );
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&fake, watch_settings(dir.path(), "pod-a")).await;
    assert_eq!(sidecar.pair(), first, "cert-manager's key names are read");
    assert_eq!(
        ca_bundle(&fake),
        own_ca.pem.as_bytes(),
        "the caBundle is cert-manager's ca.crt"
    );
    let server = start_server(&sidecar.tls_dir).await;
    assert_eq!(
        request(server.addr, own_ca.pem.as_bytes()).await,
        Ok(leaf_der(&first.cert_pem))
    );

    // cert-manager renews the certificate in place.
    let renewed = own_ca.issue(&service_names(), 0, 90);
    fake.seed(
        &secrets_path(NAMESPACE),
        &cert_manager_secret(&renewed, &own_ca.pem),
    );
    eventually("the renewed pair is written", || {
        matching_pair(&sidecar.tls_dir) == Some(renewed.clone())
    })
    .await;
    let addr = server.addr;
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let served = request(addr, own_ca.pem.as_bytes()).await.unwrap();
        if served == leaf_der(&renewed.cert_pem) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the server serves the renewed pair"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken renewal (a key that is not the certificate's) is refused:
    // the files keep the last good pair, the pass counts as failed.
    let other = own_ca.issue(&service_names(), 0, 90);
    let broken = TlsPair {
        cert_pem: other.cert_pem.clone(),
        key_pem: renewed.key_pem.clone(),
    };
    let errors_before = metric(
        &sidecar.metrics.encode(),
        "imageswap_init_reconcile_total{result=\"error\"}",
    );
    fake.seed(
        &secrets_path(NAMESPACE),
        &cert_manager_secret(&broken, &own_ca.pem),
    );
    let metrics = sidecar.metrics.clone();
    eventually("the broken pair fails a pass", || {
        metric(
            &metrics.encode(),
            "imageswap_init_reconcile_total{result=\"error\"}",
        ) > errors_before
    })
    .await;
    assert_eq!(sidecar.pair(), renewed, "the last good pair stays");
    assert_eq!(
        request(addr, own_ca.pem.as_bytes()).await,
        Ok(leaf_der(&renewed.cert_pem))
    );
    assert_eq!(
        fake.writes_to(&secrets_path(NAMESPACE)),
        0,
        "a bring-your-own secret is never written"
    );
    assert_eq!(
        fake.writes_to(CSR_PATH),
        0,
        "nothing is issued in bring-your-own mode"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_webhook_configuration_is_put_back_with_one_write() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sidecars = Vec::new();
    for pod in ["pod-a", "pod-b", "pod-c"] {
        sidecars.push(Sidecar::start(&fake, watch_settings(dir.path(), pod)).await);
    }
    let in_sync = live_mwc(&fake);
    // In sync: passes go by without a write.
    fake.clear_requests();
    eventually("30 passes", || fake.requests_to(MWC_PATH).len() >= 30).await;
    assert_eq!(fake.write_attempts_to(MWC_PATH), 0, "no write while in sync");

    // Someone edits the object: another failure policy, a stale caBundle.
    let mut edited = in_sync.clone();
    {
        let hook = &mut edited.webhooks.as_mut().unwrap()[0];
        hook.failure_policy = Some("Ignore".to_owned());
        hook.client_config.ca_bundle = Some(ByteString(TestCa::new("stale").pem.into_bytes()));
    }
    fake.seed(MWC_PATH, &edited);
    fake.clear_requests();
    eventually("the object is put back", || {
        let hook = live_mwc(&fake).webhooks.unwrap()[0].clone();
        hook.failure_policy.as_deref() == Some("Fail")
            && hook.client_config.ca_bundle == Some(ByteString(fake.ca().pem.clone().into_bytes()))
    })
    .await;
    // Then another 30 passes: still exactly one write for the one drift.
    let reads = fake.requests_to(MWC_PATH).len();
    eventually("30 more passes", || {
        fake.requests_to(MWC_PATH).len() >= reads + 30
    })
    .await;
    assert_eq!(
        fake.writes_to(MWC_PATH),
        1,
        "one write per drift: {:?}",
        fake.requests_to(MWC_PATH)
    );
    eprintln!(
        "one drift: {} write, {} attempts by {} replicas",
        fake.writes_to(MWC_PATH),
        fake.write_attempts_to(MWC_PATH),
        sidecars.len()
    );
    assert!(
        fake.write_attempts_to(MWC_PATH) <= sidecars.len(),
        "at most one attempt per replica"
    );
    let written: f64 = sidecars
        .iter()
        .map(|s| {
            metric(
                &s.metrics.encode(),
                "imageswap_init_actions_total{action=\"mwc_written\"}",
            )
        })
        .sum();
    assert_eq!(written, 1.0);
    for sidecar in sidecars {
        sidecar.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sidecars_racing_on_a_renewal_store_one_pair_and_all_adopt_it() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    // Six-second certificates renewed at half their life.
    fake.set_cert_lifetime(Duration::from_secs(6));
    let dir = tempfile::tempdir().unwrap();
    let mut sidecars = Vec::new();
    for i in 0..5 {
        let settings = InitSettings {
            renew_fraction: 0.5,
            // The pods' own `init` keeps the six-second pair it finds.
            renew_before: Duration::from_secs(1),
            disable_auto_mwc: true,
            ..watch_settings(dir.path(), &format!("pod-{i}"))
        };
        sidecars.push(Sidecar::start(&fake, settings).await);
    }
    let first = stored_pair(&fake).unwrap();
    eventually("all five serve the stored pair", || {
        sidecars
            .iter()
            .all(|s| matching_pair(&s.tls_dir).as_ref() == Some(&first))
    })
    .await;
    let writes_before = fake.writes_to(&secrets_path(NAMESPACE));

    let mut renewed_at = None;
    eventually("all five adopt one renewed pair", || {
        if renewed_at.is_none() && stored_pair(&fake).is_some_and(|stored| stored != first) {
            renewed_at = Some(std::time::Instant::now());
        }
        let stored = stored_pair(&fake).unwrap();
        stored != first
            && sidecars
                .iter()
                .all(|s| matching_pair(&s.tls_dir).as_ref() == Some(&stored))
    })
    .await;
    assert_eq!(
        fake.writes_to(&secrets_path(NAMESPACE)),
        writes_before + 2,
        "one renewal: the claim and one stored pair: {:?}",
        fake.requests_to(&secrets_path(NAMESPACE))
    );
    let issued: f64 = sidecars
        .iter()
        .map(|s| {
            metric(
                &s.metrics.encode(),
                "imageswap_init_actions_total{action=\"pair_issued\"}",
            )
        })
        .sum();
    assert_eq!(issued, 1.0, "one sidecar stored the pair");
    let csrs = fake.list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH);
    assert_eq!(
        csrs.len(),
        2,
        "one CSR at install, one for the renewal (the claim)"
    );
    let stored: Secret = fake.get(&secrets_path(NAMESPACE), SECRET).unwrap();
    assert!(
        !stored
            .metadata
            .annotations
            .unwrap()
            .contains_key("imageswap/renewal-claimed-by"),
        "the new pair's write removes the claim"
    );
    if let Some(at) = renewed_at {
        eprintln!(
            "five sidecars adopted the renewed pair {:?} after it was stored; CSRs in all: {}",
            at.elapsed(),
            fake.list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
                .len()
        );
    }
    for sidecar in sidecars {
        sidecar.stop().await;
    }
}

#[tokio::test]
async fn with_the_api_server_away_the_server_keeps_serving_and_the_sidecar_backs_off() {
    install_crypto_provider();
    let logs = crate::support::logs::LogCapture::on_this_thread();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&fake, watch_settings(dir.path(), "pod-a")).await;
    let server = start_server(&sidecar.tls_dir).await;
    let cluster_ca = fake.ca().pem.clone();
    let served = sidecar.pair();

    fake.clear_requests();
    fake.set_reachable(false);
    let down = tokio::time::Instant::now();
    // About three seconds away: twenty-five passes at the interval, five to
    // six with the backoff doubling from it (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s).
    while down.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            request(server.addr, cluster_ca.as_bytes()).await,
            Ok(leaf_der(&served.cert_pem)),
            "the server keeps serving its pair"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = metric(
        &sidecar.metrics.encode(),
        "imageswap_init_reconcile_total{result=\"error\"}",
    );
    assert!(
        (3.0..=7.0).contains(&failed),
        "passes while away, with backoff: {failed}"
    );
    let refused = fake.refused() as f64;
    assert!(
        refused >= failed && refused <= 2.0 * failed,
        "about one request per failed pass: {refused}"
    );
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("Watch pass failed")).collect();
    assert_eq!(lines.len() as f64, failed, "one line per failed pass:\n{text}");
    assert!(lines[0].contains("unreachable"), "{}", lines[0]);
    // The announced waits double (each ±25 %).
    let waits: Vec<Duration> = lines
        .iter()
        .map(|line| {
            let value = line.split("retry_in=").nth(1).unwrap();
            let value = value
                .split(" failures")
                .next()
                .unwrap()
                .split(' ')
                .take_while(|w| w.ends_with("ms") || w.ends_with('s'))
                .collect::<Vec<_>>()
                .join(" ");
            humantime::parse_duration(&value).unwrap_or_else(|e| panic!("{value:?} in {line}: {e}"))
        })
        .collect();
    for pair in waits.windows(2) {
        assert!(pair[1] > pair[0], "the backoff grows: {waits:?}");
    }
    let successes = metric(
        &sidecar.metrics.encode(),
        "imageswap_init_reconcile_total{result=\"success\"}",
    );

    fake.set_reachable(true);
    let metrics = sidecar.metrics.clone();
    eventually("a pass succeeds again", || {
        metric(
            &metrics.encode(),
            "imageswap_init_reconcile_total{result=\"success\"}",
        ) > successes
    })
    .await;
    eventually("the recovery is logged", || {
        logs.text().contains("The watch pass succeeded again")
    })
    .await;
    assert_eq!(sidecar.pair(), served, "nothing changed meanwhile");
    sidecar.stop().await;
}

/// Runs `scripts/prometheus-tools COMMAND` (the Prometheus project's own
/// OpenMetrics and PromQL parsers) on `input`.
fn prometheus_tools(command: &str, input: &str) -> Result<serde_json::Value, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prometheus-tools");
    let mut child = Command::new(script)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/prometheus-tools");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).expect("the tool prints JSON")),
        Some(1) => Err(stderr),
        other => panic!("scripts/prometheus-tools could not run ({other:?}): {stderr}"),
    }
}

/// Every series name the server and the sidecar export.
fn exported_series() -> Vec<String> {
    let server = Metrics::new();
    server.tls_cert_expiry(1);
    crate::deploy::observability::record_one_check(&server);
    let mut names = Vec::new();
    for text in [server.encode(), InitMetrics::new().encode()] {
        let families = prometheus_tools("openmetrics", &text).expect("valid OpenMetrics");
        for family in families.as_array().unwrap() {
            for sample in family["samples"].as_array().unwrap() {
                names.push(sample["name"].as_str().unwrap().to_owned());
            }
        }
    }
    names
}

#[test]
fn the_alert_rules_read_only_exported_metrics_and_cover_what_was_asked() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability/imageswap-alerts.yaml");
    let rules: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rules["kind"], "PrometheusRule");
    let alerts: Vec<&serde_json::Value> = rules["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .collect();
    let names: Vec<&str> = alerts
        .iter()
        .map(|rule| rule["alert"].as_str().unwrap())
        .collect();
    for wanted in ["ImageSwapCertificateExpiresSoon", "ImageSwapWatchFailing"] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    let expressions: Vec<&str> = alerts.iter().map(|rule| rule["expr"].as_str().unwrap()).collect();
    let read = prometheus_tools("promql", &serde_json::to_string(&expressions).unwrap())
        .unwrap_or_else(|e| panic!("an alert expression is not PromQL: {e}"));
    let exported = exported_series();
    for (expression, metrics) in expressions.iter().zip(read.as_array().unwrap()) {
        let metrics: Vec<&str> = metrics
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(!metrics.is_empty(), "{expression}");
        for metric in metrics {
            assert!(
                exported.iter().any(|name| name == metric),
                "{expression} reads {metric}, which nothing exports"
            );
        }
    }
    // The thresholds the issue asks for: 7 days, 15 minutes.
    assert!(
        expressions[names
            .iter()
            .position(|n| *n == "ImageSwapCertificateExpiresSoon")
            .unwrap()]
        .contains("7 * 86400")
    );
    assert!(
        expressions[names.iter().position(|n| *n == "ImageSwapWatchFailing").unwrap()].contains("15 * 60")
    );
    // A broken expression is caught (the check can fail).
    assert!(prometheus_tools("promql", "[\"time() - \"]").is_err());
}

#[tokio::test]
async fn the_sidecar_listener_answers_its_startup_probe_once_the_pair_is_written() {
    use imageswap::init::probes::{Probes, Started};
    let metrics = Arc::new(InitMetrics::new());
    let started = Started::default();
    let probes = Probes::bind("127.0.0.1:0".parse().unwrap(), metrics.clone(), started.clone())
        .await
        .unwrap();
    let addr = probes.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(probes.serve(async move {
        let _ = stopped.await;
    }));
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not started: the startup probe fails"
    );
    assert_eq!(get(addr, "/healthz").await.0, 200);
    started.set();
    assert_eq!(get(addr, "/readyz").await.0, 200);
    metrics.reconcile(
        imageswap::telemetry::metrics::ReloadResult::success,
        1_800_000_000,
    );
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let families = prometheus_tools("openmetrics", &body).expect("valid OpenMetrics");
    assert!(
        families
            .to_string()
            .contains("imageswap_init_reconcile_last_success_timestamp_seconds")
    );
    assert_eq!(get(addr, "/nothing").await.0, 404);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn a_pod_restarting_during_a_rotation_keeps_the_ca_of_the_pair_it_serves() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    imageswap::init::run_with(fake.client(), &settings(dir.path(), "pod-a"))
        .await
        .unwrap();
    let old_ca = fake.ca().pem.clone();
    let old_pair = stored_pair(&fake).unwrap();

    // The cluster CA is replaced; a pod restarts before any sidecar reissued.
    let new_ca = fake.rotate_signer(TestCa::new("fake cluster CA, replaced"));
    fake.set_cluster_ca(NAMESPACE, &new_ca.pem);
    let outcome = imageswap::init::run_with(fake.client(), &settings(dir.path(), "pod-b"))
        .await
        .unwrap();
    assert_eq!(outcome.pair, imageswap::init::PairSource::Existing);
    let bundle = ca_bundle(&fake);
    assert!(bundle.starts_with(new_ca.pem.as_bytes()), "the new CA first");
    assert_eq!(bundle_size(&bundle), 2, "and the CA of the pair still served");
    tls_pair::verify_chain(&old_pair.cert_pem, &bundle).unwrap();

    // Once the stored pair comes from the new CA, a restart drops the old one.
    let renewed = new_ca.issue(&service_names(), 0, 300);
    fake.seed(&secrets_path(NAMESPACE), &tls_secret(&renewed, &[]));
    imageswap::init::run_with(fake.client(), &settings(dir.path(), "pod-c"))
        .await
        .unwrap();
    assert_eq!(ca_bundle(&fake), new_ca.pem.as_bytes());
    assert!(!String::from_utf8_lossy(&ca_bundle(&fake)).contains(old_ca.trim()));
}

/// `helm uninstall` (issue 19): the pre-delete hook deletes the webhook
/// configuration while the pods still run, and a native sidecar is stopped
/// last, up to the server's whole shutdown later. A sidecar that recreated
/// it would leave a webhook calling a Service that is gone, blocking every
/// pod with `failurePolicy: Fail`. Its passes go on (the pair is kept
/// right), but the deleted object stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhook_configuration_is_not_recreated_by_the_sidecar() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&fake, watch_settings(dir.path(), "pod-a")).await;
    assert_eq!(fake.writes_to(MWC_PATH), 1, "the first pass created it");

    // The hook's `kubectl delete mutatingwebhookconfiguration imageswap-webhook`.
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(fake.client());
    api.delete(MWC, &Default::default()).await.unwrap();
    assert!(fake.get::<MutatingWebhookConfiguration>(MWC_PATH, MWC).is_none());
    fake.clear_requests();
    eventually("20 more passes", || {
        fake.requests_to(MWC_PATH)
            .iter()
            .filter(|r| r.method == http::Method::GET)
            .count()
            >= 20
    })
    .await;

    assert_eq!(
        fake.write_attempts_to(MWC_PATH),
        0,
        "no create after the deletion: {:?}",
        fake.requests_to(MWC_PATH)
    );
    assert!(fake.get::<MutatingWebhookConfiguration>(MWC_PATH, MWC).is_none());
    let text = sidecar.metrics.encode();
    assert_eq!(
        metric(&text, "imageswap_init_reconcile_total{result=\"error\"}"),
        0.0,
        "a deleted configuration is no failed pass: {text}"
    );
    sidecar.stop().await;

    // A pod start (`init`) creates it again.
    let outcome = imageswap::init::run_with(fake.client(), &settings(dir.path(), "pod-b"))
        .await
        .unwrap();
    assert_eq!(outcome.mwc, imageswap::init::MwcOutcome::Created);
}

/// Watches, every few milliseconds until told to stop, that the pair each
/// replica serves (its sidecar's directory) chains to the live `caBundle`:
/// what the API server needs to call any replica. Returns the failures.
fn replicas_trusted(
    fake: Arc<FakeApiServer>,
    dirs: Arc<std::sync::Mutex<Vec<PathBuf>>>,
) -> (oneshot::Sender<()>, JoinHandle<(usize, Vec<String>)>) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (mut checks, mut failures) = (0, Vec::new());
        while stopped.try_recv().is_err() {
            let serving: Vec<(PathBuf, TlsPair)> = dirs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|dir| Some((dir.clone(), matching_pair(dir)?)))
                .collect();
            // The pair first, then the bundle: the sidecar writes the bundle
            // before the pair it trusts, and drops a CA only after the grace.
            let bundle = ca_bundle(&fake);
            for (dir, pair) in serving {
                checks += 1;
                if let Err(problem) = tls_pair::verify_chain(&pair.cert_pem, &bundle) {
                    failures.push(format!(
                        "{}: {problem} (caBundle of {})",
                        dir.display(),
                        bundle_size(&bundle)
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (checks, failures)
    });
    (stop, task)
}

/// An upgrade from `csr` (the original's way, and this project's default
/// before issue 19) to the new default `self-signed`, by changing images:
/// replicas of the new version start beside sidecars of the old one, which
/// keep running their `csr` passes. At no moment does a replica serve a
/// pair the live `caBundle` does not trust: the new version keeps the
/// cluster-signed pair while it is good (the API server trusts it), renews it
/// from its own CA when due, and keeps the cluster CA in the bundle until
/// every replica serves the new pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_from_csr_to_self_signed_keeps_old_and_new_replicas_trusted() {
    install_crypto_provider();
    let fake = Arc::new(FakeApiServer::start(NAMESPACE).await);
    // Pairs of twelve seconds: the old version's renew with four seconds left,
    // so the side-by-side phase below sees none; the new version's renew at
    // half (six seconds), once the old replicas are gone.
    fake.set_cert_lifetime(Duration::from_secs(12));
    let dir = tempfile::tempdir().unwrap();
    let old = |pod: &str| watch_settings(dir.path(), pod);
    let new = |pod: &str| InitSettings {
        cert_source: imageswap::init::settings::CertSource::SelfSigned,
        renew_fraction: 0.5,
        ..watch_settings(dir.path(), pod)
    };
    let old_a = Sidecar::start(&fake, old("old-a")).await;
    let old_b = Sidecar::start(&fake, old("old-b")).await;
    let cluster_ca = fake.ca().pem.clone();
    assert_eq!(ca_bundle(&fake), cluster_ca.as_bytes());
    let dirs = Arc::new(std::sync::Mutex::new(vec![
        old_a.tls_dir.clone(),
        old_b.tls_dir.clone(),
    ]));
    let (stop_checker, checker) = replicas_trusted(fake.clone(), dirs.clone());

    // The rollout: a new replica beside the two old ones, for a while.
    let new_a = Sidecar::start(&fake, new("new-a")).await;
    dirs.lock().unwrap().push(new_a.tls_dir.clone());
    assert_eq!(
        new_a.pair(),
        stored_pair(&fake).unwrap(),
        "the new version keeps the stored pair"
    );
    tls_pair::verify_chain(&new_a.pair().cert_pem, cluster_ca.as_bytes())
        .expect("the stored pair is the cluster-signed one");
    let reads = fake.requests_to(MWC_PATH).len();
    eventually("old and new sidecars side by side for 30 passes", || {
        fake.requests_to(MWC_PATH).len() >= reads + 30
    })
    .await;
    // The old replicas go, a second new one comes.
    old_a.stop().await;
    old_b.stop().await;
    dirs.lock().unwrap().drain(..2);
    let new_b = Sidecar::start(&fake, new("new-b")).await;
    dirs.lock().unwrap().push(new_b.tls_dir.clone());
    let csrs = fake
        .list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
        .len();

    // The new version renews the pair from its own CA; the cluster CA leaves
    // the caBundle once both replicas serve the new pair.
    let own_ca = || {
        let secret: Secret = fake
            .get(&secrets_path(NAMESPACE), "imageswap-tls-self-signed-ca")
            .expect("the self-signed CA");
        secret.data.unwrap()["ca.crt"].0.clone()
    };
    eventually("both replicas serve a pair of the own CA", || {
        [&new_a, &new_b].iter().all(|s| {
            matching_pair(&s.tls_dir)
                .is_some_and(|pair| tls_pair::verify_chain(&pair.cert_pem, &own_ca()).is_ok())
        })
    })
    .await;
    eventually("the caBundle is the own CA only", || ca_bundle(&fake) == own_ca()).await;
    let _ = stop_checker.send(());
    let (checks, failures) = checker.await.unwrap();
    assert!(
        failures.is_empty(),
        "a replica served a pair the caBundle did not trust: {failures:?}"
    );
    assert!(checks > 100, "the checker ran ({checks} checks)");
    assert_eq!(
        fake.list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
            .len(),
        csrs,
        "the new version asks the cluster's signer for nothing"
    );
    new_a.stop().await;
    new_b.stop().await;
}

/// An upgrade from the original (a one-shot init container, no sidecar: its
/// pods never adopt a new pair) whose cluster-signed pair is already due for
/// renewal: the first new sidecar renews it from its own CA at once, and the
/// cluster CA stays in the `caBundle` as long as the replaced pair is valid
/// (the secret remembers it), so the old pods stay trusted however long the
/// rollout takes, not only for the rotation's grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_the_pair_due_keeps_the_old_pods_trusted_until_it_expires() {
    install_crypto_provider();
    let fake = Arc::new(FakeApiServer::start(NAMESPACE).await);
    fake.set_cert_lifetime(Duration::from_secs(14));
    let dir = tempfile::tempdir().unwrap();
    // The original's two pods: `init` once each, with the cluster's signer.
    for pod in ["old-a", "old-b"] {
        imageswap::init::run_with(fake.client(), &settings(dir.path(), pod))
            .await
            .unwrap();
    }
    let cluster_ca = fake.ca().pem.clone();
    let old_pair = stored_pair(&fake).unwrap();
    let dirs = Arc::new(std::sync::Mutex::new(vec![
        dir.path().join("old-a/tls"),
        dir.path().join("old-b/tls"),
    ]));
    let (stop_checker, checker) = replicas_trusted(fake.clone(), dirs.clone());

    // A new pod whose sidecar finds the pair due (renewal with 99 % left).
    let new_a = Sidecar::start(
        &fake,
        InitSettings {
            cert_source: imageswap::init::settings::CertSource::SelfSigned,
            renew_fraction: 0.99,
            ..watch_settings(dir.path(), "new-a")
        },
    )
    .await;
    dirs.lock().unwrap().push(new_a.tls_dir.clone());
    eventually("the new pod serves a pair of its own CA", || {
        matching_pair(&new_a.tls_dir)
            .is_some_and(|pair| tls_pair::verify_chain(&pair.cert_pem, cluster_ca.as_bytes()).is_err())
    })
    .await;
    // Well past the rotation's grace (three 100 ms intervals and 5 s): the
    // old pods still serve the cluster-signed pair, and are still trusted.
    let reads = fake.requests_to(MWC_PATH).len();
    eventually("60 more passes", || {
        fake.requests_to(MWC_PATH).len() >= reads + 60
    })
    .await;
    assert!(
        tls_pair::verify_chain(&old_pair.cert_pem, &ca_bundle(&fake)).is_ok(),
        "the cluster CA is still in the caBundle"
    );
    // The rollout ends; once the replaced pair expired, its CA goes.
    dirs.lock().unwrap().drain(..2);
    eventually("the caBundle drops the cluster CA", || {
        tls_pair::verify_chain(&old_pair.cert_pem, &ca_bundle(&fake)).is_err()
    })
    .await;
    assert!(
        tls_pair::not_after(&old_pair.cert_pem).unwrap()
            <= time::OffsetDateTime::now_utc().unix_timestamp() + 1,
        "not before the replaced pair expired"
    );
    let _ = stop_checker.send(());
    let (checks, failures) = checker.await.unwrap();
    assert!(
        failures.is_empty(),
        "a pod served a pair the caBundle did not trust: {failures:?}"
    );
    assert!(checks > 100, "the checker ran ({checks} checks)");
    new_a.stop().await;
}
