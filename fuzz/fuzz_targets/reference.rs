//! Any string through the reference parser, checked against its own
//! invariants and against the distribution library written another way:
//! its grammar as a regex (`github.com/distribution/reference`, regexp.go)
//! plus the checks of its v0.6 `ParseNormalizedNamed` (no 64-hex name, the
//! 255-character limit on the normalised repository path, go-digest's known
//! algorithms at their exact lengths), which the hand-written parser claims
//! to implement exactly.
#![no_main]

use std::sync::LazyLock;

use imageswap::swap::reference::{DOCKER_HUB, ImageRef, is_valid_reference, last_component};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

/// `reference := name [ ":" tag ] [ "@" digest ]`, spelled as regexp.go does,
/// with ASCII classes (`\w` is ASCII in Go's RE2, Unicode in Rust's regex).
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let alphanumeric = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]+)";
    let path_component = format!("{alphanumeric}(?:{separator}{alphanumeric})*");
    let domain_name_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain_name = format!("{domain_name_component}(?:\\.{domain_name_component})*");
    let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
    let host = format!("(?:{domain_name}|{ipv6})");
    let domain = format!("{host}(?::[0-9]+)?");
    let name = format!("(?:{domain}/)?{path_component}(?:/{path_component})*");
    let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}";
    Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).expect("the grammar compiles")
});

/// `anchoredIdentifierRegexp`: an image ID, refused as a name.
static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| Regex::new("^[a-f0-9]{64}$").expect("compiles"));

/// `RepositoryNameTotalLengthMax` of the distribution project (v0.6: the
/// path, not the registry).
const PATH_MAX_LEN: usize = 255;

/// go-digest's `Validate` for the algorithms a kubelet links.
fn digest_accepted(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == want && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The normalised path's length, as `splitDockerDomain` counts it.
fn normalized_path_len(name: &str) -> usize {
    let (domain, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first =>
        {
            (first, path)
        }
        _ => (DOCKER_HUB, name),
    };
    let library = matches!(domain, "docker.io" | "index.docker.io") && !path.contains('/');
    path.len() + if library { "library/".len() } else { 0 }
}

fn library_accepts(s: &str) -> bool {
    if IDENTIFIER.is_match(s) {
        return false;
    }
    REFERENCE.captures(s).is_some_and(|c| {
        c.get(1).is_some_and(|name| normalized_path_len(name.as_str()) <= PATH_MAX_LEN)
            && c.get(3).is_none_or(|digest| digest_accepted(digest.as_str()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = ImageRef::parse(s);
    assert_eq!(parsed.is_some(), is_valid_reference(s), "{s:?}");
    assert_eq!(
        parsed.is_some(),
        library_accepts(s),
        "parser and distribution library disagree on {s:?}"
    );
    let Some(r) = parsed else {
        return;
    };
    assert!(s.is_ascii() && !s.chars().any(char::is_whitespace), "{s:?}");
    assert_eq!(r.image, s);
    // The components re-join to the input.
    if r.explicit {
        assert!(!r.reg.is_empty(), "{s:?}");
        assert_eq!(format!("{}/{}", r.reg, r.rest), s, "{r:?}");
    } else {
        assert_eq!((r.reg, r.rest), (DOCKER_HUB, s), "{r:?}");
    }
    assert!(r.reg.starts_with(r.reg_noport()), "{r:?}");
    assert!(!r.reg_noport().is_empty(), "{r:?}");
    assert_eq!(r.last(), last_component(s));
    assert!(s.ends_with(r.last()) && !r.last().contains('/'), "{r:?}");
    // Naming Docker Hub explicitly splits the same way, and always fits:
    // the limit is on the path, which naming the registry does not change.
    if !r.explicit {
        let named = format!("{DOCKER_HUB}/{s}");
        let n = ImageRef::parse(&named).unwrap_or_else(|| panic!("{named:?} should parse"));
        assert!(n.explicit && n.reg == DOCKER_HUB && n.rest == s, "{n:?}");
        assert_eq!(n.is_library(), r.is_library(), "{s:?}");
    }
    // Name, tag and digest re-join to the input.
    let mut joined = r.name().to_owned();
    if let Some(tag) = r.tag() {
        joined = format!("{joined}:{tag}");
    }
    if let Some(digest) = r.digest() {
        assert!(digest_accepted(digest), "{s:?}");
        joined = format!("{joined}@{digest}");
    }
    assert_eq!(joined, s);
});
