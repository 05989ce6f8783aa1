//! Mirror verification on the warm path (issue 11, "Measure"): a ~5 KB Pod
//! review with 4 containers, bytes in → bytes out through the admission
//! service at the core of the server's stack (`server::service`: phase 1
//! decide → checks → phase 2 answer), with verification off and on. On,
//! the verifier is the real one, pointed at a real registry
//! (`docker-registry`, plain HTTP on 127.0.0.1) that has every target, and
//! warmed once before measuring: the steady state of a cluster, where
//! every image has been seen within its TTL. Target: on ≤ 1.05× off.
//!
//! The same maps serve both (the fixtures' rules, with the mirror being the
//! local registry), so the two differ only by verification.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark may panic on what it did not expect.

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use imageswap::admission::{self, Options, PullSecrets};
use imageswap::cache::{PublishedRules, RulesState};
use imageswap::server::service::{AdmissionService, Deadline};
use imageswap::server::stack::ReadBody;
use imageswap::server::state::{AppState, Settings, VerifyPolicy};
use imageswap::swap::Engine;
use imageswap::telemetry::metrics::Metrics;
use imageswap::verify::{CheckImages, OnError, VerifyArgs, VerifyMode};
use tower::Service as _;

// The registry harness of the integration tests, reused as it is
// (`registry` finds the test CA as `super::ca`).
#[allow(dead_code, clippy::all)]
#[path = "../tests/it/support/ca.rs"]
mod ca;
#[allow(dead_code, clippy::all)]
#[path = "../tests/it/support/registry.rs"]
mod registry;

use registry::{Auth, Registry};

const REVIEW: &[u8] = include_bytes!("fixtures/pod-4-containers.review.json");
const DISABLE_LABEL: &str = "k8s.twr.io/imageswap";

/// The fixtures' rules (tests/fixtures/maps/fixtures.conf) with `host` as
/// the mirror.
fn maps(host: &str) -> String {
    format!(
        "default::{host}\ndocker.io::{host}/dockerhub\ndocker.io/library::{host}/library\nquay.io::{host}/quay-\nregistry.k8s.io::\n{host}::\n"
    )
}

/// The targets of the review's changes under `maps`.
fn targets(maps: &str) -> Vec<String> {
    let state = RulesState::new(Engine::from_maps_text(maps).0, 10_000);
    let options = Options {
        disable_label: DISABLE_LABEL,
        shadow: false,
        deadline: None,
    };
    let mut body = REVIEW.to_vec();
    let pull_secrets = PullSecrets::default();
    let decided = admission::decide(&mut body, &options, &pull_secrets, &state.decider()).expect("valid");
    decided.changes.iter().map(|c| c.to.to_string()).collect()
}

/// The admission service as the server builds it, with `verifier`.
fn service(maps: &str, verifier: Option<Arc<dyn CheckImages>>, metrics: Arc<Metrics>) -> AdmissionService {
    let rules = Arc::new(PublishedRules::new());
    rules.publish(RulesState::new(Engine::from_maps_text(maps).0, 10_000));
    let settings = Settings {
        disable_label: DISABLE_LABEL.to_owned(),
        shadow: false,
        max_body_bytes: 3 * 1024 * 1024,
        pod_name: None,
        log_swaps: false,
    };
    let policy = VerifyPolicy {
        on_error: OnError::Swap,
        timeout: Duration::from_secs(1),
    };
    let state = AppState::new(settings, rules, None, metrics).with_verifier(verifier, policy);
    AdmissionService::new(Arc::new(state))
}

/// A review request as the stack hands it to the service (body read, a
/// deadline set).
fn request() -> Request<ReadBody> {
    let mut request = Request::new(ReadBody::new(REVIEW.to_vec()));
    request
        .extensions_mut()
        .insert(Deadline(Instant::now() + Duration::from_secs(10)));
    request
}

/// The answer's body, which must be ready on the first poll (the warm
/// path waits on nothing; a pending answer means the cache was not warm).
fn answer_now(service: &mut AdmissionService, request: Request<ReadBody>) -> usize {
    let mut future = service.call(request);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        // The body is one `Full` frame of the answer's bytes.
        Poll::Ready(Ok(response)) => hyper::body::Body::size_hint(response.body())
            .exact()
            .map_or(0, |n| n as usize),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the warm path waited"),
    }
}

fn admit_verified(c: &mut Criterion) {
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), None, Auth::None);
    let host = registry.host();
    let maps = maps(&host);
    let targets = targets(&maps);
    assert_eq!(targets.len(), 4, "every container changes: {targets:?}");
    for target in &targets {
        let path = target.strip_prefix(&format!("{host}/")).expect("in the mirror");
        let (repository, tag) = path.rsplit_once(':').expect("a tag");
        registry.push_image(repository, tag);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let metrics = Arc::new(Metrics::new());
    let args = VerifyArgs {
        verify: VerifyMode::On,
        verify_on_error: OnError::Swap,
        verify_timeout: Duration::from_secs(1),
        // Far longer than the bench: no target goes stale while measured.
        verify_ttl: Duration::from_secs(3600),
        verify_missing_ttl: Duration::from_secs(30),
        verify_stale_if_error: Duration::from_secs(3600),
        verify_platforms: Vec::new(),
        registry_config: storage.path().join("no-credentials.json"),
        registry_ca: None,
        registry_plain_http: vec![host.clone()],
    };
    let (verifier, credentials) =
        imageswap::reload::registry_verification(&args, metrics.verify.clone()).expect("verifier");
    credentials.load_once().expect("no credentials file: anonymous");
    // The registries the maps name (as the server passes them).
    let engine = Engine::from_maps_text(&maps).0;
    let mirrors = engine.mirror_hosts();
    let checks: Vec<Arc<str>> = targets.iter().map(|t| Arc::from(t.as_str())).collect();
    let warm = runtime.block_on(verifier.check(checks, mirrors, Duration::from_secs(10)));
    assert!(
        warm.iter()
            .all(|o| *o == imageswap::verify::CheckOutcome::Present),
        "the registry has every target: {warm:?}"
    );

    // The verifier's share alone: one warm check of the 4 targets.
    let checks: Vec<Arc<str>> = targets.iter().map(|t| Arc::from(t.as_str())).collect();
    c.bench_function("verifier_check/4_targets/cache_warm", |bench| {
        bench.iter_batched(
            || checks.clone(),
            |checks| {
                let mut future = verifier.check(checks, mirrors, Duration::from_secs(1));
                let mut cx = Context::from_waker(Waker::noop());
                black_box(future.as_mut().poll(&mut cx).is_ready())
            },
            BatchSize::SmallInput,
        )
    });

    // The same with platform-aware verification (issue 21: target ≤ 1.10×
    // off): every image must have linux/amd64 (`IMAGESWAP_VERIFY_PLATFORMS`;
    // the review pins none), which the pushed images' configs say.
    let platforms_args = VerifyArgs {
        verify_platforms: vec![
            imageswap::swap::platform::Platform::parse("linux/amd64").expect("a platform"),
        ],
        ..args.clone()
    };
    let (platform_verifier, platform_credentials) =
        imageswap::reload::registry_verification(&platforms_args, Arc::new(Metrics::new()).verify.clone())
            .expect("verifier");
    platform_credentials.load_once().expect("anonymous");
    let checks: Vec<Arc<str>> = targets.iter().map(|t| Arc::from(t.as_str())).collect();
    let warm = runtime.block_on(platform_verifier.check(checks, mirrors, Duration::from_secs(10)));
    assert!(
        warm.iter()
            .all(|o| *o == imageswap::verify::CheckOutcome::Present),
        "every target is linux/amd64: {warm:?}"
    );

    let mut off = service(&maps, None, Arc::new(Metrics::new()));
    let mut on = service(&maps, Some(verifier), metrics.clone());
    let mut on_platforms = service(&maps, Some(platform_verifier), Arc::new(Metrics::new()));
    assert_eq!(
        answer_now(&mut on_platforms, request()),
        answer_now(&mut off, request())
    );
    // Both answer the same patch.
    let (a, b) = (answer_now(&mut off, request()), answer_now(&mut on, request()));
    assert_eq!(a, b, "verification on changes nothing when all are present");

    let mut group = c.benchmark_group("admit_verified/pod_4_containers");
    group.bench_function("verify_off", |bench| {
        bench.iter_batched(
            request,
            |request| black_box(answer_now(&mut off, request)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verify_on_warm", |bench| {
        bench.iter_batched(
            request,
            |request| black_box(answer_now(&mut on, request)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verify_on_platforms_warm", |bench| {
        bench.iter_batched(
            request,
            |request| black_box(answer_now(&mut on_platforms, request)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    // Only the warming checks reached the registry: everything measured
    // was answered from the cache.
    let text = metrics.encode();
    // Labelled by host, not port (issue 20).
    let label = host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name);
    let warmed = format!("imageswap_verify_checks_total{{registry=\"{label}\",outcome=\"present\"}} 4\n");
    assert!(text.contains(&warmed), "{text}");
    drop(registry);
}

criterion_group!(benches, admit_verified);
criterion_main!(benches);
