//! Shutdown and overload: what happens to requests in flight when SIGTERM
//! arrives, and to requests beyond the concurrency limit.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::server::{Protocol, RawTls, Setup, TestServer};
use crate::support::{decoded_patch, eventually, pod_review};

/// Waits until `n` admission requests are inside the stack.
async fn wait_inflight(server: &TestServer, n: usize) {
    let line = format!("imageswap_inflight_requests {n}");
    assert!(
        eventually(Duration::from_secs(2), async || server
            .metrics_text()
            .contains(&line))
        .await,
        "never saw {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_unready_first_then_closes_and_lets_requests_in_flight_finish() {
    let mut server = TestServer::start_with(Setup {
        // Wide enough for a loaded CI machine to see the 503 before the
        // listener closes; the drain bound below stays far under the grace.
        shutdown_delay: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(20),
        ..Setup::default()
    })
    .await;
    let addr = server.addr;
    let ca_client = server.client(Protocol::Http1);
    let body = pod_review("in-flight", &["nginx:1.25"]);
    let mut held = RawTls::connect(&server).await;
    held.start_post("/", &body, body.len() / 2).await;
    wait_inflight(&server, 1).await;

    server.trigger_shutdown();

    // Readiness is 503 while the listener still accepts new connections.
    let unready = eventually(Duration::from_millis(2500), async || {
        let answer = server.client(Protocol::Http1).get(&server.url("/readyz")).await;
        answer.status == StatusCode::SERVICE_UNAVAILABLE && answer.json()["reason"] == "shutting down"
    })
    .await;
    assert!(unready, "/readyz answered 503 before the listener closed");

    // Then the listener closes.
    let closed = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(closed, "the listener closed after the shutdown delay");
    drop(ca_client);

    // The request in flight still completes, with its patch.
    held.write(&body[body.len() / 2..]).await;
    let (status, answer) = held.read_response().await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(answer["response"]["uid"], "in-flight");
    assert_eq!(
        decoded_patch(&answer)[0]["value"],
        "mirror.example.com/library/nginx:1.25"
    );

    let started = Instant::now();
    server.join().await.expect("serve returns Ok");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drained without waiting for the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_finishes_is_cut_at_the_grace_period() {
    let mut server = TestServer::start_with(Setup {
        shutdown_grace: Duration::from_millis(300),
        limits: imageswap::config::Limits {
            request_timeout: Duration::from_secs(30),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let body = pod_review("stuck", &["nginx"]);
    let mut held = RawTls::connect(&server).await;
    held.start_post("/", &body, 10).await;
    wait_inflight(&server, 1).await;
    let started = Instant::now();
    server.trigger_shutdown();
    server.join().await.expect("serve returns Ok");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(280) && elapsed < Duration::from_secs(10),
        "returned after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_requests_get_a_fast_503() {
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            max_concurrency: 1,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let body = pod_review("slow", &["nginx:1.25"]);
    let mut held = RawTls::connect(&server).await;
    held.start_post("/", &body, body.len() / 2).await;
    wait_inflight(&server, 1).await;

    for protocol in [Protocol::Http2, Protocol::Http1] {
        let client = server.client(protocol);
        let started = Instant::now();
        let answer = client
            .post(&server.url("/"), pod_review("extra", &["nginx"]))
            .await;
        let elapsed = started.elapsed();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{protocol:?}");
        assert!(
            answer.json()["error"]
                .as_str()
                .expect("error")
                .contains("overloaded")
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "shed fast, not queued: {elapsed:?}"
        );
        // Probes are outside the limit: a busy server is still alive.
        assert_eq!(client.get(&server.url("/healthz")).await.status, StatusCode::OK);
    }
    assert!(server.metrics_text().contains("imageswap_shed_requests_total 2"));
    assert!(
        server
            .metrics_text()
            .contains("imageswap_admission_requests_total{outcome=\"shed\"} 2")
    );

    // The held request completes and gives its permit back.
    held.write(&body[body.len() / 2..]).await;
    let (status, _) = held.read_response().await;
    assert_eq!(status, 200);
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/"), pod_review("after", &["nginx"]))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}
