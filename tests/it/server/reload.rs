//! Hot reload: maps and certificates replaced the way Kubernetes replaces a
//! mounted ConfigMap or Secret (a `..data` symlink swap), while requests run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::server::{Protocol, RawTls, Setup, TestServer, kube_volume_write};
use crate::support::{decoded_patch, eventually, pod_review};

/// The spec's bound is 2 s and the server takes a change after a 150 ms
/// debounce; the tests allow twice that for the latency of a loaded 2-core
/// CI machine's own requests, so they fail on a missed change, not on noise.
const RELOAD_WITHIN: Duration = Duration::from_secs(4);

/// Every image of the review below goes to `a.example` under A, to
/// `b.example` under B (each decided by a different rule).
const MAPS_A: &str =
    "default::a.example\ndocker.io::a.example/hub\n[EXACT]redis:7::a.example/pinned/redis:7\n";
const MAPS_B: &str =
    "default::b.example\ndocker.io::b.example/hub\n[EXACT]redis:7::b.example/pinned/redis:7\n";
const IMAGES: [&str; 4] = ["nginx:1.25", "redis:7", "gcr.io/team/app:1", "quay.io/org/tool:2"];

/// The replaces, then the record of the originals (the review's pod has
/// no annotations).
fn expected(registry: &str) -> serde_json::Value {
    let values = [
        format!("{registry}/hub/nginx:1.25"),
        format!("{registry}/pinned/redis:7"),
        format!("{registry}/team/app:1"),
        format!("{registry}/org/tool:2"),
    ];
    let mut ops: Vec<serde_json::Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| serde_json::json!({"op": "replace", "path": format!("/spec/containers/{i}/image"), "value": v}))
        .collect();
    let record: serde_json::Map<String, serde_json::Value> = IMAGES
        .iter()
        .enumerate()
        .map(|(i, image)| (format!("c{i}"), serde_json::json!(image)))
        .collect();
    ops.push(serde_json::json!({"op": "add", "path": "/metadata/annotations",
        "value": {imageswap::admission::ORIGINAL_IMAGES_ANNOTATION: serde_json::Value::Object(record).to_string()}}));
    serde_json::Value::Array(ops)
}

fn maps_dir(server: &TestServer) -> std::path::PathBuf {
    server.dir.path().join("maps")
}

fn write_maps(server: &TestServer, version: &str, content: &[u8]) {
    kube_volume_write(&maps_dir(server), version, &[("imageswap-maps.conf", content)]);
}

async fn current_patch(server: &TestServer) -> serde_json::Value {
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/"), pod_review("probe", &IMAGES))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    decoded_patch(&answer.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_come_from_the_old_or_the_new_maps_never_a_mix() {
    let server = Arc::new(
        TestServer::start_with(Setup {
            maps: MAPS_A.as_bytes().to_vec(),
            ..Setup::default()
        })
        .await,
    );
    let (a, b) = (expected("a.example"), expected("b.example"));
    assert_eq!(current_patch(&server).await, a);

    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..3 {
        let server = server.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let protocol = if worker % 2 == 0 {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            let client = server.client(protocol);
            let mut patches = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let answer = client
                    .post(&server.url("/"), pod_review(&format!("w{worker}-{n}"), &IMAGES))
                    .await;
                assert_eq!(answer.status, StatusCode::OK);
                patches.push(decoded_patch(&answer.json()));
            }
            patches
        }));
    }
    let swaps = 6;
    for swap in 0..swaps {
        let (content, want) = if swap % 2 == 0 { (MAPS_B, &b) } else { (MAPS_A, &a) };
        write_maps(&server, &format!("swap{swap}"), content.as_bytes());
        let started = Instant::now();
        assert!(
            eventually(RELOAD_WITHIN, async || current_patch(&server).await == *want).await,
            "swap {swap} not served within {RELOAD_WITHIN:?}"
        );
        tracing_free_log(swap, started.elapsed());
    }
    done.store(true, Ordering::Relaxed);
    let mut seen_a = 0;
    let mut seen_b = 0;
    for worker in workers {
        for patch in worker.await.expect("worker") {
            if patch == a {
                seen_a += 1;
            } else if patch == b {
                seen_b += 1;
            } else {
                panic!("a response mixed two maps files: {patch:#}");
            }
        }
    }
    assert!(
        seen_a > 0 && seen_b > 0,
        "both maps served (a: {seen_a}, b: {seen_b})"
    );
    let metrics = server.metrics_text();
    assert!(
        metrics.contains(&format!(
            "imageswap_maps_reload_total{{result=\"success\"}} {}",
            swaps + 1
        )),
        "{metrics}"
    );
}

/// Prints how long a reload took (visible with `--no-capture`).
fn tracing_free_log(swap: usize, elapsed: Duration) {
    println!("swap {swap} served after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_maps_file_keeps_the_last_good_maps_and_is_counted() {
    let server = TestServer::start_with(Setup {
        maps: MAPS_A.as_bytes().to_vec(),
        ..Setup::default()
    })
    .await;
    write_maps(&server, "broken", b"default::b.example\n\xff\xfe not utf-8\n");
    let counted = eventually(RELOAD_WITHIN, async || {
        server
            .metrics_text()
            .contains("imageswap_maps_reload_total{result=\"error\"} 1")
    })
    .await;
    assert!(counted, "{}", server.metrics_text());
    assert_eq!(current_patch(&server).await, expected("a.example"));
    let ready = server.client(Protocol::Http1).get(&server.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "still ready on the last good maps");

    // Removing the file is another failure: still the old maps.
    std::fs::remove_file(maps_dir(&server).join("imageswap-maps.conf")).expect("remove");
    let counted = eventually(RELOAD_WITHIN, async || {
        server
            .metrics_text()
            .contains("imageswap_maps_reload_total{result=\"error\"} 2")
    })
    .await;
    assert!(counted, "{}", server.metrics_text());
    assert_eq!(current_patch(&server).await, expected("a.example"));

    // A good file afterwards is taken within 2 s.
    write_maps(&server, "fixed", MAPS_B.as_bytes());
    let b = expected("b.example");
    assert!(eventually(RELOAD_WITHIN, async || current_patch(&server).await == b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_loadable_maps_the_server_is_not_ready_until_they_appear() {
    let server = TestServer::start_with(Setup {
        maps: b"\xff\xff".to_vec(),
        ..Setup::default()
    })
    .await;
    let client = server.client(Protocol::Http2);
    let ready = client.get(&server.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = ready.json()["reason"].as_str().expect("reason").to_owned();
    assert!(
        reason.contains("maps not loaded") && reason.contains("not UTF-8"),
        "{reason}"
    );
    let answer = client.post(&server.url("/"), pod_review("early", &IMAGES)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);

    write_maps(&server, "good", MAPS_A.as_bytes());
    let ready = eventually(RELOAD_WITHIN, async || {
        client.get(&server.url("/readyz")).await.status == StatusCode::OK
    })
    .await;
    assert!(ready);
    assert_eq!(current_patch(&server).await, expected("a.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let server = TestServer::start().await;
    let first = RawTls::connect(&server).await;
    assert_eq!(first.peer_certificate(), server.leaf.der);
    // An established connection keeps working across the rotation.
    let h2 = server.client(Protocol::Http2);
    assert_eq!(h2.get(&server.url("/healthz")).await.status, StatusCode::OK);

    let rotated = server.ca.leaf();
    let tls_dir = server.dir.path().join("tls");
    kube_volume_write(
        &tls_dir,
        "rotated",
        &[
            ("cert.pem", rotated.cert_pem.as_bytes()),
            ("key.pem", rotated.key_pem.as_bytes()),
        ],
    );
    let served = eventually(RELOAD_WITHIN, async || {
        RawTls::connect(&server).await.peer_certificate() == rotated.der
    })
    .await;
    assert!(
        served,
        "the new certificate reaches new connections within the reload bound"
    );
    assert_eq!(h2.get(&server.url("/healthz")).await.status, StatusCode::OK);
    assert!(
        server
            .metrics_text()
            .contains("imageswap_tls_reload_total{result=\"success\"} 2")
    );

    // A key that does not match its certificate is refused; the rotated pair stays.
    let other = server.ca.leaf();
    kube_volume_write(
        &tls_dir,
        "mismatched",
        &[
            ("cert.pem", other.cert_pem.as_bytes()),
            ("key.pem", rotated.key_pem.as_bytes()),
        ],
    );
    let counted = eventually(RELOAD_WITHIN, async || {
        server
            .metrics_text()
            .contains("imageswap_tls_reload_total{result=\"error\"} 1")
    })
    .await;
    assert!(counted, "{}", server.metrics_text());
    assert_eq!(RawTls::connect(&server).await.peer_certificate(), rotated.der);
    let answer = server
        .client(Protocol::Http1)
        .post(&server.url("/"), pod_review("after-rotation", &["nginx"]))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_finds_a_file_whose_directory_appeared_after_start() {
    use imageswap::cache::PublishedRules;
    use imageswap::reload::{MapsFile, Reloader};
    use imageswap::telemetry::metrics::Metrics;

    let dir = tempfile::tempdir().expect("tempdir");
    let maps_dir = dir.path().join("later");
    let rules = Arc::new(PublishedRules::new());
    let mut reloader = Reloader::new(Duration::from_millis(100));
    reloader.watch(MapsFile::new(
        maps_dir.join("maps.conf"),
        100,
        rules.clone(),
        Arc::new(Metrics::new()),
    ));
    reloader.load_initial().await;
    assert!(rules.load().is_none(), "nothing to load yet");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(reloader.run(stopped));

    std::fs::create_dir(&maps_dir).expect("mkdir");
    std::fs::write(maps_dir.join("maps.conf"), MAPS_A).expect("write");
    let loaded = eventually(RELOAD_WITHIN, async || rules.load().is_some()).await;
    assert!(loaded, "the poll picked the file up");
    stop.send(true).expect("stop");
    task.await.expect("reloader stops");
}

/// issue 21: `: > imageswap-maps.conf` (a broken ConfigMap edit, a
/// truncated write) used to be "Maps reloaded" and silently stop every
/// swap; now the real server refuses it, says why in one ERROR line, counts
/// it `refused` and swaps on with the last good maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_maps_file_is_refused_and_the_last_good_swaps_on() {
    let server = TestServer::start_with(Setup {
        maps: MAPS_A.as_bytes().to_vec(),
        ..Setup::default()
    })
    .await;
    write_maps(&server, "emptied", b"");
    let counted = eventually(RELOAD_WITHIN, async || {
        server
            .metrics_text()
            .contains("imageswap_maps_reload_total{result=\"refused\"} 1")
    })
    .await;
    assert!(counted, "{}", server.metrics_text());
    assert_eq!(current_patch(&server).await, expected("a.example"));
    let metrics = server.metrics_text();
    assert!(metrics.contains("imageswap_maps_rules 3"), "{metrics}");
    assert!(
        metrics.contains("imageswap_maps_reload_total{result=\"success\"} 1"),
        "{metrics}"
    );
}
