//! Any string through the reference parser, checked against its own
//! invariants and against the distribution grammar written as a regex
//! (`github.com/distribution/reference`, regexp.go), which the hand-written
//! parser claims to implement exactly.
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

/// `NameTotalLengthMax` of the distribution project.
const NAME_MAX_LEN: usize = 255;

fn grammar_accepts(s: &str) -> bool {
    REFERENCE
        .captures(s)
        .is_some_and(|c| c.get(1).is_some_and(|name| name.as_str().len() <= NAME_MAX_LEN))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = ImageRef::parse(s);
    assert_eq!(parsed.is_some(), is_valid_reference(s), "{s:?}");
    assert_eq!(
        parsed.is_some(),
        grammar_accepts(s),
        "parser and distribution grammar disagree on {s:?}"
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
    // Naming Docker Hub explicitly splits the same way (when it still fits).
    if !r.explicit {
        let named = format!("{DOCKER_HUB}/{s}");
        if let Some(n) = ImageRef::parse(&named) {
            assert!(n.explicit && n.reg == DOCKER_HUB && n.rest == s, "{n:?}");
            assert_eq!(n.is_library(), r.is_library(), "{s:?}");
        } else {
            // An implicit name holds no `:` before its tag (that would be a port).
            let name_len = s.find([':', '@']).unwrap_or(s.len());
            assert!(
                name_len + DOCKER_HUB.len() + 1 > NAME_MAX_LEN,
                "{named:?} should parse"
            );
        }
    }
});
