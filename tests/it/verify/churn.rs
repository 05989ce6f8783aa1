//! Under churn: coalescing (N concurrent checks, one registry request),
//! stale-while-revalidate (a known image answers on the first poll while
//! its refresh hangs), the budget with background completion, the breaker
//! (hanging, failing and down registries; the probe that closes it), and
//! the metrics of all that. Request counts come from the registry's access
//! log or the front; nothing here is a timing assertion.

use std::sync::Arc;
use std::time::Duration;

use imageswap::verify::{CheckError, CheckImages, CheckOutcome, Tuning};

use super::{SLOW, Setup, args, check, check_within, mirrors_of, ready_now, verifier};
use crate::support::registry::{FORWARD, Front, HANG};

fn long_breaker() -> Tuning {
    Tuning {
        breaker_open: Duration::from_secs(3600),
        ..Tuning::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_of_one_target_make_one_registry_request() {
    let s = Setup::new();
    s.open.push_image("burst/app", "1");
    let host = s.open.host();
    let (v, _) = verifier(&args(&s.config_path(), None, &[&host]), Tuning::default());
    let v = Arc::new(v);
    let image: Arc<str> = Arc::from(format!("{host}/burst/app:1"));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (v, image) = (v.clone(), image.clone());
            // The same target twice in one admission too.
            tokio::spawn(async move {
                let mirrors = mirrors_of(&[&image]);
                v.check(vec![image.clone(), image], &mirrors, SLOW).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            [CheckOutcome::Present, CheckOutcome::Present]
        );
    }
    assert_eq!(s.open.requests("HEAD /v2/burst/app/manifests/1 "), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_image_answers_at_once_while_one_refresh_runs() {
    let s = Setup::new();
    s.open.push_image("swr/app", "1");
    let front = Front::start(Some(s.open.addr), FORWARD);
    let host = front.host();
    let mut a = args(&s.config_path(), None, &[&host]);
    // Every present tag is stale at once.
    a.verify_ttl = Duration::ZERO;
    let (v, metrics) = verifier(&a, Tuning::default());
    let image = format!("{host}/swr/app:1");
    assert_eq!(check(&v, &image).await, CheckOutcome::Present);
    assert_eq!(front.requests(), 1);

    // The registry now hangs: the stale answer comes on the first poll…
    front.set(HANG);
    assert_eq!(ready_now(&v, &[&image]), Some(vec![CheckOutcome::Present]));
    // …and one refresh went to the registry;
    front.wait_requests(2);
    // another admission meanwhile does not start a second one.
    assert_eq!(ready_now(&v, &[&image]), Some(vec![CheckOutcome::Present]));
    let text = encode(&metrics);
    assert!(
        text.contains("imageswap_verify_cache_total{result=\"stale\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("imageswap_verify_cache_total{result=\"miss\"} 1"),
        "{text}"
    );
    assert_eq!(front.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_registry_costs_the_budget_then_opens_the_breaker() {
    let s = Setup::new();
    let front = Front::start(None, HANG);
    let host = front.host();
    let mut a = args(&s.config_path(), None, &[&host]);
    a.verify_timeout = Duration::from_secs(1);
    let (v, metrics) = verifier(&a, long_breaker());
    let budget = Duration::from_millis(50);
    let first = format!("{host}/hang/app:0");
    assert_eq!(
        check_within(&v, &first, budget).await,
        CheckOutcome::Error(CheckError::Timeout(budget)),
        "the admission waits its budget only"
    );
    // The check went on: a later admission joins it and gets its own end.
    assert_eq!(
        check(&v, &first).await,
        CheckOutcome::Error(CheckError::Timeout(a.verify_timeout))
    );
    for i in 1..5 {
        assert_eq!(
            check(&v, &format!("{host}/hang/app:{i}")).await,
            CheckOutcome::Error(CheckError::Timeout(a.verify_timeout))
        );
    }
    assert_eq!(front.requests(), 5);
    // Five timeouts in a row: the breaker answers at once, without asking
    // (and is no registry check: not counted as one).
    assert_eq!(
        ready_now(&v, &[&format!("{host}/hang/app:5")]),
        Some(vec![CheckOutcome::Error(CheckError::CircuitOpen)])
    );
    assert_eq!(front.requests(), 5);
    let text = encode(&metrics);
    assert!(
        text.contains("imageswap_verify_circuit_open{registry=\"127.0.0.1\"} 1"),
        "labelled by host, not port: {text}"
    );
    assert!(
        text.contains(&format!(
            "imageswap_verify_checks_total{{registry=\"{}\",outcome=\"error\"}} 5",
            "127.0.0.1"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_open_the_breaker_a_429_does_not_and_a_good_probe_closes_it() {
    let s = Setup::new();
    s.open.push_image("flaky/app", "1");
    let front = Front::start(Some(s.open.addr), 429);
    let host = front.host();
    let a = args(&s.config_path(), None, &[&host]);
    // Open for no time: the check after the fifth error is the probe.
    let (v, metrics) = verifier(
        &a,
        Tuning {
            breaker_open: Duration::ZERO,
            ..Tuning::default()
        },
    );
    let image = format!("{host}/flaky/app:1");
    // A 429 is about this target (cached for its Retry-After or 10 s),
    // not the registry's health.
    let answer = check(&v, &format!("{host}/flaky/limited:1")).await;
    assert_eq!(
        answer.clone(),
        CheckOutcome::Error(CheckError::Status {
            registry: host.clone(),
            status: 429
        })
    );
    if let CheckOutcome::Error(e) = answer {
        assert_eq!(e.to_string(), format!("{host} answered 429"));
    }
    front.set(500);
    for _ in 0..5 {
        assert_eq!(
            check(&v, &image).await,
            CheckOutcome::Error(CheckError::Status {
                registry: host.clone(),
                status: 500
            }),
            "server errors are never cached: asked each time"
        );
    }
    assert_eq!(front.requests(), 6);
    assert!(encode(&metrics).contains("imageswap_verify_circuit_open{registry=\"127.0.0.1\"} 1"));
    front.set(FORWARD);
    assert_eq!(check(&v, &image).await, CheckOutcome::Present, "the probe");
    assert!(encode(&metrics).contains("imageswap_verify_circuit_open{registry=\"127.0.0.1\"} 0"));
    assert_eq!(
        ready_now(&v, &[&image]),
        Some(vec![CheckOutcome::Present]),
        "cached now"
    );
    assert_eq!(front.requests(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_is_down_fails_fast_and_opens_the_breaker() {
    let s = Setup::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let (v, _) = verifier(&args(&s.config_path(), None, &[&host]), long_breaker());
    for i in 0..5 {
        match check(&v, &format!("{host}/down/app:{i}")).await {
            CheckOutcome::Error(CheckError::Failed(reason)) => {
                assert!(reason.starts_with("cannot connect"), "{reason}")
            }
            other => panic!("a closed port answered {other:?}"),
        }
    }
    assert_eq!(
        ready_now(&v, &[&format!("{host}/down/app:9")]),
        Some(vec![CheckOutcome::Error(CheckError::CircuitOpen)])
    );
}

pub(super) fn encode(metrics: &imageswap::verify::VerifyMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// Spans as a tracing layer sees them: `new NAME parent=PARENT fields` and
/// `record NAME fields`.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map_or_else(|| "-".to_owned(), |p| p.name().to_owned());
        let name = attrs.metadata().name();
        self.0
            .lock()
            .unwrap()
            .push(format!("new {name} parent={parent}{}", fields.0));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        let name = ctx.span(id).map_or("?", |s| s.name());
        self.0.lock().unwrap().push(format!("record {name}{}", fields.0));
    }
}

// A current-thread runtime: the check's task runs on this thread, where
// the capturing subscriber is the default.
#[tokio::test]
async fn each_registry_request_is_a_child_span_of_the_admission_that_asked() {
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let s = Setup::new();
    s.open.push_image("span/app", "1");
    let host = s.open.host();
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let (v, _) = verifier(&args(&s.config_path(), None, &[&host]), Tuning::default());
    let image = format!("{host}/span/app:1");
    let outcome = check(&v, &image)
        .instrument(tracing::info_span!("admission"))
        .await;
    assert_eq!(outcome, CheckOutcome::Present);
    // Cached: no second request span.
    assert_eq!(check(&v, &image).await, CheckOutcome::Present);
    let spans = capture.0.lock().unwrap().clone();
    let requests: Vec<&String> = spans
        .iter()
        .filter(|l| l.contains("imageswap.registry_request"))
        .collect();
    assert_eq!(requests.len(), 2, "{spans:?}");
    assert!(
        requests[0].starts_with("new imageswap.registry_request parent=admission")
            && requests[0].contains(&format!("server.address={host}"))
            && requests[0].contains("imageswap.repository=span/app"),
        "{spans:?}"
    );
    assert_eq!(
        requests[1],
        "record imageswap.registry_request imageswap.verify.outcome=\"present\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_more_requests_in_flight_per_registry_than_the_cap() {
    use crate::support::registry::GATE;
    let s = Setup::new();
    s.open.push_image("cap/app", "0");
    let front = Front::start(Some(s.open.addr), GATE);
    let host = front.host();
    let (v, _) = verifier(
        &args(&s.config_path(), None, &[&host]),
        Tuning {
            max_in_flight_per_registry: 2,
            ..Tuning::default()
        },
    );
    let v = Arc::new(v);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (v, image) = (v.clone(), format!("{host}/cap/app:{i}"));
            tokio::spawn(async move { check(&*v, &image).await })
        })
        .collect();
    // All six checks run; two reach the registry and are held there, the
    // others wait for a permit (with no cap they would be at the gate too).
    assert!(crate::support::eventually(SLOW, async || v.checks_in_flight() == 6).await);
    front.wait_requests(2);
    front.release();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes[0], CheckOutcome::Present);
    assert!(
        outcomes[1..].iter().all(|o| *o == CheckOutcome::Missing),
        "{outcomes:?}"
    );
    assert_eq!(front.requests(), 6);
    assert_eq!(front.max_held(), 2);
}
