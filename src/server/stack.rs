//! The admission request path as one tower stack, written down in one
//! function ([`admission_stack`]), outer to inner, and the small services
//! it needs. Each layer that can refuse a request turns its refusal into an
//! HTTP response right at its edge (shed → 503, timeout → 503, too large →
//! 413, panic → 500), so nothing below the router ever returns an error.
//!
//! Ours or tower's: the shed and concurrency layers are tower's own. The
//! others are written here because tower-http's do not do the job:
//! - body limit: `RequestBodyLimitLayer` answers the 413 without reading a
//!   refused HTTP/1.1 body, so the client, still writing it, sees a broken
//!   pipe instead of the answer; ours drains it (up to [`DRAIN_MAX_BYTES`]).
//! - timeout: `TimeoutLayer`/`RequestBodyTimeoutLayer` know one fixed
//!   duration; ours counts from arrival, shortens it to the API server's
//!   `?timeout=`, and hands the deadline to the decision.
//! - catch-panic: `CatchPanicLayer` boxes every response body (its response
//!   type is `UnsyncBoxBody`, one allocation per request, and a type that no
//!   longer matches the probes' answers) and answers `text/plain`; ours is
//!   a `catch_unwind` around each poll, answering the stack's JSON error.
//! - request id: none; the API server's `uid` names a request, and the
//!   trace span carries its `traceparent`.
//! - tracing: tower-http's `TraceLayer` classifies by status code; ours
//!   records the outcome (patched, shed, …) that the metrics are labelled by.

use std::any::Any;
use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use tower::layer::layer_fn;
use tower::{BoxError, Service, ServiceBuilder};
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
    let metrics = state.metrics.clone();
    let request_timeout = limits.request_timeout;
    let max_body_bytes = limits.max_body_bytes;
    let stack = ServiceBuilder::new()
        // 1. Tracing: the span (the trace span when traces are on; fields
        //    recorded once the body is parsed), the arrival time and the
        //    request metrics. Outermost, so it also sees, times and counts
        //    the requests the layers below refuse.
        .layer(layer_fn(move |inner| Trace {
            inner,
            metrics: metrics.clone(),
        }))
        // 2. Catch panic: a bug below becomes a 500 instead of a connection
        //    (HTTP/1.1) or stream (HTTP/2) closed without an answer. Right
        //    under tracing, so the panic is still timed, counted and traced.
        .layer(layer_fn(|inner| CatchPanic { inner }))
        // 3. Load shedding: when the limit below is full, refuse at once with
        //    a 503 instead of queueing. `ShedEdge` is the shed layer's edge:
        //    its only error, "overloaded", becomes the 503.
        .layer(layer_fn(|inner| ShedEdge { inner }))
        .load_shed()
        // 4. Concurrency limit: at most `max_concurrency` reviews in progress.
        //    Above the timeout so a timed-out request gives its permit back.
        .concurrency_limit(limits.max_concurrency)
        // 5. Timeout: the request timeout, or less when the API server's
        //    `?timeout=` leaves less; counted from arrival. Also hands the
        //    deadline to the decision, which answers without a patch rather
        //    than late.
        .layer(layer_fn(move |inner| DeadlineService {
            inner,
            request_timeout,
        }))
        // 6. Body limit: 413 from `Content-Length` before storing any of the
        //    body, and a cap on bodies that arrive without one. Innermost, so
        //    a body is never read for a request already refused.
        .layer(layer_fn(move |inner| BodyLimit {
            inner,
            max_body_bytes,
        }))
        // 7. The admission service: bytes → review → decisions → bytes.
        .service(AdmissionService::new(state));
    AdmissionStack::new(stack)
}

/// Turns the load-shed layer's error (it has no other: everything below it
/// is infallible) into a fast 503.
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

/// Answers a panic below it (in `call` or in any poll of the answer) with
/// a 500, logged at ERROR; the answer names no detail of the panic.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, R> Service<R> for CatchPanic<S>
where
    S: Service<R, Response = HttpResponse, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // Unwind safety: after a panic the inner future is only dropped,
        // and the services below share nothing a half-done request could
        // leave inconsistent (their state is atomics and `ArcSwap`s).
        let future = match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => future,
            Err(panic) => return Box::pin(std::future::ready(Ok(panicked(panic.as_ref())))),
        };
        Box::pin(async move {
            let mut future = std::pin::pin!(future);
            std::future::poll_fn(
                |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(poll) => poll,
                    Err(panic) => Poll::Ready(Ok(panicked(panic.as_ref()))),
                },
            )
            .await
        })
    }
}

fn panicked(panic: &(dyn Any + Send)) -> HttpResponse {
    let message = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (None, Some(text)) => text.as_str(),
        (None, None) => "(no message)",
    };
    tracing::error!(
        panic = message,
        "Answered 500: handling the admission request panicked."
    );
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some(Outcome::panicked),
        "internal error: see the server log",
    )
}

/// When the request arrived, set by the trace layer for the deadline.
#[derive(Clone, Copy, Debug)]
pub struct Arrival(pub Instant);

/// Opens the span of an admission request and records its metrics.
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

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    fn outcome(response: &HttpResponse) -> Option<Outcome> {
        response.extensions().get::<Outcome>().copied()
    }

    #[tokio::test]
    async fn a_panic_in_call_or_in_a_poll_is_answered_with_a_500() {
        let in_call = CatchPanic {
            inner: tower::service_fn(|panics: bool| -> BoxFuture<Result<HttpResponse, Infallible>> {
                assert!(!panics, "a bug in call");
                Box::pin(async { Ok(error_response(StatusCode::OK, Some(Outcome::patched), "fine")) })
            }),
        };
        let in_poll = CatchPanic {
            inner: tower::service_fn(|panics: bool| async move {
                tokio::task::yield_now().await;
                assert!(!panics, "a bug in a poll");
                Ok::<_, Infallible>(error_response(StatusCode::OK, Some(Outcome::patched), "fine"))
            }),
        };
        for (panics, status, expected) in [
            (false, StatusCode::OK, Outcome::patched),
            (true, StatusCode::INTERNAL_SERVER_ERROR, Outcome::panicked),
        ] {
            let Ok(response) = in_call.clone().oneshot(panics).await;
            assert_eq!((response.status(), outcome(&response)), (status, Some(expected)));
            let Ok(response) = in_poll.clone().oneshot(panics).await;
            assert_eq!((response.status(), outcome(&response)), (status, Some(expected)));
        }
    }
}
