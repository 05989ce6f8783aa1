//! Mirror verification and pull secrets through the whole server (verify.md
//! "The answer", "Pull secrets for the mirror"), with an in-test
//! `CheckImages` in place of the registry client: one that answers what
//! the test chose, and one that never answers, which proves the budget
//! (the answer still comes, decided by the on-error policy). Every patch
//! is applied with a JSON Patch implementation to the object it is for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use imageswap::admission::PullSecrets;
use imageswap::settings::SettingValue;
use imageswap::verify::{CheckError, CheckFuture, CheckImages, CheckOutcome, MirrorHosts, OnError};
use serde_json::{Value, json};

use crate::support::server::{Protocol, Setup, TestServer};
use crate::support::{applied, container_images, pod_review, warnings};

/// Answers by the target's text: `missing` for a target naming nginx,
/// a 503 for envoy, present for the rest; remembers every call.
#[derive(Debug, Default)]
struct Scripted {
    calls: Mutex<Vec<(Vec<String>, Duration)>>,
}

impl Scripted {
    fn calls(&self) -> Vec<(Vec<String>, Duration)> {
        self.calls.lock().expect("lock").clone()
    }
}

impl CheckImages for Scripted {
    fn check(&self, targets: Vec<Arc<str>>, _mirrors: &MirrorHosts, budget: Duration) -> CheckFuture {
        let outcomes = targets
            .iter()
            .map(|target| {
                if target.contains("nginx") {
                    CheckOutcome::Missing
                } else if target.contains("envoy") {
                    CheckOutcome::Error(CheckError::Status {
                        registry: "mirror.example.com".into(),
                        status: 503,
                    })
                } else {
                    CheckOutcome::Present
                }
            })
            .collect();
        self.calls
            .lock()
            .expect("lock")
            .push((targets.iter().map(|t| t.to_string()).collect(), budget));
        Box::pin(async move { outcomes })
    }
}

/// Never answers (a registry that accepts and hangs, with a verifier that
/// would not keep its promise to answer within the budget).
#[derive(Debug, Default)]
struct Silent;

impl CheckImages for Silent {
    fn check(&self, _targets: Vec<Arc<str>>, _mirrors: &MirrorHosts, _budget: Duration) -> CheckFuture {
        Box::pin(std::future::pending())
    }
}

async fn start(verifier: Option<Arc<dyn CheckImages>>, on_error: OnError, timeout: Duration) -> TestServer {
    TestServer::start_with(Setup {
        verifier,
        verify_on_error: on_error,
        verify_timeout: timeout,
        ..Setup::default()
    })
    .await
}

fn counter(server: &TestServer, sample: &str) -> u64 {
    let text = server.metrics_text();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

const IMAGES: [&str; 3] = ["nginx:1.27", "redis:8", "envoyproxy/envoy:v1.31"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_is_kept_present_patched_and_errors_swapped_by_default() {
    let checker = Arc::new(Scripted::default());
    let server = start(Some(checker.clone()), OnError::Swap, Duration::from_secs(5)).await;
    let review = pod_review("v-1", &IMAGES);
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/"), review.clone())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert_eq!(answer["response"]["allowed"], true);
    let calls = checker.calls();
    assert_eq!(calls.len(), 1, "one batch per review");
    let targets = &calls[0].0;
    assert_eq!(targets.len(), 3, "every swapped image is checked: {targets:?}");
    assert!(calls[0].1 <= Duration::from_secs(5), "budget {:?}", calls[0].1);
    let final_images = container_images(&applied(&review, &answer)["spec"]);
    assert_eq!(
        final_images,
        ["nginx:1.27", targets[1].as_str(), targets[2].as_str()]
    );
    assert_eq!(
        warnings(&answer),
        [
            format!("imageswap: kept nginx:1.27: {} is not in the mirror", targets[0]),
            format!(
                "imageswap: {} not verified: mirror.example.com answered 503",
                targets[2]
            ),
        ]
    );
    assert_eq!(
        counter(&server, "imageswap_verify_fallbacks_total{reason=\"missing\"}"),
        1
    );
    assert_eq!(
        counter(&server, "imageswap_verify_fallbacks_total{reason=\"error\"}"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_keep_keeps_the_unverified_image() {
    let checker = Arc::new(Scripted::default());
    let server = start(Some(checker.clone()), OnError::Keep, Duration::from_secs(5)).await;
    let review = pod_review("v-2", &IMAGES);
    let answer = server
        .client(Protocol::Http1)
        .post(&server.url("/"), review.clone())
        .await
        .json();
    let final_images = container_images(&applied(&review, &answer)["spec"]);
    assert_eq!(final_images[0], "nginx:1.27");
    assert_eq!(final_images[2], "envoyproxy/envoy:v1.31");
    assert_ne!(final_images[1], "redis:8", "the present one is swapped");
    assert_eq!(
        warnings(&answer)[1],
        "imageswap: kept envoyproxy/envoy:v1.31: mirror.example.com answered 503"
    );
    // All kept: no patch at all.
    let review = pod_review("v-3", &["nginx:1.27"]);
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/"), review)
        .await
        .json();
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert!(answer["response"].get("patchType").is_none(), "{answer}");
    assert_eq!(warnings(&answer).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_that_never_answers_is_cut_at_the_budget_and_the_policy_decides() {
    for (on_error, patched) in [(OnError::Swap, true), (OnError::Keep, false)] {
        let server = start(Some(Arc::new(Silent)), on_error, Duration::from_millis(200)).await;
        let client = server.client(Protocol::Http2);
        let review = pod_review("v-4", &["redis:8"]);
        let answer = client.post(&server.url("/"), review.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{on_error:?}");
        let answer = answer.json();
        let final_image = container_images(&applied(&review, &answer)["spec"]).remove(0);
        assert_eq!(final_image != "redis:8", patched, "{on_error:?}: {answer}");
        let warning = &warnings(&answer)[0];
        assert!(warning.ends_with(": timeout after 200ms"), "{warning}");
        assert_eq!(
            warning.starts_with("imageswap: kept redis:8"),
            !patched,
            "{warning}"
        );
        // A silent mirror never takes readiness.
        assert_eq!(client.get(&server.url("/readyz")).await.status, StatusCode::OK);
        assert_eq!(
            counter(&server, "imageswap_verify_fallbacks_total{reason=\"error\"}"),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_deadline_bounds_the_wait_below_the_verify_timeout() {
    // The API server's `timeout=1s` leaves 900 ms (deadline margin), the
    // wait another 50 ms less: a verify timeout of an hour never applies,
    // and the answer comes before the deadline, per policy, not as a 503.
    let server = start(Some(Arc::new(Silent)), OnError::Keep, Duration::from_secs(3600)).await;
    let review = pod_review("v-5", &["redis:8"]);
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/?timeout=1s"), review.clone())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert_eq!(container_images(&applied(&review, &answer)["spec"]), ["redis:8"]);
    let warning = &warnings(&answer)[0];
    assert!(
        warning.starts_with("imageswap: kept redis:8: timeout after "),
        "{warning}"
    );
    assert!(!warning.contains("1h"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_checks_and_counts_but_patches_nothing() {
    let checker = Arc::new(Scripted::default());
    let server = TestServer::start_with(Setup {
        verifier: Some(checker.clone()),
        shadow: true,
        ..Setup::default()
    })
    .await;
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/"), pod_review("v-6", &IMAGES))
        .await
        .json();
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    assert_eq!(checker.calls().len(), 1, "the checks ran");
    assert_eq!(
        counter(&server, "imageswap_verify_fallbacks_total{reason=\"missing\"}"),
        1
    );
    assert_eq!(
        counter(
            &server,
            "imageswap_admission_requests_total{outcome=\"shadowed\"}"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_without_swaps_are_not_checked() {
    let checker = Arc::new(Scripted::default());
    let server = start(Some(checker.clone()), OnError::Swap, Duration::from_secs(5)).await;
    let client = server.client(Protocol::Http2);
    // Opted out by the maps (the mirror itself, the Kubernetes images).
    let answer = client
        .post(
            &server.url("/"),
            pod_review("v-7", &["mirror.example.com/x/y:1", "registry.k8s.io/pause:3.10"]),
        )
        .await
        .json();
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    // A subresource.
    let mut status: Value = serde_json::from_slice(&pod_review("v-8", &["nginx:1.27"])).expect("json");
    status["request"]["operation"] = json!("UPDATE");
    status["request"]["subResource"] = json!("status");
    let answer = client
        .post(&server.url("/"), serde_json::to_vec(&status).expect("json"))
        .await
        .json();
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert!(checker.calls().is_empty(), "{:?}", checker.calls());
}

fn workload(uid: &str, kind: &str, operation: &str, spec: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "apps", "version": "v1", "kind": kind},
            "namespace": "default", "operation": operation,
            "object": {"kind": kind, "metadata": {"name": uid},
                "spec": {"template": {"spec": spec}}},
            "oldObject": {"kind": kind, "metadata": {"name": uid},
                "spec": {"template": {"spec": {"containers": []}}}},
        }
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_are_added_for_images_that_end_up_in_the_mirror() {
    let server = TestServer::start_with(Setup {
        pull_secrets: PullSecrets::parse_setting("mirror.example.com=mirror-pull").expect("valid"),
        ..Setup::default()
    })
    .await;
    let client = server.client(Protocol::Http2);
    let review = pod_review("s-1", &["nginx:1.27"]);
    let answer = client.post(&server.url("/"), review.clone()).await.json();
    let pod = applied(&review, &answer);
    assert!(
        container_images(&pod["spec"])[0].starts_with("mirror.example.com/"),
        "{pod}"
    );
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "mirror-pull"}]));

    let spec = json!({"imagePullSecrets": [{"name": "team"}],
        "containers": [{"name": "a", "image": "quay.io/org/app:1"}]});
    let review = workload("s-2", "Deployment", "UPDATE", spec);
    let answer = client.post(&server.url("/"), review.clone()).await.json();
    let deployment = applied(&review, &answer);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "team"}, {"name": "mirror-pull"}])
    );
    // Not on a Pod UPDATE: the field is immutable there.
    let mut update: Value = serde_json::from_slice(&pod_review("s-3", &["nginx:1.27"])).expect("json");
    update["request"]["operation"] = json!("UPDATE");
    let review = serde_json::to_vec(&update).expect("json");
    let answer = client.post(&server.url("/"), review.clone()).await.json();
    let pod = applied(&review, &answer);
    assert!(
        container_images(&pod["spec"])[0].starts_with("mirror.example.com/"),
        "still swapped: {pod}"
    );
    assert!(pod["spec"].get("imagePullSecrets").is_none(), "{pod}");
    assert_eq!(counter(&server, "imageswap_pull_secrets_added_total"), 2);
}

/// On a current-thread runtime the server's tasks run on the test's
/// thread, so its log lines reach the thread's capture.
#[tokio::test]
async fn one_warn_line_per_kept_or_unverified_image() {
    let logs = crate::support::logs::LogCapture::on_this_thread();
    let checker = Arc::new(Scripted::default());
    let server = start(Some(checker.clone()), OnError::Swap, Duration::from_secs(5)).await;
    let answer = server
        .client(Protocol::Http1)
        .post(&server.url("/"), pod_review("v-9", &IMAGES))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let targets = checker.calls().remove(0).0;
    let text = logs.text();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("v-9"))
        .collect();
    assert_eq!(warns.len(), 2, "{text}");
    let expect = [
        (
            "Kept the original image",
            "containers[0]",
            IMAGES[0],
            &targets[0],
            "not in the mirror",
        ),
        (
            "Swapped an image",
            "containers[2]",
            IMAGES[2],
            &targets[2],
            "mirror.example.com answered 503",
        ),
    ];
    for (line, (message, container, image, target, reason)) in warns.iter().zip(expect) {
        for part in [message, container, image, target.as_str(), reason] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }
    }
}
