//! Properties of the swap engine over generated inputs: it never panics on
//! any image or maps file, invalid references are always unchanged, swapping
//! a result again is stable when the mirror is opted out, and `[REPLACE]`
//! globs agree with a plain shell-glob matcher.

use imageswap::swap::reference::{is_valid_reference, is_valid_result};
use imageswap::swap::{Engine, Rule};
use proptest::prelude::*;

const SPEC_A: &str = include_str!("../../fixtures/maps/spec-a.conf");
const SPEC_B: &str = include_str!("../../fixtures/maps/spec-b.conf");

/// Maps whose mirror is opted out (`mirror.example::`), in every rule form
/// that can point at it.
const MIRRORED: &str = "default::mirror.example/default\n\
                        docker.io::mirror.example/hub-\n\
                        docker.io/library::mirror.example/library\n\
                        quay.io::mirror.example/quay\n\
                        ghcr.io/org::mirror.example/org\n\
                        gcr.io:443::mirror.example\n\
                        [REPLACE]registry.k8s.io/*::mirror.example/k8s/\n\
                        mirror.example::\n";

/// Valid-looking references: optional registry (with port), path
/// components with separators, optional tag and digest.
fn reference() -> impl Strategy<Value = String> {
    let registry = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_owned()),
        Just("quay.io/".to_owned()),
        Just("ghcr.io/".to_owned()),
        Just("gcr.io:443/".to_owned()),
        Just("registry.k8s.io/".to_owned()),
        Just("localhost:5000/".to_owned()),
        Just("mirror.example/".to_owned()),
        "[a-z]{1,8}\\.[a-z]{2,3}(:[0-9]{2,5})?/",
    ];
    let component = "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?";
    let path = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let tag = prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}");
    let digest = prop::option::of("[0-9a-f]{64}");
    (registry, path, tag, digest).prop_map(|(r, p, t, d)| {
        let mut s = format!("{r}{p}");
        if let Some(t) = t {
            s.push(':');
            s.push_str(&t);
        }
        if let Some(d) = d {
            s.push_str("@sha256:");
            s.push_str(&d);
        }
        s
    })
}

/// Strings close to references: real ones with one character changed.
fn near_reference() -> impl Strategy<Value = String> {
    (
        reference(),
        any::<prop::sample::Index>(),
        "[ -~]|[A-Z]|[\\\\()\\[\\]@:/#]",
    )
        .prop_map(|(r, i, c)| {
            let mut chars: Vec<char> = r.chars().collect();
            let at = i.index(chars.len());
            chars[at] = c.chars().next().unwrap_or('x');
            chars.into_iter().collect()
        })
}

/// Maps-file-like text: lines built from keys, separators and values.
fn maps_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("default".to_owned()),
        Just("noswap_wildcards".to_owned()),
        "[a-z.:/0-9]{0,12}",
        "\\[EXACT\\][a-z.:/0-9]{0,12}",
        "\\[REPLACE\\][a-z.*?\\[\\]!{},/]{0,12}",
    ];
    let sep = prop_oneof![Just("::"), Just(":"), Just(":::"), Just(""), Just(" :: ")];
    let value = "[a-z.:/,\\- \t#0-9]{0,16}";
    let line = prop_oneof![
        (key, sep, value).prop_map(|(k, s, v)| format!("{k}{s}{v}")),
        "\\PC{0,20}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

/// The shell's glob (`fnmatch`): `*`, `?`, `[...]` with `!` and ranges.
fn fnmatch(pattern: &[char], text: &[char]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).any(|i| fnmatch(&pattern[1..], &text[i..])),
        Some('?') => !text.is_empty() && fnmatch(&pattern[1..], &text[1..]),
        Some('[') => match class(&pattern[1..]) {
            Some((members, negated, len)) => {
                !text.is_empty() && (members(text[0]) != negated) && fnmatch(&pattern[1 + len..], &text[1..])
            }
            None => text.first() == Some(&'[') && fnmatch(&pattern[1..], &text[1..]),
        },
        Some(c) => text.first() == Some(c) && fnmatch(&pattern[1..], &text[1..]),
    }
}

type Members = Box<dyn Fn(char) -> bool>;

/// Parses a class body after `[`: its membership test, negation and length
/// including the closing `]`.
fn class(body: &[char]) -> Option<(Members, bool, usize)> {
    let mut i = 0;
    let negated = body.first() == Some(&'!');
    if negated {
        i += 1;
    }
    let start = i;
    if body.get(i) == Some(&']') {
        i += 1;
    }
    while i < body.len() && body[i] != ']' {
        i += 1;
    }
    if i >= body.len() {
        return None;
    }
    let items: Vec<char> = body[start..i].to_vec();
    let mut ranges = Vec::new();
    let mut j = 0;
    while j < items.len() {
        if j + 2 < items.len() && items[j + 1] == '-' {
            ranges.push((items[j], items[j + 2]));
            j += 3;
        } else {
            ranges.push((items[j], items[j]));
            j += 1;
        }
    }
    Some((
        Box::new(move |c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)),
        negated,
        i + 1,
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_any_image(image in prop_oneof!["\\PC{0,80}", ".{0,40}", near_reference(), reference()]) {
        for maps in [SPEC_A, SPEC_B, MIRRORED] {
            let (engine, _) = Engine::from_maps_text(maps);
            let _ = engine.decide(&image);
        }
        let _ = Engine::legacy(Some("mirror.io")).decide(&image);
    }

    #[test]
    fn never_panics_on_any_maps_file(maps in maps_text(), image in prop_oneof![reference(), near_reference()]) {
        let (engine, _) = Engine::from_maps_text(&maps);
        let _ = engine.decide(&image);
    }

    #[test]
    fn invalid_references_are_always_unchanged(image in prop_oneof!["\\PC{0,80}", near_reference()]) {
        prop_assume!(!is_valid_reference(&image));
        for maps in [SPEC_A, SPEC_B, MIRRORED, "default::x.io\n[REPLACE]*::y.io\n"] {
            let (engine, _) = Engine::from_maps_text(maps);
            let d = engine.decide(&image);
            prop_assert_eq!((d.result, d.rule), (None, Rule::Invalid));
        }
        let legacy = Engine::legacy(Some("mirror.io"));
        let d = legacy.decide(&image);
        prop_assert_eq!((d.result, d.rule), (None, Rule::Invalid));
    }

    /// maps.md §3 step 7: whatever the rules, a changed result is a valid
    /// reference; a rule whose result is not is reported, never applied.
    #[test]
    fn every_changed_result_is_a_valid_reference(
        maps in prop::collection::vec(
            (
                prop_oneof![Just("default".to_owned()), "[a-z]{1,6}\\.io", Just("docker.io/library".to_owned()),
                    "\\[EXACT\\][a-z]{1,4}", "\\[REPLACE\\][a-z*?/.]{1,6}"],
                prop_oneof!["[a-zA-Z0-9.:/_-]{0,16}", Just("http://mirror.example.com".to_owned()),
                    Just("mirror.example.com/Team".to_owned()), Just("mirror.example.com/a//b".to_owned()),
                    Just("harbor.example:8443/quay".to_owned())],
            ),
            1..6,
        ),
        image in prop_oneof![reference(), "[a-z]{1,4}(:[0-9]{3})?/[a-z]{1,4}"],
    ) {
        let text: String = maps.iter().map(|(k, v)| format!("{k}::{v}\n")).collect();
        let (engine, _) = Engine::from_maps_text(&text);
        let d = engine.decide(&image);
        if let Some(result) = &d.result {
            // Step 7's own test: a reference whose port a node can dial.
            prop_assert!(is_valid_result(result), "{} -> {} under {:?}", image, result, text);
        }
        prop_assert_eq!(d.rule == Rule::InvalidResult, d.rejected.is_some());
        if let Some(rejected) = &d.rejected {
            // Refused by step 7: not a reference, or a port outside 1–65535
            // (`a:0/a` is a reference, with port 0).
            prop_assert!(!is_valid_result(rejected), "{}", rejected);
        }
    }

    #[test]
    fn generated_references_are_valid(image in reference()) {
        prop_assert!(is_valid_reference(&image) || image.len() > 255, "{}", image);
    }

    #[test]
    fn swapping_twice_is_stable_when_the_mirror_is_opted_out(image in reference()) {
        let (engine, _) = Engine::from_maps_text(MIRRORED);
        let once = engine.decide(&image).result.unwrap_or_else(|| image.clone());
        let twice = engine.decide(&once);
        prop_assert_eq!(twice.result, None, "{} -> {} changed again by {}", image, once, twice.rule);
    }

    #[test]
    fn replace_globs_agree_with_the_shell(pattern in "[a-c/.*?\\[\\]!-]{0,8}", image in "[a-c]{1,3}(/[a-c]{1,3}){0,2}") {
        let (engine, _) = Engine::from_maps_text(&format!("[REPLACE]{pattern}::x.io\n"));
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = image.chars().collect();
        let d = engine.decide(&image);
        prop_assert_eq!(d.rule == Rule::Replace, fnmatch(&p, &t), "pattern {:?} image {:?}", pattern, image);
    }
}

/// The case proptest found: `[REPLACE]*::a:0` turns `a` into `a:0/a`, a
/// reference whose port 0 no node can dial. Step 7 refuses it, and the
/// property above must judge it by step 7's test, not the grammar's.
#[test]
fn a_result_on_port_0_is_refused_by_step_7_though_the_grammar_accepts_it() {
    let (engine, _) = Engine::from_maps_text("[REPLACE]*::a:0\n");
    let d = engine.decide("a");
    assert_eq!(d.rule, Rule::InvalidResult, "{d:?}");
    let rejected = d.rejected.as_deref().expect("the rejected result is kept");
    assert!(
        is_valid_reference(rejected) && !is_valid_result(rejected),
        "{rejected}"
    );
}
