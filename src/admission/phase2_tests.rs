//! Phase 2 end to end: reviews through [`decide`] and [`Decided::answer`]
//! with verification verdicts and pull secrets, every patch applied with
//! a JSON Patch implementation (`json-patch`) to the object it is for.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::settings::SettingValue;

const MIRROR: &str = "harbor.example.com";

/// A second mirror, opted out like the first.
const LOCAL: &str = "registry.local:5000/";

/// Swaps every image into the mirror, leaving those already in a mirror
/// alone (like a maps file whose mirrors are opted out).
pub(super) fn mirror(image: &str) -> ImageDecision {
    let swap = !image.starts_with(MIRROR) && !image.starts_with(LOCAL);
    ImageDecision {
        result: swap.then(|| Arc::from(format!("{MIRROR}/{image}"))),
        rule: Rule::Default,
        kept: None,
    }
}

fn options(shadow: bool) -> Options<'static> {
    Options {
        disable_label: "k8s.twr.io/imageswap",
        shadow,
        deadline: None,
    }
}

pub(super) struct Run {
    pub verdict: Verdict,
    pub answer: Value,
    /// The object with the patch applied (the object itself without one).
    pub patched: Value,
    /// The decoded patch (`null` without one).
    pub patch: Value,
    pub added: usize,
}

pub(super) fn run_with(request: Value, secrets: &str, checks: &[Checked], shadow: bool) -> Run {
    run_by(request, secrets, checks, shadow, &mirror)
}

/// [`run_with`] with another decider.
pub(super) fn run_by(
    request: Value,
    secrets: &str,
    checks: &[Checked],
    shadow: bool,
    decider: &impl Decide,
) -> Run {
    let object = request["object"].clone();
    let mut body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
    }))
    .expect("json");
    let secrets = PullSecrets::parse_setting(secrets).expect("valid setting");
    let decided = decide(&mut body, &options(shadow), &secrets, decider).expect("a review");
    let admission = decided.answer(checks);
    let answer: Value = serde_json::from_slice(&admission.body).expect("answer is JSON");
    let patch = match answer["response"]["patch"].as_str() {
        None => Value::Null,
        Some(encoded) => {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64");
            serde_json::from_slice(&raw).expect("patch is JSON")
        }
    };
    assert_eq!(
        answer["response"]["patchType"].as_str().is_some(),
        !patch.is_null(),
        "patchType comes with a patch: {answer}"
    );
    let mut patched = object;
    if !patch.is_null() {
        let ops: json_patch::Patch = serde_json::from_value(patch.clone()).expect("an RFC 6902 patch");
        json_patch::patch(&mut patched, &ops).unwrap_or_else(|e| panic!("the patch applies: {e}: {patch}"));
    }
    Run {
        verdict: admission.verdict,
        answer,
        patched,
        patch,
        added: admission.pull_secrets_added,
    }
}

pub(super) fn run(request: Value, secrets: &str) -> Run {
    run_with(request, secrets, &[], false)
}

pub(super) fn create(kind: &str, object: Value) -> Value {
    json!({"uid": "u", "kind": {"kind": kind}, "operation": "CREATE", "object": object})
}

pub(super) fn pod(spec: Value) -> Value {
    create("Pod", json!({"kind": "Pod", "spec": spec}))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default()
}

const HARBOR: &str = "harbor.example.com=harbor-pull";

#[test]
fn an_absent_list_is_added_with_one_entry() {
    let r = run(
        pod(json!({"containers": [{"name": "a", "image": "nginx"}]})),
        HARBOR,
    );
    assert_eq!(r.verdict, Verdict::Patched);
    assert_eq!(
        r.patched["spec"]["containers"][0]["image"],
        "harbor.example.com/nginx"
    );
    assert_eq!(
        r.patched["spec"]["imagePullSecrets"],
        json!([{"name": "harbor-pull"}])
    );
    assert_eq!(r.patch[1]["path"], "/spec/imagePullSecrets");
    assert_eq!(r.added, 1);
    // A null list is absent too.
    let r = run(
        pod(json!({"imagePullSecrets": null, "containers": [{"image": "nginx"}]})),
        HARBOR,
    );
    assert_eq!(
        r.patched["spec"]["imagePullSecrets"],
        json!([{"name": "harbor-pull"}])
    );
}

#[test]
fn an_existing_list_is_appended_to_and_a_listed_name_not_repeated() {
    let r = run(
        pod(json!({"imagePullSecrets": [{"name": "other"}], "containers": [{"image": "nginx"}]})),
        HARBOR,
    );
    assert_eq!(
        names(&r.patched["spec"]["imagePullSecrets"]),
        ["other", "harbor-pull"]
    );
    assert_eq!(r.patch[1]["path"], "/spec/imagePullSecrets/-");
    let r = run(
        pod(json!({"imagePullSecrets": [{"name": "harbor-pull"}], "containers": [{"image": "nginx"}]})),
        HARBOR,
    );
    assert_eq!(names(&r.patched["spec"]["imagePullSecrets"]), ["harbor-pull"]);
    assert_eq!(
        r.patch.as_array().map(Vec::len),
        Some(1),
        "only the replace: {}",
        r.patch
    );
    assert_eq!(r.added, 0);
}

#[test]
fn two_registries_with_one_secret_add_it_once_and_two_secrets_both() {
    let spec = json!({"containers": [{"image": "nginx"}],
        "initContainers": [{"image": "registry.local:5000/tools/init"}]});
    let r = run(
        pod(spec.clone()),
        "harbor.example.com=pull,registry.local:5000=pull",
    );
    assert_eq!(r.patched["spec"]["imagePullSecrets"], json!([{"name": "pull"}]));
    let r = run(pod(spec), "harbor.example.com=pull,registry.local:5000=local");
    assert_eq!(names(&r.patched["spec"]["imagePullSecrets"]), ["local", "pull"]);
    assert_eq!(r.added, 2);
}

#[test]
fn init_and_ephemeral_container_images_count_and_unswapped_ones_too() {
    // Only an init container ends up in the mirror (the app's swap is kept
    // back: its image is not there).
    let spec = json!({"containers": [{"image": "quay.io/x/app"}],
        "initContainers": [{"image": "busybox"}]});
    let r = run_with(
        pod(spec),
        "harbor.example.com=pull",
        &[Checked::Missing, Checked::Present],
        false,
    );
    assert_eq!(r.patched["spec"]["containers"][0]["image"], "quay.io/x/app");
    assert_eq!(names(&r.patched["spec"]["imagePullSecrets"]), ["pull"]);
    // Only an ephemeral container is in the mirror unswapped; quay.io's
    // secret is not needed: its image's final registry is the mirror.
    let spec = json!({"containers": [{"image": "quay.io/x/app"}],
        "ephemeralContainers": [{"image": "harbor.example.com/tools/debug"}]});
    let r = run(pod(spec), "harbor.example.com=pull,quay.io=quay");
    assert_eq!(names(&r.patched["spec"]["imagePullSecrets"]), ["pull"]);
    // Kept back, the quay.io image needs quay.io's secret.
    let spec = json!({"containers": [{"image": "quay.io/x/app"}],
        "ephemeralContainers": [{"image": "harbor.example.com/tools/debug"}]});
    let r = run_with(
        pod(spec),
        "harbor.example.com=pull,quay.io=quay",
        &[Checked::Missing],
        false,
    );
    assert_eq!(names(&r.patched["spec"]["imagePullSecrets"]), ["pull", "quay"]);
    let spec = json!({"containers": [{"image": "harbor.example.com/app"}]});
    let r = run(pod(spec), "harbor.example.com=pull");
    assert_eq!(r.verdict, Verdict::Patched, "the secret is a patch");
    assert_eq!(
        r.patch,
        json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "pull"}]}])
    );
    // No image in a configured registry: no secret, no patch.
    let r = run(
        pod(json!({"containers": [{"image": "harbor.example.com/app"}]})),
        "quay.io=q",
    );
    assert_eq!((r.verdict, r.patch), (Verdict::Unchanged, Value::Null));
}

#[test]
fn never_on_a_pod_update_but_on_a_workload_update() {
    let old = json!({"containers": [{"name": "a", "image": "harbor.example.com/nginx"}]});
    let new = json!({"containers": [{"name": "a", "image": "harbor.example.com/nginx"},
        {"name": "b", "image": "redis"}]});
    let update = |kind: &str, old: Value, new: Value| {
        json!({"uid": "u", "kind": {"kind": kind}, "operation": "UPDATE",
            "object": new, "oldObject": old})
    };
    let r = run(
        update("Pod", json!({"spec": old.clone()}), json!({"spec": new.clone()})),
        HARBOR,
    );
    assert_eq!(
        r.patched["spec"]["containers"][1]["image"],
        "harbor.example.com/redis"
    );
    assert!(r.patched["spec"].get("imagePullSecrets").is_none(), "{}", r.patch);
    // The same pod's ephemeral containers (the only subresource that patches).
    let mut sub = update("Pod", json!({"spec": old.clone()}), json!({"spec": new.clone()}));
    sub["subResource"] = json!("ephemeralcontainers");
    assert!(run(sub, HARBOR).patched["spec"].get("imagePullSecrets").is_none());
    // A Deployment's template may change on UPDATE: it gets the secret,
    // also for the image admitted before.
    let template = |spec: Value| json!({"spec": {"template": {"spec": spec}}});
    let r = run(
        update(
            "Deployment",
            template(old.clone()),
            template(json!({"containers": [{"name": "a", "image": "harbor.example.com/nginx"}]})),
        ),
        HARBOR,
    );
    assert_eq!(r.verdict, Verdict::Patched);
    assert_eq!(
        r.patch,
        json!([{"op": "add", "path": "/spec/template/spec/imagePullSecrets",
            "value": [{"name": "harbor-pull"}]}])
    );
    let r = run(update("Deployment", template(old), template(new)), HARBOR);
    assert_eq!(
        r.patched["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "harbor-pull"}])
    );
}

#[test]
fn a_cronjob_gets_it_in_its_nested_template() {
    let object = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "imagePullSecrets": [{"name": "x"}], "containers": [{"image": "nginx"}]}}}}}});
    let r = run(create("CronJob", object), HARBOR);
    let spec = &r.patched["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], "harbor.example.com/nginx");
    assert_eq!(names(&spec["imagePullSecrets"]), ["x", "harbor-pull"]);
    assert_eq!(
        r.patch[1]["path"],
        "/spec/jobTemplate/spec/template/spec/imagePullSecrets/-"
    );
}

#[test]
fn a_list_of_another_shape_is_left_alone() {
    let r = run(
        pod(json!({"imagePullSecrets": "harbor-pull", "containers": [{"image": "nginx"}]})),
        HARBOR,
    );
    assert_eq!(r.patch.as_array().map(Vec::len), Some(1), "{}", r.patch);
    assert_eq!(r.patched["spec"]["imagePullSecrets"], "harbor-pull");
}

#[test]
fn kept_images_are_not_patched_and_are_the_final_image_for_secrets() {
    let spec = json!({"containers": [{"image": "nginx:1.27"}, {"image": "redis"}, {"image": "envoy"}]});
    let checks = [
        Checked::Missing,
        Checked::Present,
        Checked::Unverified {
            reason: "timeout after 1s".into(),
            keep: false,
        },
    ];
    let r = run_with(pod(spec.clone()), HARBOR, &checks, false);
    assert_eq!(r.verdict, Verdict::Patched);
    let images: Vec<&str> = r.patched["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert_eq!(
        images,
        [
            "nginx:1.27",
            "harbor.example.com/redis",
            "harbor.example.com/envoy"
        ]
    );
    assert_eq!(
        r.answer["response"]["warnings"],
        json!([
            "imageswap: kept nginx:1.27: harbor.example.com/nginx:1.27 is not in the mirror",
            "imageswap: harbor.example.com/envoy not verified: timeout after 1s",
        ])
    );
    assert_eq!(names(&r.patched["spec"]["imagePullSecrets"]), ["harbor-pull"]);

    // Every change kept: nothing patched, not even the secret (no image is
    // in the mirror), but the warnings are there.
    let keep = Checked::Unverified {
        reason: "harbor.example.com answered 503".into(),
        keep: true,
    };
    let r = run_with(
        pod(json!({"containers": [{"image": "nginx"}]})),
        HARBOR,
        &[keep],
        false,
    );
    assert_eq!((r.verdict, r.patch), (Verdict::Unchanged, Value::Null));
    assert_eq!(
        r.answer["response"]["warnings"],
        json!(["imageswap: kept nginx: harbor.example.com answered 503"])
    );
    assert_eq!(r.answer["response"]["allowed"], true);
}

#[test]
fn shadow_mode_patches_and_warns_nothing() {
    let r = run_with(
        pod(json!({"containers": [{"image": "nginx"}]})),
        HARBOR,
        &[Checked::Missing],
        true,
    );
    assert_eq!(r.verdict, Verdict::Shadowed);
    assert_eq!(r.patch, Value::Null);
    assert!(r.answer["response"].get("warnings").is_none(), "{}", r.answer);
}

#[test]
fn many_warnings_are_capped_at_ten_and_one_more() {
    let containers: Vec<Value> = (0..13).map(|i| json!({"image": format!("img{i}")})).collect();
    let checks = vec![Checked::Missing; 13];
    let r = run_with(pod(json!({"containers": containers})), "", &checks, false);
    let warnings = r.answer["response"]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 11);
    assert_eq!(warnings[10], "imageswap: … and 3 more");
    assert_eq!(
        warnings[0],
        "imageswap: kept img0: harbor.example.com/img0 is not in the mirror"
    );
    assert!(
        warnings
            .iter()
            .all(|w| w.as_str().is_some_and(|w| w.chars().count() <= 120))
    );
    assert_eq!((r.verdict, r.patch), (Verdict::Unchanged, Value::Null));
}

#[test]
fn without_checks_or_secrets_the_answer_is_the_one_admit_gives() {
    let request = pod(json!({"containers": [{"image": "nginx"}], "initContainers": [{"image": "a/b"}]}));
    let mut body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request.clone()
    }))
    .expect("json");
    let mut copy = body.clone();
    let admitted = admit(&mut body, &options(false), &mirror).expect("review");
    let r = run(request, "");
    assert_eq!(
        r.answer,
        serde_json::from_slice::<Value>(&admitted.body).expect("json")
    );
    let none = PullSecrets::NONE;
    let decided = decide(&mut copy, &options(false), &none, &mirror).expect("review");
    assert_eq!(decided.answer(&[]).body, admitted.body, "byte for byte");
}
