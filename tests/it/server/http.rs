//! HTTP over TLS: both protocol versions, the probes, metrics, routing and
//! the request deadline.

use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use http_body_util::Full;

use crate::support::pod_review;
use crate::support::server::{Protocol, RawTls, Setup, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_over_tls_are_both_served() {
    let server = TestServer::start().await;
    for (protocol, version) in [
        (Protocol::Http2, Version::HTTP_2),
        (Protocol::Http1, Version::HTTP_11),
    ] {
        let client = server.client(protocol);
        let answer = client
            .post(&server.url("/"), pod_review("p-1", &["nginx:1.25"]))
            .await;
        assert_eq!(answer.version, version);
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["response"]["uid"], "p-1");
        let answer = client
            .post(&server.url("/mutate"), pod_review("p-2", &["nginx:1.25"]))
            .await;
        assert_eq!(answer.version, version);
        assert_eq!(answer.json()["response"]["uid"], "p-2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_health_and_readiness() {
    let server = TestServer::start().await;
    let client = server.client(Protocol::Http2);
    let health = client.get(&server.url("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    let json = health.json();
    assert_eq!(json["health"], "ok");
    assert_eq!(json["pod_name"], "imageswap-test-0");
    let date = json["date_time"].as_str().expect("date_time");
    assert!(chrono::DateTime::parse_from_rfc3339(date).is_ok(), "{date}");

    let ready = client.get(&server.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = TestServer::start().await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let client = server.client(protocol);
        assert_eq!(
            client.get(&server.url("/nope")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            client.post(&server.url("/validate"), "{}").await.status,
            StatusCode::NOT_FOUND
        );
        let wrong = client.get(&server.url("/mutate")).await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.headers["allow"], "POST");
        let wrong = client.get(&server.url("/")).await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        let wrong = client.post(&server.url("/healthz"), "{}").await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.headers["allow"], "GET, HEAD");
        let request = http::Request::delete(server.url("/metrics"))
            .body(Full::default())
            .expect("request");
        assert_eq!(client.send(request).await.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_main_port_and_the_plain_port() {
    let server = TestServer::start_with(Setup {
        metrics_listen: true,
        ..Setup::default()
    })
    .await;
    let client = server.client(Protocol::Http2);
    // Two hits of the same image after one miss, and one patched review per post.
    for uid in ["m-1", "m-2", "m-3"] {
        let answer = client
            .post(&server.url("/"), pod_review(uid, &["nginx:1.25"]))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let metrics = client.get(&server.url("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(metrics.body.to_vec()).expect("utf-8");
    for expected in [
        "imageswap_admission_requests_total{outcome=\"patched\"} 3",
        "imageswap_images_swapped_total{rule=\"path\"} 3",
        "imageswap_cache_hits_total 2",
        "imageswap_cache_misses_total 1",
        "imageswap_maps_reload_total{result=\"success\"} 1",
        "imageswap_inflight_requests 0",
        "imageswap_shed_requests_total 0",
        "imageswap_admission_duration_seconds_count{outcome=\"patched\"} 3",
        "# TYPE imageswap_admission_duration_seconds histogram",
        "imageswap_build_info{version=",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    // No uid, namespace or image ever becomes a label.
    for forbidden in ["m-1", "nginx", "namespace=", "uid=", "image="] {
        assert!(!text.contains(forbidden), "{forbidden} leaked into\n{text}");
    }

    // The plain-HTTP metrics port serves /metrics and nothing else.
    let addr = server.metrics_addr.expect("metrics port");
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let response = plain
        .get(format!("http://{addr}/metrics").parse().expect("uri"))
        .await
        .expect("metrics over plain HTTP");
    assert_eq!(response.status(), StatusCode::OK);
    let response = plain
        .get(format!("http://{addr}/healthz").parse().expect("uri"))
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_timeout_gets_503() {
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            request_timeout: Duration::from_millis(300),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let body = pod_review("slow", &["nginx"]);
    let mut raw = RawTls::connect(&server).await;
    let started = Instant::now();
    raw.start_post("/", &body, body.len() / 2).await;
    let (status, answer) = raw.read_response().await;
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
    assert!(
        elapsed >= Duration::from_millis(280) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert!(
        server
            .metrics_text()
            .contains("imageswap_admission_timeouts_total 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_timeout_parameter_shortens_the_deadline() {
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            request_timeout: Duration::from_secs(10),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    // The API server's own timeout of 1s leaves a budget of 900 ms.
    let body = pod_review("short", &["nginx"]);
    let mut raw = RawTls::connect(&server).await;
    let started = Instant::now();
    raw.start_post("/?timeout=1s", &body, 10).await;
    let (status, _) = raw.read_response().await;
    let elapsed = started.elapsed();
    assert_eq!(status, 503);
    assert!(
        elapsed >= Duration::from_millis(850) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );

    // In time, the parameter changes nothing.
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/?timeout=10s"), pod_review("quick", &["nginx"]))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["response"]["patch"].is_string());
}
