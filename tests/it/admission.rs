//! The admission fixtures: each `tests/fixtures/admission/<case>.review.json`
//! is a review as kube-apiserver sends it, next to `<case>.patch.json`, the
//! decoded patch expected back (`null`: no `patch` and no `patchType`).

use std::sync::Arc;

use imageswap::admission::{self, Options};
use imageswap::cache::RulesState;

use crate::support::{Fixture, decoded_patch, fixtures, fixtures_engine};

fn check_answer(fixture: &Fixture, answer: &serde_json::Value) {
    let name = &fixture.name;
    assert_eq!(
        answer["apiVersion"], fixture.review["apiVersion"],
        "{name}: apiVersion echoed"
    );
    assert_eq!(answer["kind"], "AdmissionReview", "{name}");
    assert_eq!(
        answer["response"]["uid"], fixture.review["request"]["uid"],
        "{name}: uid echoed"
    );
    assert_eq!(answer["response"]["allowed"], true, "{name}: always allowed");
    assert_eq!(decoded_patch(answer), fixture.patch, "{name}: patch");
    if fixture.patch.is_null() {
        let response = answer["response"].as_object().expect("response object");
        assert!(!response.contains_key("patch"), "{name}: no patch field");
        assert!(!response.contains_key("patchType"), "{name}: no patchType field");
    } else {
        assert_eq!(answer["response"]["patchType"], "JSONPatch", "{name}");
        assert!(
            answer["response"]["patch"].is_string(),
            "{name}: patch is a base64 string"
        );
    }
}

#[test]
fn every_fixture_gets_its_patch_from_the_core() {
    let state = RulesState::new(fixtures_engine(), 100);
    let all = fixtures();
    assert!(all.len() >= 16, "fixtures found: {}", all.len());
    for fixture in &all {
        let mut body = fixture.bytes.clone();
        let decider = state.decider();
        let options = Options {
            disable_label: "k8s.twr.io/imageswap",
            shadow: false,
            deadline: None,
        };
        let admission = admission::admit(&mut body, &options, &decider)
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        let answer: serde_json::Value = serde_json::from_slice(&admission.body).expect("answer is JSON");
        check_answer(fixture, &answer);
    }
}

#[test]
fn shadow_mode_decides_but_never_patches() {
    let state = Arc::new(RulesState::new(fixtures_engine(), 100));
    for fixture in fixtures() {
        let mut body = fixture.bytes.clone();
        let decider = state.decider();
        let options = Options {
            disable_label: "k8s.twr.io/imageswap",
            shadow: true,
            deadline: None,
        };
        let admission = admission::admit(&mut body, &options, &decider).expect("review");
        let answer: serde_json::Value = serde_json::from_slice(&admission.body).expect("json");
        assert!(answer["response"].get("patch").is_none(), "{}", fixture.name);
        let expected = fixture
            .patch
            .as_array()
            .map_or(0, |ops| ops.iter().filter(|op| op["op"] == "replace").count());
        assert_eq!(
            admission.changes.len(),
            expected,
            "{}: changes still decided",
            fixture.name
        );
    }
}

#[test]
fn the_two_phases_without_checks_or_secrets_answer_every_fixture_byte_for_byte_as_admit() {
    let state = RulesState::new(fixtures_engine(), 100);
    let options = Options {
        disable_label: "k8s.twr.io/imageswap",
        shadow: false,
        deadline: None,
    };
    for fixture in fixtures() {
        let mut one = fixture.bytes.clone();
        let mut two = fixture.bytes.clone();
        let admitted = admission::admit(&mut one, &options, &state.decider()).expect("review");
        let none = admission::PullSecrets::default();
        let decided = admission::decide(&mut two, &options, &none, &state.decider()).expect("review");
        assert_eq!(decided.answer(&[]).body, admitted.body, "{}", fixture.name);
    }
}

/// With a pull secret for the mirror, every fixture's patch still applies
/// to its object: the swaps of the fixture, then only `add`s of the secret
/// to the pod spec's `imagePullSecrets`, and never on a Pod UPDATE, then the
/// fixture's record of the original images.
#[test]
fn every_fixture_patch_with_a_pull_secret_applies_to_its_object() {
    use imageswap::settings::SettingValue;

    let state = RulesState::new(fixtures_engine(), 100);
    let options = Options {
        disable_label: "k8s.twr.io/imageswap",
        shadow: false,
        deadline: None,
    };
    let secrets = admission::PullSecrets::parse_setting("mirror.example.com=mirror-pull").expect("valid");
    let mut with_secret = 0;
    for fixture in fixtures() {
        let name = &fixture.name;
        let mut body = fixture.bytes.clone();
        let decided = admission::decide(&mut body, &options, &secrets, &state.decider()).expect("review");
        let admission = decided.answer(&[]);
        let answer: serde_json::Value = serde_json::from_slice(&admission.body).expect("JSON");
        let patch = decoded_patch(&answer);
        let mut expected = fixture.patch.as_array().cloned().unwrap_or_default();
        let mut ops = patch.as_array().cloned().unwrap_or_default();
        // At `…/annotations` (the key in the value) or at the key itself
        // (`/` escaped as `~1` in the path).
        let is_record =
            |op: &serde_json::Value| op["op"] == "add" && op.to_string().contains("original-images");
        if expected.last().is_some_and(is_record) {
            assert_eq!(ops.pop(), expected.pop(), "{name}: the record comes last");
        }
        let swaps = expected.len();
        assert_eq!(ops[..swaps.min(ops.len())], expected[..], "{name}");
        for op in &ops[swaps..] {
            assert_eq!(op["op"], "add", "{name}: {op}");
            let path = op["path"].as_str().expect("path");
            assert!(path.contains("spec/imagePullSecrets"), "{name}: {path}");
        }
        let request = &fixture.review["request"];
        if request["kind"]["kind"] == "Pod" && request["operation"] == "UPDATE" {
            assert_eq!(ops.len(), swaps, "{name}: no secret on a Pod UPDATE");
        }
        if ops.len() > swaps {
            with_secret += 1;
            assert_eq!(admission.pull_secrets_added, ops.len() - swaps, "{name}");
            let mut object = request["object"].clone();
            let parsed: json_patch::Patch = serde_json::from_value(patch.clone()).expect("RFC 6902");
            json_patch::patch(&mut object, &parsed).unwrap_or_else(|e| panic!("{name}: {e}: {patch}"));
            let text = object.to_string();
            assert!(text.contains(r#"{"name":"mirror-pull"}"#), "{name}: {text}");
        }
    }
    assert!(
        with_secret >= 8,
        "most fixtures end up in the mirror: {with_secret}"
    );
}

// ---------------------------------------------------------------------------
// The same fixtures, and bad input, through the server over TLS.

use crate::support::pod_review;
use crate::support::server::{Protocol, RawTls, Setup, TestServer};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gets_its_patch_from_the_server() {
    let server = TestServer::start().await;
    for protocol in [Protocol::Http2, Protocol::Http1] {
        let client = server.client(protocol);
        for fixture in fixtures() {
            let answer = client.post(&server.url("/"), fixture.bytes.clone()).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{}: {:?}",
                fixture.name,
                answer.body
            );
            assert_eq!(answer.headers["content-type"], "application/json");
            check_answer(&fixture, &answer.json());
        }
    }
    let metrics = server.metrics_text();
    assert!(
        metrics.contains("imageswap_images_swapped_total{rule=\"exact\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_answers_without_patches_but_counts() {
    let server = TestServer::start_with(Setup {
        shadow: true,
        ..Setup::default()
    })
    .await;
    let client = server.client(Protocol::Http2);
    let answer = client
        .post(
            &server.url("/mutate"),
            pod_review("shadow-1", &["nginx:1.25", "busybox:1.36"]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["response"]["allowed"], true);
    assert!(json["response"].get("patch").is_none(), "{json}");
    let metrics = server.metrics_text();
    assert!(
        metrics.contains("imageswap_admission_requests_total{outcome=\"shadowed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imageswap_images_swapped_total{rule=\"exact\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imageswap_images_swapped_total{rule=\"path\"} 1"),
        "{metrics}"
    );
}

/// A good review after each bad one: the server is still serving.
async fn still_serving(server: &TestServer, protocol: Protocol) {
    let answer = server
        .client(protocol)
        .post(&server.url("/"), pod_review("after-bad-input", &["nginx:1.25"]))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["response"]["patch"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_spec_answer_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let client = server.client(Protocol::Http2);
    let not_reviews: [(&[u8], &str); 6] = [
        (
            b"this is not json",
            "not JSON: a word that is not null, true or false near byte 0",
        ),
        (b"[1, 2, 3]", "`$` must be an object"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
            "`request.uid` is missing",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
            "`request.uid` must be a string",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"x"}"#,
            "`request` must be an object",
        ),
        (
            br#"{"apiVersion":"apps/v1","kind":"Deployment","spec":{}}"#,
            "`apiVersion` must be",
        ),
    ];
    for (body, message) in not_reviews {
        let answer = client.post(&server.url("/"), body.to_vec()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        let error = answer.json()["error"].as_str().expect("error text").to_owned();
        assert!(error.contains(message), "{error}");
        still_serving(&server, Protocol::Http2).await;
    }

    // Wrong types inside the object, uid present: 200, allowed, a warning.
    let malformed = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"m-1",
        "kind":{"kind":"Deployment"},"object":{"spec":{"template":{"spec":{"containers":[{"image":42}]}}}}}}"#;
    let answer = client.post(&server.url("/"), malformed.to_vec()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["response"]["uid"], "m-1");
    assert_eq!(json["response"]["allowed"], true);
    assert!(json["response"].get("patch").is_none());
    let warning = json["response"]["warnings"][0].as_str().expect("warning");
    assert!(
        warning.contains("request.object.spec.template.spec.containers[0].image"),
        "{warning}"
    );
    still_serving(&server, Protocol::Http2).await;

    // Wrong content type: accepted when the body parses.
    let request = http::Request::post(server.url("/"))
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(bytes::Bytes::from(pod_review(
            "ct-1",
            &["nginx"],
        ))))
        .expect("request");
    let answer = client.send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["response"]["patch"].is_string());

    let metrics = server.metrics_text();
    assert!(
        metrics.contains("imageswap_admission_requests_total{outcome=\"bad_request\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imageswap_admission_requests_total{outcome=\"malformed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_gets_413_over_both_protocols() {
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            max_body_bytes: 64 * 1024,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let mut huge = pod_review("huge", &["nginx"]);
    huge.truncate(huge.len() - 2);
    huge.extend_from_slice(br#","padding":""#);
    huge.extend(std::iter::repeat_n(b'x', 200 * 1024));
    huge.extend_from_slice(br#""}}"#);
    for protocol in [Protocol::Http2, Protocol::Http1] {
        let answer = server.client(protocol).post(&server.url("/"), huge.clone()).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{protocol:?}");
        assert!(
            answer.json()["error"]
                .as_str()
                .expect("error")
                .contains("larger than 65536")
        );
        still_serving(&server, protocol).await;
    }

    // Without Content-Length (chunked), the cap applies while reading; the
    // body is just over the limit, as the rest is not read.
    let mut raw = RawTls::connect(&server).await;
    let head = "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n";
    raw.write(head.as_bytes()).await;
    for chunk in huge[..70 * 1024].chunks(16 * 1024) {
        raw.write(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        raw.write(chunk).await;
        raw.write(b"\r\n").await;
    }
    raw.write(b"0\r\n\r\n").await;
    let (status, _) = raw.read_response().await;
    assert_eq!(status, 413);
    still_serving(&server, Protocol::Http1).await;
    assert!(
        server
            .metrics_text()
            .contains("imageswap_admission_requests_total{outcome=\"too_large\"} 3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_within_the_body_limit_is_refused_cleanly() {
    let server = TestServer::start().await;
    let depth = 100_000;
    let mut body =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"deep","object":"#
            .to_vec();
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.extend_from_slice(b"}}");
    assert!(body.len() < 3 * 1024 * 1024);
    for protocol in [Protocol::Http2, Protocol::Http1] {
        let answer = server.client(protocol).post(&server.url("/"), body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(
            answer.json()["error"]
                .as_str()
                .expect("error")
                .contains("deeper than")
        );
        still_serving(&server, protocol).await;
    }
}

/// `review` through the core with the default options: the answer, and the
/// images kept although a rule matched them.
fn admit_json(state: &RulesState, review: &[u8]) -> (serde_json::Value, Vec<String>) {
    let mut body = review.to_vec();
    let options = Options {
        disable_label: "k8s.twr.io/imageswap",
        shadow: false,
        deadline: None,
    };
    let admission = admission::admit(&mut body, &options, &state.decider()).expect("a review");
    let answer = serde_json::from_slice(&admission.body).expect("JSON");
    (
        answer,
        admission.kept.iter().map(|k| k.image.to_owned()).collect(),
    )
}

/// Every `image` string anywhere in an object (containers, init and
/// ephemeral containers, under any template).
fn all_images(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("image", serde_json::Value::String(image)) => out.push(image.clone()),
                    _ => all_images(child, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| all_images(item, out)),
        _ => {}
    }
}

/// issue 21 item 1: with values that can only give invalid images (a
/// scheme, uppercase in the path, `//`, a port carried into the path), no
/// fixture's answer patches an invalid reference into its object — applied
/// with `json-patch`, every image is valid or the one the object had — and
/// each kept image is named in a warning.
#[test]
fn no_fixture_is_patched_with_an_invalid_image() {
    use imageswap::swap::reference::is_valid_reference;
    let maps = "default::http://mirror.example.com\nquay.io::mirror.example.com/Team\n\
                gcr.io::mirror.example.com/a//b\ndocker.io/library::harbor.corp.example:8443/hub\n\
                registry.k8s.io::ok.example.com\n";
    let state = RulesState::new(imageswap::swap::Engine::from_maps_text(maps).0, 100);
    let mut kept_somewhere = 0;
    for fixture in &fixtures() {
        let (answer, kept) = admit_json(&state, &fixture.bytes);
        let object = crate::support::applied(&fixture.bytes, &answer);
        let mut before = Vec::new();
        all_images(&fixture.review["request"]["object"], &mut before);
        let mut after = Vec::new();
        all_images(&object, &mut after);
        for image in &after {
            assert!(
                is_valid_reference(image) || before.contains(image),
                "{}: patched in {image:?}",
                fixture.name
            );
        }
        let warnings = crate::support::warnings(&answer);
        kept_somewhere += kept.len();
        // One warning per kept image (long names elided in the middle).
        let named = warnings
            .iter()
            .filter(|w| w.starts_with("imageswap: kept ") && w.contains(" gives an invalid image \""))
            .count();
        assert_eq!(named, kept.len().min(10), "{}: {warnings:?}", fixture.name);
        if let Some(first) = kept.first()
            && first.len() < 24
        {
            assert!(
                warnings[0].starts_with(&format!("imageswap: kept {first}: rule ")),
                "{warnings:?}"
            );
        }
    }
    assert!(
        kept_somewhere >= 5,
        "the bad rules matched {kept_somewhere} images"
    );
}

/// issue 21 item 4: Istio's `auto` (and any image of the keep list) is
/// never rewritten, in containers, init containers or a template; the
/// other images of the same object still are.
#[test]
fn placeholders_are_never_rewritten() {
    let engine = imageswap::swap::Engine::from_maps_text("default::harbor.example.com\n")
        .0
        .keeping(&["auto".to_owned(), "istio/proxyv2:placeholder".to_owned()]);
    let state = RulesState::new(engine, 100);
    let spec = serde_json::json!({
        "initContainers": [{"name": "init", "image": "auto"}],
        "containers": [
            {"name": "istio-proxy", "image": "auto"},
            {"name": "app", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "istio/proxyv2:placeholder"},
        ],
    });
    let reviews = [
        serde_json::json!({"uid": "p", "kind": {"kind": "Pod"}, "operation": "CREATE",
            "object": {"kind": "Pod", "spec": spec}}),
        serde_json::json!({"uid": "d", "kind": {"kind": "Deployment"}, "operation": "CREATE",
            "object": {"kind": "Deployment", "spec": {"template": {"spec": spec}}}}),
    ];
    for request in reviews {
        let review = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
        }))
        .expect("json");
        let (answer, _) = admit_json(&state, &review);
        let patch = decoded_patch(&answer);
        let values: Vec<&str> = patch
            .as_array()
            .expect("a patch")
            .iter()
            .filter_map(|op| op["value"].as_str())
            .collect();
        assert_eq!(values, ["harbor.example.com/nginx:1.27"], "{patch}");
        assert!(
            crate::support::warnings(&answer).is_empty(),
            "a placeholder is no warning"
        );
    }
    let decision = state.engine().decide("auto");
    assert_eq!(
        (decision.result, decision.rule.as_str()),
        (None, "kept-placeholder")
    );
}
