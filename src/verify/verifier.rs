//! Checks under churn (verify.md "Under churn"), behind [`CheckImages`]:
//!
//! - a **cache** of target → present / missing: a present tag is believed
//!   for `verify_ttl` and then answered present at once while one
//!   background check refreshes it (stale-while-revalidate) for at most
//!   `verify_stale_if_error` past its TTL; a present digest stays (within
//!   capacity); missing is believed for `verify_missing_ttl`; errors are
//!   never cached;
//! - **stale-if-error**: a check that cannot answer (down, 5xx, timeout,
//!   circuit open, a refusal) is answered with what the registry said
//!   last, present or missing, if that ran out less than
//!   `verify_stale_if_error` ago; only an image never seen (or seen too
//!   long ago) falls to the on-error policy. A mirror that said "missing"
//!   and then went down is not trusted to have the image meanwhile;
//! - **coalescing**: the first admission that needs an unchecked target
//!   starts its check and publishes the answer on a `watch` channel; every
//!   concurrent admission of that target waits on the same channel, so N of
//!   them cost one registry request;
//! - the **budget**: an admission waits at most its budget, then answers
//!   `Error(Timeout)` while the check runs on (bounded by `verify_timeout`)
//!   to fill the cache;
//! - per registry host, a **breaker** (5 consecutive failures that show
//!   the registry unwell → not asked for 10 s, then one probe) and a
//!   **concurrency cap** (32 requests in flight). A check queued behind the
//!   cap keeps its place: its own timeout starts when it gets a permit, and
//!   waiting in the queue is no evidence against the registry;
//! - **refusals** (403, 429, a 401 after authenticating) are answers about
//!   one repository: cached for that target briefly (a 429 for its
//!   `Retry-After`), never counted against the registry.
//!
//! The warm path (every target cached fresh) is a cache read per target and
//! a ready future: nothing spawned, nothing awaited.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::client::{Failure, FailureKind, Found, RegistryClient, host_name};
use super::credentials::CredentialsHandle;
use super::metrics::{CacheResult, VerifyMetrics};
use super::platform::{self, Platform};
use super::target::{Target, canonical_host};
use super::{CheckError, CheckFuture, CheckImages, CheckOutcome, MirrorHosts};
use crate::swap::mirrors::split_port;

/// The target of trace spans: `telemetry::spans::SPAN_TARGET`, written out
/// because `telemetry` uses this module (its metrics) and the module graph
/// has no circles; a unit test keeps the two equal.
const SPAN_TARGET: &str = "imageswap::trace";

/// The span of one registry check (its HEAD, retries and token fetch).
pub const REGISTRY_REQUEST_SPAN: &str = "imageswap.registry_request";

/// Registries labelled by host in the metrics; later ones are `other`.
const REGISTRY_LABELS_MAX: usize = 64;

/// How long a refusal (403, 401 after authenticating, 429 without
/// `Retry-After`) is believed for its target: long enough that a pod
/// retried in a loop does not ask each time, short enough that a fixed
/// permission shows soon.
const REFUSAL_TTL: Duration = Duration::from_secs(10);

/// The longest a check waits in the queue of its registry's cap. Longer
/// than any admission waits (the answer fills the cache for the next
/// one), bounded so a registry that slows to a crawl without failing
/// cannot pile up checks for ever; a check dropped here asked nobody.
const QUEUE_WAIT_MAX: Duration = Duration::from_secs(60);
const REGISTRY_LABEL_OTHER: &str = "other";

/// The knobs of verify.md that are not settings (their defaults are the
/// spec's); tests shorten the breaker's open time.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Consecutive errors or timeouts that open a registry's breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker answers "circuit open" before one probe.
    pub breaker_open: Duration,
    /// Registry requests in flight per registry.
    pub max_in_flight_per_registry: usize,
    /// Targets the cache holds (least recently used go first).
    pub cache_capacity: u64,
    /// `IMAGESWAP_VERIFY_PLATFORMS` without empty entries: required of
    /// every target whose pod pins no platform (empty: any).
    pub platforms: Vec<Platform>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(10),
            max_in_flight_per_registry: 32,
            cache_capacity: 100_000,
            platforms: Vec::new(),
        }
    }
}

/// A cached answer.
#[derive(Clone, Debug)]
struct Known {
    answer: Answer,
    at: Instant,
    is_digest: bool,
    /// The registry's last answer (present, missing, no platform) and
    /// when: the answer itself, or the one a refusal replaced
    /// (stale-if-error serves it).
    last_found: Option<(CheckOutcome, Instant)>,
}

#[derive(Clone, Debug)]
enum Answer {
    Found(Found),
    /// Present, without this platform; believed as long as missing.
    NoPlatform(String),
    /// A refusal about this target, believed for `for_` while the
    /// credentials it was given under are the published ones (a 401 or
    /// 403 may be theirs: a new file is asked at once).
    Refused {
        error: CheckError,
        for_: Duration,
        credentials: usize,
    },
}

/// What one check showed of its registry's health (the breaker's input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Evidence {
    /// It answered (present, missing, a refusal about one repository).
    Well,
    /// A timeout of the request itself, no connection, TLS, 5xx.
    Unwell,
    /// Nothing: the check never reached it (queued past its time, the
    /// breaker opened meanwhile) or the answer says nothing of its health.
    None,
}

/// What a breaker's state changed to, for the one log line per change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Opened,
    Closed,
}

/// What the cache says of a target now.
enum Lookup {
    Fresh(CheckOutcome),
    /// Present tag past its TTL, within the stale bound.
    Stale,
    Miss,
}

/// Whether an error means the check could not answer, so an expired
/// answer may stand in for it: every error but a registry the maps do not
/// name (never asked, and never cached) and an image that is no reference.
fn cannot_answer(outcome: &CheckOutcome) -> bool {
    matches!(outcome, CheckOutcome::Error(error) if *error != CheckError::NotInMaps)
}

/// A check in flight: `None` until it answers.
type Pending = watch::Receiver<Option<CheckOutcome>>;

/// The state of one registry.
#[derive(Debug)]
struct Registry {
    label: Arc<str>,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_errors: u32,
    open_until: Option<Instant>,
    /// The one check let through after the open time, deciding.
    probing: bool,
}

impl Breaker {
    /// Whether a check may ask the registry now.
    fn admit(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.probing => false,
            Some(_) => {
                self.probing = true;
                true
            }
        }
    }

    /// Whether the breaker opened (and has not reached its probe) since a
    /// check was admitted: a check that waited for a permit asks again,
    /// so the checks queued behind the cap when a registry dies do not
    /// each connect to it (seen in `loadtest/verify.sh dead-mirror`: ~200
    /// connections to a dead mirror in the first 2 s before this).
    fn opened_since(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    /// Records an answer; returns whether the breaker is open after it.
    #[cfg(test)]
    fn record(&mut self, ok: bool, now: Instant, tuning: &Tuning) -> bool {
        let evidence = if ok { Evidence::Well } else { Evidence::Unwell };
        self.observe(evidence, now, tuning);
        self.open_until.is_some()
    }

    /// Records what a check showed; returns the change it made, if any.
    /// No evidence changes nothing, except that a probe without any lets
    /// the next check probe (else the breaker would stay half-open).
    fn observe(&mut self, evidence: Evidence, now: Instant, tuning: &Tuning) -> Option<Change> {
        let was_open = self.open_until.is_some();
        match evidence {
            Evidence::Well => {
                *self = Breaker::default();
                return was_open.then_some(Change::Closed);
            }
            Evidence::None => {
                self.probing = false;
                return None;
            }
            Evidence::Unwell => {}
        }
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        if self.probing || self.consecutive_errors >= tuning.breaker_threshold {
            self.open_until = now.checked_add(tuning.breaker_open).or(Some(now));
            self.probing = false;
            return (!was_open).then_some(Change::Opened);
        }
        None
    }
}

/// The [`CheckImages`] of verify.md.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: RegistryClient,
    credentials: CredentialsHandle,
    metrics: VerifyMetrics,
    tuning: Tuning,
    timeout: Duration,
    ttl: Duration,
    missing_ttl: Duration,
    stale_if_error: Duration,
    /// `tuning.platforms`, shared by every check that uses it (no copy
    /// per admission).
    platforms: Arc<[Platform]>,
    cache: moka::sync::Cache<Arc<str>, Known>,
    inflight: DashMap<Arc<str>, Pending>,
    registries: DashMap<String, Arc<Registry>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("client", &self.inner.client)
            .field("cached", &self.inner.cache.entry_count())
            .field("inflight", &self.inner.inflight.len())
            .finish_non_exhaustive()
    }
}

/// The answers' lifetimes and the longest check.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub timeout: Duration,
    pub ttl: Duration,
    pub missing_ttl: Duration,
    /// How long past its TTL an answer still serves (stale-if-error, and
    /// a present tag while its refresh runs).
    pub stale_if_error: Duration,
}

impl Verifier {
    pub fn new(
        client: RegistryClient,
        credentials: CredentialsHandle,
        metrics: VerifyMetrics,
        lifetimes: Lifetimes,
        tuning: Tuning,
    ) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                client,
                credentials,
                metrics,
                cache: moka::sync::Cache::new(tuning.cache_capacity),
                platforms: tuning.platforms.as_slice().into(),
                tuning,
                timeout: lifetimes.timeout,
                ttl: lifetimes.ttl,
                missing_ttl: lifetimes.missing_ttl,
                stale_if_error: lifetimes.stale_if_error,
                inflight: DashMap::new(),
                registries: DashMap::new(),
            }),
        }
    }
}

impl Verifier {
    /// Checks running now (each is one target's registry request).
    pub fn checks_in_flight(&self) -> usize {
        self.inner.inflight.len()
    }
}

impl CheckImages for Verifier {
    fn check(&self, targets: Vec<Arc<str>>, mirrors: &MirrorHosts, budget: Duration) -> CheckFuture {
        self.check_on(targets, &[], mirrors, budget)
    }

    fn check_on(
        &self,
        targets: Vec<Arc<str>>,
        platforms: &[Platform],
        mirrors: &MirrorHosts,
        budget: Duration,
    ) -> CheckFuture {
        let inner = &self.inner;
        let required: Arc<[Platform]> = if platforms.is_empty() {
            inner.platforms.clone()
        } else {
            platforms.into()
        };
        // A target is cached and coalesced per requirement: what one pod
        // may run on says nothing of another's.
        let suffix = (!required.is_empty()).then(|| format!(" {}", platform::list(&required)));
        let key_of = |image: &Arc<str>| match &suffix {
            None => image.clone(),
            Some(suffix) => Arc::from(format!("{image}{suffix}")),
        };
        // No clamp to `verify_timeout` needed: every check in flight ends
        // by its own timeout, so no waiter outlives it.
        let now = Instant::now();
        let mut outcomes = Vec::with_capacity(targets.len());
        // Allocated only when some target has to wait.
        let mut waits: Vec<(usize, Pending, Arc<str>)> = Vec::new();
        let mut counts = [0u64; 4];
        for (i, image) in targets.into_iter().enumerate() {
            let target = key_of(&image);
            match inner.lookup(&target, now) {
                Lookup::Fresh(outcome) => {
                    counts[CacheResult::Hit as usize] += 1;
                    outcomes.push(inner.or_stale(outcome, &target, now, &mut counts));
                }
                Lookup::Stale => {
                    counts[CacheResult::Stale as usize] += 1;
                    outcomes.push(CheckOutcome::Present);
                    Inner::refresh(&self.inner, target, &image, &required, mirrors);
                }
                Lookup::Miss => {
                    counts[CacheResult::Miss as usize] += 1;
                    match Inner::start(&self.inner, target.clone(), &image, &required, mirrors) {
                        Started::Done(outcome) => {
                            outcomes.push(inner.or_stale(outcome, &target, now, &mut counts));
                        }
                        Started::Wait(pending) => {
                            outcomes.push(CheckOutcome::Error(CheckError::Timeout(budget)));
                            waits.push((i, pending, target));
                        }
                    }
                }
            }
        }
        inner.count(counts);
        if waits.is_empty() {
            return Box::pin(std::future::ready(outcomes));
        }
        // Fixed now, before the caller starts its own bound of the wait,
        // so this one ends first.
        let deadline = tokio::time::Instant::now() + budget;
        let inner = self.inner.clone();
        Box::pin(async move {
            let all = async {
                for (_, pending, _) in &mut waits {
                    let _ = pending.wait_for(Option::is_some).await;
                }
            };
            let _ = tokio::time::timeout_at(deadline, all).await;
            // Every answer known now is read from its channel (no await,
            // no timer): at the deadline only the checks still running
            // keep the placeholder timeout; the answers already in stay.
            let mut counts = [0u64; 4];
            let now = Instant::now();
            for (i, pending, target) in &waits {
                let outcome = if let Some(outcome) = pending.borrow().as_ref() {
                    outcome.clone()
                } else if pending.has_changed().is_err() {
                    // The check's task ended without answering.
                    CheckOutcome::Error(CheckError::Failed("the check was abandoned".to_owned()))
                } else {
                    // Still running: the budget's placeholder.
                    outcomes[*i].clone()
                };
                outcomes[*i] = inner.or_stale(outcome, target, now, &mut counts);
            }
            inner.count(counts);
            outcomes
        })
    }
}

enum Started {
    Done(CheckOutcome),
    Wait(Pending),
}

impl Inner {
    fn lookup(&self, target: &str, now: Instant) -> Lookup {
        let Some(known) = self.cache.get(target) else {
            return Lookup::Miss;
        };
        let age = now.saturating_duration_since(known.at);
        match known.answer {
            Answer::Found(Found::Present) if known.is_digest || age < self.ttl => {
                Lookup::Fresh(CheckOutcome::Present)
            }
            Answer::Found(Found::Present) if age < self.ttl.saturating_add(self.stale_if_error) => {
                Lookup::Stale
            }
            Answer::Found(Found::Missing) if age < self.missing_ttl => Lookup::Fresh(CheckOutcome::Missing),
            Answer::NoPlatform(ref platform) if age < self.missing_ttl => {
                Lookup::Fresh(CheckOutcome::NoPlatform(platform.clone()))
            }
            Answer::Refused {
                error,
                for_,
                credentials,
            } if age < for_ && credentials == self.credentials_id() => {
                Lookup::Fresh(CheckOutcome::Error(error))
            }
            Answer::Found(_) | Answer::NoPlatform(_) | Answer::Refused { .. } => Lookup::Miss,
        }
    }

    /// `outcome`, or, when it is a check that could not answer, what the
    /// registry said last if that ran out less than `stale_if_error` ago
    /// (counted in `counts` as [`CacheResult::StaleIfError`]).
    fn or_stale(
        &self,
        outcome: CheckOutcome,
        target: &str,
        now: Instant,
        counts: &mut [u64; 4],
    ) -> CheckOutcome {
        if !cannot_answer(&outcome) {
            return outcome;
        }
        let Some(stale) = self.stale(target, now) else {
            return outcome;
        };
        counts[CacheResult::StaleIfError as usize] += 1;
        tracing::debug!(target = target, error = %outcome_reason(&outcome), answer = stale.as_str(),
            "Answered a check that could not answer with the registry's last answer.");
        stale
    }

    /// The registry's last present/missing answer about `target`, while
    /// it is less than `stale_if_error` past its TTL.
    fn stale(&self, target: &str, now: Instant) -> Option<CheckOutcome> {
        let known = self.cache.get(target)?;
        let (outcome, at) = known.last_found?;
        let lifetime = match outcome {
            CheckOutcome::Present if known.is_digest => return Some(CheckOutcome::Present),
            CheckOutcome::Present => self.ttl,
            _ => self.missing_ttl,
        };
        let age = now.saturating_duration_since(at);
        (age < lifetime.saturating_add(self.stale_if_error)).then_some(outcome)
    }

    /// Adds one batch's lookups to the cache counter.
    fn count(&self, counts: [u64; 4]) {
        for (result, n) in [
            CacheResult::Hit,
            CacheResult::Miss,
            CacheResult::Stale,
            CacheResult::StaleIfError,
        ]
        .into_iter()
        .zip(counts)
        {
            self.metrics.cache(result, n);
        }
    }

    /// Names the published credentials (their address while published).
    fn credentials_id(&self) -> usize {
        Arc::as_ptr(&*self.credentials.load()) as usize
    }

    /// The state of the registry on `host` (`host[:port]`): one per host
    /// name, whatever the port, so the cap and the labels bound a host.
    fn registry(&self, host: &str) -> Arc<Registry> {
        let host = host_name(host);
        if let Some(registry) = self.registries.get(host) {
            return registry.clone();
        }
        let label: Arc<str> = if self.registries.len() < REGISTRY_LABELS_MAX {
            host.into()
        } else {
            REGISTRY_LABEL_OTHER.into()
        };
        self.registries
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(Registry {
                    label,
                    permits: Semaphore::new(self.tuning.max_in_flight_per_registry),
                    breaker: Mutex::new(Breaker::default()),
                })
            })
            .clone()
    }

    /// Whether `target`'s registry is one the maps name: its host, and
    /// its port or the scheme's default when either side writes none.
    fn named(&self, target: &Target, mirrors: &MirrorHosts) -> bool {
        let (name, port) = split_port(&target.host);
        let default = self.client.default_port(&target.host);
        let port = port.unwrap_or(default);
        mirrors
            .iter()
            .any(|m| canonical_host(&m.name).eq_ignore_ascii_case(name) && m.port.unwrap_or(default) == port)
    }

    /// Joins the check of `target` in flight, or starts one.
    fn start(
        this: &Arc<Inner>,
        target: Arc<str>,
        image: &str,
        required: &Arc<[Platform]>,
        mirrors: &MirrorHosts,
    ) -> Started {
        let Some(parsed) = Target::parse(image) else {
            return Started::Done(CheckOutcome::Error(CheckError::Failed(
                "not a valid image reference".to_owned(),
            )));
        };
        // Before anything that could connect (a check in flight of the
        // same target was started under maps that named it).
        if !this.named(&parsed, mirrors) {
            return Started::Done(CheckOutcome::Error(CheckError::NotInMaps));
        }
        let registry = this.registry(&parsed.host);
        match this.inflight.entry(target.clone()) {
            Entry::Occupied(pending) => Started::Wait(pending.get().clone()),
            Entry::Vacant(slot) => {
                // A check that finished since our lookup wrote the cache
                // before leaving `inflight`: no second request for it.
                if let Lookup::Fresh(outcome) = this.lookup(&target, Instant::now()) {
                    return Started::Done(outcome);
                }
                // Outside a runtime there is nowhere to run the check: an
                // error, never a panic on the request path.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Started::Done(CheckOutcome::Error(CheckError::Failed(
                        "no runtime to check on".to_owned(),
                    )));
                };
                // Not counted as a check: the registry was not asked (the
                // fallback and the circuit gauge show it).
                if !lock(&registry.breaker).admit(Instant::now()) {
                    return Started::Done(CheckOutcome::Error(CheckError::CircuitOpen));
                }
                let (answer, pending) = watch::channel(None);
                slot.insert(pending.clone());
                let parent = tracing::Span::current();
                let check = Check {
                    key: target,
                    target: parsed,
                    required: required.clone(),
                };
                runtime.spawn(Inner::run(this.clone(), check, registry, answer, parent));
                Started::Wait(pending)
            }
        }
    }

    /// Starts a background check of a stale present tag, unless one runs
    /// or its registry's breaker is open (the stale answer serves on).
    fn refresh(
        this: &Arc<Inner>,
        target: Arc<str>,
        image: &str,
        required: &Arc<[Platform]>,
        mirrors: &MirrorHosts,
    ) {
        let Some(parsed) = Target::parse(image) else {
            return;
        };
        if !this.named(&parsed, mirrors) {
            return;
        }
        let registry = this.registry(&parsed.host);
        if let Entry::Vacant(slot) = this.inflight.entry(target.clone()) {
            if !matches!(this.lookup(&target, Instant::now()), Lookup::Stale) {
                return;
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            if !lock(&registry.breaker).admit(Instant::now()) {
                return;
            }
            let (answer, pending) = watch::channel(None);
            slot.insert(pending);
            let parent = tracing::Span::current();
            let check = Check {
                key: target,
                target: parsed,
                required: required.clone(),
            };
            runtime.spawn(Inner::run(this.clone(), check, registry, answer, parent));
        }
    }

    /// One check: a permit of the registry's cap (queued at most
    /// [`QUEUE_WAIT_MAX`]), the registry request within `verify_timeout`,
    /// then the breaker, the metrics, the cache and the waiters, in that
    /// order (the cache before leaving `inflight`). A panic inside is an
    /// error answer and one log line, never a check left without answer.
    async fn run(
        this: Arc<Inner>,
        check: Check,
        registry: Arc<Registry>,
        answer: watch::Sender<Option<CheckOutcome>>,
        // The admission that started the check: the request span is its
        // child even though it runs in a task of its own.
        parent: tracing::Span,
    ) {
        let Check {
            key,
            target,
            required,
        } = check;
        // Leaves `inflight` however the task ends, so a panic cannot wedge
        // the target.
        let leave = Leave {
            inner: &this,
            key: &key,
            own: answer.subscribe(),
        };
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: &parent,
            REGISTRY_REQUEST_SPAN,
            otel.kind = "client",
            server.address = %target.host,
            imageswap.repository = %target.repository,
            imageswap.verify.outcome = Empty,
        );
        let asked = Inner::ask(&this, &target, &required, &registry).instrument(span.clone());
        let mut asked = std::pin::pin!(asked);
        // Unwind safety: after a panic the request future is only dropped;
        // the state it touches (the token map, the breaker's mutex, whose
        // poisoning `lock` ignores) stays consistent.
        let asked = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| asked.as_mut().poll(cx))) {
                Ok(poll) => poll,
                Err(_) => std::task::Poll::Ready(Asked::panicked()),
            }
        })
        .await;
        let outcome = asked.outcome;
        span.record("imageswap.verify.outcome", outcome.as_str());
        let now = Instant::now();
        // A check that asked nobody (the breaker opened while it queued,
        // it queued past its time) is no evidence: counting it would open
        // the breaker of a registry that answered everything it was asked.
        // An asked check was recorded in `ask`, before its permit went
        // back; the others are recorded here (no evidence: only a probe
        // that never asked is let go).
        let change = match asked.recorded {
            Some(change) => change,
            None => lock(&registry.breaker).observe(asked.evidence, now, &this.tuning),
        };
        if asked.evidence != Evidence::None {
            this.metrics
                .circuit_open(&registry.label, lock(&registry.breaker).open_until.is_some());
        }
        match change {
            Some(Change::Opened) => {
                tracing::warn!(registry = host_name(&target.host), breaker_open = %humantime::format_duration(this.tuning.breaker_open),
                reason = %outcome_reason(&outcome), "Opened the breaker of a registry: its checks answer circuit open until one probe succeeds.")
            }
            Some(Change::Closed) => tracing::info!(
                registry = host_name(&target.host),
                "Closed the breaker of a registry: a probe was answered."
            ),
            None => {}
        }
        if asked.asked {
            this.metrics.check(&registry.label, outcome.as_str());
        }
        let cached = match &outcome {
            CheckOutcome::Present => Some(Answer::Found(Found::Present)),
            CheckOutcome::Missing => Some(Answer::Found(Found::Missing)),
            CheckOutcome::NoPlatform(platform) => Some(Answer::NoPlatform(platform.clone())),
            // A refusal keeps the answer it replaces for stale-if-error.
            CheckOutcome::Error(error) => {
                tracing::debug!(host = %target.host, repository = %target.repository, error = %error, "Registry check failed.");
                asked.refused_for.map(|for_| Answer::Refused {
                    error: error.clone(),
                    for_,
                    credentials: asked.credentials,
                })
            }
        };
        if let Some(answer) = cached {
            let last_found = match answer {
                Answer::Refused { .. } => this.cache.get(&key).and_then(|known| known.last_found),
                _ => Some((outcome.clone(), now)),
            };
            this.cache.insert(
                key.clone(),
                Known {
                    answer,
                    at: now,
                    is_digest: target.is_digest,
                    last_found,
                },
            );
        }
        this.inflight
            .remove_if(&key, |_, pending| pending.same_channel(&leave.own));
        // Nobody waiting (a background refresh) is fine.
        let _ = answer.send(Some(outcome));
    }

    /// The permit, then the request (see [`Inner::run`]).
    async fn ask(this: &Inner, target: &Target, required: &[Platform], registry: &Registry) -> Asked {
        let Ok(Ok(_permit)) = tokio::time::timeout(QUEUE_WAIT_MAX, registry.permits.acquire()).await else {
            return Asked::unasked(CheckError::Timeout(QUEUE_WAIT_MAX));
        };
        if lock(&registry.breaker).opened_since(Instant::now()) {
            return Asked::unasked(CheckError::CircuitOpen);
        }
        let credentials = this.credentials.load_full();
        let credentials_id = Arc::as_ptr(&credentials) as usize;
        let started = Instant::now();
        // The timeout starts with the request: time in the queue is the
        // cap's, not the registry's.
        let credential = credentials.get(&target.host);
        // One timeout for the whole check: the manifest, and its platforms
        // when some are required (an index or a config, once per digest).
        let found = tokio::time::timeout(this.timeout, async {
            let (found, digest) = this.client.check(target, credential).await?;
            if found == Found::Missing || required.is_empty() {
                return Ok(found.into());
            }
            let available = this
                .client
                .platforms(target, digest.as_deref(), credential)
                .await?;
            Ok(match Platform::first_missing(required, &available) {
                Some(platform) => CheckOutcome::NoPlatform(platform.to_string()),
                None => CheckOutcome::Present,
            })
        })
        .await;
        this.metrics.request_duration(&registry.label, started.elapsed());
        let (outcome, evidence, refused_for) = match found {
            Ok(Ok(outcome)) => (outcome, Evidence::Well, None),
            Ok(Err(Failure {
                error,
                kind,
                retry_after,
            })) => {
                let (evidence, refused_for) = match kind {
                    FailureKind::Unreachable | FailureKind::ServerError => (Evidence::Unwell, None),
                    FailureKind::Refused => (Evidence::Well, Some(retry_after.unwrap_or(REFUSAL_TTL))),
                    FailureKind::Other => (Evidence::None, None),
                };
                (CheckOutcome::Error(error), evidence, refused_for)
            }
            Err(_) => (
                CheckOutcome::Error(CheckError::Timeout(this.timeout)),
                Evidence::Unwell,
                None,
            ),
        };
        // Recorded while the permit is still held: a check queued behind
        // this one then sees the breaker this answer opened, and does not
        // connect to the registry that just failed (the dead-mirror load
        // test saw 4 such connections after the first 32 timeouts).
        let recorded = lock(&registry.breaker).observe(evidence, Instant::now(), &this.tuning);
        Asked {
            outcome,
            evidence,
            refused_for,
            asked: true,
            credentials: credentials_id,
            recorded: Some(recorded),
        }
    }
}

/// One check to run: its cache key (the image, with the platforms it is
/// required to have), the image split, and those platforms.
struct Check {
    key: Arc<str>,
    target: Target,
    required: Arc<[Platform]>,
}

impl From<Found> for CheckOutcome {
    fn from(found: Found) -> CheckOutcome {
        match found {
            Found::Present => CheckOutcome::Present,
            Found::Missing => CheckOutcome::Missing,
        }
    }
}

/// What [`Inner::ask`] found.
struct Asked {
    outcome: CheckOutcome,
    evidence: Evidence,
    /// A refusal about this target, cached this long.
    refused_for: Option<Duration>,
    /// Whether the registry was asked (the checks counter counts only those).
    asked: bool,
    /// The credentials it was asked with ([`Inner::credentials_id`]).
    credentials: usize,
    /// The breaker change its evidence made, when `ask` recorded it.
    recorded: Option<Option<Change>>,
}

impl Asked {
    fn unasked(error: CheckError) -> Asked {
        Asked {
            outcome: CheckOutcome::Error(error),
            evidence: Evidence::None,
            refused_for: None,
            asked: false,
            credentials: 0,
            recorded: None,
        }
    }

    /// A check that panicked: counted as an error, no evidence about the
    /// registry (the bug is ours). The panic hook (`telemetry::logging`)
    /// has logged it as one line, with where it happened.
    fn panicked() -> Asked {
        Asked {
            outcome: CheckOutcome::Error(CheckError::Failed(
                "the check failed (see the server log)".to_owned(),
            )),
            evidence: Evidence::None,
            refused_for: None,
            asked: true,
            credentials: 0,
            recorded: None,
        }
    }
}

fn outcome_reason(outcome: &CheckOutcome) -> String {
    match outcome {
        CheckOutcome::Error(error) => error.to_string(),
        other => other.as_str().to_owned(),
    }
}

struct Leave<'a> {
    inner: &'a Inner,
    key: &'a Arc<str>,
    /// Our channel: a later check of the same target is not ours to remove.
    own: Pending,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.inner
            .inflight
            .remove_if(self.key, |_, pending| pending.same_channel(&self.own));
    }
}

/// The breaker's lock; a panic while holding it cannot leave it in a
/// state worse than its fields say, so poisoning is ignored.
fn lock(breaker: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_labels_are_capped() {
        let client = RegistryClient::new(None, &[], Duration::from_secs(1)).expect("client");
        let lifetimes = Lifetimes {
            timeout: Duration::from_secs(1),
            ttl: Duration::from_secs(1),
            missing_ttl: Duration::from_secs(1),
            stale_if_error: Duration::from_secs(1),
        };
        let v = Verifier::new(
            client,
            super::super::credentials::anonymous(),
            VerifyMetrics::new(),
            lifetimes,
            Tuning::default(),
        );
        let labels: Vec<Arc<str>> = (0..70)
            .map(|i| v.inner.registry(&format!("r{i}.example")).label.clone())
            .collect();
        assert_eq!(&*labels[63], "r63.example");
        assert!(labels[64..].iter().all(|l| &**l == "other"), "{labels:?}");
        assert_eq!(
            &*v.inner.registry("r0.example").label,
            "r0.example",
            "known hosts keep theirs"
        );
    }

    #[test]
    fn spans_go_where_the_trace_exporter_looks() {
        assert_eq!(SPAN_TARGET, crate::telemetry::spans::SPAN_TARGET);
    }

    #[test]
    fn a_check_admitted_before_the_breaker_opened_sees_it_open() {
        let tuning = Tuning::default();
        let mut b = Breaker::default();
        let t0 = Instant::now();
        assert!(b.admit(t0), "admitted, then queued behind the cap");
        assert!(!b.opened_since(t0));
        for _ in 0..tuning.breaker_threshold {
            b.record(false, t0, &tuning);
        }
        assert!(
            b.opened_since(t0 + Duration::from_secs(1)),
            "the queued check does not connect"
        );
        let probe_time = t0 + tuning.breaker_open;
        assert!(b.admit(probe_time), "the probe");
        assert!(!b.opened_since(probe_time), "the probe itself asks");
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_one_probe_decides() {
        let tuning = Tuning::default();
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(b.admit(t0));
            assert!(
                !b.record(false, t0, &tuning),
                "below the threshold it stays closed"
            );
        }
        assert!(b.record(false, t0, &tuning), "the fifth error opens it");
        assert!(!b.admit(t0 + Duration::from_secs(9)), "open: not asked");
        let later = t0 + Duration::from_secs(10);
        assert!(b.admit(later), "one probe after the open time");
        assert!(!b.admit(later), "only one");
        assert!(b.record(false, later, &tuning), "a failed probe opens it again");
        assert!(!b.admit(later + Duration::from_secs(1)));
        let after = later + Duration::from_secs(10);
        assert!(b.admit(after));
        assert!(!b.record(true, after, &tuning), "a good probe closes it");
        assert!(b.admit(after));
    }
}
