//! The Prometheus metrics, in one struct built once and passed to whoever
//! records (no globals, so tests get their own).
//!
//! Labels are bounded enums (outcome, rule word, reload result): never
//! images, namespaces or uids. Every labelled series is resolved once at
//! construction, so recording is an atomic add with no map lookup and no
//! lock. The latency histogram is our own lock-free one: the
//! prometheus-client histogram takes a mutex on every observation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use tracing_appender::non_blocking::ErrorCounter;

use crate::swap::Rule;
use crate::verify::metrics::VerifyMetrics;

/// Upper bounds of the latency buckets, in seconds. A cached review takes
/// tens of microseconds, a cold one a few hundred; the top buckets catch
/// requests that waited on a slow client or hit the timeout.
const DURATION_BUCKETS_SECONDS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

/// How an admission request ended: the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Allowed with a patch.
    patched,
    /// Allowed; nothing to change (also opted out, unknown kind, no pod spec).
    unchanged,
    /// Allowed without the patch that was decided (`--shadow`).
    shadowed,
    /// Allowed with a warning: the object was malformed.
    malformed,
    /// Allowed without a patch: the decision was not ready by the deadline.
    deadline_exceeded,
    /// 400: not an AdmissionReview with a uid.
    bad_request,
    /// 413: body over the limit.
    too_large,
    /// 503: over the concurrency limit or the memory budget of bodies.
    shed,
    /// 503: slower than the request timeout.
    timeout,
    /// 503: the maps are not loaded yet, or the server is shutting down.
    not_ready,
    /// 500: handling the request panicked (a bug; logged at ERROR).
    panicked,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::patched,
        Outcome::unchanged,
        Outcome::shadowed,
        Outcome::malformed,
        Outcome::deadline_exceeded,
        Outcome::bad_request,
        Outcome::too_large,
        Outcome::shed,
        Outcome::timeout,
        Outcome::not_ready,
        Outcome::panicked,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The label value, for logs and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::patched => "patched",
            Outcome::unchanged => "unchanged",
            Outcome::shadowed => "shadowed",
            Outcome::malformed => "malformed",
            Outcome::deadline_exceeded => "deadline_exceeded",
            Outcome::bad_request => "bad_request",
            Outcome::too_large => "too_large",
            Outcome::shed => "shed",
            Outcome::timeout => "timeout",
            Outcome::not_ready => "not_ready",
            Outcome::panicked => "panicked",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

/// The `result` label of reload counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    error,
    /// A file that loads but would lose every rule the serving one has
    /// (maps only; the last good keeps serving).
    refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: ReloadResult,
}

/// The `severity` label of `imageswap_maps_findings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum FindingSeverity {
    error,
    warning,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SeverityLabel {
    severity: FindingSeverity,
}

/// The content a loaded file's series names: the hex SHA-256 an operator
/// computes with `sha256sum` (maps) or from the certificate's DER.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContentLabel {
    sha256: String,
}

/// A gauge family holding one series at a time: the content loaded now,
/// valued with the Unix time it was loaded.
#[derive(Debug, Default)]
struct LoadedContent {
    family: Family<ContentLabel, Gauge>,
    current: Mutex<Option<ContentLabel>>,
}

impl LoadedContent {
    fn set(&self, sha256: &str, loaded_at: i64) {
        let label = ContentLabel {
            sha256: sha256.to_owned(),
        };
        self.family.get_or_create(&label).set(loaded_at);
        let previous = match self.current.lock() {
            Ok(mut current) => current.replace(label.clone()),
            Err(_) => None,
        };
        if let Some(previous) = previous.filter(|p| *p != label) {
            self.family.remove(&previous);
        }
    }
}

/// Why finished spans never reached the collector: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SpanDrop {
    /// The export queue was full (the collector is slower than the traffic).
    queue_full,
    /// The collector refused the batch, or did not answer within the export timeout.
    export_failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SpanDropLabel {
    reason: SpanDrop,
}

/// Why a swap's verification fell back: the `reason` label of
/// `imageswap_verify_fallbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Fallback {
    /// The target is not in the mirror: the original was kept.
    missing,
    /// The target lacks a platform the pod may run on: the original was kept.
    platform,
    /// The check could not answer: the on-error policy decided.
    error,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabel {
    reason: Fallback,
}

/// Every metric ImageSwap exports.
pub struct Metrics {
    registry: Registry,
    requests: [Counter; Outcome::ALL.len()],
    durations: [Histogram; Outcome::ALL.len()],
    swapped: [Counter; Rule::ALL.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    maps_reloads: [Counter; 3],
    tls_reloads: [Counter; 2],
    maps_rules: Gauge,
    maps_findings: [Gauge; 2],
    tls_cert_expiry: Gauge,
    maps_loaded: LoadedContent,
    tls_loaded: LoadedContent,
    inflight: Gauge,
    shed: Counter,
    deadline_exceeded: Counter,
    timeouts: Counter,
    spans_exported: Counter,
    spans_dropped: [Counter; 2],
    log_lines_dropped: Counter,
    verify_fallbacks: [Counter; 3],
    pull_secrets_added: Counter,
    invalid_results: Counter,
    recreate_loops: Counter,
    /// The registry side of verification (verify::metrics), shared with the
    /// verifier that records into it.
    pub verify: VerifyMetrics,
    /// The log writer's own count of dropped lines, copied into
    /// `log_lines_dropped` at each scrape.
    log_drop_source: OnceLock<ErrorCounter>,
    log_drops_seen: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();

        let requests_family = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "imageswap_admission_requests",
            "Admission requests, by how they ended",
            requests_family.clone(),
        );
        let requests =
            Outcome::ALL.map(|outcome| requests_family.get_or_create(&OutcomeLabel { outcome }).clone());

        let durations_family =
            Family::<OutcomeLabel, Histogram>::new_with_constructor(Histogram::new as fn() -> Histogram);
        registry.register_with_unit(
            "imageswap_admission_duration",
            "Time from request arrival to the answer, by outcome",
            Unit::Seconds,
            durations_family.clone(),
        );
        let durations =
            Outcome::ALL.map(|outcome| durations_family.get_or_create(&OutcomeLabel { outcome }).clone());

        let swapped_family = Family::<RuleLabel, Counter>::default();
        registry.register(
            "imageswap_images_swapped",
            "Container images changed, by the maps rule that decided (maps.md §6 words)",
            swapped_family.clone(),
        );
        let swapped = Rule::ALL.map(|rule| {
            swapped_family
                .get_or_create(&RuleLabel { rule: rule.as_str() })
                .clone()
        });

        let cache_hits = Counter::default();
        registry.register(
            "imageswap_cache_hits",
            "Image decisions answered from the cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "imageswap_cache_misses",
            "Image decisions computed by the engine",
            cache_misses.clone(),
        );

        let maps_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "imageswap_maps_reload",
            "Maps file loads (the first at start, then one per change), by result (an error keeps the last good maps)",
            maps_family.clone(),
        );
        let tls_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "imageswap_tls_reload",
            "TLS certificate loads (the first at start, then one per change), by result (an error keeps the last good pair)",
            tls_family.clone(),
        );
        let maps_reloads = [ReloadResult::success, ReloadResult::error, ReloadResult::refused]
            .map(|result| maps_family.get_or_create(&ResultLabel { result }).clone());
        let tls_reloads = [ReloadResult::success, ReloadResult::error]
            .map(|result| tls_family.get_or_create(&ResultLabel { result }).clone());
        let maps_rules = Gauge::default();
        registry.register(
            "imageswap_maps_rules",
            "Rules in the maps file serving now (0: it swaps nothing; `default::` alone is one rule)",
            maps_rules.clone(),
        );
        let maps_findings_family = Family::<SeverityLabel, Gauge>::default();
        registry.register(
            "imageswap_maps_findings",
            "Findings of the maps file serving now, by severity (error: lines skipped or rules that can break pods)",
            maps_findings_family.clone(),
        );
        let maps_findings = [FindingSeverity::error, FindingSeverity::warning].map(|severity| {
            maps_findings_family
                .get_or_create(&SeverityLabel { severity })
                .clone()
        });

        let tls_cert_expiry = Gauge::default();
        registry.register_with_unit(
            "imageswap_tls_cert_expiry_timestamp",
            "When the serving certificate the server is using expires, in Unix seconds (0 until one is loaded)",
            Unit::Seconds,
            tls_cert_expiry.clone(),
        );
        let maps_loaded = LoadedContent::default();
        registry.register_with_unit(
            "imageswap_maps_loaded_timestamp",
            "When the maps serving now were loaded, one series labelled with their SHA-256 (sha256sum of the file)",
            Unit::Seconds,
            maps_loaded.family.clone(),
        );
        let tls_loaded = LoadedContent::default();
        registry.register_with_unit(
            "imageswap_tls_cert_loaded_timestamp",
            "When the serving certificate was loaded, one series labelled with the SHA-256 of its DER",
            Unit::Seconds,
            tls_loaded.family.clone(),
        );

        let inflight = Gauge::default();
        registry.register(
            "imageswap_inflight_requests",
            "Admission requests being answered now",
            inflight.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "imageswap_shed_requests",
            "Admission requests refused with 503 because the concurrency limit or the memory budget was reached",
            shed.clone(),
        );
        let deadline_exceeded = Counter::default();
        registry.register(
            "imageswap_admission_deadline_exceeded",
            "Reviews answered allowed without a patch because the decision was not ready by the deadline",
            deadline_exceeded.clone(),
        );
        let timeouts = Counter::default();
        registry.register(
            "imageswap_admission_timeouts",
            "Admission requests answered 503 because they outlived the request timeout",
            timeouts.clone(),
        );
        let spans_exported = Counter::default();
        registry.register(
            "imageswap_trace_spans_exported",
            "Finished spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        let spans_dropped_family = Family::<SpanDropLabel, Counter>::default();
        registry.register(
            "imageswap_trace_spans_dropped",
            "Finished spans lost before the collector, by reason (admissions never wait for the collector)",
            spans_dropped_family.clone(),
        );
        let spans_dropped = [SpanDrop::queue_full, SpanDrop::export_failed].map(|reason| {
            spans_dropped_family
                .get_or_create(&SpanDropLabel { reason })
                .clone()
        });
        let log_lines_dropped = Counter::default();
        registry.register(
            "imageswap_log_lines_dropped",
            "Log lines dropped because the log writer fell behind (the server never waits for it)",
            log_lines_dropped.clone(),
        );
        let fallbacks_family = Family::<FallbackLabel, Counter>::default();
        registry.register(
            "imageswap_verify_fallbacks",
            "Swapped images whose mirror check did not say present, by reason (missing: the original was kept; platform: kept, a platform the pod may run on is not in it; error: the on-error policy decided)",
            fallbacks_family.clone(),
        );
        let verify_fallbacks = [Fallback::missing, Fallback::platform, Fallback::error]
            .map(|reason| fallbacks_family.get_or_create(&FallbackLabel { reason }).clone());
        let invalid_results = Counter::default();
        registry.register(
            "imageswap_invalid_results",
            "Images kept because the rule that matched them gives an invalid reference (maps.md step 7; `imageswap maps check` names the rule)",
            invalid_results.clone(),
        );
        let pull_secrets_added = Counter::default();
        registry.register(
            "imageswap_pull_secrets_added",
            "imagePullSecrets entries added to pod specs whose images end up in a registry with a configured secret",
            pull_secrets_added.clone(),
        );
        let recreate_loops = Counter::default();
        registry.register(
            "imageswap_recreate_loops",
            "Fixed-name pods created and swapped IMAGESWAP_LOOP_THRESHOLD times within 10 minutes (once per episode): a controller may be undoing the swap",
            recreate_loops.clone(),
        );
        // The registry side's own metrics (checks, check duration, cache,
        // circuit, credentials reloads), recorded by the verifier.
        let verify = VerifyMetrics::new();
        verify.register(&mut registry);
        registry.register(
            "imageswap_build",
            "The running ImageSwap build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        Metrics {
            registry,
            requests,
            durations,
            swapped,
            cache_hits,
            cache_misses,
            maps_reloads,
            tls_reloads,
            maps_rules,
            maps_findings,
            tls_cert_expiry,
            maps_loaded,
            tls_loaded,
            inflight,
            shed,
            deadline_exceeded,
            timeouts,
            spans_exported,
            spans_dropped,
            log_lines_dropped,
            verify_fallbacks,
            pull_secrets_added,
            invalid_results,
            recreate_loops,
            verify,
            log_drop_source: OnceLock::new(),
            log_drops_seen: AtomicU64::new(0),
        }
    }

    /// Counts the lines the server's log writer drops (see
    /// `Logs::init_buffered`) in `imageswap_log_lines_dropped_total`.
    pub fn watch_log_drops(&self, dropped: ErrorCounter) {
        let _ = self.log_drop_source.set(dropped);
    }

    /// One finished admission request.
    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        self.requests[outcome.index()].inc();
        self.durations[outcome.index()].observe(elapsed);
        match outcome {
            Outcome::shed => {
                self.shed.inc();
            }
            Outcome::timeout => {
                self.timeouts.inc();
            }
            Outcome::deadline_exceeded => {
                self.deadline_exceeded.inc();
            }
            _ => {}
        }
    }

    pub fn image_swapped(&self, rule: Rule) {
        if let Some(i) = Rule::ALL.iter().position(|r| *r == rule) {
            self.swapped[i].inc();
        }
    }

    pub fn cache(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.cache_hits.inc_by(hits);
        }
        if misses > 0 {
            self.cache_misses.inc_by(misses);
        }
    }

    pub fn maps_reload(&self, result: ReloadResult) {
        self.maps_reloads[result as usize].inc();
    }

    /// The maps serving now: how many rules, and findings by severity.
    pub fn maps_rules(&self, rules: usize, errors: usize, warnings: usize) {
        self.maps_rules.set(i64::try_from(rules).unwrap_or(i64::MAX));
        for (gauge, count) in self.maps_findings.iter().zip([errors, warnings]) {
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The maps now serving: their SHA-256 (hex) and the Unix time of the load.
    pub fn maps_loaded(&self, sha256: &str, loaded_at: i64) {
        self.maps_loaded.set(sha256, loaded_at);
    }

    /// The certificate now serving: the SHA-256 (hex) of its DER and the load time.
    pub fn tls_cert_loaded(&self, sha256: &str, loaded_at: i64) {
        self.tls_loaded.set(sha256, loaded_at);
    }

    pub fn tls_reload(&self, result: ReloadResult) {
        // A certificate is never refused, only rejected (`error`).
        if let Some(counter) = self.tls_reloads.get(result as usize) {
            counter.inc();
        }
    }

    /// The serving certificate now in use expires at `not_after` (Unix seconds).
    pub fn tls_cert_expiry(&self, not_after: i64) {
        self.tls_cert_expiry.set(not_after);
    }

    /// Spans the collector accepted.
    pub fn trace_spans_exported(&self, spans: u64) {
        self.spans_exported.inc_by(spans);
    }

    /// Spans lost on the way to the collector.
    pub fn trace_spans_dropped(&self, reason: SpanDrop, spans: u64) {
        self.spans_dropped[reason as usize].inc_by(spans);
    }

    /// A swapped image whose verification fell back.
    pub fn verify_fallback(&self, reason: Fallback) {
        self.verify_fallbacks[reason as usize].inc();
    }

    /// `imagePullSecrets` entries added by one patch.
    pub fn pull_secrets_added(&self, entries: usize) {
        self.pull_secrets_added.inc_by(entries as u64);
    }

    /// A pod recreated in a loop (`server::loops`).
    pub fn recreate_loop(&self) {
        self.recreate_loops.inc();
    }

    /// Images kept because their rule gives an invalid reference.
    pub fn invalid_results(&self, images: usize) {
        self.invalid_results.inc_by(images as u64);
    }

    /// Counts a request in flight until the returned guard drops (also when
    /// its future is cancelled).
    pub fn inflight(&self) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.inflight.clone())
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        if let Some(source) = self.log_drop_source.get() {
            let now = source.dropped_lines() as u64;
            let before = self.log_drops_seen.swap(now, Ordering::Relaxed);
            if now > before {
                self.log_lines_dropped.inc_by(now - before);
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements `imageswap_inflight_requests` on drop.
pub struct InflightGuard(Gauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What `imageswap init --watch` did: the `action` label of
/// `imageswap_init_actions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum InitAction {
    /// A new pair was issued and stored in the secret by this sidecar.
    pair_issued,
    /// `cert.pem`/`key.pem` were rewritten for the server (a renewed,
    /// adopted or bring-your-own pair).
    pair_written,
    /// The MutatingWebhookConfiguration was created or put back.
    mwc_written,
}

impl InitAction {
    pub const ALL: [InitAction; 3] = [
        InitAction::pair_issued,
        InitAction::pair_written,
        InitAction::mwc_written,
    ];
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InitActionLabel {
    action: InitAction,
}

/// The metrics of the `imageswap init --watch` sidecar, on its own listener
/// (`IMAGESWAP_WATCH_LISTEN`): the server's [`Metrics`] are the server's.
pub struct InitMetrics {
    registry: Registry,
    reconciles: [Counter; 2],
    actions: [Counter; InitAction::ALL.len()],
    last_success: Gauge,
    cert_expiry: Gauge,
    projection: ProjectionMetrics,
}

/// The `state` label of `imageswap_pull_secret_copies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CopyState {
    in_sync,
    /// A Secret of the wanted name that ImageSwap did not create (left alone).
    conflict,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CopyStateLabel {
    state: CopyState,
}

/// The `action` label of `imageswap_pull_secret_writes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CopyAction {
    create,
    update,
    delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CopyActionLabel {
    action: CopyAction,
}

/// The pull secret projection's series (src/init/projection.rs).
#[derive(Clone)]
struct ProjectionMetrics {
    copies: Family<CopyStateLabel, Gauge>,
    writes: Family<CopyActionLabel, Counter>,
    errors: Counter,
    last_success: Gauge,
}

impl std::fmt::Debug for InitMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitMetrics")
    }
}

impl Default for InitMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl InitMetrics {
    pub fn new() -> InitMetrics {
        let mut registry = Registry::default();
        let reconcile_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "imageswap_init_reconcile",
            "Passes of `imageswap init --watch` over the pair and the webhook configuration, by result",
            reconcile_family.clone(),
        );
        let reconciles = [ReloadResult::success, ReloadResult::error]
            .map(|result| reconcile_family.get_or_create(&ResultLabel { result }).clone());
        let actions_family = Family::<InitActionLabel, Counter>::default();
        registry.register(
            "imageswap_init_actions",
            "Changes `imageswap init --watch` made, by kind",
            actions_family.clone(),
        );
        let actions =
            InitAction::ALL.map(|action| actions_family.get_or_create(&InitActionLabel { action }).clone());
        let last_success = Gauge::default();
        registry.register_with_unit(
            "imageswap_init_reconcile_last_success_timestamp",
            "When a pass of `imageswap init --watch` last succeeded, in Unix seconds",
            Unit::Seconds,
            last_success.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register_with_unit(
            "imageswap_init_cert_expiry_timestamp",
            "When the pair `imageswap init --watch` last wrote for the server expires, in Unix seconds",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        registry.register(
            "imageswap_build",
            "The running ImageSwap build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let projection = ProjectionMetrics {
            copies: Family::default(),
            writes: Family::default(),
            errors: Counter::default(),
            last_success: Gauge::default(),
        };
        // Every series from the start (0), so alerts and dashboards see them
        // before the first pass.
        for state in [CopyState::in_sync, CopyState::conflict] {
            let _ = projection.copies.get_or_create(&CopyStateLabel { state });
        }
        for action in [CopyAction::create, CopyAction::update, CopyAction::delete] {
            let _ = projection.writes.get_or_create(&CopyActionLabel { action });
        }
        registry.register(
            "imageswap_pull_secret_copies",
            "Projected pull secrets by state: in_sync (ours, equal to the source) or conflict (a Secret of that name ImageSwap did not create, left alone)",
            projection.copies.clone(),
        );
        registry.register(
            "imageswap_pull_secret_writes",
            "Writes of projected pull secret copies, by action",
            projection.writes.clone(),
        );
        registry.register(
            "imageswap_pull_secret_reconcile_errors",
            "Pull secret projection passes that failed (retried with backoff)",
            projection.errors.clone(),
        );
        registry.register_with_unit(
            "imageswap_pull_secret_last_success_timestamp",
            "When a pull secret projection pass last succeeded, in Unix seconds",
            Unit::Seconds,
            projection.last_success.clone(),
        );
        InitMetrics {
            registry,
            reconciles,
            actions,
            last_success,
            cert_expiry,
            projection,
        }
    }

    /// A projection pass found `in_sync` copies and `conflicts` foreign
    /// secrets in the way.
    pub fn pull_secret_copies(&self, in_sync: usize, conflicts: usize) {
        let set = |state, n: usize| {
            self.projection
                .copies
                .get_or_create(&CopyStateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set(CopyState::in_sync, in_sync);
        set(CopyState::conflict, conflicts);
    }

    pub fn pull_secret_write(&self, action: CopyAction) {
        self.projection
            .writes
            .get_or_create(&CopyActionLabel { action })
            .inc();
    }

    /// A projection pass ended; `now` is Unix seconds.
    pub fn pull_secret_pass(&self, ok: bool, now: i64) {
        if ok {
            self.projection.last_success.set(now);
        } else {
            self.projection.errors.inc();
        }
    }

    /// A pass ended; `now` is Unix seconds.
    pub fn reconcile(&self, result: ReloadResult, now: i64) {
        self.reconciles[result as usize].inc();
        if result == ReloadResult::success {
            self.last_success.set(now);
        }
    }

    pub fn action(&self, action: InitAction) {
        if let Some(i) = InitAction::ALL.iter().position(|a| *a == action) {
            self.actions[i].inc();
        }
    }

    /// The pair on disk expires at `not_after` (Unix seconds).
    pub fn cert_expiry(&self, not_after: i64) {
        self.cert_expiry.set(not_after);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(2 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A fixed-bucket histogram of durations with atomic counters: observing is
/// a few relaxed atomic adds, never a lock.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram(Arc::new(HistogramInner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS_SECONDS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_SECONDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn log_lines_dropped_by_the_writer_are_counted_at_scrape() {
        use std::io::Write;
        use std::sync::mpsc;

        /// A log sink that holds its first write until released, so the
        /// queue behind it fills up.
        struct Stuck(mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, held) = mpsc::channel();
        let (mut writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(2)
            .finish(Stuck(held));
        let m = Metrics::new();
        m.watch_log_drops(writer.error_counter());
        assert!(m.encode().contains("imageswap_log_lines_dropped_total 0\n"));
        for _ in 0..50 {
            writer.write_all(b"a line\n").expect("a lossy writer never fails");
        }
        let text = m.encode();
        let dropped: u64 = line(&text, "imageswap_log_lines_dropped_total ")
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        // At most the queue (2) and the line in the sink's hands got through.
        assert!((47..=50).contains(&dropped), "{dropped}");
        // A second scrape adds nothing new.
        assert!(
            m.encode()
                .contains(&format!("imageswap_log_lines_dropped_total {dropped}\n"))
        );
        drop(release);
        drop(guard);
    }

    #[test]
    fn names_types_and_values_are_exported() {
        let m = Metrics::new();
        m.request(Outcome::patched, Duration::from_micros(30));
        m.request(Outcome::patched, Duration::from_millis(3));
        m.request(Outcome::shed, Duration::from_micros(5));
        m.image_swapped(Rule::Exact);
        m.cache(3, 1);
        m.maps_reload(ReloadResult::error);
        m.trace_spans_dropped(SpanDrop::queue_full, 4);
        m.trace_spans_exported(2);
        let guard = m.inflight();
        let text = m.encode();
        assert_eq!(
            line(&text, "imageswap_admission_requests_total{outcome=\"patched\"}"),
            "imageswap_admission_requests_total{outcome=\"patched\"} 2"
        );
        assert!(text.contains("imageswap_shed_requests_total 1"));
        assert!(text.contains("imageswap_images_swapped_total{rule=\"exact\"} 1"));
        assert!(text.contains("imageswap_images_swapped_total{rule=\"default\"} 0"));
        assert!(text.contains("imageswap_cache_hits_total 3"));
        assert!(text.contains("imageswap_cache_misses_total 1"));
        assert!(text.contains("imageswap_maps_reload_total{result=\"error\"} 1"));
        assert!(text.contains("imageswap_inflight_requests 1"));
        assert!(text.contains("imageswap_trace_spans_dropped_total{reason=\"queue_full\"} 4"));
        assert!(text.contains("imageswap_trace_spans_dropped_total{reason=\"export_failed\"} 0"));
        assert!(text.contains("imageswap_trace_spans_exported_total 2"));
        assert!(text.contains("imageswap_tls_cert_expiry_timestamp_seconds 0\n"));
        m.tls_cert_expiry(1_900_000_000);
        assert!(
            m.encode()
                .contains("imageswap_tls_cert_expiry_timestamp_seconds 1900000000\n")
        );
        assert!(text.contains(&format!(
            "imageswap_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("# TYPE imageswap_admission_duration_seconds histogram"));
        assert!(text.contains("imageswap_admission_duration_seconds_count{outcome=\"patched\"} 2"));
        // Cumulative buckets: 30 µs is under 50 µs, 3 ms is under 5 ms.
        for (le, count) in [
            ("0.000025", 0),
            ("0.00005", 1),
            ("0.0025", 1),
            ("0.005", 2),
            ("+Inf", 2),
        ] {
            let expected = format!(
                "imageswap_admission_duration_seconds_bucket{{le=\"{le}\",outcome=\"patched\"}} {count}"
            );
            assert!(text.contains(&expected), "{expected} in\n{text}");
        }
        drop(guard);
        assert!(m.encode().contains("imageswap_inflight_requests 0"));
    }

    #[test]
    fn the_sidecar_metrics_are_exported() {
        let m = InitMetrics::new();
        m.reconcile(ReloadResult::success, 1_800_000_000);
        m.reconcile(ReloadResult::error, 1_800_000_100);
        m.action(InitAction::mwc_written);
        m.cert_expiry(1_900_000_000);
        let text = m.encode();
        assert!(
            text.contains("imageswap_init_reconcile_total{result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("imageswap_init_reconcile_total{result=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("imageswap_init_reconcile_last_success_timestamp_seconds 1800000000\n"),
            "{text}"
        );
        assert!(
            text.contains("imageswap_init_actions_total{action=\"mwc_written\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("imageswap_init_actions_total{action=\"pair_issued\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("imageswap_init_cert_expiry_timestamp_seconds 1900000000\n"),
            "{text}"
        );
    }
}
