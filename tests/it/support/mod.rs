//! The harness every integration test uses, one of each thing:
//!
//! - [`ca`]: the test certificate authority (serving leaves for the
//!   in-process server, operator CAs and pairs for `init`, the fake
//!   cluster's CSR signer);
//! - [`logs`]: the in-memory log capture;
//! - [`server`]: the one way to start an in-process server, with TLS clients;
//! - [`binary`]: the one way to start the `imageswap` binary;
//! - [`fake_apiserver`]: the fake Kubernetes API server `init` talks to, and
//!   [`init`] the settings and read-backs around it;
//! - [`otlp`]: the OTLP/HTTP collector the trace tests export to, and
//!   [`traces`] the pipeline and subscriber they run the server under;
//! - here: the repository's files and fixtures, a review builder, polling a
//!   condition with a deadline, and the Prometheus parsers.
//!
//! Tests wait for events (a log line, an answer, a metric, a file), never for
//! a fixed time; how fast things are is for the benches.

pub mod binary;
pub mod ca;
pub mod fake_apiserver;
pub mod init;
pub mod logs;
pub mod otlp;
pub mod registry;
pub mod server;
pub mod traces;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use imageswap::swap::Engine;

/// A file of the repository, by its path from the root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The text of a file of the repository; panics naming it when unreadable.
pub fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative)).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

pub fn fixtures_dir() -> PathBuf {
    repo_path("tests/fixtures")
}

pub fn fixtures_maps() -> PathBuf {
    fixtures_dir().join("maps/fixtures.conf")
}

pub fn fixtures_engine() -> Engine {
    let text = std::fs::read_to_string(fixtures_maps()).expect("fixture maps");
    Engine::from_maps_text(&text).0
}

/// One review fixture and its expected decoded patch.
pub struct Fixture {
    pub name: String,
    pub bytes: Vec<u8>,
    pub review: serde_json::Value,
    pub patch: serde_json::Value,
}

/// Every `<case>.review.json` with its `<case>.patch.json`, sorted by name.
pub fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir().join("admission");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".review.json").map(str::to_owned))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(format!("{name}.review.json"))).expect("review");
            let review = serde_json::from_slice(&bytes).expect("review is JSON");
            let patch_text = std::fs::read(dir.join(format!("{name}.patch.json")))
                .unwrap_or_else(|e| panic!("{name}.patch.json: {e}"));
            let patch = serde_json::from_slice(&patch_text).expect("patch is JSON");
            Fixture {
                name,
                bytes,
                review,
                patch,
            }
        })
        .collect()
}

/// The decoded `response.patch` of an answer, or `null` without one.
pub fn decoded_patch(answer: &serde_json::Value) -> serde_json::Value {
    match answer["response"]["patch"].as_str() {
        None => serde_json::Value::Null,
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("patch is base64");
            serde_json::from_slice(&raw).expect("decoded patch is JSON")
        }
    }
}

/// The review's object with the answer's patch applied (RFC 6902, by the
/// `json-patch` crate): what the API server would store.
pub fn applied(review: &[u8], answer: &serde_json::Value) -> serde_json::Value {
    let review: serde_json::Value = serde_json::from_slice(review).expect("review JSON");
    let mut object = review["request"]["object"].clone();
    let patch = decoded_patch(answer);
    if !patch.is_null() {
        let ops: json_patch::Patch = serde_json::from_value(patch.clone()).expect("an RFC 6902 patch");
        json_patch::patch(&mut object, &ops).unwrap_or_else(|e| panic!("the patch applies: {e}: {patch}"));
    }
    object
}

/// The `image` of each entry of a pod spec's `containers`.
pub fn container_images(spec: &serde_json::Value) -> Vec<String> {
    spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["image"].as_str().expect("image").to_owned())
        .collect()
}

/// The answer's `response.warnings` (none: empty).
pub fn warnings(answer: &serde_json::Value) -> Vec<String> {
    answer["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A review of a Pod with these container images, uid `uid`.
pub fn pod_review(uid: &str, images: &[&str]) -> Vec<u8> {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": uid},
                       "spec": {"containers": containers}}
        }
    }))
    .expect("json")
}

/// A pod review padded to `size` bytes with an annotation.
pub fn review_of_size(uid: &str, size: usize) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(&pod_review(uid, &["nginx"])).expect("json");
    let base = serde_json::to_vec(&review).expect("json").len();
    let pad = size.saturating_sub(base + r#","annotations":{"pad":""}"#.len());
    review["request"]["object"]["metadata"]["annotations"] = serde_json::json!({ "pad": "x".repeat(pad) });
    serde_json::to_vec(&review).expect("json")
}

/// How often [`eventually`] and its blocking twin look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds (`true`) or `within` passes (`false`).
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`eventually`] for tests without a runtime (the binary tests).
pub fn eventually_blocking(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `scripts/prometheus-tools COMMAND` (the Prometheus project's own
/// OpenMetrics and PromQL parsers) on `input`: `Ok(its JSON)`, or `Err(its
/// one-line complaint)` when the input is invalid. The tools are installed
/// before the run (`scripts/prometheus-tools install`, which `scripts/test`
/// and `.ci/run` do); a test never installs anything, and panics with the
/// script's message naming that command when they are missing.
pub fn prometheus_tools(command: &str, input: &str) -> Result<serde_json::Value, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut child = Command::new(repo_path("scripts/prometheus-tools"))
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/prometheus-tools");
    // A tool that is not installed exits before reading: its message, not
    // the broken pipe, is the failure to report.
    let written = child.stdin.take().expect("stdin").write_all(input.as_bytes());
    let output = child.wait_with_output().expect("the tool's output");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    match output.status.code() {
        Some(0) => {
            written.expect("write the input");
            Ok(serde_json::from_slice(&output.stdout).expect("the tool prints JSON"))
        }
        Some(1) => Err(stderr),
        other => panic!("scripts/prometheus-tools could not run ({other:?}): {stderr}"),
    }
}
