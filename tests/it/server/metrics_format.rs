//! `/metrics` after real traffic, read by a real OpenMetrics parser (the
//! server answers `application/openmetrics-text`): every metric of the
//! server issue is there with its type, and the values moved.
//!
//! The parser is the Prometheus project's own (client_python's OpenMetrics
//! parser, the format's reference implementation), run by
//! `scripts/prometheus-tools openmetrics`. Not `promtool check metrics`:
//! it reads only the classic text format, and Debian's (2.42) stops at
//! `imageswap_build`: `unknown metric type "info"`. Not the
//! openmetrics-parser crate: it refuses a `# UNIT` line on a histogram,
//! which OpenMetrics allows and `imageswap_admission_duration_seconds` has.

use http::StatusCode;
use imageswap::config::Limits;
use serde_json::Value;

use crate::support::server::{Protocol, Setup, TestServer};
use crate::support::{pod_review, prometheus_tools};

/// Every family and its type: the server issue's metrics, and the trace
/// export counters.
const EXPECTED: &[(&str, &str)] = &[
    ("imageswap_admission_requests", "counter"),
    ("imageswap_admission_duration_seconds", "histogram"),
    ("imageswap_images_swapped", "counter"),
    ("imageswap_cache_hits", "counter"),
    ("imageswap_cache_misses", "counter"),
    ("imageswap_maps_reload", "counter"),
    ("imageswap_maps_rules", "gauge"),
    ("imageswap_maps_findings", "gauge"),
    ("imageswap_inflight_requests", "gauge"),
    ("imageswap_shed_requests", "counter"),
    ("imageswap_build", "info"),
    ("imageswap_trace_spans_exported", "counter"),
    ("imageswap_trace_spans_dropped", "counter"),
    ("imageswap_verify_fallbacks", "counter"),
    ("imageswap_pull_secrets_added", "counter"),
];

/// Parses an exposition: `Ok(families)` or `Err(the parser's one-line complaint)`.
fn parse(text: &str) -> Result<Vec<Value>, String> {
    prometheus_tools("openmetrics", text).map(|families| families.as_array().expect("a list").clone())
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no metric family {name}"))
}

/// The value of the sample `sample` of `family` with these labels.
fn value(families: &[Value], family_name: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    family(families, family_name)["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .find(|s| s["name"] == sample && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .unwrap_or_else(|| panic!("no sample {sample}{labels:?}"))["value"]
        .as_f64()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_parse_as_openmetrics_with_every_metric() {
    let server = TestServer::start_with(Setup {
        limits: Limits {
            max_body_bytes: 4096,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let client = server.client(Protocol::Http2);
    for (uid, images) in [
        ("m-1", &["nginx:1.25", "busybox:1.36"][..]),
        ("m-2", &["nginx:1.25"][..]),
        ("m-3", &["registry.k8s.io/pause:3.9"][..]),
    ] {
        let answer = client.post(&server.url("/"), pod_review(uid, images)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(
        client.post(&server.url("/"), "not a review").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client.post(&server.url("/"), vec![b' '; 8192]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    let answer = client.get(&server.url("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let content_type = answer.headers["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = String::from_utf8(answer.body.to_vec()).expect("UTF-8");
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    for (name, kind) in EXPECTED {
        let f = family(&families, name);
        assert_eq!(f["type"], *kind, "{name}");
        assert!(
            f["help"].as_str().is_some_and(|h| !h.is_empty()),
            "{name} has help text"
        );
    }
    assert_eq!(
        family(&families, "imageswap_admission_duration_seconds")["unit"],
        "seconds"
    );

    // The traffic above, counted, under the sample names the issue lists.
    let requests = |outcome| {
        value(
            &families,
            "imageswap_admission_requests",
            "imageswap_admission_requests_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(requests("patched"), 2.0);
    assert_eq!(requests("unchanged"), 1.0);
    assert_eq!(requests("bad_request"), 1.0);
    assert_eq!(requests("too_large"), 1.0);
    assert_eq!(requests("shed"), 0.0);
    let swapped: f64 = family(&families, "imageswap_images_swapped")["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s["value"].as_f64().expect("number"))
        .sum();
    assert_eq!(swapped, 3.0, "nginx twice and busybox");
    let single = |family_name: &str, sample: &str| value(&families, family_name, sample, &[]);
    assert_eq!(single("imageswap_cache_hits", "imageswap_cache_hits_total"), 1.0);
    assert_eq!(
        single("imageswap_cache_misses", "imageswap_cache_misses_total"),
        3.0
    );
    assert_eq!(
        single("imageswap_inflight_requests", "imageswap_inflight_requests"),
        0.0
    );
    assert_eq!(
        single("imageswap_shed_requests", "imageswap_shed_requests_total"),
        0.0
    );
    assert_eq!(
        value(
            &families,
            "imageswap_maps_reload",
            "imageswap_maps_reload_total",
            &[("result", "error")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &families,
            "imageswap_build",
            "imageswap_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let duration = "imageswap_admission_duration_seconds";
    let patched = [("outcome", "patched")];
    assert_eq!(
        value(&families, duration, &format!("{duration}_count"), &patched),
        2.0
    );
    assert!(value(&families, duration, &format!("{duration}_sum"), &patched) > 0.0);
    assert_eq!(
        value(
            &families,
            duration,
            &format!("{duration}_bucket"),
            &[("outcome", "patched"), ("le", "+Inf")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &families,
            "imageswap_trace_spans_dropped",
            "imageswap_trace_spans_dropped_total",
            &[("reason", "queue_full")]
        ),
        0.0,
        "traces are off"
    );

    assert_eq!(
        value(
            &families,
            "imageswap_verify_fallbacks",
            "imageswap_verify_fallbacks_total",
            &[("reason", "missing")]
        ),
        0.0,
        "verification is off"
    );

    // The parser does refuse what is not OpenMetrics.
    let error = parse(&text.replace("# EOF\n", "")).expect_err("no # EOF");
    assert!(error.contains("EOF"), "{error}");
    let error = parse(&text.replace("imageswap_cache_hits_total ", "imageswap_cache_hits "))
        .expect_err("counter without _total");
    assert!(
        error.starts_with("prometheus-tools: not valid OpenMetrics"),
        "{error}"
    );
}
