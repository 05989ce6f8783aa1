//! An OTLP/HTTP collector inside the test: hyper on 127.0.0.1 accepting
//! `POST /v1/traces`, decoding each `ExportTraceServiceRequest` with the
//! opentelemetry-proto messages (what Jaeger and the OpenTelemetry
//! Collector do on port 4318). It can also accept and never answer (a hung
//! collector); [`refused_endpoint`] is one that is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// How the collector behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collector {
    /// Decodes every export and answers 200 with an empty response.
    Answers,
    /// Accepts connections and reads the requests, but never answers.
    Hangs,
}

/// One received span with its resource and instrumentation scope.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub scope: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        attribute(&self.span.attributes, key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            Value::IntValue(n) => Some(*n),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.attribute(key)? {
            Value::BoolValue(b) => Some(*b),
            _ => None,
        }
    }

    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match attribute(&self.resource, key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// Every attribute as text, for failure messages.
    pub fn attributes(&self) -> HashMap<String, String> {
        self.span
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
            .collect()
    }
}

pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running collector.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    pub async fn start(mode: Collector) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let requests: Arc<AtomicUsize> = Arc::default();
        let task = {
            let (spans, requests) = (spans.clone(), requests.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    match mode {
                        Collector::Hangs => {
                            let requests = requests.clone();
                            tokio::spawn(async move {
                                let mut tcp = tcp;
                                let mut buf = vec![0u8; 64 * 1024];
                                loop {
                                    use tokio::io::AsyncReadExt;
                                    match tcp.read(&mut buf).await {
                                        Ok(0) | Err(_) => break,
                                        Ok(_) => {
                                            requests.fetch_add(1, Ordering::SeqCst);
                                        }
                                    }
                                }
                                // Read to the end, never answered.
                                std::future::pending::<()>().await;
                            });
                        }
                        Collector::Answers => {
                            let (spans, requests) = (spans.clone(), requests.clone());
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |request| {
                                    let (spans, requests) = (spans.clone(), requests.clone());
                                    async move {
                                        Ok::<_, std::convert::Infallible>(
                                            answer(request, &spans, &requests).await,
                                        )
                                    }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tcp), service)
                                    .await;
                            });
                        }
                    }
                }
            })
        };
        OtlpReceiver {
            addr,
            spans,
            requests,
            task,
        }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans").clone()
    }

    /// Export requests received (answered or not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds for the spans received, or panics after `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= until {
                let names: Vec<_> = spans.iter().map(|s| s.span.name.clone()).collect();
                panic!("the collector did not get the expected spans within {within:?}; it got {names:?}");
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }
}

async fn answer(
    request: Request<Incoming>,
    spans: &Mutex<Vec<ReceivedSpan>>,
    requests: &AtomicUsize,
) -> Response<Full<Bytes>> {
    let status = |code: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = code;
        response
    };
    if request.method() != http::Method::POST || request.uri().path() != "/v1/traces" {
        return status(StatusCode::NOT_FOUND);
    }
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(body) = request.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    requests.fetch_add(1, Ordering::SeqCst);
    if content_type != "application/x-protobuf" {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    {
        let mut received = spans.lock().expect("spans");
        for resource_spans in export.resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        span,
                    });
                }
            }
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

/// The base URL of a collector that is down: a port that was just free,
/// so connecting is refused.
pub fn refused_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}
