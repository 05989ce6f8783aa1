//! The recreate-loop signal through the server (issue 22): the same
//! fixed-name pod created and swapped `IMAGESWAP_LOOP_THRESHOLD` (5) times
//! gives one WARN line and one count; pods named by `generateName` and
//! UPDATEs are never counted.

use http::StatusCode;
use serde_json::json;

use crate::support::logs::LogCapture;
use crate::support::server::{Protocol, TestServer};

/// A Pod CREATE (or another operation) in `db`, named `name` or, with a
/// trailing `-`, by `generateName`, owned by a CloudNativePG Cluster.
fn review(uid: &str, name: &str, operation: &str) -> Vec<u8> {
    let mut metadata = json!({"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-the-controller", "uid": "c"},
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": "pg", "uid": "u", "controller": true}]});
    if name.ends_with('-') {
        metadata["generateName"] = json!(name);
    } else {
        metadata["name"] = json!(name);
    }
    let pod = json!({"kind": "Pod", "metadata": metadata,
        "spec": {"containers": [{"name": "postgres", "image": "nginx:1.25"}]}});
    let mut request = json!({"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "db", "operation": operation, "object": pod});
    if operation == "UPDATE" {
        request["oldObject"] = request["object"].clone();
        request["oldObject"]["spec"]["containers"][0]["image"] = json!("nginx:1.24");
    }
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": request}),
    )
    .expect("json")
}

fn loops_counted(server: &TestServer) -> u64 {
    let text = server.metrics_text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("imageswap_recreate_loops_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no imageswap_recreate_loops_total in:\n{text}"))
}

fn loop_lines(logs: &LogCapture) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("recreated in a loop"))
        .map(str::to_owned)
        .collect()
}

/// On a current-thread runtime the server's tasks run on the test's
/// thread, so its log lines reach the thread's capture.
#[tokio::test]
async fn a_fixed_name_pod_created_five_times_is_reported_once() {
    let logs = LogCapture::on_this_thread();
    let server = TestServer::start().await;
    let client = server.client(Protocol::Http1);
    let post = async |uid: String, name: &str, operation: &str| {
        let answer = client.post(&server.url("/"), review(&uid, name, operation)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.json()["response"]["patch"].is_string(), "swapped");
    };
    // Other pods' churn first: never counted.
    for i in 0..10 {
        post(format!("g-{i}"), "web-", "CREATE").await;
        post(format!("u-{i}"), "pg-2", "UPDATE").await;
    }
    for i in 0..4 {
        post(format!("c-{i}"), "pg-1", "CREATE").await;
    }
    assert_eq!(loops_counted(&server), 0, "not before the threshold");
    assert!(loop_lines(&logs).is_empty(), "{}", logs.text());
    for i in 4..9 {
        post(format!("c-{i}"), "pg-1", "CREATE").await;
    }
    assert_eq!(loops_counted(&server), 1, "once per episode");
    let lines = loop_lines(&logs);
    assert_eq!(lines.len(), 1, "{}", logs.text());
    for part in [
        "namespace=\"db\"",
        "name=\"pg-1\"",
        "owner_kind=\"Cluster\"",
        "owner_name=\"pg\"",
    ] {
        assert!(lines[0].contains(part), "{part} not in {}", lines[0]);
    }
}
