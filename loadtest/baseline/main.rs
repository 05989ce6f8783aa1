//! The bare baseline of `loadtest/run.sh compare`: the least an admission
//! webhook on this stack can do. It has imageswap's TLS settings (rustls with
//! the ring provider, its safe default protocol versions, ALPN `h2` then
//! `http/1.1`, the same certificate), the same runtime (tokio multi-thread,
//! one worker per core) and the same connection handling (hyper 1 auto
//! HTTP/1.1 + HTTP/2, `TCP_NODELAY`, and imageswap's `server::Protocols`
//! settings: the HTTP/1.1 header-read timeout, HTTP/2 keep-alive pings and
//! at most 200 concurrent streams, so the HTTP/2 limit is the same for
//! both), reads each request body whole, and
//! answers every request with one fixed AdmissionReview response. Whatever
//! imageswap spends beyond this is its own work: routing, the tower stack,
//! decoding the review, deciding, writing the patch, metrics.
//!
//! With `--parse` (the second baseline, issue 24) it also parses each body
//! once with `simd_json::to_tape` before answering, and answers 400 to a
//! body that is not JSON: the work any webhook on this design must do, so
//! the two baselines differ only by that parse. imageswap's cost above it
//! is what it does beyond parsing.
//!
//! ```text
//! baseline [--parse] LISTEN CERT_PEM KEY_PEM RESPONSE_JSON
//! ```
//!
//! Stops on SIGTERM or SIGINT (exit 0). Built as a cargo example to reuse
//! the main package's dependency build:
//! `cargo build --release --locked --example baseline`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark may panic on what it did not expect.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// imageswap's `server::{HEADER_READ_TIMEOUT, HTTP2_KEEPALIVE_INTERVAL,
/// HTTP2_KEEPALIVE_TIMEOUT, HTTP2_MAX_CONCURRENT_STREAMS}`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let parse = args.first().is_some_and(|a| a == "--parse");
    if parse {
        args.remove(0);
    }
    let [listen, cert, key, response] = args.as_slice() else {
        bail!("usage: baseline [--parse] LISTEN CERT_PEM KEY_PEM RESPONSE_JSON");
    };
    let listen: SocketAddr = listen.parse().with_context(|| format!("LISTEN {listen}"))?;
    let tls = TlsAcceptor::from(Arc::new(tls_config(Path::new(cert), Path::new(key))?));
    let response = Bytes::from(std::fs::read(response).with_context(|| format!("cannot read {response}"))?);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, tls, response, parse))
}

/// imageswap's `server::tls::server_config`, with a fixed pair instead of
/// the rotating store.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read {}", key.display()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(listen: SocketAddr, tls: TlsAcceptor, response: Bytes, parse: bool) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mode = if parse { " (parsing each body)" } else { "" };
    eprintln!("baseline: serving on https://{}{mode}", listener.local_addr()?);
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("baseline: accept: {e}");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (tls, builder, response) = (tls.clone(), builder.clone(), response.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request| answer(request, response.clone(), parse));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Reads the whole body (with `parse`, parses it into a simd-json tape),
/// then answers the fixed review; 400 for a body that could not be read
/// (or parsed).
async fn answer(
    request: Request<Incoming>,
    response: Bytes,
    parse: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ok = match request.into_body().collect().await {
        Ok(body) if parse => {
            // simd-json parses in place: the body as one mutable buffer
            // (no copy when it arrived in one piece).
            let mut bytes = Vec::from(body.to_bytes());
            simd_json::to_tape(&mut bytes).is_ok()
        }
        Ok(_) => true,
        Err(_) => false,
    };
    let mut answer = Response::new(Full::new(if ok { response } else { Bytes::new() }));
    if !ok {
        *answer.status_mut() = http::StatusCode::BAD_REQUEST;
    }
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(answer)
}
