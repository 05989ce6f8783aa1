//! The worst case of memory (issue 13, section 5): bursts of concurrent
//! reviews of just under 3 MiB, as dense with JSON nodes as JSON allows,
//! against the binary; its peak resident set (`VmHWM`) must stay under the
//! 256 MiB memory limit the manifests give the container. Ignored by
//! default: it measures the release build and wants the machine's cores.
//!
//! ```text
//! cargo build --release --locked --bin imageswap
//! IMAGESWAP_TEST_BIN=target/release/imageswap cargo nextest run --locked \
//!     --run-ignored only --no-capture -E 'test(/worst_case_memory/)'
//! ```
//!
//! `TOKIO_WORKER_THREADS=N` sets the server's worker threads (else one per
//! CPU), `IMAGESWAP_TEST_MEMORY_BUDGET_BYTES` its budget.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};

use crate::support::binary::{BIN, Running};
use crate::support::fixtures_maps;

/// The container's memory limit in the manifests and the Helm chart.
const CONTAINER_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
const ROUNDS: usize = 4;
const CONCURRENT: usize = 64;
const CONNECTIONS: usize = 8;

/// A review of just under 3 MiB, most of it `[0,0,0,…]`: one JSON node per
/// two bytes, the most parse state per byte.
fn dense_review(uid: &str) -> Vec<u8> {
    let size = 3 * 1024 * 1024 - 4096;
    let head = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{uid}","kind":{{"group":"","version":"v1","kind":"Pod"}},"namespace":"default","operation":"CREATE","object":{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{uid}"}},"spec":{{"containers":[{{"name":"c","image":"nginx"}}],"pad":[0"#
    );
    let tail = "]}}}}";
    let mut body = head.into_bytes();
    while body.len() + 2 + tail.len() <= size {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(tail.as_bytes());
    body
}

/// A field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in\n{status}"));
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures the release binary: see the module documentation"]
async fn worst_case_memory_stays_under_the_container_limit() {
    let program = std::env::var("IMAGESWAP_TEST_BIN").unwrap_or_else(|_| BIN.to_owned());
    let maps = fixtures_maps().display().to_string();
    // The program's default budget, unless the run names another.
    let budget = std::env::var("IMAGESWAP_TEST_MEMORY_BUDGET_BYTES").ok();
    let mut args = vec!["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps];
    if let Some(budget) = &budget {
        args.extend(["--memory-budget-bytes", budget]);
    }
    let server = Running::start_program(&program, &args, &[]);
    let addr = server.listen_addr();
    let pid = server.child.id();
    let idle = status_bytes(pid, "VmRSS:");

    // HTTP/2 with prior knowledge over plain TCP, as many streams at once
    // as the API server might send.
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http::<Full<Bytes>>()
        })
        .collect();
    let body = Bytes::from(dense_review("dense"));
    let url: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let (mut ok, mut shed) = (0, 0);
    for _ in 0..ROUNDS {
        let tasks: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let client = clients[i % CONNECTIONS].clone();
                let request = http::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("request");
                tokio::spawn(async move {
                    let response = client.request(request).await.expect("answer");
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    status
                })
            })
            .collect();
        for task in tasks {
            match task.await.expect("task") {
                StatusCode::OK => ok += 1,
                StatusCode::SERVICE_UNAVAILABLE => shed += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let peak = status_bytes(pid, "VmHWM:");
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{program}: idle {:.1} MiB, peak {:.1} MiB over {ROUNDS} rounds of {CONCURRENT} dense {:.2} MiB reviews: {ok} answered 200, {shed} 503",
        mib(idle),
        mib(peak),
        mib(body.len() as u64)
    );
    assert!(ok > 0, "no review got through");
    assert!(
        peak < CONTAINER_LIMIT_BYTES,
        "peak RSS {:.1} MiB is over the container's limit",
        mib(peak)
    );
}
