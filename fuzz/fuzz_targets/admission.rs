//! Any request body through the admission core: never a panic, and an
//! answer is always a JSON AdmissionReview whose patch decodes.
#![no_main]

use std::sync::Arc;

use imageswap::admission::{ImageDecision, Options, admit};
use imageswap::swap::Engine;
use libfuzzer_sys::fuzz_target;

const MAPS: &str = "default::mirror.example/default\n\
                    docker.io::mirror.example/hub-\n\
                    docker.io/library::mirror.example/library\n\
                    quay.io::mirror.example/quay\n\
                    mirror.example::\n\
                    [REPLACE]ghcr.io/*::mirror.example/ghcr\n";

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static ENGINE: Engine = Engine::from_maps_text(MAPS).0;
    }
    ENGINE.with(|engine| {
        let decide = |image: &str| {
            let d = engine.decide(image);
            ImageDecision {
                result: d.result.map(Arc::from),
                rule: d.rule,
            }
        };
        let options = Options {
            disable_label: "k8s.twr.io/imageswap",
            shadow: false,
            deadline: None,
        };
        let mut body = data.to_vec();
        if let Ok(admission) = admit(&mut body, &options, &decide) {
            let answer: serde_json::Value =
                serde_json::from_slice(&admission.body).expect("the answer is JSON");
            assert_eq!(answer["kind"], "AdmissionReview");
            assert_eq!(answer["response"]["allowed"], true);
        }
    });
});
