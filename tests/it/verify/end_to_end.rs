//! Mirror verification end to end (verify.md "The answer", "Pull secrets
//! for the mirror", "Seen from outside"): the real server, built from its
//! settings as `serve` builds it (`Server::bind`, and once the binary with
//! the environment variables), checking over real TLS against the real
//! registry. Every patch is applied with a JSON Patch implementation to the
//! object it is for, and the object is what is checked. The hanging mirror
//! is a front that accepts and never answers; outcomes and warnings are
//! asserted, never times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use imageswap::admission::PullSecrets;
use imageswap::settings::SettingValue;
use imageswap::verify::{OnError, VerifyArgs};
use serde_json::{Value, json};

use super::{SLOW, Setup, args};
use crate::support::binary::{Running, http_get, http_post};
use crate::support::registry::{Auth, Front, HANG, Registry};
use crate::support::server::{self, Protocol, TestServer, kube_volume_write};
use crate::support::{applied, container_images, eventually, pod_review, warnings};

const USER: &str = "robot";
const PASSWORD: &str = "s3cret";
const SECRET: &str = "mirror-pull";

/// A TLS registry with basic auth that has `e2e/app:1` and not
/// `e2e/gone:1`, and maps that send `app:1` and `gone:1` there.
struct Mirror {
    s: Setup,
    /// Kept running for the test's length.
    _registry: Registry,
    host: String,
    present: String,
    missing: String,
}

impl Mirror {
    fn start() -> Mirror {
        let s = Setup::new();
        s.open.push_image("e2e/app", "1");
        let registry = s.tls(Auth::Basic {
            user: USER,
            password: PASSWORD,
        });
        let host = registry.host();
        Mirror {
            present: format!("{host}/e2e/app:1"),
            missing: format!("{host}/e2e/gone:1"),
            s,
            _registry: registry,
            host,
        }
    }

    /// The maps: `app:1` and `gone:1` to this mirror, `slow:1` to `slow`
    /// (a front), and the mirror itself left alone.
    fn maps(&self, slow: Option<&str>) -> Vec<u8> {
        let mut maps = format!(
            "[EXACT]app:1::{}\n[EXACT]gone:1::{}\n{}::\n",
            self.present, self.missing, self.host
        );
        if let Some(slow) = slow {
            maps.push_str(&format!("[EXACT]slow:1::{slow}/e2e/app:1\n{slow}::\n"));
        }
        maps.into_bytes()
    }

    /// The `registry` label of its metrics: the host, without the port
    /// (labels are per host, so ports cannot multiply them).
    fn label(&self) -> &str {
        imageswap::verify::client::host_name(&self.host)
    }

    /// The credentials volume (`.dockerconfigjson` as the kubelet mounts
    /// a Secret) with `password` for this mirror.
    fn write_credentials(&self, version: &str, password: &str) -> PathBuf {
        let dir = self.s.dir.path().join("registry");
        kube_volume_write(
            &dir,
            version,
            &[(
                ".dockerconfigjson",
                docker_config(&self.host, USER, password).as_bytes(),
            )],
        );
        dir.join(".dockerconfigjson")
    }

    /// Verification on, with the credentials at `config`, the test CA, and
    /// `plain_http` hosts (fronts).
    fn verify_args(&self, config: &Path, on_error: OnError, plain_http: &[&str]) -> VerifyArgs {
        let mut a = args(config, Some(&self.s.ca_path), plain_http);
        a.verify_on_error = on_error;
        a
    }

    /// The in-process server with its own verifier from `verify`.
    async fn server(&self, maps: Vec<u8>, verify: VerifyArgs, shadow: bool) -> TestServer {
        TestServer::start_with(server::Setup {
            maps,
            verify: Some(verify),
            verify_timeout: SLOW,
            shadow,
            pull_secrets: PullSecrets::parse_setting(&format!("{}={SECRET}", self.host)).expect("valid"),
            reload_poll: Duration::from_millis(200),
            ..server::Setup::default()
        })
        .await
    }
}

fn docker_config(host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#)
}

/// The value of one sample of a metrics text; `None` when absent.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn review(server: &TestServer, body: &[u8]) -> Value {
    let answer = server
        .client(Protocol::Http2)
        .post(&server.url("/"), body.to_vec())
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let answer = answer.json();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    answer
}

fn workload(uid: &str, kind: &str, operation: &str, images: &[&str]) -> Vec<u8> {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "apps", "version": "v1", "kind": kind},
            "namespace": "default", "operation": operation,
            "object": {"kind": kind, "metadata": {"name": uid},
                "spec": {"template": {"spec": {"containers": containers}}}},
        }
    }))
    .expect("json")
}

/// A Pod UPDATE that sets these images (an update decides only new or
/// changed images: the old object had others).
fn pod_update(uid: &str, images: &[&str]) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&pod_review(uid, images)).expect("json");
    review["request"]["operation"] = json!("UPDATE");
    let old: Vec<&str> = images.iter().map(|_| "old:0").collect();
    let old: Value = serde_json::from_slice(&pod_review(uid, &old)).expect("json");
    review["request"]["oldObject"] = old["request"]["object"].clone();
    serde_json::to_vec(&review).expect("json")
}

/// The binary as deployed: the settings only through its environment
/// (`IMAGESWAP_VERIFY`, `IMAGESWAP_REGISTRY_CONFIG`, `IMAGESWAP_REGISTRY_CA`,
/// `IMAGESWAP_IMAGE_PULL_SECRETS`), a TLS mirror with basic auth.
#[test]
fn the_binary_patches_what_the_mirror_has_and_warns_of_what_it_lacks() {
    let m = Mirror::start();
    let config = m.write_credentials("v1", PASSWORD);
    let maps = m.s.dir.path().join("maps.conf");
    std::fs::write(&maps, m.maps(None)).expect("maps");
    let maps = maps.display().to_string();
    let (config, ca) = (config.display().to_string(), m.s.ca_path.display().to_string());
    let pull_secrets = format!("{}={SECRET}", m.host);
    let mut server = Running::start_with_env(
        &["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps],
        &[
            ("IMAGESWAP_VERIFY", "on"),
            ("IMAGESWAP_REGISTRY_CONFIG", config.as_str()),
            ("IMAGESWAP_REGISTRY_CA", ca.as_str()),
            ("IMAGESWAP_IMAGE_PULL_SECRETS", pull_secrets.as_str()),
        ],
    );
    let addr = server.listen_addr();
    let body = pod_review("e2e-binary", &["app:1", "gone:1"]);
    let response = http_post(addr, "/", "", &body);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, json_body) = response.split_once("\r\n\r\n").expect("a body");
    let answer: Value = serde_json::from_str(json_body).expect("JSON answer");
    let pod = applied(&body, &answer);
    assert_eq!(container_images(&pod["spec"]), [m.present.as_str(), "gone:1"]);
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": SECRET}]));
    assert_eq!(
        warnings(&answer),
        [format!(
            "imageswap: kept gone:1: {} is not in the mirror",
            m.missing
        )]
    );
    let metrics = http_get(addr, "/metrics");
    for (outcome, n) in [("present", 1.0), ("missing", 1.0), ("error", 0.0)] {
        let name = format!(
            "imageswap_verify_checks_total{{registry=\"{}\",outcome=\"{outcome}\"}}",
            m.label()
        );
        assert_eq!(sample(&metrics, &name).unwrap_or(0.0), n, "{name} in:\n{metrics}");
    }
    assert_eq!(
        sample(&metrics, "imageswap_verify_fallbacks_total{reason=\"missing\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "imageswap_verify_check_duration_seconds_count{{registry=\"{}\"}} 2",
            m.label()
        )),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "imageswap_pull_secrets_added_total"),
        Some(1.0),
        "{metrics}"
    );
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_get_the_pull_secret_and_a_pod_update_does_not() {
    let m = Mirror::start();
    let config = m.write_credentials("v1", PASSWORD);
    let server = m
        .server(m.maps(None), m.verify_args(&config, OnError::Keep, &[]), false)
        .await;

    let body = workload("e2e-deploy", "Deployment", "CREATE", &["gone:1", "app:1"]);
    let answer = review(&server, &body).await;
    let deployment = applied(&body, &answer);
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(container_images(spec), ["gone:1", m.present.as_str()]);
    assert_eq!(spec["imagePullSecrets"], json!([{"name": SECRET}]));
    assert_eq!(
        warnings(&answer),
        [format!(
            "imageswap: kept gone:1: {} is not in the mirror",
            m.missing
        )]
    );

    // A Pod UPDATE: still swapped (from the cache now), no pull secret (the
    // field is immutable there).
    let body = pod_update("e2e-update", &["app:1"]);
    let answer = review(&server, &body).await;
    let pod = applied(&body, &answer);
    assert_eq!(container_images(&pod["spec"]), [m.present.as_str()], "{answer}");
    assert!(pod["spec"].get("imagePullSecrets").is_none(), "{pod}");
    assert!(warnings(&answer).is_empty(), "{answer}");

    let text = server.metrics_text();
    let checks = |outcome: &str| {
        sample(
            &text,
            &format!(
                "imageswap_verify_checks_total{{registry=\"{}\",outcome=\"{outcome}\"}}",
                m.label()
            ),
        )
    };
    assert_eq!(
        checks("present"),
        Some(1.0),
        "one registry check per target:\n{text}"
    );
    assert_eq!(checks("missing"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "imageswap_verify_cache_total{result=\"hit\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "imageswap_pull_secrets_added_total"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_secret_replaced_at_run_time_is_used_without_restart() {
    let m = Mirror::start();
    let config = m.write_credentials("v1", "wrong");
    let server = m
        .server(m.maps(None), m.verify_args(&config, OnError::Keep, &[]), false)
        .await;

    // Wrong credentials: an error (never "missing"), kept by the policy.
    let body = pod_review("e2e-cred-1", &["app:1"]);
    let answer = review(&server, &body).await;
    assert_eq!(container_images(&applied(&body, &answer)["spec"]), ["app:1"]);
    assert_eq!(
        warnings(&answer),
        [format!("imageswap: kept app:1: {} answered 401", m.host)]
    );

    // The Secret is updated as the kubelet does it (a `..data` swap).
    let loads = || {
        sample(
            &server.metrics_text(),
            "imageswap_registry_credentials_reload_total{result=\"success\"}",
        )
        .unwrap_or(0.0)
    };
    let before = loads();
    assert!(before >= 1.0, "loaded at start:\n{}", server.metrics_text());
    m.write_credentials("v2", PASSWORD);
    let reloaded = eventually(Duration::from_secs(20), async || loads() > before).await;
    assert!(reloaded, "the new file was loaded:\n{}", server.metrics_text());

    let body = pod_review("e2e-cred-2", &["app:1"]);
    let answer = review(&server, &body).await;
    let pod = applied(&body, &answer);
    assert_eq!(container_images(&pod["spec"]), [m.present.as_str()]);
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": SECRET}]));
    assert!(warnings(&answer).is_empty(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_mirror_is_answered_by_either_on_error_policy() {
    let m = Mirror::start();
    let config = m.write_credentials("v1", PASSWORD);
    for (on_error, patched) in [(OnError::Swap, true), (OnError::Keep, false)] {
        let front = Front::start(None, HANG);
        let slow = front.host();
        let mut verify = m.verify_args(&config, on_error, &[&slow]);
        // Long enough for the present target's check (TLS, basic auth) on
        // a loaded machine; the hanging one takes all of it.
        verify.verify_timeout = Duration::from_secs(2);
        let server = m.server(m.maps(Some(&slow)), verify, false).await;

        // The hanging target beside one the mirror has: that one is still
        // patched, whatever happens to the other.
        let body = pod_review("e2e-hang", &["slow:1", "app:1"]);
        let answer = review(&server, &body).await;
        let target = format!("{slow}/e2e/app:1");
        let pod = applied(&body, &answer);
        let expected = if patched { target.as_str() } else { "slow:1" };
        assert_eq!(
            container_images(&pod["spec"]),
            [expected, m.present.as_str()],
            "{on_error:?}"
        );
        let warning = if patched {
            format!("imageswap: {target} not verified: timeout after 2s")
        } else {
            "imageswap: kept slow:1: timeout after 2s".to_owned()
        };
        assert_eq!(warnings(&answer), [warning], "{on_error:?}");
        front.wait_requests(1);
        let client = server.client(Protocol::Http1);
        assert_eq!(
            client.get(&server.url("/readyz")).await.status,
            StatusCode::OK,
            "a hanging mirror never takes readiness"
        );
        let text = server.metrics_text();
        assert_eq!(
            sample(&text, "imageswap_verify_fallbacks_total{reason=\"error\"}"),
            Some(1.0),
            "{on_error:?}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_checks_against_the_mirror_and_patches_nothing() {
    let m = Mirror::start();
    let config = m.write_credentials("v1", PASSWORD);
    let server = m
        .server(m.maps(None), m.verify_args(&config, OnError::Swap, &[]), true)
        .await;
    let body = pod_review("e2e-shadow", &["app:1", "gone:1"]);
    let answer = review(&server, &body).await;
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    assert_eq!(
        container_images(&applied(&body, &answer)["spec"]),
        ["app:1", "gone:1"]
    );
    let text = server.metrics_text();
    for outcome in ["present", "missing"] {
        let name = format!(
            "imageswap_verify_checks_total{{registry=\"{}\",outcome=\"{outcome}\"}}",
            m.label()
        );
        assert_eq!(
            sample(&text, &name),
            Some(1.0),
            "the checks ran: {name} in\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "imageswap_verify_fallbacks_total{reason=\"missing\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "imageswap_admission_requests_total{outcome=\"shadowed\"}"),
        Some(1.0),
        "{text}"
    );
}

/// Platforms from the pod spec through the server (issue 21 item 5): an
/// arm64 pod is not swapped to an index holding linux/amd64 only (kept,
/// with the warning naming the platform, counted missing, fallback
/// `platform`); the same pod is swapped to an index holding both; a pod
/// that pins nothing is swapped as before.
#[tokio::test(flavor = "multi_thread")]
async fn an_arm64_pod_keeps_its_image_when_the_mirror_has_only_amd64() {
    let m = Mirror::start();
    m.s.open.push_index_of("e2e/multi", "amd", &["amd64"]);
    m.s.open.push_index_of("e2e/multi", "both", &["amd64", "arm64"]);
    let config = m.write_credentials("v1", PASSWORD);
    let (amd, both) = (
        format!("{}/e2e/multi:amd", m.host),
        format!("{}/e2e/multi:both", m.host),
    );
    let maps = format!("[EXACT]amd:1::{amd}\n[EXACT]both:1::{both}\n{}::\n", m.host).into_bytes();
    let server = m
        .server(maps, m.verify_args(&config, OnError::Swap, &[]), false)
        .await;
    let arm64_pod = |uid: &str| {
        let mut review: Value = serde_json::from_slice(&pod_review(uid, &["amd:1", "both:1"])).expect("json");
        review["request"]["object"]["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm64"});
        serde_json::to_vec(&review).expect("json")
    };
    let body = arm64_pod("platform-arm64");
    let answer = review(&server, &body).await;
    let pod = applied(&body, &answer);
    assert_eq!(container_images(&pod["spec"]), ["amd:1", both.as_str()]);
    assert_eq!(
        warnings(&answer),
        [format!("imageswap: kept amd:1: {amd} has no arm64")]
    );
    let metrics = server.metrics_text();
    assert_eq!(
        sample(&metrics, "imageswap_verify_fallbacks_total{reason=\"platform\"}"),
        Some(1.0),
        "{metrics}"
    );
    let missing = format!(
        "imageswap_verify_checks_total{{registry=\"{}\",outcome=\"missing\"}}",
        m.label()
    );
    assert_eq!(sample(&metrics, &missing), Some(1.0), "{metrics}");

    let body = pod_review("platform-any", &["amd:1"]);
    let answer = review(&server, &body).await;
    assert_eq!(container_images(&applied(&body, &answer)["spec"]), [amd.as_str()]);
    assert!(warnings(&answer).is_empty(), "{answer}");
}
