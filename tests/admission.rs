//! The admission fixtures: each `tests/fixtures/admission/<case>.review.json`
//! is a review as kube-apiserver sends it, next to `<case>.patch.json`, the
//! decoded patch expected back (`null`: no `patch` and no `patchType`).

mod common;

use std::sync::Arc;

use imageswap::admission::{self, Options};
use imageswap::cache::RulesState;

use common::{Fixture, decoded_patch, fixtures, fixtures_engine};

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
        let expected = fixture.patch.as_array().map_or(0, Vec::len);
        assert_eq!(
            admission.changes.len(),
            expected,
            "{}: changes still decided",
            fixture.name
        );
    }
}
