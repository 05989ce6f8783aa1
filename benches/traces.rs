//! What a trace collector that hangs or is down costs an admission, next to
//! traces off: one review (a Pod with two images) over HTTPS/2 through the
//! in-process server of the integration tests (`tests/it/support/`), three
//! ways:
//!
//! - `off`: no traces;
//! - `collector_hangs`: the collector accepts and never answers (60 s
//!   export timeout); after the first batch hangs, the 16-span queue is full
//!   and every later span is dropped;
//! - `collector_down`: connections to the collector are refused; every
//!   batch fails.
//!
//! The three should be within noise of each other: the export runs off the
//! request path. (The test `server::traces` once asserted it as p50 ≤ 5×
//! and p99 ≤ 10× the traces-off figures, measured inside the parallel test
//! run; it now holds only the absolute bound, every review answered in under
//! a second.) Run: `cargo bench --bench traces`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The whole harness, of which this bench uses the server and the collector.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::StatusCode;
use http_body_util::Full;
use imageswap::telemetry::logging::LogFormat;
use support::otlp::{Collector, OtlpReceiver, refused_endpoint};
use support::server::{Protocol, Setup, TestServer};
use support::traces::{Traced, collector_runtime, trace_config};

fn admission_with_traces(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission_with_traces");

    measure(&mut group, "off", Traced::off("INFO", LogFormat::Json), None);

    let collector_rt = collector_runtime();
    let hung = collector_rt.block_on(OtlpReceiver::start(Collector::Hangs));
    let mut config = trace_config(&hung.endpoint());
    config.export_timeout = Duration::from_secs(60);
    let traced = Traced::new(&config, "INFO", LogFormat::Json, 16);
    measure(&mut group, "collector_hangs", traced, Some(&hung));

    let traced = Traced::new(&trace_config(&refused_endpoint()), "INFO", LogFormat::Json, 2048);
    measure(&mut group, "collector_down", traced, None);

    group.finish();
}

/// Times one review at a time against a server started on `traced`; with
/// `hung`, only once the collector holds the first batch.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut traced: Traced,
    hung: Option<&OtlpReceiver>,
) {
    let _guard = tracing::dispatcher::set_default(&traced.dispatch);
    let _traces = traced.start();
    let runtime = &traced.runtime;
    let server = runtime.block_on(TestServer::start_with(Setup {
        metrics: Some(traced.metrics.clone()),
        ..Setup::default()
    }));
    let client = server.client(Protocol::Http2);
    let url = server.url("/");
    let review = |uid: &str| {
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(support::pod_review(
                uid,
                &["nginx:1.25", "busybox:1.36"],
            ))))
            .expect("request");
        runtime.block_on(client.send(request)).status
    };
    assert_eq!(review("first"), StatusCode::OK);
    if let Some(collector) = hung {
        let held = runtime.block_on(support::eventually(Duration::from_secs(10), async || {
            collector.requests() >= 1
        }));
        assert!(held, "the exporter sent the hung collector its first batch");
    }
    let mut n = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            assert_eq!(review(&format!("bench-{n}")), StatusCode::OK);
        })
    });
}

criterion_group!(benches, admission_with_traces);
criterion_main!(benches);
