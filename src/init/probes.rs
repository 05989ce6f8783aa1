//! The `init --watch` sidecar's own small HTTP listener
//! (`IMAGESWAP_WATCH_LISTEN`, plain HTTP, off by default):
//!
//! - `GET /readyz`: `503` until the first pass has written the pair, then
//!   `200`. The Deployment uses it as the sidecar's *startup* probe, so the
//!   kubelet starts the server only once its pair is there (a native sidecar
//!   otherwise counts as started at once). Not a readiness probe: a sidecar's
//!   readiness is the pod's, and a pass failing while the API server is away
//!   must not take the webhook out of its Service.
//! - `GET /healthz`: `200` while the process runs.
//! - `GET /metrics`: the sidecar's [`InitMetrics`] in Prometheus text format.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::telemetry::metrics::InitMetrics;

/// Whether the first pass has written the pair.
#[derive(Clone, Debug, Default)]
pub struct Started(Arc<AtomicBool>);

impl Started {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The bound listener, before it serves.
#[derive(Debug)]
pub struct Probes {
    listener: TcpListener,
    metrics: Arc<InitMetrics>,
    started: Started,
}

impl Probes {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<InitMetrics>,
        started: Started,
    ) -> std::io::Result<Probes> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Probes {
            listener,
            metrics,
            started,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "Serving /metrics, /healthz and /readyz of the watch.");
        }
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let metrics = self.metrics.clone();
            let started = self.started.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let answer = answer(&request, &metrics, &started);
                    async move { Ok::<_, Infallible>(answer) }
                });
                if let Err(err) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %err, "A probe connection failed.");
                }
            });
        }
    }
}

fn answer(request: &Request<Incoming>, metrics: &InitMetrics, started: &Started) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/readyz") if started.get() => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the first pass has not written the pair yet\n".to_owned(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    response
}
