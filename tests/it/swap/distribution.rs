//! The reference parser against the test tables of the distribution library
//! (`github.com/distribution/reference`, the parser the kubelet reads images
//! with): `../shared/data/distribution-reference-vectors.json` holds its
//! `reference_test.go`, `normalize_test.go` and `regexp_test.go` as data
//! (repository, commit and files named in the file). Read from `../shared`,
//! never copied into this repository.
//!
//! Every case goes through [`ImageRef::parse`]: the validity the Go test
//! asserts, and the registry/path split, name, tag, digest and normalised
//! string where the case gives them. Where we differ on purpose the case is
//! an exception with its reason, and an exception that no longer differs
//! fails the test too, so the list cannot go stale.

use std::path::PathBuf;

use imageswap::swap::reference::{ImageRef, invalid_reason, is_valid_registry};
use serde_json::Value;

/// Cases where we differ from the library on purpose, by case id.
const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "reference_test.go:100:TestReferenceParse",
        "sha512 is refused there only because the Go test binary does not link crypto/sha512, so \
         go-digest reports it unavailable; every kubelet links it (crypto/tls) and accepts a \
         128-digit sha512, as maps.md section 2 says",
    ),
    (
        "normalize_test.go:182:TestParseRepositoryInfo#3",
        "index.docker.io is its own registry for the maps file, as in the original (maps.md \
         section 2); Docker folds it into docker.io",
    ),
    (
        "normalize_test.go:252:TestParseRepositoryInfo#3",
        "index.docker.io is its own registry for the maps file, as in the original (maps.md \
         section 2); Docker folds it into docker.io",
    ),
    (
        "normalize_test.go:448:TestParseAnyReference",
        "ParseAnyReference reads 64 hex digits as an image ID (a local image, no repository); a \
         pod's image goes through ParseNormalizedNamed, which refuses it, and so do we",
    ),
    (
        "regexp_test.go:309:TestFullNameRegexp",
        "the name regexp alone has no length limit; Parse adds the 255-character path limit, \
         and a pod's image is parsed, so we apply it (this 257-character name is refused)",
    ),
];

/// Expectations of the Go API that are display forms we never produce
/// (`FamiliarName`, `ParseDockerRef`'s implied `:latest`, `WithTag`/
/// `WithDigest` constructions): the case's validity is still checked.
const NOT_COMPARED: &[&str] = &[
    "familiar",
    "familiar_string",
    "docker_ref",
    "combined",
    "string",
    "digest_reference",
    "domain_semantics",
];

fn vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/distribution-reference-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the test tables live in ../shared/data)", path.display()));
    serde_json::from_str(&text).expect("the vectors file is JSON")
}

/// Docker's normalised split (`splitDockerDomain`): the registry, and the
/// path with `library/` for a one-component Docker Hub name.
fn normalized(r: &ImageRef<'_>) -> (String, String) {
    let repository = r.repository();
    let path = if r.is_library() {
        format!("library/{repository}")
    } else {
        repository.to_owned()
    };
    (r.reg.to_owned(), path)
}

/// The normalised string (`docker.io/library/nginx:1.27`): Go's
/// `String()` of a normalised reference.
fn full(r: &ImageRef<'_>) -> String {
    let (domain, path) = normalized(r);
    let mut full = format!("{domain}/{path}");
    if let Some(tag) = r.tag() {
        full = format!("{full}:{tag}");
    }
    if let Some(digest) = r.digest() {
        full = format!("{full}@{digest}");
    }
    full
}

/// Our parser's answer for one case, as the case's Go function would give
/// it: `Err(why)` when we disagree.
fn check(case: &Value) -> Result<(), String> {
    let input = case["input"].as_str().expect("input");
    let function = case["function"].as_str().expect("function");
    let valid = case["valid"].as_bool().expect("valid");
    let parsed = ImageRef::parse(input);
    let ours = match function {
        // The registry alone.
        "domainAndPort regexp" => is_valid_registry(input),
        // A bare image ID: the library refuses it as a name, and so must we,
        // for that reason (a 63-digit or upper-case string is no image ID).
        "anchoredIdentifierRegexp" => {
            let refused_as_id =
                parsed.is_none() && invalid_reason(input).is_some_and(|r| r.contains("image ID"));
            if refused_as_id != valid {
                return Err(format!(
                    "identifier regexp says {valid}; we refused it as an image ID: {refused_as_id} ({:?})",
                    invalid_reason(input)
                ));
            }
            return Ok(());
        }
        // A name without tag or digest.
        "anchoredNameRegexp" | "WithName" => parsed.is_some_and(|r| r.name() == input),
        // A name already in its canonical, normalised form.
        "ParseNamed" => parsed.is_some_and(|r| full(&r) == input),
        _ => parsed.is_some(),
    };
    if ours != valid {
        return Err(format!(
            "{function} says valid={valid}, we say {ours} (reason: {:?})",
            invalid_reason(input)
        ));
    }
    // A refused input must come with words a person can act on.
    if parsed.is_none() && invalid_reason(input).is_none() {
        return Err("refused without a reason".to_owned());
    }
    let (Some(r), Some(expect)) = (parsed, case.get("expect").and_then(Value::as_object)) else {
        return Ok(());
    };
    let semantics = expect.get("domain_semantics").and_then(Value::as_str);
    let (norm_domain, norm_path) = normalized(&r);
    for (key, want) in expect {
        if NOT_COMPARED.contains(&key.as_str()) {
            continue;
        }
        let want = want.as_str().unwrap_or_else(|| panic!("{key}: a string"));
        let got: String = match (key.as_str(), semantics) {
            ("tag", _) => r.tag().unwrap_or_default().to_owned(),
            ("digest", _) => r.digest().unwrap_or_default().to_owned(),
            ("name", Some("normalized")) => format!("{norm_domain}/{norm_path}"),
            ("name", _) => r.name().to_owned(),
            ("full", _) => full(&r),
            ("domain", Some("normalized")) => norm_domain.clone(),
            ("path", Some("normalized")) => norm_path.clone(),
            // The raw grammar split (`Parse`, `WithName`) takes any
            // domain-shaped first component for the domain (`foo` of
            // `foo/bar`), where the kubelet, and we, read Docker Hub: the
            // raw split must still be a split of our name, and agree with
            // ours whenever ours names a registry.
            ("domain", _) => {
                let path = expect.get("path").and_then(Value::as_str);
                let joined = match path {
                    Some(path) if !want.is_empty() => format!("{want}/{path}"),
                    Some(path) => path.to_owned(),
                    None => r.name().to_owned(),
                };
                if joined != r.name() || (r.explicit && want != r.reg) {
                    return Err(format!(
                        "raw split {want:?} + {path:?} is not ours of {:?}",
                        r.name()
                    ));
                }
                continue;
            }
            ("path", _) => continue, // checked with "domain"
            (other, _) => panic!("{other}: an expectation this test does not know; add it"),
        };
        if got != want {
            return Err(format!("{key}: library {want:?}, ours {got:?}"));
        }
    }
    Ok(())
}

#[test]
fn the_parser_agrees_with_the_distribution_library_test_tables() {
    let vectors = vectors();
    let cases = vectors["cases"].as_array().expect("cases");
    let counted = vectors["counts"]["cases"].as_u64().expect("counts.cases");
    assert_eq!(cases.len() as u64, counted, "the file holds every case it counts");
    let mut disagreements = Vec::new();
    let mut excepted = Vec::new();
    for case in cases {
        let id = case["id"].as_str().expect("id");
        let exception = EXCEPTIONS.iter().find(|(e, _)| *e == id);
        match (check(case), exception) {
            (Ok(()), None) => {}
            (Err(_), Some(_)) => excepted.push(id),
            (Err(why), None) => disagreements.push(format!("{id} {:?}: {why}", case["input"])),
            (Ok(()), Some((_, reason))) => disagreements.push(format!(
                "{id}: listed as an exception ({reason}) but we agree now"
            )),
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    assert_eq!(
        excepted.len(),
        EXCEPTIONS.len(),
        "every exception names a case of the file"
    );
}
