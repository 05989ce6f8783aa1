//! Image references: validation under the grammar of the distribution project
//! (`github.com/distribution/reference`) and the registry split of maps.md §2.
//!
//! Hand-written rather than a regex: this runs for every container of every
//! pod, and a byte scan is several times cheaper than a regex match while
//! implementing exactly the same grammar (see the grammar in each function).

/// Docker Hub, the registry of images that name none.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest name (registry and path) the distribution grammar accepts.
const NAME_MAX_LEN: usize = 255;
/// The longest tag the distribution grammar accepts.
const TAG_MAX_LEN: usize = 128;
/// The shortest digest value (128 bits in hex).
const DIGEST_HEX_MIN_LEN: usize = 32;

/// A valid image reference split as maps.md §2 describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// The reference exactly as written in the container spec.
    pub image: &'a str,
    /// The registry: the explicit one, or `docker.io` when implicit.
    pub reg: &'a str,
    /// Everything after the registry (the whole image when implicit).
    pub rest: &'a str,
    /// Whether the image names its registry.
    pub explicit: bool,
}

impl<'a> ImageRef<'a> {
    /// Splits `image`, or `None` when it is not a valid reference.
    ///
    /// One forward scan finds the digest, the last `/` and the first `/`;
    /// the components are then checked in place. This is the bulk of a
    /// decision's cost, so it avoids `str::split` and char searchers, which
    /// cost more in setup than these short strings take to scan.
    pub fn parse(image: &'a str) -> Option<Self> {
        let b = image.as_bytes();
        let mut at = b.len();
        let mut first_slash = None;
        let mut last_slash = None;
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'@' => {
                    at = i;
                    break;
                }
                b'/' => {
                    first_slash.get_or_insert(i);
                    last_slash = Some(i);
                }
                _ => {}
            }
        }
        if at < b.len() && !is_valid_digest(&b[at + 1..]) {
            return None;
        }
        // A `:` after the last `/` starts the tag; one before it is a port.
        let segment = last_slash.map_or(0, |i| i + 1);
        let name_end = match b[segment..at].iter().position(|&c| c == b':') {
            Some(colon) => {
                if !is_valid_tag(&b[segment + colon + 1..at]) {
                    return None;
                }
                segment + colon
            }
            None => at,
        };
        if name_end == 0 || name_end > NAME_MAX_LEN {
            return None;
        }
        let Some(first_slash) = first_slash else {
            return is_valid_path_component(&b[..name_end]).then_some(ImageRef {
                image,
                reg: DOCKER_HUB,
                rest: image,
                explicit: false,
            });
        };
        // `name := [domain '/'] path-component ('/' path-component)*`
        if !is_valid_path(&b[first_slash + 1..name_end]) {
            return None;
        }
        let first = &b[..first_slash];
        // `[` only starts an IPv6 host (`[fe1]` holds no `:` but is one).
        let registry_like = first == b"localhost"
            || first.first() == Some(&b'[')
            || first
                .iter()
                .any(|&c| c == b'.' || c == b':' || c.is_ascii_uppercase());
        if registry_like {
            // Only a domain can hold `.`-joined uppercase or a port; a
            // path component can hold `.` too (`a.b/c` is valid either way).
            if !(is_valid_domain(first) || is_valid_path_component(first)) {
                return None;
            }
            return Some(ImageRef {
                image,
                reg: &image[..first_slash],
                rest: &image[first_slash + 1..],
                explicit: true,
            });
        }
        if !is_valid_path_component(first) {
            return None;
        }
        Some(ImageRef {
            image,
            reg: DOCKER_HUB,
            rest: image,
            explicit: false,
        })
    }

    /// The registry without a trailing `:port`.
    pub fn reg_noport(&self) -> &'a str {
        strip_port(self.reg)
    }

    /// A Docker Hub image with a one-component name (`nginx`, `docker.io/nginx`),
    /// shorthand for `docker.io/library/<name>`.
    pub fn is_library(&self) -> bool {
        !self.rest.contains('/') && (!self.explicit || self.reg == DOCKER_HUB)
    }

    /// The part of the image after its last `/` (the whole image when none).
    pub fn last(&self) -> &'a str {
        last_component(self.image)
    }
}

/// The part of `image` after its last `/`, or all of it.
pub fn last_component(image: &str) -> &str {
    image.rfind('/').map_or(image, |i| &image[i + 1..])
}

/// `host:port` → `host`; a bracketed IPv6 host keeps its colons.
fn strip_port(reg: &str) -> &str {
    match reg.rfind(':') {
        Some(i) if i + 1 < reg.len() && reg.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &reg[..i],
        _ => reg,
    }
}

/// A registry as image references name it: `host[:port]`, nothing else
/// (no scheme, no path), as settings that name registries take it.
pub fn check_registry_host(registry: &str) -> Result<(), String> {
    let valid = !registry.is_empty()
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(format!("{registry:?} is not a registry host[:port]"))
    }
}

/// `reference := name [ ":" tag ] [ "@" digest ]`, with the name at most 255
/// characters.
pub fn is_valid_reference(s: &str) -> bool {
    ImageRef::parse(s).is_some()
}

/// Why `image` is not a valid reference, in words a person can act on;
/// `None` when it is valid. Off the hot path (`imageswap swap` shows it), so
/// it re-checks the parts one by one rather than sharing the parser's scan.
pub fn invalid_reason(image: &str) -> Option<String> {
    if ImageRef::parse(image).is_some() {
        return None;
    }
    if image.is_empty() {
        return Some("the image is empty".to_owned());
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "it contains {c:?}; a reference holds no spaces or control characters"
        ));
    }
    let (name_and_tag, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest
        && !is_valid_digest(digest.as_bytes())
    {
        return Some(format!(
            "the digest `{digest}` must be algorithm:hex with at least {DIGEST_HEX_MIN_LEN} hex digits"
        ));
    }
    let segment = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[segment..].find(':') {
        Some(colon) => (
            &name_and_tag[..segment + colon],
            Some(&name_and_tag[segment + colon + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag
        && !is_valid_tag(tag.as_bytes())
    {
        return Some(if tag.len() > TAG_MAX_LEN {
            format!("the tag is longer than {TAG_MAX_LEN} characters")
        } else {
            format!("the tag `{tag}` must start with a letter, digit or `_` and hold only those, `.` and `-`")
        });
    }
    if name.is_empty() {
        return Some("the repository name is empty".to_owned());
    }
    if name.len() > NAME_MAX_LEN {
        return Some(format!("the name is longer than {NAME_MAX_LEN} characters"));
    }
    let path = match name.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            if !is_valid_domain(first.as_bytes()) {
                return Some(format!(
                    "the registry `{first}` is not a host name with an optional :port"
                ));
            }
            if rest.is_empty() {
                return Some(format!("nothing follows the registry `{first}/`"));
            }
            rest
        }
        _ => name,
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(format!("the repository `{path}` must be lower case"));
    }
    Some(format!(
        "the repository `{path}` must be lower-case letters and digits, joined by `.`, `_`, `__` or `-` \
         within a component and by `/` between components"
    ))
}

/// Byte classes of the grammar, one table lookup per byte on the hot path.
const LOWER_ALNUM: u8 = 1 << 0;
const TAG_CHAR: u8 = 1 << 1;
const HEX: u8 = 1 << 2;
static CLASSES: [u8; 256] = byte_classes();

const fn byte_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut class = 0;
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            class |= LOWER_ALNUM;
        }
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
            class |= TAG_CHAR;
        }
        if b.is_ascii_hexdigit() {
            class |= HEX;
        }
        table[c] = class;
        c += 1;
    }
    table
}

fn has_class(c: u8, class: u8) -> bool {
    CLASSES[c as usize] & class != 0
}

/// `[a-z0-9]`, the characters path components are made of.
fn is_lower_alnum(c: u8) -> bool {
    has_class(c, LOWER_ALNUM)
}

/// `path-component := [a-z0-9]+ (separator [a-z0-9]+)*` with
/// `separator := [_.] | __ | [-]+`.
fn is_valid_path_component(b: &[u8]) -> bool {
    is_valid_path(b) && !b.contains(&b'/')
}

/// `path-component ('/' path-component)*` in one pass: after every
/// separator or `/` an alphanumeric must follow.
fn is_valid_path(b: &[u8]) -> bool {
    let end = b.len();
    let mut i = 0;
    loop {
        // A component, or what follows a separator, starts alphanumeric.
        if i >= end || !is_lower_alnum(b[i]) {
            return false;
        }
        i += 1;
        while i < end && is_lower_alnum(b[i]) {
            i += 1;
        }
        if i == end {
            return true;
        }
        match b[i] {
            b'/' | b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < end && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `domain := host [':' port]`, `host := domain-name | '[' IPv6 ']'`.
fn is_valid_domain(d: &[u8]) -> bool {
    let (host, port) = if let Some(inner_and_rest) = d.strip_prefix(b"[") {
        let Some(close) = inner_and_rest.iter().position(|&c| c == b']') else {
            return false;
        };
        let inner = &inner_and_rest[..close];
        if inner.is_empty() || !inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &inner_and_rest[close + 1..];
        match after.strip_prefix(b":") {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => return false,
        }
    } else {
        match d.iter().position(|&c| c == b':') {
            Some(colon) => (Some(&d[..colon]), Some(&d[colon + 1..])),
            None => (Some(d), None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    host.is_none_or(is_valid_domain_name)
}

/// `domain-name := component ('.' component)*` with
/// `component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`, in one
/// pass: a component starts and ends alphanumeric.
fn is_valid_domain_name(b: &[u8]) -> bool {
    let mut previous = b'.';
    for &c in b {
        match c {
            b'.' if previous.is_ascii_alphanumeric() => {}
            b'-' if previous != b'.' => {}
            c if c.is_ascii_alphanumeric() => {}
            _ => return false,
        }
        previous = c;
    }
    previous.is_ascii_alphanumeric()
}

/// `tag := [\w][\w.-]{0,127}`
fn is_valid_tag(b: &[u8]) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty() && b.len() <= TAG_MAX_LEN && word(b[0]) && b.iter().all(|&x| has_class(x, TAG_CHAR))
}

/// `digest := algorithm ':' hex`, algorithm components `[A-Za-z][A-Za-z0-9]*`
/// joined by one of `+.-_`, at least 32 hex digits.
fn is_valid_digest(d: &[u8]) -> bool {
    let Some(colon) = d.iter().position(|&c| c == b':') else {
        return false;
    };
    let (algorithm, hex) = (&d[..colon], &d[colon + 1..]);
    let algorithm_ok = algorithm
        .split(|&c| matches!(c, b'+' | b'.' | b'-' | b'_'))
        .all(|c| !c.is_empty() && c[0].is_ascii_alphabetic() && c.iter().all(u8::is_ascii_alphanumeric));
    algorithm_ok && hex.len() >= DIGEST_HEX_MIN_LEN && hex.iter().all(|&x| has_class(x, HEX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:15d3fa0b0e4d1b7c31dbb2c7bd6e6c6ba0a4f3ec4fe4c52cd0fa1d1e5b6a32a7";

    #[test]
    fn every_invalid_reference_has_a_reason_and_no_valid_one_does() {
        assert_eq!(invalid_reason("docker.io/library/nginx:1.25"), None);
        for (image, words) in [
            ("", "empty"),
            ("nginx 1.25", "' '"),
            ("nginx@sha256:abc", "digest"),
            ("nginx:-x", "tag `-x`"),
            (&format!("nginx:{}", "a".repeat(129)), "longer than 128"),
            ("bad_host!:5000/app", "registry `bad_host!:5000`"),
            ("my_reg.example:50x0/app", "registry `my_reg.example:50x0`"),
            ("library/Nginx", "lower case"),
            ("a//b", "repository `a//b`"),
            (":tag", "empty"),
        ] {
            assert!(!is_valid_reference(image), "{image}");
            let reason = invalid_reason(image).unwrap_or_else(|| panic!("{image}: no reason"));
            assert!(reason.contains(words), "{image}: {reason}");
        }
        // Agrees with the parser on strings of the grammar's characters.
        let alphabet = b"aZ0.:/@_-x";
        let mut seed = 0x2545_f491_u64;
        for _ in 0..5000 {
            let len = (seed % 12) as usize;
            let image: String = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    alphabet[(seed >> 33) as usize % alphabet.len()] as char
                })
                .collect();
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            assert_eq!(
                invalid_reason(&image).is_some(),
                !is_valid_reference(&image),
                "{image:?}"
            );
        }
    }

    #[test]
    fn valid_references() {
        for image in [
            "nginx",
            "nginx:1.25",
            "library/nginx",
            "docker.io/library/nginx:1.25",
            "localhost:5000/app:dev",
            "localhost/app",
            "myhost:5000/team/app",
            "registry.example.com:443/a/b/c:v1",
            "a__b/c--d/e.f_g:TAG_1.0-x",
            "[::1]:5000/app",
            "[fe80::1]/app",
            "Registry.Example/app",
            &format!("kindest/node@{DIGEST}"),
            &format!("gcr.io/app:v1@{DIGEST}"),
        ] {
            assert!(is_valid_reference(image), "{image} should be valid");
        }
    }

    /// Found by `cargo fuzz run reference` (fuzz/README.md): a bracketed
    /// host whose hex digits hold no `:` (`[1]`, `[fe1]`) is an IPv6 host of
    /// the distribution grammar (`\[[a-fA-F0-9:]+\]`), so the image names
    /// that registry; it was read as a path component and refused.
    #[test]
    fn fuzz_bracketed_host_without_colon_is_a_registry() {
        for (image, reg, rest) in [("[1]/p", "[1]", "p"), ("[fe1]/app:1", "[fe1]", "app:1")] {
            let r = ImageRef::parse(image).unwrap_or_else(|| panic!("{image} should be valid"));
            assert_eq!((r.reg, r.rest, r.explicit), (reg, rest, true), "{image}");
        }
        for image in ["[]/p", "[zz]/p", "[1/p", "[1]x/p"] {
            assert!(!is_valid_reference(image), "{image:?} should be invalid");
        }
    }

    #[test]
    fn invalid_references() {
        for image in [
            "",
            "gcr.io/",
            "/nginx",
            "nginx/",
            "Nginx",
            "foo/Bar",
            "a//b",
            "nginx:",
            ":tag",
            "nginx:-tag",
            "nginx@sha256:abc",
            "nginx@sha256",
            "a_-b",
            "a___b",
            "-a",
            "a-",
            "app(1)",
            "app[1]",
            "a\\b",
            "a b",
            "host:port/app",
            "[::1/app",
            "[zz::1]/app",
            "a#b",
        ] {
            assert!(!is_valid_reference(image), "{image:?} should be invalid");
        }
    }

    #[test]
    fn length_limits() {
        let name = "a".repeat(NAME_MAX_LEN);
        assert!(is_valid_reference(&name));
        assert!(!is_valid_reference(&format!("{name}a")));
        let tag = "t".repeat(TAG_MAX_LEN);
        assert!(is_valid_reference(&format!("app:{tag}")));
        assert!(!is_valid_reference(&format!("app:{tag}t")));
    }

    #[test]
    fn splits_explicit_and_implicit_registries() {
        let cases = [
            // image, reg, rest, explicit
            ("nginx", "docker.io", "nginx", false),
            ("library/nginx", "docker.io", "library/nginx", false),
            ("docker.io/nginx", "docker.io", "nginx", true),
            ("localhost:5000/app", "localhost:5000", "app", true),
            ("myhost:5000/app", "myhost:5000", "app", true),
            ("localhost/app", "localhost", "app", true),
            ("Registry/app", "Registry", "app", true),
            ("gcr.io/a/b:1", "gcr.io", "a/b:1", true),
        ];
        for (image, reg, rest, explicit) in cases {
            let r = ImageRef::parse(image).unwrap();
            assert_eq!((r.reg, r.rest, r.explicit), (reg, rest, explicit), "{image}");
        }
    }

    #[test]
    fn registry_without_port() {
        for (image, noport) in [
            ("gcr.io:443/a", "gcr.io"),
            ("gcr.io/a", "gcr.io"),
            ("[::1]:5000/a", "[::1]"),
            ("[::1]/a", "[::1]"),
            ("nginx", "docker.io"),
        ] {
            assert_eq!(ImageRef::parse(image).unwrap().reg_noport(), noport, "{image}");
        }
    }

    #[test]
    fn library_images() {
        for (image, library) in [
            ("nginx", true),
            ("nginx:1.25", true),
            (&format!("redis@{DIGEST}") as &str, true),
            ("docker.io/nginx", true),
            ("docker.io/library/nginx", false),
            ("library/nginx", false),
            ("gcr.io/nginx", false),
        ] {
            assert_eq!(ImageRef::parse(image).unwrap().is_library(), library, "{image}");
        }
    }
}
