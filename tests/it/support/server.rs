//! The one way to start an in-process server: `serve` on 127.0.0.1:0 with
//! a serving leaf from the test CA, its maps and certificate in a temporary
//! directory laid out like Kubernetes volumes; and the clients that talk to
//! it (hyper over TLS per HTTP version, and raw TLS for slow bodies and for
//! the certificate presented).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use imageswap::admission::PullSecrets;
use imageswap::config::{Limits, ServeConfig, TlsSource, Transport};
use imageswap::rules::RulesSource;
use imageswap::server::state::AppState;
use imageswap::server::{ServeError, Server};
use imageswap::telemetry::metrics::Metrics;
use imageswap::verify::{CheckImages, OnError, VerifyArgs, VerifyMode};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Any error of a request, as the client reports it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

use super::ca::{Leaf, TestCa};
use super::fixtures_maps;

/// Writes files the way the kubelet updates a ConfigMap or Secret volume:
/// the data goes into a fresh `..<version>` directory, a `..data_tmp`
/// symlink to it is renamed over `..data` (one atomic step), and each file
/// name is a symlink `name -> ..data/name`.
pub fn kube_volume_write(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).expect("volume dir");
    let data_dir = dir.join(format!("..{version}"));
    std::fs::create_dir(&data_dir).expect("version dir");
    for (name, content) in files {
        std::fs::write(data_dir.join(name), content).expect("write");
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("file symlink");
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
}

/// How to start a test server.
pub struct Setup {
    pub maps: Vec<u8>,
    pub limits: Limits,
    pub shadow: bool,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub metrics_listen: bool,
    pub insecure_http: bool,
    pub reload_poll: Duration,
    /// The metrics the server records into (a fresh set when `None`).
    pub metrics: Option<Arc<Metrics>>,
    /// A verifier to check swaps with (turns `IMAGESWAP_VERIFY` on).
    pub verifier: Option<Arc<dyn CheckImages>>,
    pub verify_on_error: OnError,
    pub verify_timeout: Duration,
    pub pull_secrets: PullSecrets,
    /// Verification settings for the server to build its own verifier from
    /// (`Server::bind`, as `serve` does: the registry client, the
    /// credentials file in the reloader); overrides `verifier`.
    pub verify: Option<VerifyArgs>,
}

/// Verification settings: verify.md's defaults, `on` or `off`.
pub fn verify_args(on: bool, on_error: OnError, timeout: Duration) -> VerifyArgs {
    VerifyArgs {
        verify: if on { VerifyMode::On } else { VerifyMode::Off },
        verify_on_error: on_error,
        verify_timeout: timeout,
        verify_ttl: Duration::from_secs(600),
        verify_missing_ttl: Duration::from_secs(30),
        verify_stale_if_error: Duration::from_secs(3600),
        verify_platforms: Vec::new(),
        registry_config: imageswap::verify::settings::DEFAULT_REGISTRY_CONFIG.into(),
        registry_ca: None,
        registry_plain_http: Vec::new(),
    }
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            maps: std::fs::read(fixtures_maps()).expect("fixture maps"),
            limits: Limits {
                max_body_bytes: 3 * 1024 * 1024,
                // Generous: tests hold requests open on purpose, and a loaded
                // 2-core CI machine must not turn a held request into a
                // timeout. Tests of the timeout set their own.
                request_timeout: Duration::from_secs(30),
                max_concurrency: 1024,
                memory_budget_bytes: 64 * 1024 * 1024,
                tls_handshake_timeout: Duration::from_secs(10),
                first_request_timeout: Duration::from_secs(10),
            },
            shadow: false,
            shutdown_grace: Duration::from_secs(20),
            shutdown_delay: Duration::ZERO,
            metrics_listen: false,
            insecure_http: false,
            reload_poll: Duration::from_secs(10),
            metrics: None,
            verifier: None,
            verify_on_error: OnError::Swap,
            verify_timeout: Duration::from_secs(1),
            pull_secrets: PullSecrets::default(),
            verify: None,
        }
    }
}

/// A server running in this process on 127.0.0.1:0, with its files in a
/// temporary directory laid out like Kubernetes volumes.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    pub ca: TestCa,
    pub leaf: Leaf,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> TestServer {
        let Bound {
            server,
            ca,
            leaf,
            dir,
        } = TestServer::bind(setup).await;
        let addr = server.local_addr();
        let metrics_addr = server.metrics_addr();
        let state = server.state();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            metrics_addr,
            state,
            ca,
            leaf,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A server bound (its listener open) but not yet accepting.
    pub async fn bind(setup: Setup) -> Bound {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("imageswap test CA");
        let leaf = ca.leaf();
        kube_volume_write(
            &dir.path().join("maps"),
            "v1",
            &[("imageswap-maps.conf", &setup.maps)],
        );
        kube_volume_write(
            &dir.path().join("tls"),
            "v1",
            &[
                ("cert.pem", leaf.cert_pem.as_bytes()),
                ("key.pem", leaf.key_pem.as_bytes()),
            ],
        );
        let transport = if setup.insecure_http {
            Transport::InsecureHttp
        } else {
            Transport::Tls(TlsSource::Files {
                cert: dir.path().join("tls/cert.pem"),
                key: dir.path().join("tls/key.pem"),
            })
        };
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            transport,
            rules: RulesSource::Maps(dir.path().join("maps/imageswap-maps.conf")),
            // The default keep list: Istio's placeholder.
            keep_images: vec!["auto".to_owned()],
            disable_label: "k8s.twr.io/imageswap".to_owned(),
            pod_name: Some("imageswap-test-0".to_owned()),
            namespace: Some("imageswap-system".to_owned()),
            limits: setup.limits,
            cache_capacity: 10_000,
            shutdown_grace: setup.shutdown_grace,
            shutdown_delay: setup.shutdown_delay,
            metrics_listen: setup.metrics_listen.then(|| "127.0.0.1:0".parse().expect("addr")),
            shadow: setup.shadow,
            log_swaps: true,
            loop_threshold: imageswap::server::loops::DEFAULT_LOOP_THRESHOLD,
            dev: false,
            reload_poll: setup.reload_poll,
            traces: None,
            verify: setup.verify.clone().unwrap_or_else(|| {
                verify_args(
                    setup.verifier.is_some(),
                    setup.verify_on_error,
                    setup.verify_timeout,
                )
            }),
            pull_secrets: setup.pull_secrets,
        };
        let metrics = setup.metrics.unwrap_or_else(|| Arc::new(Metrics::new()));
        let server = match setup.verify {
            Some(_) => Server::bind(config, metrics).await,
            None => Server::bind_with(config, metrics, setup.verifier).await,
        }
        .expect("server binds");
        Bound {
            server,
            ca,
            leaf,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Triggers shutdown (the SIGTERM path) without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return after `trigger_shutdown`.
    pub async fn join(&mut self) -> Result<(), ServeError> {
        match self.task.take() {
            Some(task) => task.await.expect("serve task"),
            None => Ok(()),
        }
    }

    pub fn client(&self, protocol: Protocol) -> TestClient {
        TestClient::new(&self.ca, protocol)
    }

    pub fn metrics_text(&self) -> String {
        self.state.metrics.encode()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// A server from [`TestServer::bind`]: listening, not accepting.
pub struct Bound {
    pub server: Server,
    pub ca: TestCa,
    pub leaf: Leaf,
    pub dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// A hyper-rustls client forced to one HTTP version.
pub struct TestClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl TestClient {
    pub fn new(ca: &TestCa, protocol: Protocol) -> TestClient {
        // TCP_NODELAY, as the API server's client has: without it, Nagle and
        // delayed ACKs add 40 ms to a request.
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(ca.client_config(&[]))
            .https_only();
        let mut client_builder = Client::builder(TokioExecutor::new());
        let client = match protocol {
            Protocol::Http1 => client_builder.build(builder.enable_http1().wrap_connector(http)),
            Protocol::Http2 => client_builder
                .http2_only(true)
                .build(builder.enable_http2().wrap_connector(http)),
        };
        TestClient { client }
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        self.try_send(request).await.expect("request sent")
    }

    /// [`TestClient::send`], its failure returned (load tests count them).
    pub async fn try_send(&self, request: Request<Full<Bytes>>) -> Result<Answer, BoxError> {
        let response = self.client.request(request).await?;
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            version,
            headers,
            body,
        })
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send(Request::get(url).body(Full::default()).expect("request"))
            .await
    }

    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Answer {
        let request = Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .expect("request");
        self.send(request).await
    }
}

/// A raw TLS connection (HTTP/1.1 by hand): for slow bodies and for
/// looking at the certificate the server presents.
pub struct RawTls {
    pub stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl RawTls {
    pub async fn connect(server: &TestServer) -> RawTls {
        RawTls::connect_to(server.addr, &server.ca).await
    }

    pub async fn connect_to(addr: SocketAddr, ca: &TestCa) -> RawTls {
        RawTls::connect_alpn(addr, ca, &[b"http/1.1"]).await
    }

    /// A TLS connection offering these ALPN protocols (none: no ALPN).
    pub async fn connect_alpn(addr: SocketAddr, ca: &TestCa, alpn: &[&[u8]]) -> RawTls {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(alpn)));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let stream = connector.connect(name, tcp).await.expect("TLS handshake");
        RawTls { stream }
    }

    /// The end-entity certificate the server presented.
    pub fn peer_certificate(&self) -> CertificateDer<'static> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("a peer certificate")
            .clone()
            .into_owned()
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Sends the head of a POST and the first `sent` bytes of `body`.
    pub async fn start_post(&mut self, path: &str, body: &[u8], sent: usize) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.write(head.as_bytes()).await;
        self.write(&body[..sent]).await;
    }

    /// Reads one HTTP/1.1 response with a `content-length`: status and body.
    pub async fn read_response(&mut self) -> (u16, Vec<u8>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("content-length");
                while buf.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "connection closed mid-body");
                    buf.extend_from_slice(&chunk[..n]);
                }
                return (status, buf[end + 4..end + 4 + length].to_vec());
            }
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of an [`H2`] request: whole, or fed by hand through a channel.
pub type H2Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// One HTTP/2 connection over TLS (ALPN `h2`) whose requests' bodies the
/// test writes itself: for bodies that arrive slowly or never end.
#[derive(Clone)]
pub struct H2 {
    pub send: hyper::client::conn::http2::SendRequest<H2Body>,
}

impl H2 {
    pub async fn connect(server: &TestServer) -> H2 {
        let raw = RawTls::connect_alpn(server.addr, &server.ca, &[b"h2"]).await;
        let (send, connection) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(raw.stream),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        H2 { send }
    }

    /// Starts a POST of `length` bytes whose body the returned sender writes.
    pub fn start_post(
        &self,
        url: &str,
        length: usize,
    ) -> (
        tokio::sync::mpsc::Sender<Bytes>,
        tokio::task::JoinHandle<Result<Answer, hyper::Error>>,
    ) {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let body = ChannelBody { receiver };
        let request = Request::post(url)
            .header("content-type", "application/json")
            .header("content-length", length)
            .body(body.boxed())
            .expect("request");
        (sender, tokio::spawn(H2::answer(self.send.clone(), request)))
    }

    pub async fn send(&self, request: Request<H2Body>) -> Result<Answer, hyper::Error> {
        H2::answer(self.send.clone(), request).await
    }

    async fn answer(
        mut send: hyper::client::conn::http2::SendRequest<H2Body>,
        request: Request<H2Body>,
    ) -> Result<Answer, hyper::Error> {
        send.ready().await?;
        let response = send.send_request(request).await?;
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            version,
            headers,
            body,
        })
    }
}

/// A request body written by the test, a chunk at a time; it ends when the
/// sender is dropped.
pub struct ChannelBody {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}
