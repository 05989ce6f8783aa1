//! The services at both ends of the tower stack: the router that receives
//! every HTTP request (probes, metrics, 404/405, and the admission stack),
//! and the admission service at the stack's core, which only does bytes →
//! review → decisions → bytes. With a mirror verifier (verify.md) the
//! decisions are checked between the two phases of the review
//! (`server::mirror`); without one the answer is built in one synchronous
//! step, as before verification existed.

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

use super::mirror;
use super::stack::ReadBody;
use super::state::AppState;
use crate::admission::{
    self, Admission, Decide, ImageDecision, Options, PullSecrets, SMALL_REVIEW_MAX_BYTES, Verdict,
};
use crate::cache::RulesState;
use crate::swap::Rule;
use crate::telemetry::json_lines;
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
        if state.verifier.is_none() {
            if request.body().bytes.len() > SMALL_REVIEW_MAX_BYTES {
                return Box::pin(handle_off_the_workers(state, request));
            }
            // Without verification the answer is built synchronously in the
            // one poll of this future, as before verification existed.
            return Box::pin(async move { Ok(handle(&state, request)) });
        }
        Box::pin(async move { Ok(handle_verified(&state, request).await) })
    }
}

/// [`handle`] for a review over [`SMALL_REVIEW_MAX_BYTES`], on tokio's
/// blocking threads: the parse of 3 MiB dense with JSON nodes takes tens
/// of milliseconds, during which a worker thread (the only one, with the
/// manifests' CPU limit of 1) would answer nothing else; there, the
/// reviews real pods make get their share of the CPU meanwhile. Past the
/// deadline the stack answers 503 and the parse, still holding its body
/// and its turn to parse (moved here), finishes alone.
async fn handle_off_the_workers(
    state: Arc<AppState>,
    request: Request<ReadBody>,
) -> Result<HttpResponse, Infallible> {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| handle(&state, request))).await {
        Ok(answer) => Ok(answer),
        // Raised again here, for the stack's catch-panic layer to answer.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_cancelled) => Ok(refused((
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::not_ready,
            "shutting down",
        ))),
    }
}

/// What a request holds while it is answered: the rules it decides with,
/// its deadline, its body (and the body's share of the memory budget and,
/// for a large review, its turn to parse).
struct Held {
    rules: Arc<RulesState>,
    deadline: Option<Instant>,
    body: ReadBody,
}

/// Why a request is refused before its review is read: the answer's status,
/// outcome and message.
type Refusal = (StatusCode, Outcome, &'static str);

fn hold(state: &AppState, request: Request<ReadBody>) -> Result<Held, Refusal> {
    // Loaded once: without rules there is nothing to decide; with them,
    // every image of this review is decided by the same engine and cache,
    // even if a reload publishes new ones meanwhile (in-flight requests
    // finish on the old maps).
    let Some(rules) = Guard::into_inner(state.rules.load()) else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::not_ready,
            "not ready: the maps are not loaded",
        ));
    };
    let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
    let body = request.into_body();
    Ok(Held {
        rules,
        deadline,
        body,
    })
}

fn handle(state: &AppState, request: Request<ReadBody>) -> HttpResponse {
    let mut held = match hold(state, request) {
        Ok(held) => held,
        Err(refusal) => return refused(refusal),
    };
    match decide(state, &held.rules, &mut held.body, held.deadline) {
        Ok(decided) => answer(state, decided, &[]),
        Err(bad) => bad_review(&bad),
    }
}

/// [`handle`] with mirror verification: phase 1, the checks of the
/// changes (when there are any to check), phase 2.
async fn handle_verified(state: &AppState, request: Request<ReadBody>) -> HttpResponse {
    let Some(verifier) = state.verifier.as_deref() else {
        return handle(state, request);
    };
    let mut held = match hold(state, request) {
        Ok(held) => held,
        Err(refusal) => return refused(refusal),
    };
    let decision = match decide(state, &held.rules, &mut held.body, held.deadline) {
        Ok(decision) => decision,
        Err(bad) => return bad_review(&bad),
    };
    // Only swaps are checked: a subresource, an opt-out, a malformed
    // object or a passed deadline has no changes.
    let decided = &decision.decided;
    let checked =
        matches!(decided.verdict, Verdict::Patched | Verdict::Shadowed) && !decided.changes.is_empty();
    if !checked {
        return answer(state, decision, &[]);
    }
    // The registries of the rules that decided: only those are contacted.
    let mirrors = held.rules.engine().mirror_hosts();
    let checks = mirror::check(state, verifier, decided, mirrors, held.deadline).await;
    answer(state, decision, &checks)
}

/// Phase 1 and what its answer reports.
struct Decision<'i, 'c> {
    decided: admission::Decided<'i, 'c>,
    cache_hits: u64,
    unchanged: Option<Unchanged>,
}

/// Phase 1, counted: decide every image (an error: the body is no review).
fn decide<'i, 's>(
    state: &'s AppState,
    rules: &RulesState,
    body: &'i mut ReadBody,
    deadline: Option<Instant>,
) -> Result<Decision<'i, 's>, admission::BadReview> {
    let (body, len) = body.padded();
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
    let pull_secrets = &state.pull_secrets;
    let result = if spans::decisions_traced() {
        decide_recording(
            (body, len),
            &options,
            pull_secrets,
            &spans::TracedDecider::new(&decider),
            unchanged.as_ref(),
        )
    } else {
        decide_recording((body, len), &options, pull_secrets, &decider, unchanged.as_ref())
    };
    state.metrics.cache(decider.hits(), decider.misses());
    Ok(Decision {
        decided: result?,
        cache_hits: decider.hits(),
        unchanged,
    })
}

fn refused((status, outcome, message): Refusal) -> HttpResponse {
    error_response(status, Some(outcome), message)
}

/// 400 for a body that is no review.
fn bad_review(bad: &admission::BadReview) -> HttpResponse {
    tracing::warn!(error = %bad, "Refused a body that is not an AdmissionReview.");
    error_response(
        StatusCode::BAD_REQUEST,
        Some(Outcome::bad_request),
        &bad.to_string(),
    )
}

/// Phase 2, reported: build the answer, count, log.
fn answer(state: &AppState, decision: Decision<'_, '_>, checks: &[admission::Checked]) -> HttpResponse {
    let admission = decision.decided.answer(checks);
    let outcome = outcome_of(&admission.verdict);
    spans::record_review(
        &tracing::Span::current(),
        &admission.request,
        admission.images,
        admission.changes.len(),
        decision.cache_hits,
    );
    report(state, &admission, outcome);
    state.loops.admitted(&admission, &state.metrics);
    if admission.pull_secrets_added > 0 {
        state.metrics.pull_secrets_added(admission.pull_secrets_added);
    }
    if let Some(unchanged) = decision.unchanged {
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

/// The images a decider left as they are, with the rule that decided.
type Unchanged = RefCell<Vec<(String, Rule)>>;

/// `admission::decide`, remembering the unchanged decisions in `unchanged`
/// when given (only at DEBUG: it copies each such image).
fn decide_recording<'i, 'c, D: Decide>(
    (body, len): (&'i mut [u8], usize),
    options: &Options<'_>,
    pull_secrets: &'c PullSecrets,
    decider: &D,
    unchanged: Option<&Unchanged>,
) -> Result<admission::Decided<'i, 'c>, admission::BadReview> {
    match unchanged {
        None => admission::decide_padded(body, len, options, pull_secrets, decider),
        Some(seen) => admission::decide_padded(
            body,
            len,
            options,
            pull_secrets,
            &Recording { inner: decider, seen },
        ),
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
    if !admission.kept.is_empty() {
        state.metrics.invalid_results(admission.kept.len());
    }
    for kept in &admission.kept {
        let container = ContainerPath::of(kept.field, kept.index);
        tracing::warn!(
            uid = info.uid,
            namespace = info.namespace.unwrap_or_default(),
            name = info.name.unwrap_or_default(),
            container = container.as_str(),
            image = kept.image,
            reason = %kept.reason,
            "Image kept: its rule gives an invalid image."
        );
    }
    // Why images stayed although a rule matched them (`missing`,
    // `unverified`, `invalid-result`, `placeholder`): "unchanged" alone
    // reads like "no rule". Empty, and not allocated, when none.
    let kept_words = if admission.kept_because.is_empty() {
        String::new()
    } else {
        admission.kept_because.words()
    };
    // The swaps ride on the review line (issue 24): one INFO line per
    // admission instead of one more per swapped image (five lines for a
    // four-container review: 18.7 k instructions of 141.6 k, the largest
    // part above the parse, `loadtest/profile.sh`). IMAGESWAP_LOG_SWAPS=false
    // leaves them out; shadow mode always says what it would have swapped.
    let swaps = match admission.verdict {
        _ if admission.changes.is_empty() => None,
        Verdict::Shadowed => Some(Swaps(&admission.changes)),
        _ if state.settings.log_swaps => Some(Swaps(&admission.changes)),
        _ => None,
    };
    ReviewLine {
        uid: info.uid,
        namespace: info.namespace.unwrap_or_default(),
        kind: info.kind.unwrap_or_default(),
        name: info.name.unwrap_or_default(),
        operation: info.operation.unwrap_or_default(),
        dry_run: info.dry_run,
        changed,
        outcome: outcome.as_str(),
        verdict,
        kept: &kept_words,
        swaps,
    }
    .log();
}

/// The one INFO line of an admission, "Admission reviewed.".
struct ReviewLine<'a> {
    uid: &'a str,
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    operation: &'a str,
    dry_run: bool,
    changed: usize,
    outcome: &'static str,
    verdict: &'static str,
    kept: &'a str,
    swaps: Option<Swaps<'a>>,
}

impl ReviewLine<'_> {
    /// Logs the line: under `--log-format json` its fields written here in
    /// one piece ([`json_lines::JSON_MEMBERS`]), else as `tracing` fields.
    fn log(&self) {
        if json_lines::in_use() {
            tracing::info!(
                message = "Admission reviewed.",
                { json_lines::JSON_MEMBERS } = tracing::field::debug(Members(self))
            );
        } else {
            self.log_fields();
        }
    }

    /// The line with a `tracing` field each (the text format's `key=value`s).
    fn log_fields(&self) {
        tracing::info!(
            message = "Admission reviewed.",
            uid = self.uid,
            namespace = self.namespace,
            kind = self.kind,
            name = self.name,
            operation = self.operation,
            dry_run = self.dry_run,
            changed = self.changed,
            outcome = self.outcome,
            verdict = self.verdict,
            kept = self.kept,
            swaps = self.swaps.as_ref().map(tracing::field::debug)
        );
    }

    /// The fields of [`log_fields`](Self::log_fields) as JSON object
    /// members, in its order and as `json_lines` writes each: the request's
    /// strings escaped, ours (outcome, verdict, kept: fixed words) as they are.
    fn write_members(&self, out: &mut String) {
        let swaps = self.swaps.as_ref().map_or(0, Swaps::bytes);
        out.reserve(REVIEW_MEMBERS_BYTES + self.uid.len() + self.namespace.len() + self.name.len() + swaps);
        out.push_str("\"uid\":\"");
        push_escaped(out, self.uid);
        out.push_str("\",\"namespace\":\"");
        push_escaped(out, self.namespace);
        out.push_str("\",\"kind\":\"");
        push_escaped(out, self.kind);
        out.push_str("\",\"name\":\"");
        push_escaped(out, self.name);
        out.push_str("\",\"operation\":\"");
        push_escaped(out, self.operation);
        out.push_str(if self.dry_run {
            "\",\"dry_run\":true,\"changed\":"
        } else {
            "\",\"dry_run\":false,\"changed\":"
        });
        out.push_str(itoa::Buffer::new().format(self.changed));
        out.push_str(",\"outcome\":\"");
        out.push_str(self.outcome);
        out.push_str("\",\"verdict\":\"");
        out.push_str(self.verdict);
        out.push_str("\",\"kept\":\"");
        out.push_str(self.kept);
        out.push('"');
        if let Some(swaps) = &self.swaps {
            out.push_str(",\"swaps\":");
            swaps.write(out, true);
        }
    }
}

/// The review line's fields as JSON object members: written (into a kept
/// `String` of this thread, then handed over whole, as [`Swaps`] is) only
/// when the line is formatted, so a log level above INFO costs nothing.
struct Members<'a>(&'a ReviewLine<'a>);

impl std::fmt::Debug for Members<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_whole(f, |out| self.0.write_members(out))
    }
}

/// The review line's members besides the request's strings and the swaps
/// (a reservation, not a limit).
const REVIEW_MEMBERS_BYTES: usize = 192;

/// The swaps of one review as the review line's `swaps` field. Its `Debug`
/// is the text format's compact list,
/// `[containers[0] nginx:1.25 -> mirror/nginx:1.25 (path), …]`; its
/// alternate `Debug` (`{:#?}`) the JSON format's array,
/// `[{"container":"containers[0]","from":…,"to":…,"rule":"path"},…]`,
/// which `telemetry::json_lines` writes as it is for a field named
/// [`json_lines::JSON_FIELD`](crate::telemetry::json_lines::JSON_FIELD).
pub struct Swaps<'a>(pub &'a [admission::Change<'a>]);

impl std::fmt::Debug for Swaps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = f.alternate();
        write_whole(f, |out| self.write(out, json))
    }
}

/// Hands what `write` writes to `f` whole, written first into a kept
/// `String` of this thread (cleared, and dropped when one huge pod grew it
/// beyond [`LINE_TEXT_KEEP_MAX_BYTES`]): each of the ~50 pieces of four
/// swaps written through the `Formatter` cost about 120 instructions (6.2 k
/// an admission, `loadtest/profile.sh`), a `push_str` a fraction of that.
fn write_whole(f: &mut std::fmt::Formatter<'_>, write: impl FnOnce(&mut String)) -> std::fmt::Result {
    LINE_TEXT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut text) => {
            text.clear();
            write(&mut text);
            let result = f.write_str(&text);
            if text.capacity() > LINE_TEXT_KEEP_MAX_BYTES {
                *text = String::new();
            }
            result
        }
        // Only if writing logged a line that is written so too.
        Err(_) => {
            let mut text = String::new();
            write(&mut text);
            f.write_str(&text)
        }
    })
}

impl Swaps<'_> {
    /// About the length of the swaps written (a reservation).
    fn bytes(&self) -> usize {
        self.0
            .iter()
            .map(|c| c.from.len() + c.to.len() + SWAP_OVERHEAD_BYTES)
            .sum()
    }

    /// The JSON array (`json`) or the text list. Reserved once for all of
    /// it, and the container's name written in place (not through a
    /// `ContainerPath` copied in): 4.3 k → 3.0 k instructions for four
    /// swaps (`loadtest/profile.sh` without LTO).
    fn write(&self, out: &mut String, json: bool) {
        out.reserve(self.bytes());
        out.push('[');
        for (i, change) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(if json { "," } else { ", " });
            }
            if json {
                out.push_str("{\"container\":\"");
            }
            out.push_str(change.field.as_str());
            out.push('[');
            out.push_str(itoa::Buffer::new().format(change.index));
            out.push(']');
            if json {
                // Every value through the response writer's escaper: an
                // image is the API server's text, not ours.
                out.push_str("\",\"from\":\"");
                push_escaped(out, change.from);
                out.push_str("\",\"to\":\"");
                push_escaped(out, &change.to);
                out.push_str("\",\"rule\":\"");
                // A word of ours (`Rule::as_str`): nothing to escape.
                out.push_str(change.rule.as_str());
                out.push_str("\"}");
            } else {
                for piece in [
                    " ",
                    change.from,
                    " -> ",
                    &*change.to,
                    " (",
                    change.rule.as_str(),
                    ")",
                ] {
                    out.push_str(piece);
                }
            }
        }
        out.push(']');
    }
}

/// `value` as the inside of a JSON string.
fn push_escaped(out: &mut String, value: &str) {
    let Ok(()) = admission::json::escape(value, |piece| {
        out.push_str(piece);
        Ok::<(), Infallible>(())
    });
}

/// A swap's bytes besides its two images: keys, quotes, the container's
/// name and index, the rule (a reservation, not a limit).
const SWAP_OVERHEAD_BYTES: usize = 96;

thread_local! {
    /// The review line's members or its swaps being written (see
    /// [`write_whole`]), kept between lines.
    static LINE_TEXT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line buffer grown beyond this by one huge pod is not kept.
const LINE_TEXT_KEEP_MAX_BYTES: usize = 16 * 1024;

/// `containers[3]`, the log line's name of a container, written on the
/// stack instead of through `format_args!` (about 500 instructions more a
/// value through `fmt`, `loadtest/profile.sh`).
struct ContainerPath {
    bytes: [u8; ContainerPath::MAX_BYTES],
    len: usize,
}

impl ContainerPath {
    /// The longest field name, `[`, the digits of `usize::MAX`, `]`.
    const MAX_BYTES: usize = "ephemeralContainers".len() + 2 + 20;

    fn of(field: admission::ContainerField, index: usize) -> ContainerPath {
        let mut path = ContainerPath {
            bytes: [0; Self::MAX_BYTES],
            len: 0,
        };
        let mut index_digits = itoa::Buffer::new();
        for piece in [field.as_str(), "[", index_digits.format(index), "]"] {
            path.bytes[path.len..path.len + piece.len()].copy_from_slice(piece.as_bytes());
            path.len += piece.len();
        }
        path
    }

    fn as_str(&self) -> &str {
        // Only whole `&str` pieces were copied in.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_path_names_the_list_and_the_index() {
        let path = ContainerPath::of(admission::ContainerField::Containers, 0);
        assert_eq!(path.as_str(), "containers[0]");
        let longest = ContainerPath::of(admission::ContainerField::EphemeralContainers, usize::MAX);
        assert_eq!(longest.as_str(), format!("ephemeralContainers[{}]", usize::MAX));
    }

    fn two_swaps() -> Vec<admission::Change<'static>> {
        vec![
            admission::Change {
                field: admission::ContainerField::Containers,
                index: 0,
                name: Some("web"),
                from: "nginx:1.25",
                to: Arc::from("mirror.example.com/library/nginx:1.25"),
                rule: Rule::Path,
            },
            admission::Change {
                field: admission::ContainerField::InitContainers,
                index: 2,
                name: Some("setup"),
                // An image is the API server's text: escaped in JSON.
                from: "odd\"image\\",
                to: Arc::from("mirror.example.com/odd"),
                rule: Rule::Exact,
            },
        ]
    }

    #[test]
    fn the_swaps_are_a_json_array_and_a_compact_text_list() {
        let changes = two_swaps();
        let json: serde_json::Value =
            serde_json::from_str(&format!("{:#?}", Swaps(&changes))).expect("a JSON array");
        assert_eq!(
            json,
            serde_json::json!([
                {"container": "containers[0]", "from": "nginx:1.25",
                 "to": "mirror.example.com/library/nginx:1.25", "rule": "path"},
                {"container": "initContainers[2]", "from": "odd\"image\\",
                 "to": "mirror.example.com/odd", "rule": "exact"},
            ])
        );
        assert_eq!(
            format!("{:?}", Swaps(&changes)),
            "[containers[0] nginx:1.25 -> mirror.example.com/library/nginx:1.25 (path), \
             initContainers[2] odd\"image\\ -> mirror.example.com/odd (exact)]"
        );
        assert_eq!(format!("{:#?}", Swaps(&[])), "[]");
    }

    fn review_line<'a>(changes: &'a [admission::Change<'a>], dry_run: bool) -> ReviewLine<'a> {
        ReviewLine {
            // The request's strings are the API server's: escaped.
            uid: "u\"1",
            namespace: "shop\\",
            kind: "Pod\n",
            name: "web-\u{1}0",
            operation: "CREATE",
            dry_run,
            changed: changes.len(),
            outcome: Outcome::patched.as_str(),
            verdict: Verdict::Patched.as_str(),
            kept: "invalid-result,placeholder",
            swaps: (!changes.is_empty()).then_some(Swaps(changes)),
        }
    }

    /// What `log` (or `log_fields`, with `fields`) writes in `format`.
    fn logged(line: &ReviewLine<'_>, format: crate::telemetry::logging::LogFormat, fields: bool) -> String {
        use crate::telemetry::json_lines::CapturedLines;
        use crate::telemetry::logging::{LogLevel, dispatch};

        let buffer = CapturedLines::default();
        let writer = buffer.clone();
        let subscriber = dispatch(
            LogLevel::Info.filter(),
            format,
            None,
            move || writer.clone(),
            false,
        );
        tracing::dispatcher::with_default(
            &subscriber,
            || {
                if fields { line.log_fields() } else { line.log() }
            },
        );
        buffer.text()
    }

    #[test]
    fn the_review_line_carries_the_swaps_in_either_log_format() {
        use crate::telemetry::logging::LogFormat;

        let changes = two_swaps();
        let line = review_line(&changes, false);
        let json = logged(&line, LogFormat::Json, false);
        let json: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON line");
        assert_eq!(json["swaps"][1]["from"], "odd\"image\\", "{json}");
        assert_eq!(json["swaps"][0]["to"], "mirror.example.com/library/nginx:1.25");
        let text = logged(&line, LogFormat::Text, false);
        assert!(
            text.contains(
                "swaps=[containers[0] nginx:1.25 -> mirror.example.com/library/nginx:1.25 (path), "
            ),
            "{text}"
        );
    }

    /// The review line written in one piece under the JSON format is the
    /// line its `tracing` fields give, member for member and in order.
    #[test]
    fn the_json_review_line_in_one_piece_is_the_line_of_its_fields() {
        use crate::telemetry::logging::LogFormat;

        let changes = two_swaps();
        for (changes, dry_run) in [(&changes[..], false), (&changes[..], true), (&[][..], false)] {
            let line = review_line(changes, dry_run);
            let mut written = Vec::new();
            for fields in [false, true] {
                let text = logged(&line, LogFormat::Json, fields);
                assert_eq!(text.lines().count(), 1, "{text}");
                // serde_json keeps the members' order (`preserve_order`) or
                // not: compared as text after the timestamp too.
                let after_timestamp = text.split_once("\",\"level\"").expect("a level").1.to_owned();
                let value: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
                written.push((after_timestamp, value));
            }
            let (pieces, fields) = (&written[0], &written[1]);
            assert_eq!(pieces.0, fields.0, "the same text after the timestamp");
            let mut one = pieces.1.clone();
            let mut other = fields.1.clone();
            one["timestamp"] = serde_json::Value::Null;
            other["timestamp"] = serde_json::Value::Null;
            assert_eq!(one, other);
            assert_eq!(one["uid"], "u\"1");
            assert_eq!(one["name"], "web-\u{1}0");
            assert_eq!(one["dry_run"], dry_run);
            assert_eq!(one["changed"], changes.len());
            assert_eq!(one.get("swaps").is_some(), !changes.is_empty(), "{one}");
        }
    }

    #[test]
    fn the_json_format_is_told_apart_from_the_text_format() {
        use crate::telemetry::logging::{LogFormat, LogLevel, dispatch};

        for (format, json) in [(LogFormat::Json, true), (LogFormat::Text, false)] {
            let subscriber = dispatch(LogLevel::Info.filter(), format, None, std::io::sink, false);
            let seen = tracing::dispatcher::with_default(&subscriber, json_lines::in_use);
            assert_eq!(seen, json, "{format:?}");
        }
        assert!(!json_lines::in_use(), "no subscriber");
    }
}
