//! Shared test harness: fixtures, and (for the server tests) an in-process
//! `serve` on 127.0.0.1:0 with an rcgen certificate and TLS clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use imageswap::swap::Engine;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
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
