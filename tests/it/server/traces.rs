//! OpenTelemetry traces end to end: a real server, real HTTPS requests, the
//! real OTLP/HTTP exporter, and a collector inside the test that decodes what
//! arrives (`support::otlp`). Also what a collector that hangs or is down
//! does to admissions (every one answered, none waiting on the collector),
//! and to the dropped-span counters. How much a hung or absent collector
//! costs a request, compared with traces off, is measured by the bench
//! `cargo bench --bench traces`, not asserted here: timing belongs to
//! benchmarks, and a parallel test run is no place to compare latencies.
//!
//! Each test builds its own runtime whose threads use the test's own
//! subscriber (`support::traces::Traced`: logs into a buffer, spans to the
//! test's collector), so the tests do not depend on a process-wide
//! subscriber. The collector runs on a runtime of its own, as a collector is
//! another process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use imageswap::config::Limits;
use imageswap::telemetry::logging::LogFormat;
use imageswap::telemetry::metrics::Metrics;

use crate::support::otlp::{Collector, OtlpReceiver, ReceivedSpan, refused_endpoint};
use crate::support::server::{Protocol, RawTls, Setup, TestServer};
use crate::support::traces::{Traced, collector_runtime, trace_config};
use crate::support::{eventually, pod_review};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn server_setup(metrics: &Arc<Metrics>) -> Setup {
    Setup {
        metrics: Some(metrics.clone()),
        ..Setup::default()
    }
}

async fn post_with_traceparent(server: &TestServer, body: Vec<u8>, traceparent: Option<&str>) -> StatusCode {
    let client = server.client(Protocol::Http2);
    let mut request = http::Request::post(server.url("/")).header("content-type", "application/json");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    client.send(request).await.status
}

fn by_uid<'a>(spans: &'a [ReceivedSpan], uid: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.span.name == "imageswap.admission" && s.str("imageswap.uid") == Some(uid))
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[test]
fn admission_spans_reach_the_collector_with_their_attributes_parent_and_resource() {
    let collector_rt = collector_runtime();
    let collector = collector_rt.block_on(OtlpReceiver::start(Collector::Answers));
    let mut traced = Traced::new(
        &trace_config(&collector.endpoint()),
        "INFO",
        LogFormat::Json,
        2048,
    );
    let (spans, metrics_text) = traced.run(async |_traces, metrics| {
        let server = TestServer::start_with(server_setup(&metrics)).await;
        let images = ["nginx:1.25", "nginx:1.25", "registry.k8s.io/pause:3.9"];
        // The API server's sampled-out trace: followed (parentbased), not exported.
        let unsampled = format!("00-{UNSAMPLED_TRACE_ID}-{PARENT_ID}-00");
        let status =
            post_with_traceparent(&server, pod_review("u-unsampled", &images), Some(&unsampled)).await;
        assert_eq!(status, StatusCode::OK);
        let sampled = format!("00-{TRACE_ID}-{PARENT_ID}-01");
        let status = post_with_traceparent(&server, pod_review("u-parent", &images), Some(&sampled)).await;
        assert_eq!(status, StatusCode::OK);
        let status = post_with_traceparent(&server, pod_review("u-root", &["nginx:1.25"]), None).await;
        assert_eq!(status, StatusCode::OK);
        let status = post_with_traceparent(&server, b"not json".to_vec(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A body that never arrives: 503 at the request timeout.
        let slow = TestServer::start_with(Setup {
            limits: Limits {
                request_timeout: Duration::from_millis(200),
                ..Setup::default().limits
            },
            ..server_setup(&metrics)
        })
        .await;
        let mut raw = RawTls::connect(&slow).await;
        raw.start_post("/", &pod_review("u-slow", &["nginx:1.25"]), 10)
            .await;
        assert_eq!(raw.read_response().await.0, 503);
        let outcome = |spans: &[ReceivedSpan], outcome: &str| {
            spans.iter().any(|s| s.str("imageswap.outcome") == Some(outcome))
        };
        let spans = collector
            .wait_for(Duration::from_secs(10), |spans| {
                by_uid(spans, "u-parent").is_some()
                    && by_uid(spans, "u-root").is_some()
                    && outcome(spans, "bad_request")
                    && outcome(spans, "timeout")
            })
            .await;
        // The collector holds the spans before the exporter's call returns and
        // counts them: wait for the count (under load the two can be apart).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut metrics_text = server.metrics_text();
        while metric(&metrics_text, "imageswap_trace_spans_exported_total") < 3.0 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            metrics_text = server.metrics_text();
        }
        (spans, metrics_text)
    });

    // The child of the API server's span, with every attribute.
    let parent = by_uid(&spans, "u-parent").expect("span of u-parent");
    assert_eq!(parent.trace_id(), TRACE_ID);
    assert_eq!(parent.parent_span_id(), PARENT_ID);
    assert_eq!(parent.span.kind, 2, "SpanKind::Server");
    assert_eq!(parent.scope, "imageswap");
    let attributes = parent.attributes();
    assert_eq!(
        parent.str("imageswap.operation"),
        Some("CREATE"),
        "{attributes:?}"
    );
    assert_eq!(parent.str("imageswap.kind"), Some("Pod"), "{attributes:?}");
    assert_eq!(
        parent.str("imageswap.namespace"),
        Some("default"),
        "{attributes:?}"
    );
    assert_eq!(parent.str("imageswap.name"), Some("u-parent"), "{attributes:?}");
    assert_eq!(parent.bool("imageswap.dry_run"), Some(false), "{attributes:?}");
    assert_eq!(parent.int("imageswap.images.seen"), Some(3), "{attributes:?}");
    assert_eq!(parent.int("imageswap.images.changed"), Some(2), "{attributes:?}");
    // The same image twice in one pod: the second is a hit. u-unsampled ran
    // first and warmed the cache for all three.
    assert_eq!(parent.int("imageswap.cache.hits"), Some(3), "{attributes:?}");
    assert_eq!(parent.str("imageswap.outcome"), Some("patched"), "{attributes:?}");
    assert_eq!(
        parent.int("http.response.status_code"),
        Some(200),
        "{attributes:?}"
    );
    assert_eq!(
        parent.span.status.as_ref().map_or(0, |s| s.code),
        0,
        "status unset"
    );
    assert!(parent.span.end_time_unix_nano >= parent.span.start_time_unix_nano);

    // The resource: settings, pod, SDK.
    assert_eq!(parent.resource_str("service.name"), Some("imageswap-test"));
    assert_eq!(
        parent.resource_str("service.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(parent.resource_str("k8s.pod.name"), Some("imageswap-test-0"));
    assert_eq!(
        parent.resource_str("k8s.namespace.name"),
        Some("imageswap-system")
    );
    assert_eq!(parent.resource_str("deployment.environment.name"), Some("test"));
    assert_eq!(parent.resource_str("telemetry.sdk.language"), Some("rust"));

    // Without traceparent: a root span of a new trace.
    let root = by_uid(&spans, "u-root").expect("span of u-root");
    assert!(root.span.parent_span_id.is_empty());
    assert_eq!(root.trace_id().len(), 32);
    assert_ne!(root.trace_id(), TRACE_ID);
    assert_eq!(root.int("imageswap.cache.hits"), Some(1));

    // A body that is not a review still has its span, with the outcome.
    let bad = spans
        .iter()
        .find(|s| s.str("imageswap.outcome") == Some("bad_request"))
        .expect("bad request span");
    assert_eq!(bad.int("http.response.status_code"), Some(400));
    assert!(bad.str("imageswap.uid").is_none());

    // A 503 is the server's failure: the span's status is ERROR.
    let timeout = spans
        .iter()
        .find(|s| s.str("imageswap.outcome") == Some("timeout"))
        .expect("timeout span");
    assert_eq!(timeout.int("http.response.status_code"), Some(503));
    assert_eq!(
        timeout.span.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );

    // Sampled out by the parent: never exported. (It finished before the
    // others, so it would have been in the same or an earlier batch.)
    assert!(by_uid(&spans, "u-unsampled").is_none());
    assert!(spans.iter().all(|s| s.trace_id() != UNSAMPLED_TRACE_ID));
    // No decision spans at INFO.
    assert!(spans.iter().all(|s| s.span.name == "imageswap.admission"));

    // JSON log lines carry the ids of the span they were written in.
    let lines = traced.logs.json_lines();
    let reviewed = |uid: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "Admission reviewed." && l["uid"] == uid)
            .unwrap_or_else(|| panic!("no log line for {uid} in {lines:?}"))
            .clone()
    };
    let line = reviewed("u-parent");
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["span_id"], parent.span_id(), "{line}");
    let line = reviewed("u-root");
    assert_eq!(line["trace_id"], root.trace_id(), "{line}");
    // Outside a trace (the start-up line), no ids.
    let serving = lines
        .iter()
        .find(|l| l["message"] == "ImageSwap is serving.")
        .expect("start-up line");
    assert!(serving.get("trace_id").is_none(), "{serving}");
    // No span fields repeated on the line.
    assert!(
        line.get("span").is_none() && line.get("spans").is_none(),
        "{line}"
    );

    assert!(metric(&metrics_text, "imageswap_trace_spans_exported_total") >= 3.0);
    assert_eq!(
        metric(
            &metrics_text,
            "imageswap_trace_spans_dropped_total{reason=\"queue_full\"}"
        ),
        0.0
    );
}

#[test]
fn at_debug_each_decision_is_a_child_span_and_text_logs_say_things_once() {
    let collector_rt = collector_runtime();
    let collector = collector_rt.block_on(OtlpReceiver::start(Collector::Answers));
    let mut traced = Traced::new(
        &trace_config(&collector.endpoint()),
        "DEBUG",
        LogFormat::Text,
        2048,
    );
    let spans = traced.run(async |_traces, metrics| {
        let server = TestServer::start_with(server_setup(&metrics)).await;
        let images = ["nginx:1.25", "registry.k8s.io/pause:3.9"];
        let status = post_with_traceparent(&server, pod_review("u-debug", &images), None).await;
        assert_eq!(status, StatusCode::OK);
        collector
            .wait_for(Duration::from_secs(10), |spans| {
                by_uid(spans, "u-debug").is_some()
                    && spans
                        .iter()
                        .filter(|s| s.span.name == "imageswap.decision")
                        .count()
                        == 2
            })
            .await
    });
    let admission = by_uid(&spans, "u-debug").expect("admission span");
    let decisions: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.span.name == "imageswap.decision")
        .collect();
    for decision in &decisions {
        assert_eq!(decision.trace_id(), admission.trace_id());
        assert_eq!(decision.parent_span_id(), admission.span_id());
        assert!(decision.str("imageswap.rule").is_some_and(|r| !r.is_empty()));
        assert_eq!(decision.bool("imageswap.cache.hit"), Some(false), "a fresh cache");
    }
    let nginx = decisions
        .iter()
        .find(|d| d.str("imageswap.image") == Some("nginx:1.25"))
        .expect("nginx decision");
    assert_eq!(
        nginx.str("imageswap.image.result"),
        Some("mirror.example.com/library/nginx:1.25")
    );
    let pause = decisions
        .iter()
        .find(|d| d.str("imageswap.image") == Some("registry.k8s.io/pause:3.9"))
        .expect("pause decision");
    assert!(pause.str("imageswap.image.result").is_none(), "unchanged");

    // The text line of the review: its fields once, no span prefix.
    let text = traced.logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("Admission reviewed."))
        .unwrap_or_else(|| panic!("no review line in\n{text}"));
    assert_eq!(line.matches("uid=").count(), 1, "{line}");
    assert_eq!(line.matches("namespace=").count(), 1, "{line}");
    assert!(!line.contains("imageswap.admission"), "{line}");
    assert!(!line.contains('{'), "no span context: {line}");
}

/// Latencies of `count` sequential reviews, sorted. The client has
/// `TCP_NODELAY`, as the API server's has (`support::server::TestClient`).
async fn latencies(server: &TestServer, count: usize) -> Vec<Duration> {
    let client = server.client(Protocol::Http2);
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let body = pod_review(&format!("lat-{i}"), &["nginx:1.25", "busybox:1.36"]);
        let request = http::Request::post(server.url("/"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let start = Instant::now();
        let status = client.send(request).await.status;
        latencies.push(start.elapsed());
        assert_eq!(status, StatusCode::OK);
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Every admission answered, and none waited for the collector: a request
/// path that did would take the export timeout (60 s in the hanging case)
/// or hit the request timeout. An absolute bound, far above any request's
/// time on a loaded machine; how the latencies compare with traces off is
/// the bench's (`cargo bench --bench traces`).
fn assert_none_waited(case: &str, measured: &[Duration]) {
    let (m50, m99, max) = (
        percentile(measured, 0.5),
        percentile(measured, 0.99),
        percentile(measured, 1.0),
    );
    eprintln!("{case}: p50 {m50:?} p99 {m99:?} max {max:?}");
    assert!(max < Duration::from_secs(1), "{case}: max {max:?}");
}

const REQUESTS: usize = 200;

#[test]
fn a_hanging_collector_never_slows_admissions_and_overflow_is_counted() {
    let collector_rt = collector_runtime();
    let collector = collector_rt.block_on(OtlpReceiver::start(Collector::Hangs));
    let mut config = trace_config(&collector.endpoint());
    config.export_timeout = Duration::from_secs(60);
    // A small queue, so the first hung batch makes it overflow.
    let mut traced = Traced::new(&config, "INFO", LogFormat::Json, 16);
    let (measured, metrics_text, flush) = traced.run(async |traces, metrics| {
        let server = TestServer::start_with(server_setup(&metrics)).await;
        // One span, exported after the batch delay: that export hangs, so
        // from then on nothing leaves the queue.
        let status = post_with_traceparent(&server, pod_review("first", &["nginx:1.25"]), None).await;
        assert_eq!(status, StatusCode::OK);
        let hung = eventually(Duration::from_secs(5), async || collector.requests() >= 1).await;
        assert!(hung, "the exporter sent the collector its first batch");
        let measured = latencies(&server, REQUESTS).await;
        let metrics_text = server.metrics_text();
        // Shutdown with the collector still hanging: bounded.
        let start = Instant::now();
        traces.shutdown(Duration::from_millis(500)).await;
        (measured, metrics_text, start.elapsed())
    });
    assert_none_waited("collector hangs", &measured);
    // The queue (16) filled; every later span was dropped and counted.
    let dropped = metric(
        &metrics_text,
        "imageswap_trace_spans_dropped_total{reason=\"queue_full\"}",
    );
    assert_eq!(dropped, (REQUESTS - 16) as f64, "{metrics_text}");
    assert_eq!(metric(&metrics_text, "imageswap_trace_spans_exported_total"), 0.0);
    assert!(flush < Duration::from_millis(1500), "flush bounded: {flush:?}");
    assert!(
        traced.logs.json_lines().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The trace collector did not take"))),
        "the lost flush is logged"
    );
}

#[test]
fn a_collector_that_is_down_fails_exports_not_admissions() {
    let config = trace_config(&refused_endpoint());
    let mut traced = Traced::new(&config, "INFO", LogFormat::Json, 2048);
    let (measured, failed) = traced.run(async |_traces, metrics| {
        let server = TestServer::start_with(server_setup(&metrics)).await;
        let measured = latencies(&server, REQUESTS).await;
        // Every span ends up counted: queued, tried, refused.
        let counted = eventually(Duration::from_secs(10), async || {
            metric(
                &server.metrics_text(),
                "imageswap_trace_spans_dropped_total{reason=\"export_failed\"}",
            ) >= REQUESTS as f64
        })
        .await;
        assert!(counted, "{}", server.metrics_text());
        (measured, server.metrics_text())
    });
    assert_none_waited("collector down", &measured);
    assert_eq!(
        metric(
            &failed,
            "imageswap_trace_spans_dropped_total{reason=\"export_failed\"}"
        ),
        REQUESTS as f64
    );
    assert_eq!(metric(&failed, "imageswap_trace_spans_exported_total"), 0.0);
    // One warning for the outage, not one per batch.
    let warnings = traced
        .logs
        .json_lines()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Trace export failed"))
        })
        .count();
    assert_eq!(warnings, 1);
}
