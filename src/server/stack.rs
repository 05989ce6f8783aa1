//! The admission request path as one tower stack, written down in one
//! function ([`admission_stack`]), outer to inner, and the small layers it
//! needs. Each layer that can refuse a request turns its refusal into an
//! HTTP response right at its edge (shed → 503, timeout → 503, too large →
//! 413), so nothing below the router ever returns an error.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use tower::{BoxError, Layer, Service, ServiceBuilder};
use tracing::Instrument;

use super::deadline;
use super::service::{
    AdmissionService, AdmissionStack, BoxFuture, Deadline, HttpResponse, content_length, error_response,
};
use super::state::AppState;
use crate::config::Limits;
use crate::telemetry::metrics::{Metrics, Outcome};
use crate::telemetry::spans;

/// The admission stack, outer to inner.
pub fn admission_stack<B>(state: Arc<AppState>, limits: Limits) -> AdmissionStack<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stack = ServiceBuilder::new()
        // 1. Tracing: the span (the trace span when traces are on; fields
        //    recorded once the body is parsed), the arrival time and the
        //    request metrics. Outermost, so it also sees, times and counts
        //    the requests the layers below refuse.
        .layer(TraceLayer::new(state.metrics.clone()))
        // 2. Load shedding: when the limit below is full, refuse at once with
        //    a 503 instead of queueing. `ShedEdgeLayer` is the shed layer's
        //    edge: its only error, "overloaded", becomes the 503.
        .layer(ShedEdgeLayer)
        .load_shed()
        // 3. Concurrency limit: at most `max_concurrency` reviews in progress.
        //    Above the timeout so a timed-out request gives its permit back.
        .concurrency_limit(limits.max_concurrency)
        // 4. Timeout: the request timeout, or less when the API server's
        //    `?timeout=` leaves less; counted from arrival. Also hands the
        //    deadline to the decision, which answers without a patch rather
        //    than late.
        .layer(DeadlineLayer::new(limits.request_timeout))
        // 5. Body limit: 413 from `Content-Length` before storing any of the
        //    body, and a cap on bodies that arrive without one. Innermost, so
        //    a body is never read for a request already refused.
        .layer(BodyLimitLayer::new(limits.max_body_bytes))
        // 6. The admission service: bytes → review → decisions → bytes.
        .service(AdmissionService::new(state));
    AdmissionStack::new(stack)
}

/// Turns the load-shed layer's error (it has no other: everything below it
/// is infallible) into a fast 503.
#[derive(Clone, Copy, Debug)]
pub struct ShedEdgeLayer;

impl<S> Layer<S> for ShedEdgeLayer {
    type Service = ShedEdge<S>;

    fn layer(&self, inner: S) -> ShedEdge<S> {
        ShedEdge { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ShedEdge<S> {
    inner: S,
}

impl<S, R> Service<R> for ShedEdge<S>
where
    S: Service<R, Response = HttpResponse, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Load shedding is always ready: it decides at `call` time.
        self.inner.poll_ready(cx).map(|_| Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            Ok(future.await.unwrap_or_else(|_overloaded| {
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(Outcome::shed),
                    "overloaded: too many admission requests in progress",
                )
            }))
        })
    }
}

/// When the request arrived, set by the trace layer for the deadline.
#[derive(Clone, Copy, Debug)]
pub struct Arrival(pub Instant);

/// Opens the span of an admission request and records its metrics.
#[derive(Clone, Debug)]
pub struct TraceLayer {
    metrics: Arc<Metrics>,
}

impl TraceLayer {
    pub fn new(metrics: Arc<Metrics>) -> TraceLayer {
        TraceLayer { metrics }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = HttpResponse, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let arrival = Instant::now();
        request.extensions_mut().insert(Arrival(arrival));
        // The request's fields are recorded by the admission service once
        // the body is parsed, the outcome below; a `traceparent` header
        // makes it a child of the caller's span. Disabled (free) with traces off.
        let span = spans::admission(request.headers());
        let inflight = self.metrics.inflight();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let Ok(response) = future.instrument(span.clone()).await;
            // Every response of the stack carries its outcome; a missing one
            // would be a bug, counted where it is most visible.
            let outcome = response
                .extensions()
                .get::<Outcome>()
                .copied()
                .unwrap_or(Outcome::bad_request);
            spans::record_outcome(&span, outcome, response.status().as_u16());
            metrics.request(outcome, arrival.elapsed());
            drop(inflight);
            Ok(response)
        })
    }
}

/// Applies the request's time budget (see [`deadline::budget`]).
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    request_timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(request_timeout: Duration) -> DeadlineLayer {
        DeadlineLayer { request_timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    request_timeout: Duration,
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>, Response = HttpResponse, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let arrival = request
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let budget = deadline::budget(self.request_timeout, request.uri().query());
        let deadline = arrival + budget;
        request.extensions_mut().insert(Deadline(deadline));
        let future = self.inner.call(request);
        Box::pin(async move {
            // The inner future is polled first: an answer that is ready wins
            // over a deadline that has just passed.
            match tokio::time::timeout_at(deadline.into(), future).await {
                Ok(result) => result,
                Err(_elapsed) => Ok(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(Outcome::timeout),
                    &format!("no answer within {}", humantime::format_duration(budget)),
                )),
            }
        })
    }
}

/// Most bytes of a refused HTTP/1.1 body read and dropped so the client
/// sees the 413; past this the connection is closed instead.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Reads and drops up to `max` bytes of a body.
async fn discard<B: Body>(body: B, max: usize) {
    let mut body = std::pin::pin!(body);
    let mut seen = 0usize;
    while seen <= max {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |data| data.remaining()),
            _ => break,
        }
    }
}

/// Caps the request body at `max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimitLayer {
    max_body_bytes: usize,
}

impl BodyLimitLayer {
    pub fn new(max_body_bytes: usize) -> BodyLimitLayer {
        BodyLimitLayer { max_body_bytes }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BodyLimit<S> {
    inner: S,
    max_body_bytes: usize,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<Limited<B>>, Response = HttpResponse, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limit = self.max_body_bytes;
        if content_length(&request).is_some_and(|n| n > limit as u64) {
            // An HTTP/1.1 client writes its whole body before reading the
            // answer; closing on it makes it see a broken pipe instead of
            // the 413. So the body is read and dropped (never stored), up
            // to a bound, and under the deadline layer's clock. HTTP/2
            // ends just the stream, so it is answered at once.
            let drain = request.version() <= Version::HTTP_11;
            return Box::pin(async move {
                if drain {
                    discard(request.into_body(), DRAIN_MAX_BYTES).await;
                }
                Ok(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some(Outcome::too_large),
                    &format!("the body is larger than {limit} bytes"),
                ))
            });
        }
        Box::pin(self.inner.call(request.map(|body| Limited::new(body, limit))))
    }
}
