//! Any request body through the admission core (`admit`, bytes → answer):
//! never a panic, and when an answer comes back it is a JSON
//! AdmissionReview with `allowed: true` for the request's uid and version,
//! whose patch (present exactly when the verdict is "patched") base64-decodes
//! to a JSON array of one `replace` per decided change. When serde_json reads
//! the same body (last of a repeated key wins, as in Go), it finds the same
//! uid, and every patch path points at the image it replaces. Shadow mode decides the same changes and returns no patch; a
//! deadline in the past never returns a patch.
#![no_main]

use std::collections::HashSet;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use imageswap::admission::{Admission, ImageDecision, Options, Verdict, admit};
use imageswap::swap::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The admission fixtures' maps, plus a [REPLACE] glob and a `-` prefix.
const MAPS: &str = concat!(
    include_str!("../../tests/fixtures/maps/fixtures.conf"),
    "\n[REPLACE]ghcr.io/*::mirror.example.com/ghcr\n",
    "gcr.io::mirror.example.com/hub-\n",
);

const LABEL: &str = "k8s.twr.io/imageswap";

fn options(shadow: bool, deadline: Option<Instant>) -> Options<'static> {
    Options {
        disable_label: LABEL,
        shadow,
        deadline,
    }
}

/// The answer's JSON and its decoded patch (`None` when there is none).
fn read_answer(admission: &Admission<'_>) -> (Value, Option<Vec<Value>>) {
    let answer: Value = serde_json::from_slice(&admission.body).expect("the answer is JSON");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    assert_eq!(
        answer["apiVersion"],
        admission.request.api_version.as_str(),
        "{answer}"
    );
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["uid"], admission.request.uid, "{answer}");
    let patch = match response.get("patch") {
        None => {
            assert!(response.get("patchType").is_none(), "{answer}");
            None
        }
        Some(patch) => {
            assert_eq!(response["patchType"], "JSONPatch", "{answer}");
            let text = patch.as_str().expect("the patch is a string");
            let bytes = BASE64.decode(text).expect("the patch is base64");
            let ops: Value = serde_json::from_slice(&bytes).expect("the patch is JSON");
            let Value::Array(ops) = ops else {
                panic!("the patch is not an array: {ops}");
            };
            Some(ops)
        }
    };
    if let Verdict::Malformed(message) = &admission.verdict {
        let warning = response["warnings"][0]
            .as_str()
            .expect("a malformed object is warned about");
        assert!(warning.contains(message.as_str()), "{answer}");
    }
    (answer, patch)
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static ENGINE: Engine = Engine::from_maps_text(MAPS).0;
    }
    ENGINE.with(|engine| {
        let decide = |image: &str| ImageDecision::from(engine.decide(image));
        // What serde_json reads: like Go's encoding/json (and so the API
        // server, which applies the patch), the last of a repeated key wins.
        let strict = serde_json::from_slice::<Value>(data).ok();

        let mut body = data.to_vec();
        let Ok(admission) = admit(&mut body, &options(false, None), &decide) else {
            return;
        };
        let (_answer, patch) = read_answer(&admission);
        assert_eq!(
            patch.is_some(),
            admission.verdict == Verdict::Patched,
            "{:?}",
            admission.verdict
        );
        if matches!(admission.verdict, Verdict::Patched | Verdict::Shadowed) {
            assert!(!admission.changes.is_empty());
        } else {
            assert!(admission.changes.is_empty(), "{:?}", admission.verdict);
        }
        assert!(admission.changes.len() <= admission.images);
        if let Some(request) = strict.as_ref().map(|s| &s["request"]) {
            assert_eq!(request["uid"], admission.request.uid, "uid read differently");
        }

        if let Some(ops) = &patch {
            // One replace per change, then at most one `add` of the
            // original-images record, on the pod template's metadata.
            let (replaces, record) = ops.split_at(ops.len().min(admission.changes.len()));
            assert_eq!(replaces.len(), admission.changes.len());
            assert!(
                record.len() <= 1,
                "more than one op after the replaces: {record:?}"
            );
            if let Some(op) = record.first() {
                assert_eq!(op["op"], "add", "{op}");
                let path = op["path"].as_str().expect("the path is a string");
                let first = replaces[0]["path"].as_str().expect("the path is a string");
                let template = first.rsplit_once("/spec/").map_or("", |(t, _)| t);
                let tail = path
                    .strip_prefix(template)
                    .unwrap_or_else(|| panic!("the record {path} is not on the template {template}"));
                assert!(
                    [
                        "/metadata",
                        "/metadata/annotations",
                        "/metadata/annotations/imageswap.k8s.twr.io~1original-images"
                    ]
                    .contains(&tail),
                    "{op}"
                );
            }
            let mut paths = HashSet::new();
            for (op, change) in replaces.iter().zip(&admission.changes) {
                assert_eq!(op["op"], "replace", "{op}");
                assert_eq!(op["value"], &*change.to, "{op}");
                let path = op["path"].as_str().expect("the path is a string");
                assert!(path.ends_with("/image"), "{op}");
                assert!(paths.insert(path.to_owned()), "two replaces of {path}");
                assert_eq!(decide(change.from).result.as_deref(), Some(&*change.to));
                if let Some(object) = strict.as_ref().map(|s| &s["request"]["object"]) {
                    assert_eq!(
                        object.pointer(path).and_then(Value::as_str),
                        Some(change.from),
                        "the patch path {path} does not hold the image it replaces"
                    );
                }
            }
        }

        // Shadow mode: the same decisions, never a patch.
        let mut body = data.to_vec();
        let shadow = admit(&mut body, &options(true, None), &decide).expect("answered once, answered again");
        let (_, shadow_patch) = read_answer(&shadow);
        assert!(shadow_patch.is_none(), "a patch in shadow mode");
        let expected = match &admission.verdict {
            Verdict::Patched => Verdict::Shadowed,
            other => other.clone(),
        };
        assert_eq!(shadow.verdict, expected);
        assert_eq!(shadow.changes, admission.changes);

        // A deadline already past: no patch, whatever the review.
        let mut body = data.to_vec();
        let late = admit(&mut body, &options(false, Some(Instant::now())), &decide)
            .expect("answered once, answered again");
        let (_, late_patch) = read_answer(&late);
        assert!(
            late_patch.is_none(),
            "a patch after the deadline: {:?}",
            late.verdict
        );
    });
});
