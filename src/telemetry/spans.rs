//! The spans exported as OpenTelemetry traces: their names, their attribute
//! keys, and the W3C trace context that makes an admission a child of the
//! API server's call.
//!
//! They are `tracing` spans with the target [`SPAN_TARGET`]. The log
//! formatter never shows that target (each log line carries its own fields,
//! so nothing is printed twice), and with traces off no layer wants it, so
//! creating, filling and closing these spans costs a callsite check.
//!
//! Attribute keys: the OpenTelemetry semantic conventions where one fits the
//! meaning (`http.response.status_code`; `otel.kind` and `otel.status_code`
//! set the span kind and status), and `imageswap.*` for the request being
//! admitted. `k8s.*` keys are deliberately not used for the admitted object:
//! in the conventions they describe the resource that emits telemetry, which
//! here is the ImageSwap pod (`k8s.pod.name` and `k8s.namespace.name` on
//! the resource), and a Jaeger tag search on `k8s.namespace.name` would then
//! match both.

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::admission::{Decide, ImageDecision, RequestInfo};
use crate::cache::CachedDecider;
use crate::telemetry::metrics::Outcome;

/// The `tracing` target of every span that becomes a trace span.
pub const SPAN_TARGET: &str = "imageswap::trace";
/// One per admission request.
pub const ADMISSION_SPAN: &str = "imageswap.admission";
/// One per image decision, only when the log level is DEBUG or TRACE.
pub const DECISION_SPAN: &str = "imageswap.decision";

/// The admission span's attributes, recorded once the body is parsed.
pub mod keys {
    pub const UID: &str = "imageswap.uid";
    pub const OPERATION: &str = "imageswap.operation";
    pub const KIND: &str = "imageswap.kind";
    pub const NAMESPACE: &str = "imageswap.namespace";
    pub const NAME: &str = "imageswap.name";
    pub const DRY_RUN: &str = "imageswap.dry_run";
    pub const IMAGES_SEEN: &str = "imageswap.images.seen";
    pub const IMAGES_CHANGED: &str = "imageswap.images.changed";
    pub const CACHE_HITS: &str = "imageswap.cache.hits";
    /// The `outcome` label of `imageswap_admission_requests_total`.
    pub const OUTCOME: &str = "imageswap.outcome";
    pub const STATUS_CODE: &str = "http.response.status_code";
    /// Decision spans: the image as written, what it became, the maps rule.
    pub const IMAGE: &str = "imageswap.image";
    pub const IMAGE_RESULT: &str = "imageswap.image.result";
    pub const RULE: &str = "imageswap.rule";
    pub const CACHE_HIT: &str = "imageswap.cache.hit";
}

/// Opens the span of one admission request. With traces on and a W3C
/// `traceparent` header, the span joins the caller's trace as its child
/// (and, with a `parentbased_*` sampler, follows its sampling decision).
pub fn admission(headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        ADMISSION_SPAN,
        otel.kind = "server",
        otel.status_code = Empty,
        imageswap.uid = Empty,
        imageswap.operation = Empty,
        imageswap.kind = Empty,
        imageswap.namespace = Empty,
        imageswap.name = Empty,
        imageswap.dry_run = Empty,
        imageswap.images.seen = Empty,
        imageswap.images.changed = Empty,
        imageswap.cache.hits = Empty,
        imageswap.outcome = Empty,
        http.response.status_code = Empty,
    );
    // The parent must be set before the span is first entered (that starts it).
    if !span.is_disabled() && headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(parent);
    }
    span
}

/// What the review said, on the admission span.
pub fn record_review(span: &Span, info: &RequestInfo<'_>, images: usize, changed: usize, cache_hits: u64) {
    if span.is_disabled() {
        return;
    }
    span.record(keys::UID, info.uid);
    if let Some(operation) = info.operation {
        span.record(keys::OPERATION, operation);
    }
    if let Some(kind) = info.kind {
        span.record(keys::KIND, kind);
    }
    if let Some(namespace) = info.namespace {
        span.record(keys::NAMESPACE, namespace);
    }
    if let Some(name) = info.name {
        span.record(keys::NAME, name);
    }
    span.record(keys::DRY_RUN, info.dry_run);
    // As i64: tracing-opentelemetry turns u64 fields into strings.
    span.record(keys::IMAGES_SEEN, count(images as u64));
    span.record(keys::IMAGES_CHANGED, count(changed as u64));
    span.record(keys::CACHE_HITS, count(cache_hits));
}

/// How the request ended, on the admission span: 5xx answers (shed,
/// timeout, not ready) mark the span as an error, as the HTTP server
/// conventions say; 4xx are the client's problem and leave it unset.
pub fn record_outcome(span: &Span, outcome: Outcome, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record(keys::OUTCOME, outcome.as_str());
    span.record(keys::STATUS_CODE, i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether decision spans are wanted: traces on and the log level at
/// DEBUG or finer. Checked once per request.
pub fn decisions_traced() -> bool {
    tracing::enabled!(target: SPAN_TARGET, tracing::Level::DEBUG)
}

/// The cache-then-engine decider with a child span around each decision.
pub struct TracedDecider<'d, 's> {
    inner: &'d CachedDecider<'s>,
}

impl<'d, 's> TracedDecider<'d, 's> {
    pub fn new(inner: &'d CachedDecider<'s>) -> TracedDecider<'d, 's> {
        TracedDecider { inner }
    }
}

impl Decide for TracedDecider<'_, '_> {
    fn decide(&self, image: &str) -> ImageDecision {
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            DECISION_SPAN,
            imageswap.image = image,
            imageswap.image.result = Empty,
            imageswap.rule = Empty,
            imageswap.cache.hit = Empty,
        );
        let _entered = span.enter();
        let hits = self.inner.hits();
        let decision = self.inner.decide(image);
        if let Some(result) = &decision.result {
            span.record(keys::IMAGE_RESULT, &**result);
        }
        span.record(keys::RULE, decision.rule.as_str());
        span.record(keys::CACHE_HIT, self.inner.hits() > hits);
        decision
    }
}

/// Reads trace context from request headers.
struct Headers<'h>(&'h HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
