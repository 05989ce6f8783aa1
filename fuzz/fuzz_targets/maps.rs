//! Any maps file and images: parsing, compiling, `maps check`'s lint and
//! deciding never panic; an invalid reference is never changed; a result
//! is never the image itself, and always a valid one (maps.md §3 step 7: an
//! invalid one is `invalid-result`, unchanged, the rejected result kept); deciding is deterministic, also across two
//! engines compiled from the same text (their hash maps are seeded apart).
//!
//! Input: the maps text, then a NUL byte, then one image per line (the
//! seed corpus of `seed-corpus.py` is written that way). Without a NUL, the
//! lines of the text are also the images.
#![no_main]

use imageswap::swap::lint::lint;
use imageswap::swap::maps::KeyKind;
use imageswap::swap::reference::{is_valid_reference, is_valid_result};
use imageswap::swap::{Decision, Engine, MapsFile, Rule};
use libfuzzer_sys::fuzz_target;

/// Images decided per input: enough for every image of a fixture.
const MAX_IMAGES: usize = 64;

fn check_decision(image: &str, d: &Decision<'_>, has_default: bool) {
    if !is_valid_reference(image) {
        assert_eq!(d.rule, Rule::Invalid, "{image:?}");
        assert!(d.result.is_none(), "invalid {image:?} changed: {d:?}");
        return;
    }
    assert_ne!(d.rule, Rule::Invalid, "{image:?}");
    assert_ne!(
        d.result.as_deref(),
        Some(image),
        "a result equal to the image is unchanged"
    );
    if let Some(result) = &d.result {
        assert!(is_valid_result(result), "{image:?}: an invalid result patched: {d:?}");
    }
    assert_eq!(d.rule == Rule::InvalidResult, d.rejected.is_some(), "{image:?}: {d:?}");
    match d.rule {
        Rule::None | Rule::Wildcard => assert!(d.result.is_none(), "{image:?}: {d:?}"),
        Rule::InvalidResult => assert!(
            d.result.is_none() && d.rejected.as_deref().is_some_and(|r| !is_valid_result(r)),
            "{image:?}: {d:?}"
        ),
        Rule::Legacy => panic!("a maps engine decided LEGACY for {image:?}"),
        _ => {}
    }
    // Without `default`, only [EXACT] and [REPLACE] apply (maps.md §3.3).
    if !has_default {
        assert!(
            matches!(
                d.rule,
                Rule::Exact | Rule::Replace | Rule::None | Rule::InvalidResult
            ),
            "{image:?}: {d:?} without default"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let (maps_bytes, images_bytes) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, data),
    };
    let text = String::from_utf8_lossy(maps_bytes);
    let images_text = String::from_utf8_lossy(images_bytes);

    let file = MapsFile::parse(&text);
    let lines = text.lines().count();
    for rule in &file.rules {
        assert!((1..=lines).contains(&rule.line), "{rule:?}");
        for part in [&rule.key, &rule.value] {
            assert!(
                !part.contains(char::is_whitespace) && !part.contains('#'),
                "{rule:?}"
            );
        }
    }
    for finding in &file.findings {
        assert!(
            finding.line.is_none_or(|l| (1..=lines).contains(&l)),
            "{finding:?}"
        );
    }
    assert_eq!(file, MapsFile::parse(&text), "parsing is deterministic");
    let has_default = file.rules.iter().any(|r| r.kind == KeyKind::Default);

    let (engine, findings) = Engine::from_maps_file(&file);
    let (again, findings_again) = Engine::from_maps_text(&text);
    assert_eq!(findings, findings_again);
    let _ = lint(&file, &engine);

    // LEGACY mode with the first line as its prefix.
    let prefix = text.lines().next().unwrap_or_default();
    let legacy = Engine::legacy(Some(prefix));

    for image in images_text.lines().take(MAX_IMAGES) {
        let d = engine.decide(image);
        check_decision(image, &d, has_default);
        assert_eq!(d, engine.decide(image), "deciding twice differs for {image:?}");
        assert_eq!(
            d,
            again.decide(image),
            "two engines of one text differ for {image:?}"
        );

        let l = legacy.decide(image);
        if is_valid_reference(image) {
            assert!(matches!(l.rule, Rule::Legacy | Rule::InvalidResult), "{image:?}: {l:?}");
            if let Some(result) = &l.result {
                assert!(
                    result.starts_with(prefix) && !image.contains(prefix),
                    "{image:?}: {l:?}"
                );
            }
        } else {
            assert_eq!((l.rule, &l.result), (Rule::Invalid, &None), "{image:?}");
        }
    }
});
