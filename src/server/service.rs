//! The services at both ends of the tower stack: the router that receives
//! every HTTP request (probes, metrics, 404/405, and the admission stack),
//! and the admission service at the stack's core, which only does bytes →
//! review → decisions → bytes.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::Guard;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use tower::{Service, ServiceExt};

use super::stack::ReadBody;
use super::state::{AppState, LARGE_REVIEW_BYTES};
use crate::admission::{self, Admission, Decide, ImageDecision, Options, Verdict};
use crate::cache::RulesState;
use crate::swap::Rule;
use crate::telemetry::metrics::Outcome;
use crate::telemetry::spans;

pub type HttpResponse = Response<Full<Bytes>>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The admission path's latest answer time, set by the deadline layer.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

const JSON: &str = "application/json";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A JSON response, tagged with how the admission request ended.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>, outcome: Option<Outcome>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    if let Some(outcome) = outcome {
        response.extensions_mut().insert(outcome);
    }
    response
}

/// `{"error": message}` with a status.
pub fn error_response(status: StatusCode, outcome: Option<Outcome>, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": message }).to_string();
    json_response(status, body, outcome)
}

/// The `Content-Length` header, when present and numeric.
pub fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The core of the stack: loads the rules once and answers the review
/// whose body the stack has read.
#[derive(Clone, Debug)]
pub struct AdmissionService {
    state: Arc<AppState>,
}

impl AdmissionService {
    pub fn new(state: Arc<AppState>) -> AdmissionService {
        AdmissionService { state }
    }
}

impl Service<Request<ReadBody>> for AdmissionService {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReadBody>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(handle(&state, request)) })
    }
}

fn handle(state: &AppState, request: Request<ReadBody>) -> HttpResponse {
    // Loaded once: without rules there is nothing to decide; with them,
    // every image of this review is decided by the same engine and cache,
    // even if a reload publishes new ones meanwhile (in-flight requests
    // finish on the old maps).
    let Some(rules) = Guard::into_inner(state.rules.load()) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Outcome::not_ready),
            "not ready: the maps are not loaded",
        );
    };
    let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
    // The body (and its share of the memory budget) lives until the answer
    // is built.
    let mut body = request.into_body();
    let _large = if body.bytes.len() > LARGE_REVIEW_BYTES {
        match state.large_parses.try_acquire() {
            Ok(place) => Some(place),
            Err(_) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(Outcome::shed),
                    "overloaded: too many large reviews in progress",
                );
            }
        }
    } else {
        None
    };
    review(state, &rules, &mut body.bytes, deadline)
}

/// The synchronous part: decide, count, log, answer.
fn review(state: &AppState, rules: &RulesState, body: &mut [u8], deadline: Option<Instant>) -> HttpResponse {
    let settings = &state.settings;
    let decider = rules.decider();
    let options = Options {
        disable_label: &settings.disable_label,
        shadow: settings.shadow,
        deadline,
    };
    // At DEBUG, the images left unchanged are logged with their rule.
    let unchanged = tracing::enabled!(tracing::Level::DEBUG).then(RefCell::default);
    // With traces on at DEBUG, each image decision is a child span.
    let result = if spans::decisions_traced() {
        admit(
            body,
            &options,
            &spans::TracedDecider::new(&decider),
            unchanged.as_ref(),
        )
    } else {
        admit(body, &options, &decider, unchanged.as_ref())
    };
    state.metrics.cache(decider.hits(), decider.misses());
    match result {
        Err(bad) => {
            tracing::warn!(error = %bad, "Refused a body that is not an AdmissionReview.");
            error_response(
                StatusCode::BAD_REQUEST,
                Some(Outcome::bad_request),
                &bad.to_string(),
            )
        }
        Ok(admission) => {
            let outcome = outcome_of(&admission.verdict);
            spans::record_review(
                &tracing::Span::current(),
                &admission.request,
                admission.images,
                admission.changes.len(),
                decider.hits(),
            );
            report(state, &admission, outcome);
            if let Some(unchanged) = unchanged {
                for (image, rule) in unchanged.into_inner() {
                    tracing::debug!(
                        uid = admission.request.uid,
                        image,
                        rule = rule.as_str(),
                        "Image left unchanged."
                    );
                }
            }
            json_response(StatusCode::OK, admission.body, Some(outcome))
        }
    }
}

/// The images a decider left as they are, with the rule that decided.
type Unchanged = RefCell<Vec<(String, Rule)>>;

/// `admission::admit`, remembering the unchanged decisions in `unchanged`
/// when given (only at DEBUG: it copies each such image).
fn admit<'i, D: Decide>(
    body: &'i mut [u8],
    options: &Options<'_>,
    decider: &D,
    unchanged: Option<&Unchanged>,
) -> Result<Admission<'i>, admission::BadReview> {
    match unchanged {
        None => admission::admit(body, options, decider),
        Some(seen) => admission::admit(body, options, &Recording { inner: decider, seen }),
    }
}

/// A decider that remembers what it left unchanged.
struct Recording<'d, D> {
    inner: &'d D,
    seen: &'d Unchanged,
}

impl<D: Decide> Decide for Recording<'_, D> {
    fn decide(&self, image: &str) -> ImageDecision {
        let decision = self.inner.decide(image);
        if decision.result.is_none() {
            self.seen.borrow_mut().push((image.to_owned(), decision.rule));
        }
        decision
    }
}

fn outcome_of(verdict: &Verdict) -> Outcome {
    match verdict {
        Verdict::Patched => Outcome::patched,
        Verdict::Shadowed => Outcome::shadowed,
        Verdict::Malformed(_) => Outcome::malformed,
        Verdict::DeadlineExceeded => Outcome::deadline_exceeded,
        Verdict::Unchanged
        | Verdict::Disabled
        | Verdict::UnknownKind
        | Verdict::NoPodSpec
        | Verdict::Subresource => Outcome::unchanged,
    }
}

/// The log lines and the swap counters of one review.
fn report(state: &AppState, admission: &Admission<'_>, outcome: Outcome) {
    let info = &admission.request;
    let changed = admission.changes.len();
    for change in &admission.changes {
        state.metrics.image_swapped(change.rule);
    }
    let verdict = admission.verdict.as_str();
    match &admission.verdict {
        Verdict::Malformed(problem) => tracing::warn!(
            uid = info.uid,
            namespace = info.namespace.unwrap_or_default(),
            kind = info.kind.unwrap_or_default(),
            name = info.name.unwrap_or_default(),
            problem = problem.as_str(),
            "Allowed a malformed object without swapping."
        ),
        Verdict::UnknownKind | Verdict::NoPodSpec => tracing::debug!(
            uid = info.uid,
            kind = info.kind.unwrap_or_default(),
            verdict,
            "Nothing to swap: no pod spec in this object."
        ),
        _ => {}
    }
    tracing::info!(
        uid = info.uid,
        namespace = info.namespace.unwrap_or_default(),
        kind = info.kind.unwrap_or_default(),
        name = info.name.unwrap_or_default(),
        operation = info.operation.unwrap_or_default(),
        dry_run = info.dry_run,
        changed,
        outcome = outcome.as_str(),
        verdict,
        "Admission reviewed."
    );
    let shadow = admission.verdict == Verdict::Shadowed;
    for change in &admission.changes {
        let container = format_args!("{}[{}]", change.field.as_str(), change.index);
        if shadow {
            tracing::info!(uid = info.uid, %container, from = change.from, to = %change.to,
                rule = change.rule.as_str(), "Image would be swapped (shadow mode).");
        } else if state.settings.log_swaps {
            // The original's line per swap; IMAGESWAP_LOG_SWAPS=false drops
            // it on very busy clusters (the review line still counts them).
            tracing::info!(uid = info.uid, %container, from = change.from, to = %change.to,
                rule = change.rule.as_str(), "Image swapped.");
        }
    }
}

/// The admission stack as the router holds it.
pub type AdmissionStack<B> = tower::util::BoxCloneSyncService<Request<B>, HttpResponse, Infallible>;

/// Every request on the main port: the admission paths go through the
/// tower stack; probes and metrics are answered here, outside the load
/// shedding and the concurrency limit, so a saturated server still reports
/// itself alive (the kubelet would otherwise restart the busiest pod).
pub struct Router<B> {
    state: Arc<AppState>,
    /// `None` on the separate plain-HTTP metrics port, which serves only `/metrics`.
    admission: Option<AdmissionStack<B>>,
}

impl<B> Clone for Router<B> {
    fn clone(&self) -> Self {
        Router {
            state: self.state.clone(),
            admission: self.admission.clone(),
        }
    }
}

impl<B> Router<B> {
    pub fn new(state: Arc<AppState>, admission: AdmissionStack<B>) -> Router<B> {
        Router {
            state,
            admission: Some(admission),
        }
    }

    pub fn metrics_only(state: Arc<AppState>) -> Router<B> {
        Router {
            state,
            admission: None,
        }
    }

    fn route(&self, method: &Method, path: &str) -> Route {
        let main_port = self.admission.is_some();
        let (route, allowed): (Route, &[&Method]) = match path {
            "/" | "/mutate" if main_port => (Route::Admission, &[&Method::POST]),
            "/healthz" if main_port => (Route::Healthz, &[&Method::GET, &Method::HEAD]),
            "/readyz" if main_port => (Route::Readyz, &[&Method::GET, &Method::HEAD]),
            "/metrics" => (Route::Metrics, &[&Method::GET, &Method::HEAD]),
            _ => return Route::NotFound,
        };
        if allowed.contains(&method) {
            route
        } else {
            Route::WrongMethod(allowed.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))
        }
    }

    fn healthz(&self) -> HttpResponse {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let body = serde_json::json!({
            "health": "ok",
            "pod_name": self.state.settings.pod_name,
            "date_time": now,
        });
        json_response(StatusCode::OK, body.to_string(), None)
    }

    fn readyz(&self) -> HttpResponse {
        match self.state.readiness() {
            Ok(()) => json_response(StatusCode::OK, r#"{"ready":true}"#, None),
            Err(reason) => {
                let body = serde_json::json!({ "ready": false, "reason": reason });
                json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string(), None)
            }
        }
    }

    fn metrics(&self) -> HttpResponse {
        let mut response = Response::new(Full::new(Bytes::from(self.state.metrics.encode())));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
        response
    }
}

enum Route {
    Admission,
    Healthz,
    Readyz,
    Metrics,
    NotFound,
    /// The methods the path allows.
    WrongMethod(String),
}

impl<B> hyper::service::Service<Request<B>> for Router<B>
where
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let head = request.method() == Method::HEAD;
        let response = match self.route(request.method(), request.uri().path()) {
            Route::Admission => match &self.admission {
                Some(stack) => return Box::pin(stack.clone().oneshot(request)),
                None => error_response(StatusCode::NOT_FOUND, None, "not found"),
            },
            Route::Healthz => self.healthz(),
            Route::Readyz => self.readyz(),
            Route::Metrics => self.metrics(),
            Route::NotFound => error_response(StatusCode::NOT_FOUND, None, "not found"),
            Route::WrongMethod(allowed) => {
                let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed");
                if let Ok(value) = HeaderValue::from_str(&allowed) {
                    response.headers_mut().insert(ALLOW, value);
                }
                response
            }
        };
        let response = if head { headers_only(response) } else { response };
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// The answer to a `HEAD`: the `GET` answer's headers, with its length,
/// and no body. hyper drops the body of a HEAD answer on HTTP/1.1 but
/// sends it on HTTP/2 (after a `content-length: 0`), which clients refuse
/// as a protocol error.
fn headers_only(response: HttpResponse) -> HttpResponse {
    let (mut parts, body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, Full::default())
}
