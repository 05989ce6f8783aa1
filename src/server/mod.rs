//! `imageswap serve`: the listener, TLS, the connections and shutdown.
//!
//! [`Server::bind`] loads the rules and the certificate, builds the state
//! and opens the listeners (so callers, tests among them, learn the bound
//! address before anything is served); [`Server::run`] accepts connections
//! until the shutdown future resolves, then: readiness turns 503 at once,
//! the listener keeps accepting for `shutdown_delay` (so endpoints can
//! stop routing here first), closes, and requests in flight get up to
//! `shutdown_grace` to finish.

pub mod deadline;
pub mod dev;
pub mod loops;
pub mod mirror;
pub mod service;
pub mod stack;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::cache::{PublishedRules, RulesState};
use crate::config::{Limits, ServeConfig, TlsSource, Transport};
use crate::reload::{MapsFile, RegistryCredentials, Reloader, TlsFiles};
use crate::rules::{self, RulesSource};
use crate::telemetry::metrics::Metrics;
use crate::tls::{self, CertStore, TlsError};
use crate::verify::CheckImages;
use service::Router;
use state::{AppState, Settings, VerifyPolicy};

/// ALPN protocols offered, preferred first: the API server speaks HTTP/2.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Longest an HTTP/1.1 client may take to send a request head, the first
/// or the next on a kept-alive connection (slow-loris protection; HTTP/2
/// streams are bounded by the stack's timeout, the wait for a connection's
/// first request by [`Limits::first_request_timeout`]).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest read buffer of an HTTP/1.1 connection. hyper's default (about
/// 400 KiB) is reached by every connection posting a big body, and held
/// while it stays open: 32 such connections held 12 MiB beside the bodies
/// themselves. A TLS record is 16 KiB, so 64 KiB still reads several at once.
const HTTP1_MAX_BUF_BYTES: usize = 64 * 1024;
/// HTTP/2 keep-alive pings find dead API-server connections.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one HTTP/2 connection may have open at once (hyper's default,
/// written down): request bodies are bounded by the memory budget and the
/// deadline, this bounds the per-stream state of one client.
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Connections the kernel queues until `accept` takes them (the listen
/// backlog). After a restart the API servers open many connections at once:
/// with the usual 128, a burst of 3,000 connects left up to 1,860 of them
/// waiting a second or more (a full queue drops the SYN; the client
/// retries after 1 s). Linux caps it at `net.core.somaxconn` (4096 by
/// default since 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;
/// Pause after a failed `accept` (out of file descriptors, say) so the loop
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A verification setting that cannot work (an unreadable
    /// `--registry-ca`): its one line names the setting.
    #[error(transparent)]
    Verifier(#[from] crate::verify::VerifyError),
}

/// The checker on the request path and the credentials file it reads.
pub type Verification = (Arc<dyn CheckImages>, RegistryCredentials);

/// The registry verifier built from `config.verify` (`VerifyArgs`) at start,
/// recording into the server's metrics, and the credentials file it reads
/// (`IMAGESWAP_REGISTRY_CONFIG`), which joins the reloader like the maps and
/// the TLS pair. `None` when verification is off.
pub fn build_verifier(config: &ServeConfig, metrics: &Metrics) -> Result<Option<Verification>, ServeError> {
    if !config.verify.enabled() {
        return Ok(None);
    }
    let built = crate::reload::registry_verification(&config.verify, metrics.verify.clone())?;
    Ok(Some(built))
}

/// Runs the server until `shutdown` resolves, then drains and returns.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    Server::bind(config, Arc::new(Metrics::new()))
        .await?
        .run(shutdown)
        .await
}

/// A bound, loaded server, not yet accepting.
pub struct Server {
    config: ServeConfig,
    state: Arc<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    reloader: Reloader,
}

impl Server {
    /// Loads the rules and the certificate and opens the listeners. Only a
    /// certificate that cannot even be generated is fatal; missing or broken
    /// files leave the server unready (`/readyz` says why) until a good
    /// version appears.
    pub async fn bind(config: ServeConfig, metrics: Arc<Metrics>) -> Result<Server, ServeError> {
        let verification = build_verifier(&config, &metrics)?;
        Server::bind_verified(config, metrics, verification).await
    }

    /// [`Server::bind`] with the verification [`build_verifier`] made
    /// (`imageswap serve` builds it first: a bad verification setting is
    /// a usage error, refused before anything starts).
    pub async fn bind_verified(
        config: ServeConfig,
        metrics: Arc<Metrics>,
        verification: Option<Verification>,
    ) -> Result<Server, ServeError> {
        match verification {
            None => Server::bind_inner(config, metrics, None, None).await,
            Some((verifier, credentials)) => {
                Server::bind_inner(config, metrics, Some(verifier), Some(credentials)).await
            }
        }
    }

    /// [`Server::bind`] with a verifier of the caller's (tests inject one;
    /// `None` verifies nothing, whatever `config.verify` says).
    pub async fn bind_with(
        config: ServeConfig,
        metrics: Arc<Metrics>,
        verifier: Option<Arc<dyn CheckImages>>,
    ) -> Result<Server, ServeError> {
        Server::bind_inner(config, metrics, verifier, None).await
    }

    async fn bind_inner(
        config: ServeConfig,
        metrics: Arc<Metrics>,
        verifier: Option<Arc<dyn CheckImages>>,
        credentials: Option<RegistryCredentials>,
    ) -> Result<Server, ServeError> {
        let rules = Arc::new(PublishedRules::new());
        let certs = match config.transport {
            Transport::Tls(_) => Some(Arc::new(CertStore::new())),
            Transport::InsecureHttp => None,
        };
        let settings = Settings {
            disable_label: config.disable_label.clone(),
            shadow: config.shadow,
            max_body_bytes: config.limits.max_body_bytes,
            pod_name: config.pod_name.clone(),
            log_swaps: config.log_swaps,
        };
        let policy = VerifyPolicy {
            on_error: config.verify.verify_on_error,
            timeout: config.verify.verify_timeout,
        };
        if verifier.is_some() {
            tracing::info!(
                on_error = ?config.verify.verify_on_error,
                timeout = %humantime::format_duration(config.verify.verify_timeout),
                "Verifying swapped images in their mirror before patching."
            );
        }
        for (registry, secret) in config.pull_secrets.entries() {
            tracing::info!(
                registry,
                secret,
                "Adding a pull secret to pods whose images end up in this registry."
            );
        }
        let state = Arc::new(
            AppState::new(settings, rules.clone(), certs.clone(), metrics.clone())
                .with_verifier(verifier, policy)
                .with_pull_secrets(config.pull_secrets.clone())
                .with_loop_threshold(config.loop_threshold),
        );

        // Files are handed to the reloader with the handle each publishes
        // into; what is not a file is loaded here, once.
        let mut reloader = Reloader::new(config.reload_poll);
        match &config.rules {
            RulesSource::Maps(path) => reloader.watch(
                MapsFile::new(
                    path.clone(),
                    config.cache_capacity,
                    rules.clone(),
                    metrics.clone(),
                )
                .keeping(config.keep_images.clone()),
            ),
            RulesSource::Legacy(prefix) => {
                let loaded = rules::load_legacy(prefix.as_deref());
                rules::warn_legacy(&loaded.engine, prefix.as_deref());
                let engine = loaded.engine.keeping(&config.keep_images);
                rules.publish(RulesState::new(engine, config.cache_capacity));
            }
        }
        match (&config.transport, &certs) {
            (Transport::Tls(TlsSource::Files { cert, key }), Some(store)) => {
                reloader.watch(TlsFiles::new(
                    cert.clone(),
                    key.clone(),
                    store.clone(),
                    metrics.clone(),
                ));
            }
            (Transport::Tls(TlsSource::SelfSigned { names }), Some(store)) => {
                let names = names.clone();
                let pair = tokio::task::spawn_blocking(move || tls::self_signed(&names))
                    .await
                    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))??;
                store.store(pair);
            }
            _ => {}
        }
        if let Some(credentials) = credentials {
            reloader.watch(credentials);
        }
        reloader.load_initial().await;
        let tls = match certs {
            Some(store) => Some(TlsAcceptor::from(Arc::new(server_config(store)?))),
            None => None,
        };
        let listener = bind(config.listen)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind(addr)?),
            None => None,
        };
        Ok(Server {
            config,
            state,
            listener,
            metrics_listener,
            tls,
            reloader,
        })
    }

    /// The address the admission listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The address of the plain-HTTP metrics listener, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then shuts down as the module
    /// documentation says. Returns once every connection is closed or the
    /// grace period is over.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            config,
            state,
            listener,
            metrics_listener,
            tls,
            reloader,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let reload_task = tokio::spawn(reloader.run(stop_rx.clone()));
        let metrics_task =
            metrics_listener.map(|l| tokio::spawn(serve_metrics(l, state.clone(), config.limits, stop_rx)));

        let router: Router<Incoming> = Router::new(
            state.clone(),
            stack::admission_stack(state.clone(), config.limits),
        );
        let connections = Connections {
            tls,
            protocols: Protocols::new(),
            router,
            limits: config.limits,
        };
        let graceful = GracefulShutdown::new();
        tracing::info!(
            listen = %listener.local_addr().unwrap_or(config.listen),
            tls = connections.tls.is_some(),
            shadow = config.shadow,
            pod = config.pod_name.as_deref().unwrap_or_default(),
            namespace = config.namespace.as_deref().unwrap_or_default(),
            "ImageSwap is serving."
        );

        let spawn = |tcp, peer| connections.spawn(tcp, peer, &graceful);
        accept_until(&listener, PORT_ADMISSION, shutdown, spawn).await;

        state.begin_shutdown();
        tracing::info!(
            delay = %humantime::format_duration(config.shutdown_delay),
            "Shutting down: readiness is now 503."
        );
        if !config.shutdown_delay.is_zero() {
            let delay = tokio::time::sleep(config.shutdown_delay);
            accept_until(&listener, PORT_ADMISSION, delay, spawn).await;
        }
        drop(listener);
        tracing::info!(
            connections = graceful.count(),
            grace = %humantime::format_duration(config.shutdown_grace),
            "Stopped accepting; finishing requests in flight."
        );
        match tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("Requests in flight finished."),
            Err(_) => tracing::warn!("Grace period over; closing the remaining connections."),
        }
        let _ = stop_tx.send(true);
        let _ = reload_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        Ok(())
    }
}

/// The rustls server configuration over a [`CertStore`]: the provider of
/// [`tls::provider`], safe default versions, ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A listener with a backlog of [`LISTEN_BACKLOG`] (`TcpListener::bind`
/// has no way to set it), and `SO_REUSEADDR` as `bind` sets it, so a
/// restarted server binds while old connections linger in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let error = |source| ServeError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(LISTEN_BACKLOG).map_err(error)
}

/// The connection builders. Over TLS the protocol is the one ALPN chose
/// (`h2`, else HTTP/1.1): sniffing it from the first bytes would wait for
/// those bytes with no bound. Plain HTTP (local tests, the metrics port)
/// has no ALPN, so hyper reads the HTTP/2 preface there, under the same
/// first-request bound.
#[derive(Clone)]
struct Protocols {
    /// Either, from the first bytes.
    sniff: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Protocols {
        let mut sniff = auto::Builder::new(TokioExecutor::new());
        sniff
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(HTTP1_MAX_BUF_BYTES);
        sniff
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
        Protocols {
            http1: sniff.clone().http1_only(),
            http2: sniff.clone().http2_only(),
            sniff,
        }
    }

    /// The builder for the protocol ALPN chose.
    fn negotiated(&self, alpn: Option<&[u8]>) -> &auto::Builder<TokioExecutor> {
        match alpn {
            Some(b"h2") => &self.http2,
            _ => &self.http1,
        }
    }
}

/// The `port` field of the accept loop's log line.
const PORT_ADMISSION: &str = "admission";
const PORT_METRICS: &str = "metrics";

/// The accept loop of both listeners: hands each connection to `spawn`
/// until `until` resolves (checked first, so a stop is never starved by a
/// stream of connections).
async fn accept_until(
    listener: &TcpListener,
    port: &'static str,
    until: impl Future<Output = ()>,
    mut spawn: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(until);
    loop {
        tokio::select! {
            biased;
            () = &mut until => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => spawn(tcp, peer),
                Err(e) => {
                    tracing::warn!(port, error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

/// What each accepted connection needs.
struct Connections {
    tls: Option<TlsAcceptor>,
    protocols: Protocols,
    router: Router<Incoming>,
    limits: Limits,
}

impl Connections {
    fn spawn(&self, tcp: TcpStream, peer: SocketAddr, graceful: &GracefulShutdown) {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            peer,
            self.tls.clone(),
            self.protocols.clone(),
            self.router.clone(),
            self.limits,
            graceful.watcher(),
        ));
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    protocols: Protocols,
    router: Router<Incoming>,
    limits: Limits,
    watcher: Watcher,
) {
    let (service, seen) = FirstRequest::new(router);
    let bound = limits.first_request_timeout;
    let result = match tls {
        None => {
            let connection = protocols.sniff.serve_connection(TokioIo::new(tcp), service);
            until_first_request(watcher.watch(connection), &seen, bound).await
        }
        Some(acceptor) => {
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let builder = protocols.negotiated(stream.get_ref().1.alpn_protocol());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    until_first_request(watcher.watch(connection), &seen, bound).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out.");
                    return;
                }
            }
        }
    };
    match result {
        Ok(Served::Done) => {}
        Ok(Served::NoRequest) => tracing::debug!(%peer, "No request in time; closed the connection."),
        Err(e) => tracing::debug!(%peer, error = %e, "Connection ended with an error."),
    }
}

/// How a connection ended without an error.
enum Served {
    Done,
    /// Closed: no request arrived within the first-request bound.
    NoRequest,
}

/// Drives `connection` to its end, but drops it (closing the socket) when
/// no request has arrived within `bound` of its start: a connection that
/// never sends a request (no bytes, or an HTTP/2 preface and no stream)
/// would otherwise be held for ever.
async fn until_first_request<C, E>(connection: C, seen: &AtomicBool, bound: Duration) -> Result<Served, E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        biased;
        result = &mut connection => return result.map(|()| Served::Done),
        () = tokio::time::sleep(bound) => {}
    }
    if seen.load(Ordering::Relaxed) {
        connection.await.map(|()| Served::Done)
    } else {
        Ok(Served::NoRequest)
    }
}

/// Notes that a connection has had a request (one relaxed store per
/// request), for [`until_first_request`].
#[derive(Clone)]
struct FirstRequest<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S> FirstRequest<S> {
    fn new(inner: S) -> (FirstRequest<S>, Arc<AtomicBool>) {
        let seen = Arc::new(AtomicBool::new(false));
        (
            FirstRequest {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<S, R> hyper::service::Service<R> for FirstRequest<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        self.seen.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}

/// The optional plain-HTTP `/metrics` listener.
async fn serve_metrics(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let router: Router<Incoming> = Router::metrics_only(state);
    let protocols = Protocols::new();
    // Stops on `true`, or when the sender is gone.
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    accept_until(&listener, PORT_METRICS, stopped, |tcp, _peer| {
        let (service, seen) = FirstRequest::new(router.clone());
        let builder = protocols.sniff.clone();
        let bound = limits.first_request_timeout;
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            let _ = until_first_request(connection, &seen, bound).await;
        });
    })
    .await;
}
