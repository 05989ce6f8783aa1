//! The `imageswap serve` binary itself: configuration errors, signals and
//! exit codes, `--dev`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::binary::{Running, command, http_get, http_post};
use crate::support::otlp::{Collector, OtlpReceiver};
use crate::support::{eventually_blocking, fixtures_maps, pod_review};

fn maps_arg() -> String {
    fixtures_maps().display().to_string()
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let maps = maps_arg();
    let mut server = Running::start(&["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps]);
    let addr = server.listen_addr();
    let warned = server.wait_for("PLAIN HTTP");
    assert_eq!(warned["level"], "WARN");
    assert!(http_get(addr, "/healthz").starts_with("HTTP/1.1 200"));
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
}

#[test]
fn a_second_signal_exits_at_once() {
    let maps = maps_arg();
    // The request timeout is long so that the held request below is still in
    // flight when the second signal comes, however slow the machine (the
    // longest the webhook's timeoutSeconds allows).
    let mut server = Running::start(&[
        "--insecure-http",
        "--listen",
        "127.0.0.1:0",
        "--maps",
        &maps,
        "--request-timeout",
        "29s",
        "--webhook-timeout",
        "30s",
    ]);
    let addr = server.listen_addr();
    // A request held in flight would keep a graceful shutdown waiting 20 s.
    let body = pod_review("held", &["nginx"]);
    let mut held = TcpStream::connect(addr).expect("connect");
    write!(
        held,
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .expect("head");
    held.write_all(&body[..10]).expect("part of the body");
    // In flight once the server has read its head and entered the stack:
    // its own gauge says so (a signal before that would find nothing to wait for).
    let inflight = eventually_blocking(Duration::from_secs(10), || {
        http_get(addr, "/metrics").contains("\nimageswap_inflight_requests 1\n")
    });
    assert!(inflight, "the held request never reached the server");
    server.signal("TERM");
    server.wait_for("Stopped accepting");
    let started = Instant::now();
    server.signal("INT");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 130);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "far under the 20 s grace"
    );
    // The log line of the forced exit is flushed before the process goes.
    server.wait_for("Second signal");
}

#[test]
fn a_bad_setting_stops_the_start_with_one_line_naming_the_variable() {
    for (variable, value) in [
        ("IMAGESWAP_MAX_CONCURRENCY", "0"),
        ("IMAGESWAP_REQUEST_TIMEOUT", "soon"),
        ("IMAGESWAP_LISTEN", "everywhere"),
        ("IMAGESWAP_LOOP_THRESHOLD", "many"),
        ("IMAGESWAP_LOOP_THRESHOLD", "-1"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
    ] {
        let mut serve = command();
        serve.arg("serve").env(variable, value);
        if variable == "OTEL_TRACES_SAMPLER_ARG" {
            serve.env("OTEL_TRACES_SAMPLER", "traceidratio");
        }
        let output = serve.output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{variable}");
        if variable.starts_with("OTEL_") {
            // Checked after clap, by ImageSwap: exactly one line.
            assert_eq!(
                String::from_utf8_lossy(&output.stderr).lines().count(),
                1,
                "{variable}"
            );
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(variable), "{variable}: {stderr}");
    }
}

#[test]
fn dev_mode_serves_the_example_maps_over_tls_and_prints_a_curl_command() {
    let mut server = Running::start(&["--dev", "--listen", "127.0.0.1:0"]);
    let addr = server.listen_addr();
    let mut stdout = BufReader::new(server.child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("curl") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("stdout") > 0,
            "stdout ended: {printed}"
        );
        printed.push_str(&line);
    }
    let command = printed
        .lines()
        .find(|l| l.contains("curl"))
        .expect("curl line")
        .trim()
        .to_owned();
    assert!(command.contains(&format!("https://{addr}/mutate")), "{command}");
    assert!(command.contains("examples/admission-review.json"), "{command}");
    let maps = server.wait_for("Maps loaded.");
    assert!(
        maps["path"]
            .as_str()
            .expect("path")
            .ends_with("examples/imageswap-maps.conf")
    );

    // Run the printed command as a person would, when the tools are there.
    let have_curl = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if have_curl {
        let output = Command::new("sh").args(["-c", &command]).output().expect("sh");
        let patch: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        assert_eq!(patch[0]["op"], "replace", "{patch}");
        assert_eq!(patch[0]["path"], "/spec/containers/0/image");
    }
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
}

#[test]
fn empty_otel_variables_count_as_unset() {
    let maps = maps_arg();
    let mut server = Running::start_with_env(
        &["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_TRACES_SAMPLER", ""),
            ("OTEL_SERVICE_NAME", ""),
        ],
    );
    let addr = server.listen_addr();
    assert!(http_get(addr, "/healthz").starts_with("HTTP/1.1 200"));
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
    let exporting = server
        .seen
        .borrow()
        .iter()
        .any(|l| l["message"] == "Exporting traces over OTLP/HTTP.");
    assert!(!exporting, "traces stay off");
}

/// The binary as deployed: the variables of the deploy example, a request
/// from "the API server" with a traceparent, then SIGTERM before the batch
/// delay is over: the span reaches the collector by the flush at shutdown,
/// and the JSON log line of the review carries its ids.
#[test]
fn the_binary_exports_spans_and_flushes_them_at_shutdown() {
    let collector_rt = tokio::runtime::Runtime::new().expect("runtime");
    let collector = collector_rt.block_on(OtlpReceiver::start(Collector::Answers));
    let maps = maps_arg();
    let endpoint = collector.endpoint();
    let mut server = Running::start_with_env(
        &["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "imageswap-binary"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
            ("IMAGESWAP_POD_NAME", "imageswap-7d4b9-x2x5q"),
        ],
    );
    let addr = server.listen_addr();
    let started = server.wait_for("Exporting traces over OTLP/HTTP.");
    assert_eq!(started["endpoint"], format!("{endpoint}/v1/traces"));
    // Ratio 0 samples no new trace, but a sampled parent is followed.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("traceparent: 00-{trace_id}-00f067aa0ba902b7-01\r\n");
    let body = pod_review("binary-1", &["nginx:1.25"]);
    assert!(http_post(addr, "/", &traceparent, &body).starts_with("HTTP/1.1 200"));
    assert!(http_post(addr, "/", "", &pod_review("binary-2", &["nginx:1.25"])).starts_with("HTTP/1.1 200"));
    let signalled = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), 0);
    let spans = collector.spans();
    assert_eq!(
        spans.len(),
        1,
        "only the sampled parent's span: {:?}",
        spans.iter().map(|s| s.attributes()).collect::<Vec<_>>()
    );
    let span = &spans[0];
    assert_eq!(span.trace_id(), trace_id);
    assert_eq!(span.str("imageswap.uid"), Some("binary-1"));
    assert_eq!(span.resource_str("service.name"), Some("imageswap-binary"));
    assert_eq!(span.resource_str("k8s.pod.name"), Some("imageswap-7d4b9-x2x5q"));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let line = server.wait_for("Admission reviewed.");
    assert_eq!(line["uid"], "binary-1");
    assert_eq!(line["trace_id"], trace_id);
    assert_eq!(line["span_id"], span.span_id());
}

#[test]
fn the_review_line_carries_each_swap_and_says_the_metric_outcome() {
    let maps = maps_arg();
    // `nginx:1.25` is swapped by the fixtures' maps, `mirror.example.com/x:1` left alone.
    let review = pod_review("logged", &["nginx:1.25", "mirror.example.com/x:1"]);
    let mut server = Running::start_with_env(
        &["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps],
        &[("IMAGESWAP_LOG_LEVEL", "DEBUG")],
    );
    let addr = server.listen_addr();
    assert!(http_post(addr, "/", "", &review).starts_with("HTTP/1.1 200"));
    // One INFO line per admission (issue 24): the review line carries its
    // swaps, a JSON array of {container, from, to, rule}.
    let reviewed = server.wait_for("Admission reviewed.");
    assert_eq!(reviewed["level"], "INFO");
    let swaps = reviewed["swaps"].as_array().expect("the swaps, a JSON array");
    assert_eq!(swaps.len(), 1, "{reviewed}");
    let swapped = &swaps[0];
    assert_eq!(swapped["container"], "containers[0]");
    assert_eq!(swapped["from"], "nginx:1.25");
    assert_eq!(swapped["to"], "mirror.example.com/library/nginx:1.25");
    assert_eq!(swapped["rule"], "path");
    let unchanged = server.wait_for("Image left unchanged.");
    assert_eq!(unchanged["level"], "DEBUG");
    assert_eq!(unchanged["image"], "mirror.example.com/x:1");
    assert_eq!(unchanged["rule"], "registry");
    assert_eq!(reviewed["outcome"], "patched", "the metric's word: {reviewed}");
    let metrics = http_get(addr, "/metrics");
    assert!(
        metrics.contains("imageswap_admission_requests_total{outcome=\"patched\"} 1"),
        "{metrics}"
    );
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
    server.wait_for("Requests in flight finished.");
    let info_lines_of_the_review: Vec<_> = server
        .seen
        .borrow()
        .iter()
        .filter(|l| l["uid"] == "logged" && l["level"] == "INFO")
        .cloned()
        .collect();
    assert_eq!(
        info_lines_of_the_review.len(),
        1,
        "one INFO line per admission: {info_lines_of_the_review:?}"
    );

    // Switched off: the review line stays, without its swaps.
    let mut quiet = Running::start_with_env(
        &["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps],
        &[("IMAGESWAP_LOG_SWAPS", "FALSE")],
    );
    let addr = quiet.listen_addr();
    assert!(http_post(addr, "/", "", &review).starts_with("HTTP/1.1 200"));
    let reviewed = quiet.wait_for("Admission reviewed.");
    assert_eq!(reviewed["changed"], 1, "still counted: {reviewed}");
    quiet.signal("TERM");
    assert_eq!(quiet.wait_exit(Duration::from_secs(5)), 0);
    quiet.wait_for("Requests in flight finished.");
    assert!(
        !quiet
            .seen
            .borrow()
            .iter()
            .any(|l| l.get("swaps").is_some() || l["message"] == "Image swapped."),
        "IMAGESWAP_LOG_SWAPS=FALSE: {:?}",
        quiet.seen.borrow()
    );
}

/// A server on a maps file of its own (the directory lives as long as the
/// returned guard).
fn serve_maps(maps: &str) -> (tempfile::TempDir, std::path::PathBuf, Running) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("imageswap-maps.conf");
    std::fs::write(&path, maps).expect("write");
    let arg = path.display().to_string();
    let server = Running::start(&["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &arg]);
    (dir, path, server)
}

/// The JSON body of an HTTP/1.1 answer.
fn answer_json(answer: &str) -> serde_json::Value {
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    serde_json::from_str(body).expect("a JSON answer")
}

/// issue 21: truncating the maps file of a running server is refused with
/// one ERROR line that says why and what to write instead.
#[test]
fn an_emptied_maps_file_is_one_error_line_and_no_reload() {
    let (_dir, maps, mut server) = serve_maps("default::a.example\n");
    let addr = server.listen_addr();
    server.wait_for("Maps loaded.");
    std::fs::write(&maps, "").expect("truncate");
    let refused = server.wait_for("Cannot reload the maps file");
    assert_eq!(refused["level"], "ERROR");
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("has no rule") && error.contains("`default::`"),
        "{refused}"
    );
    let metrics = http_get(addr, "/metrics");
    assert!(
        metrics.contains("imageswap_maps_reload_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    let answer = http_post(addr, "/", "", &pod_review("after", &["nginx:1.25"]));
    let patch = crate::support::decoded_patch(&answer_json(&answer));
    assert_eq!(
        patch[0]["value"], "a.example/nginx:1.25",
        "still swaps with the last good maps"
    );
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
    assert!(
        !server
            .seen
            .borrow()
            .iter()
            .any(|l| l["message"] == "Maps reloaded."),
        "{:?}",
        server.seen.borrow()
    );
}

/// issue 21: an image whose rule gives an invalid reference is kept, with a
/// WARN line naming the container, the rule and the result, a warning in
/// the answer and a count.
#[test]
fn an_invalid_result_is_kept_with_a_warn_line_a_warning_and_a_count() {
    let (_dir, _, mut server) = serve_maps("default::harbor.example.com\nquay.io::mirror.example.com/Team\n");
    let addr = server.listen_addr();
    let review = pod_review("bad-rule", &["quay.io/org/app:1", "nginx:1.27"]);
    let answer = answer_json(&http_post(addr, "/", "", &review));
    let patch = crate::support::decoded_patch(&answer);
    assert_eq!(
        patch,
        serde_json::json!([
            {"op": "replace", "path": "/spec/containers/1/image", "value": "harbor.example.com/nginx:1.27"},
            {"op": "add", "path": "/metadata/annotations",
             "value": {imageswap::admission::ORIGINAL_IMAGES_ANNOTATION: r#"{"c1":"nginx:1.27"}"#}},
        ])
    );
    assert_eq!(
        crate::support::warnings(&answer),
        [
            "imageswap: kept quay.io/org/app:1: rule quay.io gives an invalid image \"mirror.example.com/Team/org/app:1\""
        ]
    );
    let kept = server.wait_for("Image kept: its rule gives an invalid image.");
    assert_eq!(kept["level"], "WARN");
    assert_eq!(kept["container"], "containers[0]");
    assert_eq!(kept["image"], "quay.io/org/app:1");
    let metrics = http_get(addr, "/metrics");
    assert!(metrics.contains("imageswap_invalid_results_total 1"), "{metrics}");
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
}

/// issue 21 item 7: a review whose images stayed for a reason says which
/// on its log line (`kept`), so it does not read like one no rule matched.
#[test]
fn the_review_line_says_why_images_were_kept() {
    let (_dir, _, mut server) = serve_maps("default::harbor.example.com\nquay.io::mirror.example.com/Team\n");
    let addr = server.listen_addr();
    let answer = http_post(addr, "/", "", &pod_review("kept", &["quay.io/org/app:1", "auto"]));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let reviewed = server.wait_for("Admission reviewed.");
    assert_eq!(reviewed["verdict"], "unchanged", "{reviewed}");
    assert_eq!(reviewed["kept"], "invalid-result,placeholder", "{reviewed}");
    let answer = http_post(addr, "/", "", &pod_review("plain", &["harbor.example.com/x:1"]));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
    server.wait_for("Requests in flight finished.");
    let seen = server.seen.borrow();
    let plain = seen
        .iter()
        .filter(|l| l["message"] == "Admission reviewed.")
        .nth(1)
        .expect("the second review's line");
    assert_eq!(plain["kept"], "", "no reason: {plain}");
}
