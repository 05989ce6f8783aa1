//! Any maps file and image: loading and deciding never panic, and an
//! invalid reference is never changed.
#![no_main]

use imageswap::swap::reference::is_valid_reference;
use imageswap::swap::{Engine, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (maps, image) = input;
    let (engine, _findings) = Engine::from_maps_text(maps);
    let decision = engine.decide(image);
    if !is_valid_reference(image) {
        assert_eq!(decision.rule, Rule::Invalid);
        assert!(decision.result.is_none());
    }
});
