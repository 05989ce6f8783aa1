//! The files of deploy/observability that people import or apply: the
//! Grafana dashboard is well-formed, every query is valid PromQL (parsed by
//! the Prometheus grammar, scripts/prometheus-tools) reading only metrics
//! the server exports, and the panels the issues ask for are there (the
//! mirror verification row of issue 11 among them); the
//! Jaeger example's settings are valid and point at its own collector.

use std::collections::BTreeSet;

use imageswap::telemetry::logging::LogFormat;
use imageswap::telemetry::metrics::Metrics;
use imageswap::telemetry::trace_config::TraceArgs;
use imageswap::telemetry::trace_config::TraceConfig;
use serde_json::Value;

use crate::support::{prometheus_tools, read};

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/observability/grafana-dashboard.json"))
        .unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"))
}

/// Every sample name the server exposes (`…_total`, `…_bucket`, `…_info`).
fn exported_series() -> BTreeSet<String> {
    let metrics = Metrics::new();
    // Series labelled by registry exist once a check recorded one.
    record_one_check(&metrics);
    metrics
        .encode()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// One registry check recorded in every registry-labelled verify series,
/// which (like every labelled family) has no sample before its first use.
pub fn record_one_check(metrics: &Metrics) {
    let registry = "mirror.example.com";
    metrics.verify.check(registry, "present");
    metrics
        .verify
        .request_duration(registry, std::time::Duration::from_millis(3));
    metrics.verify.circuit_open(registry, false);
    metrics.verify.credentials_reload(true);
}

/// A panel's place on the grid: x, y, width, height.
type Rect = (u64, u64, u64, u64);

/// The panels, with the panels of collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

#[test]
fn the_dashboard_is_well_formed_for_grafana() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "imageswap");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name"))
        .collect();
    assert_eq!(variables, ["datasource", "job"]);

    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(&str, Rect)> = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_u64().expect("x"),
            grid["y"].as_u64().expect("y"),
            grid["w"].as_u64().expect("w"),
            grid["h"].as_u64().expect("h"),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {grid}");
        for &(other, (ox, oy, ow, oh)) in &boxes {
            let overlap = x < ox + ow && ox < x + w && y < oy + oh && oy < y + h;
            assert!(!overlap, "{title} overlaps {other}");
        }
        boxes.push((title, (x, y, w, h)));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().expect("refId"))
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
    }
}

#[test]
fn every_query_is_promql_over_exported_metrics_and_the_asked_panels_are_there() {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            assert!(
                expr.contains(r#"job=~"$job""#),
                "scoped to the job variable: {expr}"
            );
            if expr.contains("histogram_quantile") {
                // `by (le)`, or `by (le, registry)` for one quantile per registry.
                assert!(
                    expr.contains("by (le)") || expr.contains("by (le, "),
                    "quantiles aggregate by le: {expr}"
                );
            }
            queries.push(expr.to_owned());
        }
    }
    // Grafana's variables, as Grafana substitutes them before Prometheus parses.
    let substituted: Vec<String> = queries
        .iter()
        .map(|q| q.replace("$__rate_interval", "1m").replace("$job", ".*"))
        .collect();
    let input = serde_json::to_string(&substituted).expect("json");
    let parsed = prometheus_tools("promql", &input).unwrap_or_else(|e| panic!("{e}"));
    let reads: Vec<Vec<String>> = serde_json::from_value(parsed).expect("names per query");

    let exported = exported_series();
    let mut used = BTreeSet::new();
    for (query, names) in queries.iter().zip(&reads) {
        assert!(!names.is_empty(), "reads no metric: {query}");
        for name in names {
            assert!(
                exported.contains(name),
                "{name} is not exported by the server: {query}"
            );
            used.insert(name.as_str());
        }
    }
    // Request rate by outcome, latency quantiles, swaps by rule, cache hit
    // ratio, reloads, shed, in flight, dropped spans, the build.
    for wanted in [
        "imageswap_admission_requests_total",
        "imageswap_admission_duration_seconds_bucket",
        "imageswap_images_swapped_total",
        "imageswap_cache_hits_total",
        "imageswap_cache_misses_total",
        "imageswap_maps_reload_total",
        "imageswap_shed_requests_total",
        "imageswap_inflight_requests",
        "imageswap_trace_spans_dropped_total",
        "imageswap_build_info",
        // The "Mirror verification" row (docs/verify.md): checks by outcome
        // and registry, their latency, the verify cache, fallbacks, the
        // breakers, pull secrets added.
        "imageswap_verify_checks_total",
        "imageswap_verify_check_duration_seconds_bucket",
        "imageswap_verify_cache_total",
        "imageswap_verify_fallbacks_total",
        "imageswap_verify_circuit_open",
        "imageswap_pull_secrets_added_total",
    ] {
        assert!(used.contains(wanted), "no panel reads {wanted}");
    }
    let all = queries.join("\n");
    assert!(all.contains("sum by (outcome)"), "requests by outcome");
    assert!(all.contains("sum by (rule)"), "swaps by rule");
    assert!(
        all.contains("sum by (registry, outcome)"),
        "checks by registry and outcome"
    );
    assert!(all.contains("sum by (le, registry)"), "check latency by registry");
    assert!(all.contains("sum by (reason)"), "fallbacks by reason");
    assert!(all.contains("max by (registry)"), "circuit open by registry");

    // And the checker does refuse broken PromQL.
    let broken = serde_json::to_string(&["sum(rate(imageswap_cache_hits_total[1m])"]).expect("json");
    assert!(prometheus_tools("promql", &broken).is_err());
}

/// The Jaeger example: its settings are what ImageSwap accepts, and its
/// endpoint is the collector Service it defines, on the OTLP/HTTP port.
#[test]
fn the_jaeger_example_points_at_its_own_collector() {
    let patch: Value = serde_saphyr::from_str(&read("deploy/observability/jaeger/env-cm-patch.yaml"))
        .expect("env-cm-patch.yaml is YAML");
    let data = &patch["data"];
    let setting = |name: &str| data[name].as_str().map(str::to_owned);
    let args = TraceArgs {
        endpoint: setting("OTEL_EXPORTER_OTLP_ENDPOINT"),
        traces_endpoint: setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        protocol: setting("OTEL_EXPORTER_OTLP_PROTOCOL"),
        timeout: setting("OTEL_EXPORTER_OTLP_TIMEOUT"),
        service_name: setting("OTEL_SERVICE_NAME"),
        sampler: setting("OTEL_TRACES_SAMPLER"),
        sampler_arg: setting("OTEL_TRACES_SAMPLER_ARG"),
        resource_attributes: setting("OTEL_RESOURCE_ATTRIBUTES"),
    };
    let config = TraceConfig::from_args(&args)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the example turns traces on");
    assert_eq!(config.endpoint.path(), "/v1/traces");
    let host = config.endpoint.host().expect("host");
    let port = config.endpoint.port_u16().expect("an explicit port");
    assert_eq!(port, 4318, "OTLP over HTTP");
    assert_eq!(
        <LogFormat as clap::ValueEnum>::from_str(&setting("IMAGESWAP_LOG_FORMAT").expect("set"), true),
        Ok(LogFormat::Json),
        "trace ids are in JSON log lines"
    );

    let objects: Vec<Value> =
        serde_saphyr::from_multiple(&read("deploy/observability/jaeger/jaeger-all-in-one.yaml"))
            .expect("jaeger-all-in-one.yaml is YAML");
    let (service_name, namespace) = host
        .split_once('.')
        .map(|(name, rest)| (name, rest.split('.').next().unwrap_or(rest)))
        .expect("service.namespace");
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == service_name)
        .unwrap_or_else(|| panic!("no Service {service_name}"));
    assert_eq!(service["metadata"]["namespace"], namespace);
    let service_port = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == u64::from(port))
        .unwrap_or_else(|| panic!("{service_name} has no port {port}"));
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the Jaeger Deployment");
    let selector = service["spec"]["selector"].as_object().expect("selector");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(
        selector.iter().all(|(k, v)| labels[k] == *v),
        "the Service selects Jaeger"
    );
    let container_port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == service_port["targetPort"])
        .expect("the target port is a named container port");
    assert_eq!(container_port["containerPort"], 4318);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("receivers.otlp.protocols.http.endpoint=0.0.0.0:4318"),
        "Jaeger listens beyond localhost: {args}"
    );
}

/// The mirror verification alerts the issue asks for: a breaker open for
/// 5 minutes and a high share of fallbacks, each valid PromQL over the
/// verify metrics, with a runbook entry in docs/operations.md. (That the
/// metrics are exported is checked with the other alerts, in
/// tests/it/init/watch.rs.)
#[test]
fn the_verify_alerts_are_there_with_their_runbook() {
    let rules: Value = serde_saphyr::from_str(&read("deploy/observability/imageswap-alerts.yaml"))
        .expect("imageswap-alerts.yaml is YAML");
    let group = rules["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "imageswap-verify")
        .expect("a group imageswap-verify");
    let alert = |name: &str| -> &Value {
        group["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    let circuit = alert("ImageSwapVerifyCircuitOpen");
    let fallbacks = alert("ImageSwapVerifyFallbacksHigh");
    assert_eq!(circuit["for"], "5m", "circuit open for more than 5 minutes");
    let expressions = [
        circuit["expr"].as_str().expect("expr"),
        fallbacks["expr"].as_str().expect("expr"),
    ];
    let read_metrics = prometheus_tools("promql", &serde_json::to_string(&expressions).expect("json"))
        .unwrap_or_else(|e| panic!("a verify alert is not PromQL: {e}"));
    let read_metrics: Vec<Vec<String>> = serde_json::from_value(read_metrics).expect("names per query");
    assert_eq!(read_metrics[0], ["imageswap_verify_circuit_open"]);
    assert!(
        read_metrics[1]
            .iter()
            .any(|m| m == "imageswap_verify_fallbacks_total")
            && read_metrics[1]
                .iter()
                .any(|m| m == "imageswap_verify_cache_total"),
        "fallbacks as a share of the images checked: {:?}",
        read_metrics[1]
    );
    assert!(
        expressions[1].contains("> 0.1"),
        "a ratio threshold: {}",
        expressions[1]
    );
    let operations = read("docs/operations.md");
    for rule in [circuit, fallbacks] {
        let name = rule["alert"].as_str().unwrap();
        let runbook = rule["annotations"]["runbook"]
            .as_str()
            .expect("a runbook annotation");
        let (doc, anchor) = runbook.split_once('#').expect("doc#anchor");
        assert_eq!(doc, "docs/operations.md", "{name}");
        assert!(
            operations.lines().any(|l| l.starts_with('#')
                && l.trim_start_matches('#').trim().to_lowercase().replace(' ', "-") == anchor),
            "{name}: no heading #{anchor} in docs/operations.md"
        );
        assert!(
            operations.contains(&format!("**{name}**")),
            "{name}: no runbook entry in docs/operations.md"
        );
        assert_eq!(
            rule["labels"]["severity"], "warning",
            "{name}: pods are still admitted"
        );
    }
}
