//! The admission request path as one tower stack, written down in one
//! function ([`admission_stack`]), outer to inner, and the small services
//! it needs. Each layer that can refuse a request turns its refusal into an
//! HTTP response right at its edge (shed → 503, timeout → 503, too large →
//! 413, panic → 500), so nothing below the router ever returns an error.
//!
//! Ours or tower's: the shed and concurrency layers are tower's own. The
//! others are written here because tower-http's do not do the job:
//! - body: `RequestBodyLimitLayer` answers the 413 without reading a
//!   refused body, so an HTTP/1.1 client, still writing it, sees a broken
//!   pipe instead of the answer and an HTTP/2 one (curl) a reset stream;
//!   ours drains it (up to [`DRAIN_MAX_BYTES`]). It also reads the body
//!   whole before the concurrency limit and charges it to the memory
//!   budget, which no tower layer does.
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
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::layer::layer_fn;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;

use super::deadline;
use super::service::{
    AdmissionService, AdmissionStack, BoxFuture, Deadline, HttpResponse, content_length, error_response,
};
use super::state::AppState;
use crate::admission::{SMALL_REVIEW_MAX_BYTES, release_large_scratch};
use crate::config::Limits;
use crate::telemetry::metrics::{Metrics, Outcome};
use crate::telemetry::spans;

/// The admission stack, outer to inner, around the admission service.
pub fn admission_stack<B>(state: Arc<AppState>, limits: Limits) -> AdmissionStack<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let service = AdmissionService::new(state.clone());
    stack_around(&state, limits, service)
}

/// [`admission_stack`] around any core (tests put one there that waits).
fn stack_around<B, S>(state: &AppState, limits: Limits, core: S) -> AdmissionStack<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<ReadBody>, Response = HttpResponse, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let metrics = state.metrics.clone();
    let request_timeout = limits.request_timeout;
    let body = BodyLimits::new(&limits);
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
        // 3. Timeout: the request timeout, or less when the API server's
        //    `?timeout=` leaves less; counted from arrival. Above the body
        //    read, so a body that dribbles is cut at the deadline (and gives
        //    back its memory); also hands the deadline to the decision,
        //    which answers without a patch rather than late.
        .layer(layer_fn(move |inner| DeadlineService {
            inner,
            request_timeout,
        }))
        // 4. The body, read whole before anything below: 413 from
        //    `Content-Length` (the body drained, never stored) or past the
        //    limit, and a fast 503 past the memory budget (bytes of bodies
        //    held at once, across requests; small and large bodies each in
        //    their own share); then, for a large body, the wait for its
        //    turn to parse (one at a time). Above the concurrency limit, so
        //    a request takes a permit only once its body is in and its turn
        //    come: slow bodies and big reviews cannot hold the permits
        //    other requests need.
        .layer(layer_fn(move |inner| ReadBodyService {
            inner,
            limits: body.clone(),
        }))
        // 5. Load shedding: when the limit below is full, refuse at once with
        //    a 503 instead of queueing. `ShedEdge` is the shed layer's edge:
        //    its only error, "overloaded", becomes the 503.
        .layer(layer_fn(|inner| ShedEdge { inner }))
        .load_shed()
        // 6. Concurrency limit: at most `max_concurrency` reviews being
        //    decided (their bodies in) at once.
        .concurrency_limit(limits.max_concurrency)
        // 7. The admission service: bytes → review → decisions → bytes.
        .service(core);
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

/// Most bytes of a refused body read and dropped so the client sees the
/// answer; past this the connection (HTTP/1.1) or stream (HTTP/2) is
/// closed instead.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes reserved up front for a body from its `Content-Length`: a
/// client announcing megabytes and sending nothing must not make the
/// server hold (or charge the budget) megabytes per request. The buffer
/// then doubles, up to the announced length, as bytes arrive.
const PREALLOCATE_MAX_BYTES: usize = 256 * 1024;

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

/// A request body read whole, with its share of the memory budget and,
/// for a large body, its turn to parse (both given back when the request
/// is done with them).
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: Vec<u8>,
    _charge: Option<Charge>,
    _parse: Option<ParseTurn>,
}

impl ReadBody {
    pub fn new(bytes: Vec<u8>) -> ReadBody {
        ReadBody {
            bytes,
            _charge: None,
            _parse: None,
        }
    }

    /// The body with [`INPUT_PADDING`] bytes after it, and its length: the
    /// parser then works in the body itself instead of copying it into a
    /// padded buffer first (`admission::decide_padded`). The body is read
    /// with that room, so this allocates nothing.
    pub fn padded(&mut self) -> (&mut [u8], usize) {
        let len = self.bytes.len();
        self.bytes.resize(len + INPUT_PADDING, 0);
        (&mut self.bytes, len)
    }
}

/// The parser's padding (see [`ReadBody::padded`]): room kept after every
/// body read, not charged to the memory budget (64 bytes a body).
const INPUT_PADDING: usize = simd_json::INPUT_PADDING;

/// How long the shared scratch of big reviews outlives the last of them.
/// Freed between two big reviews of a run, it was allocated again at once
/// while the freed memory still counted (mimalloc purges it later): with
/// one worker thread, whose big bodies arrive more slowly than they parse,
/// that left peaks of 150 to 180 MiB instead of about 125.
const LARGE_SCRATCH_KEEP: Duration = Duration::from_secs(1);

/// Longer than mimalloc's purge delay (10 ms): what it holds freed past
/// that is given back to the system at its next free of a segment.
const ALLOCATOR_PURGE_AFTER: Duration = Duration::from_millis(100);
/// Address space reserved and freed at once, never touched: more than a
/// big review's parse state, so mimalloc cannot place it in the memory
/// that state freed (it would keep that memory, not give it back).
const NUDGE_BYTES: usize = 512 * 1024 * 1024;

/// Makes mimalloc give the memory of the freed scratch back to the system.
/// It does so only on its next free of a segment (or a collection, an
/// `unsafe` call): otherwise the ~100 MiB of a big review's tape stayed
/// resident until the next big review. Freeing an untouched reservation is
/// such a free, and costs no resident memory.
fn nudge_the_allocator() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(NUDGE_BYTES)));
}

/// A large review's turn to parse (one at a time, in the shared scratch of
/// `admission::scratch`). Once a turn ends, the scratch is freed after
/// [`LARGE_SCRATCH_KEEP`] unless another big review parses or waits then.
#[derive(Debug)]
struct ParseTurn(Option<OwnedSemaphorePermit>);

impl Drop for ParseTurn {
    fn drop(&mut self) {
        let Some(turn) = self.0.take() else {
            return;
        };
        let turns = turn.semaphore().clone();
        drop(turn);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            release_large_scratch();
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(LARGE_SCRATCH_KEEP).await;
            // Freed holding the turn, so no parse uses it meanwhile; a
            // waiter would have been handed the turn (the semaphore is
            // fair), so a free turn means none waits.
            if let Ok(_turn) = turns.try_acquire() {
                release_large_scratch();
            } else {
                return;
            }
            tokio::time::sleep(ALLOCATOR_PURGE_AFTER).await;
            nudge_the_allocator();
        });
    }
}

/// The part of the budget a body holds, and from which share.
#[derive(Debug)]
struct Charge {
    large: bool,
    permit: OwnedSemaphorePermit,
}

/// The share of the body budget for bodies over [`SMALL_REVIEW_MAX_BYTES`]:
/// a third (at least one body of the largest size), the rest for smaller
/// ones. With the default 48 MiB, 16 MiB (five 3 MiB bodies) for big
/// reviews and 32 MiB (7,000 reviews of 4.5 KB at once) that stay for
/// the reviews real pods make however many big ones are in flight. Big
/// reviews then parse one at a time, their parse state on top.
const LARGE_SHARE_DIVISOR: usize = 3;

/// The body limit, the memory budget of all bodies held at once, and the
/// turns of large reviews' parses. Bodies are charged to a byte-weighted
/// semaphore with the buffer's capacity as it grows: to the small share
/// while they are at most [`SMALL_REVIEW_MAX_BYTES`], else to the large
/// one, so big bodies never take the room of small ones. A large review
/// then waits its turn to parse: one at a time, because its parse state
/// can be ~36 bytes a byte of body (a 3 MiB review of `[1,1,…]` needs
/// ~90 MiB), and two of those at once (with two worker threads) took the
/// server past its container's limit. Small reviews parse in each thread's
/// kept scratch (at most 2.3 MiB a thread).
#[derive(Clone, Debug)]
struct BodyLimits {
    max_body_bytes: usize,
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    parse: Arc<Semaphore>,
}

/// Why a body was not read.
enum Refused {
    TooLarge,
    OverBudget,
    Unreadable(BoxError),
}

impl BodyLimits {
    fn new(limits: &Limits) -> BodyLimits {
        let budget = limits.memory_budget_bytes;
        // At least one body of the largest size (the configuration asks
        // the whole budget to hold one); the small share is then what is
        // left, or a third when the budget holds no more than that body.
        let large = (budget / LARGE_SHARE_DIVISOR).max(limits.max_body_bytes);
        let small = budget.saturating_sub(large).max(budget / LARGE_SHARE_DIVISOR);
        let semaphore = |bytes: usize| Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)));
        BodyLimits {
            max_body_bytes: limits.max_body_bytes,
            small: semaphore(small),
            large: semaphore(large),
            parse: Arc::new(Semaphore::new(1)),
        }
    }

    /// The share a body of `bytes` is charged to.
    fn share(&self, bytes: usize) -> (bool, &Arc<Semaphore>) {
        if bytes > SMALL_REVIEW_MAX_BYTES {
            (true, &self.large)
        } else {
            (false, &self.small)
        }
    }

    /// Waits for a large body's turn to parse (the request's deadline,
    /// above, bounds the wait); a small body needs none.
    async fn parse_turn(&self, body: &[u8]) -> Option<ParseTurn> {
        if body.len() <= SMALL_REVIEW_MAX_BYTES {
            return None;
        }
        // Never closed: always a permit.
        Some(ParseTurn(self.parse.clone().acquire_owned().await.ok()))
    }

    /// Reads `body` into memory; on a refusal, drains what is left of it
    /// (bounded) so that the client reads the answer on either protocol.
    async fn read<B>(&self, body: B, announced: Option<u64>) -> Result<ReadBody, Refused>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let refused = match self.collect(body.as_mut(), announced).await {
            Ok(read) => return Ok(read),
            Err(refused) => refused,
        };
        if !matches!(refused, Refused::Unreadable(_)) {
            discard(body, DRAIN_MAX_BYTES).await;
        }
        Err(refused)
    }

    async fn collect<B>(
        &self,
        mut body: std::pin::Pin<&mut B>,
        announced: Option<u64>,
    ) -> Result<ReadBody, Refused>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let limit = self.max_body_bytes;
        let announced = match announced.map(usize::try_from) {
            Some(Ok(n)) if n <= limit => Some(n),
            Some(_) => return Err(Refused::TooLarge),
            None => None,
        };
        // Refused at once when the announced body cannot fit now.
        if announced.is_some_and(|n| n > self.share(n).1.available_permits()) {
            return Err(Refused::OverBudget);
        }
        let mut charge: Option<Charge> = None;
        let mut bytes = Vec::new();
        self.grow(
            &mut bytes,
            &mut charge,
            announced.unwrap_or(0).min(PREALLOCATE_MAX_BYTES),
        )?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Refused::Unreadable(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let needed = bytes.len() + data.len();
            if needed > limit {
                return Err(Refused::TooLarge);
            }
            // The capacity past the padding kept for the parser.
            let room = bytes.capacity().saturating_sub(INPUT_PADDING);
            if needed > room {
                let doubled = room.saturating_mul(2).max(needed);
                let target = announced
                    .filter(|&n| n >= needed)
                    .map_or(doubled, |n| doubled.min(n));
                self.grow(&mut bytes, &mut charge, target.min(limit))?;
            }
            bytes.extend_from_slice(&data);
        }
        Ok(ReadBody {
            bytes,
            _charge: charge,
            _parse: None,
        })
    }

    /// Grows `bytes` to hold `capacity`, charging the budget first: the
    /// share of its size (a body growing past the small share's size moves
    /// to the large one, whole, and gives the small one back).
    fn grow(&self, bytes: &mut Vec<u8>, charge: &mut Option<Charge>, capacity: usize) -> Result<(), Refused> {
        let (large, share) = self.share(capacity);
        let held = charge
            .as_ref()
            .filter(|held| held.large == large)
            .map_or(0, |held| held.permit.num_permits());
        let Some(more) = capacity.checked_sub(held).filter(|&n| n > 0) else {
            return Ok(());
        };
        let more = u32::try_from(more).map_err(|_| Refused::OverBudget)?;
        let permit = share
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| Refused::OverBudget)?;
        match charge {
            Some(held) if held.large == large => held.permit.merge(permit),
            _ => *charge = Some(Charge { large, permit }),
        }
        // The parser's padding on top, uncharged (see `ReadBody::padded`).
        bytes.reserve_exact((capacity + INPUT_PADDING).saturating_sub(bytes.len()));
        Ok(())
    }
}

/// Reads the request body (see [`BodyLimits::read`]) and only then calls
/// the service below: its readiness (the concurrency permit) is asked for
/// once the body is in, not when the request arrives.
#[derive(Clone, Debug)]
pub struct ReadBodyService<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S, B> Service<Request<B>> for ReadBodyService<S>
where
    S: Service<Request<ReadBody>, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Always ready: the service below is asked once the body is in.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let announced = content_length(&request);
            let (parts, body) = request.into_parts();
            match limits.read(body, announced).await {
                Ok(mut read) => {
                    read._parse = limits.parse_turn(&read.bytes).await;
                    inner.oneshot(Request::from_parts(parts, read)).await
                }
                Err(Refused::TooLarge) => Ok(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some(Outcome::too_large),
                    &format!("the body is larger than {} bytes", limits.max_body_bytes),
                )),
                Err(Refused::OverBudget) => Ok(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(Outcome::shed),
                    "overloaded: the memory for request bodies in progress is used up",
                )),
                Err(Refused::Unreadable(e)) => {
                    tracing::warn!(error = %e, "Could not read a request body.");
                    Ok(error_response(
                        StatusCode::BAD_REQUEST,
                        Some(Outcome::bad_request),
                        &format!("cannot read the body: {e}"),
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    fn outcome(response: &HttpResponse) -> Option<Outcome> {
        response.extensions().get::<Outcome>().copied()
    }

    /// A stack with `max_concurrency` 1 around a core that answers once
    /// the test lets it, and tells when a request has reached it.
    #[tokio::test]
    async fn reviews_past_the_concurrency_limit_get_a_fast_503() {
        use crate::cache::PublishedRules;
        use crate::server::state::Settings;
        use http_body_util::Full;
        use tokio::sync::Notify;

        let state = AppState::new(
            Settings {
                disable_label: "k8s.twr.io/imageswap".to_owned(),
                shadow: false,
                max_body_bytes: 4096,
                pod_name: None,
                log_swaps: true,
            },
            Arc::new(PublishedRules::new()),
            None,
            Arc::new(Metrics::new()),
        );
        let limits = Limits {
            max_body_bytes: 4096,
            request_timeout: Duration::from_secs(30),
            max_concurrency: 1,
            memory_budget_bytes: 1 << 20,
            tls_handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
        };
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(Notify::new());
        let core = {
            let (gate, entered) = (gate.clone(), entered.clone());
            tower::service_fn(move |_request: Request<ReadBody>| {
                let (gate, entered) = (gate.clone(), entered.clone());
                async move {
                    entered.notify_one();
                    let _permit = gate.acquire().await;
                    Ok::<_, Infallible>(error_response(StatusCode::OK, Some(Outcome::patched), "done"))
                }
            })
        };
        let stack = stack_around::<Full<Bytes>, _>(&state, limits, core);
        let post = || {
            Request::post("/")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        };

        let held = tokio::spawn(stack.clone().oneshot(post()));
        entered.notified().await;
        let Ok(shed) = stack.clone().oneshot(post()).await;
        assert_eq!(
            (shed.status(), outcome(&shed)),
            (StatusCode::SERVICE_UNAVAILABLE, Some(Outcome::shed))
        );
        gate.add_permits(2);
        let Ok(done) = held.await.unwrap();
        assert_eq!(done.status(), StatusCode::OK);
        // The permit is back.
        let Ok(after) = stack.clone().oneshot(post()).await;
        assert_eq!(after.status(), StatusCode::OK);
        assert!(state.metrics.encode().contains("imageswap_shed_requests_total 1"));
    }

    /// A body in frames, with no length announced (HTTP/2 may send none).
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(hyper::body::Frame::data(data))))
        }
    }

    fn frames(bytes: usize) -> Frames {
        Frames((0..bytes / 4096).map(|_| Bytes::from(vec![b' '; 4096])).collect())
    }

    #[tokio::test]
    async fn a_body_growing_past_64_kib_moves_to_the_large_share_whole() {
        const MIB: usize = 1 << 20;
        let limits = BodyLimits::new(&Limits {
            max_body_bytes: MIB,
            request_timeout: Duration::from_secs(2),
            max_concurrency: 8,
            memory_budget_bytes: 3 * MIB,
            tls_handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
        });
        let (small, large) = (2 * MIB, MIB);
        let shares =
            |limits: &BodyLimits| (limits.small.available_permits(), limits.large.available_permits());
        assert_eq!(shares(&limits), (small, large));

        let Ok(pod) = limits.read(frames(8 * 1024), None).await else {
            panic!("a small body refused");
        };
        // What a body holds beyond the parser's uncharged padding.
        let charged = |body: &ReadBody| body.bytes.capacity() - INPUT_PADDING;
        assert_eq!(shares(&limits), (small - charged(&pod), large));
        drop(pod);

        let Ok(big) = limits.read(frames(100 * 1024), None).await else {
            panic!("a big body refused");
        };
        assert!(big.bytes.capacity() > SMALL_REVIEW_MAX_BYTES);
        assert_eq!(shares(&limits), (small, large - charged(&big)));
        drop(big);
        assert_eq!(shares(&limits), (small, large));
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
