//! The original-images annotation end to end (issue 22): reviews through
//! both phases, the patch applied with `json-patch` to the object, and the
//! annotation read back from the patched object and parsed.

use std::sync::Arc;

use serde_json::{Value, json};

use super::phase2_tests::{Run, create, mirror, pod, run, run_by};
use super::*;

const KEY: &str = "imageswap.k8s.twr.io/original-images";

/// The annotation of the patched object's pod template, parsed (`None`:
/// absent).
fn record_at(run: &Run, template: &[&str]) -> Option<Value> {
    let mut at = &run.patched;
    for segment in template {
        at = &at[*segment];
    }
    let text = at["metadata"]["annotations"][KEY].as_str()?;
    Some(serde_json::from_str(text).expect("the annotation is JSON"))
}

fn record(run: &Run) -> Option<Value> {
    record_at(run, &[])
}

#[test]
fn a_patched_pod_records_every_swapped_container_exactly() {
    let r = run(
        create(
            "Pod",
            json!({"kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {
                "initContainers": [{"name": "init", "image": "busybox:1"}],
                "containers": [{"name": "app", "image": "nginx:1"},
                               {"name": "done", "image": "harbor.example.com/redis:7"}],
                "ephemeralContainers": [{"name": "debug", "image": "alpine"}]}}),
        ),
        "",
    );
    assert_eq!(r.verdict, Verdict::Patched);
    // The whole object after the patch: the images swapped, the labels
    // kept, the annotations added (metadata had none).
    assert_eq!(
        r.patched,
        json!({"kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {
                KEY: r#"{"app":"nginx:1","init":"busybox:1","debug":"alpine"}"#}}, "spec": {
            "initContainers": [{"name": "init", "image": "harbor.example.com/busybox:1"}],
            "containers": [{"name": "app", "image": "harbor.example.com/nginx:1"},
                           {"name": "done", "image": "harbor.example.com/redis:7"}],
            "ephemeralContainers": [{"name": "debug", "image": "harbor.example.com/alpine"}]}})
    );
    // One op for the record, the last, in the same patch.
    assert_eq!(r.patch.as_array().map(Vec::len), Some(4), "{}", r.patch);
    assert_eq!(r.patch[3]["op"], "add");
    assert_eq!(r.patch[3]["path"], "/metadata/annotations");
}

#[test]
fn the_smallest_missing_piece_is_added_and_other_annotations_stay() {
    // No metadata at all: metadata is added.
    let r = run(
        pod(json!({"containers": [{"name": "app", "image": "nginx"}]})),
        "",
    );
    assert_eq!(r.patch[1]["path"], "/metadata");
    assert_eq!(record(&r), Some(json!({"app": "nginx"})));
    // A null metadata or annotations is absent too.
    let r = run(
        create(
            "Pod",
            json!({"metadata": {"annotations": null}, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
        ),
        "",
    );
    assert_eq!(r.patch[1]["path"], "/metadata/annotations");
    assert_eq!(record(&r), Some(json!({"a": "x"})));
    // Annotations there: only the key is added (`/` escaped as `~1`).
    let r = run(
        create(
            "Pod",
            json!({"metadata": {"annotations": {"team": "a", "x/y": "z"}},
                "spec": {"containers": [{"name": "a", "image": "x"}]}}),
        ),
        "",
    );
    assert_eq!(
        r.patch[1]["path"],
        "/metadata/annotations/imageswap.k8s.twr.io~1original-images"
    );
    let annotations = &r.patched["metadata"]["annotations"];
    assert_eq!(
        (&annotations["team"], &annotations["x/y"]),
        (&json!("a"), &json!("z"))
    );
    assert_eq!(record(&r), Some(json!({"a": "x"})));
}

#[test]
fn templates_record_on_the_pod_template_not_the_object() {
    for (kind, template) in [
        ("Deployment", &["spec", "template"][..]),
        ("StatefulSet", &["spec", "template"]),
        ("PodTemplate", &["template"]),
        ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
    ] {
        let mut object = json!({"kind": kind, "metadata": {"name": "w", "annotations": {"owner": "me"}}});
        let mut at = &mut object;
        for segment in template {
            at = &mut at[*segment];
        }
        *at = json!({"metadata": {"labels": {"app": "w"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}});
        let r = run(create(kind, object), "");
        assert_eq!(r.verdict, Verdict::Patched, "{kind}");
        assert_eq!(record_at(&r, template), Some(json!({"app": "nginx:1"})), "{kind}");
        assert_eq!(
            r.patched["metadata"]["annotations"],
            json!({"owner": "me"}),
            "{kind}: the object's own metadata is not touched"
        );
    }
}

#[test]
fn no_swap_no_record() {
    // Nothing to swap: no patch at all.
    let r = run(
        pod(json!({"containers": [{"name": "a", "image": "harbor.example.com/x"}]})),
        "",
    );
    assert_eq!((r.verdict, r.patch), (Verdict::Unchanged, Value::Null));
    // Only a pull secret added: no image replaced, nothing recorded.
    let r = run(
        pod(json!({"containers": [{"name": "a", "image": "harbor.example.com/x"}]})),
        "harbor.example.com=pull",
    );
    assert_eq!(r.verdict, Verdict::Patched);
    assert_eq!(record(&r), None, "{}", r.patch);
    // Every swap kept back by the verification: nothing recorded.
    let spec = json!({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]});
    let r = super::phase2_tests::run_with(
        pod(spec.clone()),
        "harbor.example.com=pull",
        &[Checked::Missing, Checked::Missing],
        false,
    );
    assert_eq!(record(&r), None, "{}", r.patch);
    // One kept back: only the other is recorded.
    let r = super::phase2_tests::run_with(
        pod(spec.clone()),
        "",
        &[Checked::Missing, Checked::Present],
        false,
    );
    assert_eq!(record(&r), Some(json!({"b": "redis"})));
    // Shadow mode patches nothing.
    let r = super::phase2_tests::run_with(pod(spec), "", &[], true);
    assert_eq!(r.patch, Value::Null);
    // A rule giving an invalid image keeps the image: no record.
    let invalid = |_: &str| ImageDecision {
        result: None,
        rule: Rule::InvalidResult,
        kept: Some(Arc::new(InvalidResult {
            key: "nginx".into(),
            result: "UPPER/x".into(),
        })),
    };
    let r = run_by(
        pod(json!({"containers": [{"name": "a", "image": "nginx"}]})),
        "",
        &[],
        false,
        &invalid,
    );
    assert_eq!(r.patch, Value::Null);
}

/// Prefixes `m/` to every image, already swapped or not: a maps file that
/// is not a fixed point (`default::m`), which swaps a swapped image again.
fn prefix(image: &str) -> ImageDecision {
    ImageDecision {
        result: Some(Arc::from(format!("m/{image}"))),
        rule: Rule::Default,
        kept: None,
    }
}

#[test]
fn an_existing_record_is_merged_keeping_first_originals_it_can_prove() {
    let existing = json!({"app": "nginx:1", "side": "redis:6", "gone": "old:1"}).to_string();
    let r = run_by(
        create(
            "Pod",
            json!({"metadata": {"annotations": {KEY: existing}}, "spec": {"containers": [
                // Swapped before (m/ of its recorded original): swapped
                // again, the first original stays.
                {"name": "app", "image": "m/nginx:1"},
                // Someone wrote a new image since: that is the original now.
                {"name": "side", "image": "redis:7"},
                // Not recorded yet.
                {"name": "new", "image": "envoy"}]}}),
        ),
        "",
        &[],
        false,
        &prefix,
    );
    assert_eq!(r.patched["spec"]["containers"][0]["image"], "m/m/nginx:1");
    assert_eq!(
        record(&r),
        Some(json!({"app": "nginx:1", "side": "redis:7", "new": "envoy", "gone": "old:1"})),
        "entries of containers not swapped now stay"
    );
}

#[test]
fn an_unparsable_record_is_replaced_with_a_warning() {
    for (existing, quoted) in [
        (json!("not json"), "not json"),
        (json!(r#"{"app": 1}"#), r#"{"app": 1}"#),
        (json!(["a"]), "an array"),
    ] {
        let r = run(
            create(
                "Pod",
                json!({"metadata": {"annotations": {KEY: existing}},
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}),
            ),
            "",
        );
        assert_eq!(record(&r), Some(json!({"app": "nginx"})), "{existing}");
        let warnings = r.answer["response"]["warnings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            warnings,
            [json!(format!(
                "imageswap: replaced {KEY}: not a JSON object of strings: \"{quoted}\""
            ))],
            "{existing}"
        );
    }
}

#[test]
fn metadata_of_the_wrong_shape_gets_the_swap_without_a_record() {
    for metadata in [json!("x"), json!({"annotations": ["x"]})] {
        let r = run(
            create(
                "Pod",
                json!({"metadata": metadata, "spec": {"containers": [{"name": "a", "image": "nginx"}]}}),
            ),
            "",
        );
        assert_eq!(r.verdict, Verdict::Patched);
        assert_eq!(r.patch.as_array().map(Vec::len), Some(1), "{}", r.patch);
    }
}

#[test]
fn an_update_records_the_images_it_swaps_into_the_record_it_has() {
    let existing = json!({"app": "nginx:1"}).to_string();
    let old = json!({"kind": "Pod", "metadata": {"annotations": {KEY: existing}}, "spec": {"containers": [
        {"name": "app", "image": "harbor.example.com/nginx:1"}]}});
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
    let r = run(
        json!({"uid": "u", "kind": {"kind": "Pod"}, "operation": "UPDATE", "subResource": "ephemeralcontainers",
            "object": new, "oldObject": old}),
        "",
    );
    assert_eq!(record(&r), Some(json!({"app": "nginx:1", "debug": "busybox"})));
    // A Deployment whose image an operator changed: the new original.
    let template = |image: &str, record: &str| {
        json!({"kind": "Deployment", "spec": {"template": {"metadata": {"annotations": {KEY: record}},
            "spec": {"containers": [{"name": "app", "image": image}]}}}})
    };
    let record_1 = json!({"app": "nginx:1"}).to_string();
    let r = run(
        json!({"uid": "u", "kind": {"kind": "Deployment"}, "operation": "UPDATE",
            "object": template("nginx:2", &record_1),
            "oldObject": template("harbor.example.com/nginx:1", &record_1)}),
        "",
    );
    assert_eq!(
        record_at(&r, &["spec", "template"]),
        Some(json!({"app": "nginx:2"}))
    );
}

#[test]
fn names_and_images_that_need_escaping_stay_valid_json() {
    let r = run_by(
        pod(json!({"containers": [{"name": "a\"b\\c", "image": "x\"y"}, {"image": "unnamed"}]})),
        "",
        &[],
        false,
        &mirror,
    );
    assert_eq!(record(&r), Some(json!({"a\"b\\c": "x\"y"})));
}
