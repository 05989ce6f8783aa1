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
    pub fn parse(image: &'a str) -> Option<Self> {
        if !is_valid_reference(image) {
            return None;
        }
        if let Some(slash) = image.find('/') {
            let first = &image[..slash];
            if first == "localhost"
                || first
                    .bytes()
                    .any(|b| b == b'.' || b == b':' || b.is_ascii_uppercase())
            {
                return Some(ImageRef {
                    image,
                    reg: first,
                    rest: &image[slash + 1..],
                    explicit: true,
                });
            }
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

/// `reference := name [ ":" tag ] [ "@" digest ]`, with the name at most 255
/// characters.
pub fn is_valid_reference(s: &str) -> bool {
    let (name_and_tag, digest) = match s.find('@') {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    if digest.is_some_and(|d| !is_valid_digest(d)) {
        return false;
    }
    // A `:` after the last `/` starts the tag; one before it is a port.
    let last_start = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_start..].find(':') {
        Some(colon) => (
            &name_and_tag[..last_start + colon],
            Some(&name_and_tag[last_start + colon + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if tag.is_some_and(|t| !is_valid_tag(t)) {
        return false;
    }
    is_valid_name(name)
}

/// `name := [domain '/'] path-component ['/' path-component]*`
fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > NAME_MAX_LEN {
        return false;
    }
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let mut rest = components.peekable();
    let first_ok = if rest.peek().is_some() {
        is_valid_path_component(first) || is_valid_domain(first)
    } else {
        is_valid_path_component(first)
    };
    first_ok && rest.all(is_valid_path_component)
}

/// `path-component := [a-z0-9]+ (separator [a-z0-9]+)*` with
/// `separator := [_.] | __ | [-]+`.
fn is_valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `domain := host [':' port]`, `host := domain-name | '[' IPv6 ']'`.
fn is_valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(inner_and_rest) = d.strip_prefix('[') {
        let Some(close) = inner_and_rest.find(']') else {
            return false;
        };
        let inner = &inner_and_rest[..close];
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &inner_and_rest[close + 1..];
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(d), None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    host.is_none_or(|h| h.split('.').all(is_valid_domain_component))
}

/// `domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// `tag := [\w][\w.-]{0,127}`
fn is_valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty()
        && b.len() <= TAG_MAX_LEN
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `digest := algorithm ':' hex`, algorithm components `[A-Za-z][A-Za-z0-9]*`
/// joined by one of `+.-_`, at least 32 hex digits.
fn is_valid_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['+', '.', '-', '_']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= DIGEST_HEX_MIN_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:15d3fa0b0e4d1b7c31dbb2c7bd6e6c6ba0a4f3ec4fe4c52cd0fa1d1e5b6a32a7";

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
