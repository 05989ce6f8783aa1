//! Image references: validation under the grammar of the distribution project
//! (`github.com/distribution/reference`) and the registry split of maps.md §2.
//!
//! Hand-written rather than a regex: this runs for every container of every
//! pod, and a byte scan is several times cheaper than a regex match while
//! implementing exactly the same grammar (see the grammar in each function).

/// Docker Hub, the registry of images that name none.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest repository path (the name without its registry, as the
/// kubelet normalises it: `nginx` is `library/nginx`) the distribution
/// library accepts since v0.6 (`RepositoryNameTotalLengthMax`); the
/// registry is not counted.
pub const PATH_MAX_LEN: usize = 255;
/// The longest tag the distribution grammar accepts.
const TAG_MAX_LEN: usize = 128;
/// What Docker Hub's one-component names stand for (`nginx` is
/// `docker.io/library/nginx`): counted in the path's length.
const LIBRARY_PREFIX_LEN: usize = "library/".len();
/// The length of an image ID (a sha256 in hex), which the library refuses
/// as a name: `ParseNormalizedNamed` says "cannot specify 64-byte
/// hexadecimal strings".
const IMAGE_ID_LEN: usize = 64;
/// The digest algorithms the library knows (go-digest's registered ones)
/// and the exact number of lowercase hex digits each takes.
pub const DIGEST_ALGORITHMS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

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
        if name_end == 0 {
            return None;
        }
        let Some(first_slash) = first_slash else {
            // A one-component Docker Hub name, `library/<name>` to the
            // kubelet (counted in the path's length); exactly 64 hex digits
            // is an image ID, not a name.
            let valid = name_end + LIBRARY_PREFIX_LEN <= PATH_MAX_LEN
                && !is_image_id(b)
                && is_valid_path_component(&b[..name_end]);
            return valid.then_some(ImageRef {
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
            let path = &b[first_slash + 1..name_end];
            if path_len(first, path) > PATH_MAX_LEN {
                return None;
            }
            return Some(ImageRef {
                image,
                reg: &image[..first_slash],
                rest: &image[first_slash + 1..],
                explicit: true,
            });
        }
        if !is_valid_path_component(first) || name_end > PATH_MAX_LEN {
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

    /// `rest` split into the repository path as written, the tag and the
    /// digest. Off the hot path (verification and tools ask for it).
    fn parts(&self) -> (&'a str, Option<&'a str>, Option<&'a str>) {
        let (name_and_tag, digest) = match self.rest.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (self.rest, None),
        };
        // A `:` after the last `/` starts the tag (the registry's port is
        // not in `rest`).
        let segment = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        match name_and_tag[segment..].find(':') {
            Some(colon) => (
                &name_and_tag[..segment + colon],
                Some(&name_and_tag[segment + colon + 1..]),
                digest,
            ),
            None => (name_and_tag, None, digest),
        }
    }

    /// The repository path as written: no registry, tag or digest
    /// (`nginx` for `nginx:1.27`, `a/b` for `gcr.io/a/b@sha256:…`).
    pub fn repository(&self) -> &'a str {
        self.parts().0
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&'a str> {
        self.parts().1
    }

    /// The digest (`algorithm:hex`), when the reference has one.
    pub fn digest(&self) -> Option<&'a str> {
        self.parts().2
    }

    /// The name as written: the registry when explicit and the repository,
    /// without tag or digest.
    pub fn name(&self) -> &'a str {
        let repository_end = self.image.len() - self.rest.len() + self.repository().len();
        &self.image[..repository_end]
    }
}

/// `domain := host [':' port]` of the distribution grammar: a registry as
/// an image or a maps file may name it (`[::1]:5000` included).
pub fn is_valid_registry(registry: &str) -> bool {
    is_valid_domain(registry.as_bytes())
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

/// The length of the repository path as the kubelet's parser counts it
/// (`splitDockerDomain`): a one-component path under Docker Hub, named as
/// `docker.io` or its legacy `index.docker.io`, is `library/<path>`.
fn path_len(registry: &[u8], path: &[u8]) -> usize {
    let library = matches!(registry, b"docker.io" | b"index.docker.io") && !path.contains(&b'/');
    path.len() + if library { LIBRARY_PREFIX_LEN } else { 0 }
}

/// `^[a-f0-9]{64}$`: the whole string is an image ID (the library's
/// `anchoredIdentifierRegexp`).
fn is_image_id(b: &[u8]) -> bool {
    b.len() == IMAGE_ID_LEN && b.iter().all(|&c| has_class(c, HEX))
}

/// A registry as image references name it: `host[:port]` of the
/// distribution grammar, nothing else (no scheme, no path), as settings
/// that name registries take it.
pub fn check_registry_host(registry: &str) -> Result<(), String> {
    if is_valid_registry(registry) {
        Ok(())
    } else {
        Err(format!("{registry:?} is not a registry host[:port]"))
    }
}

/// `reference := name [ ":" tag ] [ "@" digest ]`, with the repository path
/// at most 255 characters and the digest of a known algorithm.
pub fn is_valid_reference(s: &str) -> bool {
    ImageRef::parse(s).is_some()
}

/// Whether `image` may be patched into a pod (maps.md §3 step 7): a valid
/// reference whose registry port, if it names one, is one a connection can
/// use (1–65535; the grammar itself takes any digits).
pub fn is_valid_result(image: &str) -> bool {
    ImageRef::parse(image).is_some_and(|r| port_in_range(r.reg))
}

/// Why `image` may not be patched into a pod; `None` when it may.
pub fn invalid_result_reason(image: &str) -> Option<String> {
    invalid_reason(image).or_else(|| {
        let r = ImageRef::parse(image)?;
        (!port_in_range(r.reg)).then(|| format!("the port of `{}` is not between 1 and 65535", r.reg))
    })
}

fn port_in_range(reg: &str) -> bool {
    let host = strip_port(reg);
    host.len() == reg.len() || reg[host.len() + 1..].parse::<u16>().is_ok_and(|port| port > 0)
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
        && let Err(error) = check_digest(digest.as_bytes())
    {
        return Some(match error {
            DigestError::NoAlgorithm => format!("the digest `{digest}` must be algorithm:hex"),
            DigestError::UnknownAlgorithm(algorithm) => format!(
                "unknown digest algorithm `{}`; a node knows only {}",
                String::from_utf8_lossy(algorithm),
                DIGEST_ALGORITHMS.map(|(name, _)| name).join(", ")
            ),
            DigestError::Length { algorithm, want, got } => {
                format!("digest {algorithm} needs {want} hex digits, got {got}")
            }
            DigestError::NotLowerHex => {
                format!("the digest `{digest}` must hold only lower-case hex digits (0-9, a-f)")
            }
        });
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
    if is_image_id(image.as_bytes()) {
        return Some(format!(
            "{IMAGE_ID_LEN} hex digits are an image ID, not an image name (a node refuses it)"
        ));
    }
    let (registry, path) = match name.split_once('/') {
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
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    let path_len = path_len(registry.as_bytes(), path.as_bytes());
    if path_len > PATH_MAX_LEN {
        return Some(format!(
            "the repository path is {path_len} characters, more than {PATH_MAX_LEN} \
             (a one-component Docker Hub name counts as `library/<name>`)"
        ));
    }
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
        // Lower case only: digests and image IDs are written that way.
        if b.is_ascii_digit() || (b >= b'a' && b <= b'f') {
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

/// Why the library refuses a digest (go-digest's `Digest.Validate` after the
/// reference grammar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DigestError<'a> {
    /// No `algorithm:` before the value.
    NoAlgorithm,
    /// An algorithm go-digest does not know (`sha256`, `sha384`, `sha512`).
    UnknownAlgorithm(&'a [u8]),
    /// The value is not exactly as long as the algorithm's hash in hex.
    Length {
        algorithm: &'static str,
        want: usize,
        got: usize,
    },
    /// A character other than `0-9a-f` (uppercase hex included: go-digest
    /// encodes in lower case and compares strings).
    NotLowerHex,
}

/// `digest := algorithm ':' hex` where the library accepts only a known
/// algorithm with exactly its length of lowercase hex digits; anything it
/// accepts is also in the grammar (`[A-Za-z][A-Za-z0-9]*`, `[0-9a-fA-F]{32,}`).
fn check_digest(d: &[u8]) -> Result<(), DigestError<'_>> {
    let Some(colon) = d.iter().position(|&c| c == b':').filter(|&i| i > 0) else {
        return Err(DigestError::NoAlgorithm);
    };
    let (algorithm, hex) = (&d[..colon], &d[colon + 1..]);
    let Some(&(name, want)) = DIGEST_ALGORITHMS
        .iter()
        .find(|(name, _)| name.as_bytes() == algorithm)
    else {
        return Err(DigestError::UnknownAlgorithm(algorithm));
    };
    if hex.len() != want {
        return Err(DigestError::Length {
            algorithm: name,
            want,
            got: hex.len(),
        });
    }
    if !hex.iter().all(|&x| has_class(x, HEX)) {
        return Err(DigestError::NotLowerHex);
    }
    Ok(())
}

fn is_valid_digest(d: &[u8]) -> bool {
    check_digest(d).is_ok()
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

    /// Since the library's v0.6 the 255-character limit is on the
    /// repository path, not the registry; a one-component Docker Hub name
    /// counts as `library/<name>`, as the kubelet normalises it.
    #[test]
    fn length_limits() {
        let path = "a".repeat(PATH_MAX_LEN);
        assert!(is_valid_reference(&format!("example.com/{path}:tag")));
        assert!(is_valid_reference(&format!(
            "{}.example.com:5000/{path}",
            "r".repeat(200)
        )));
        assert!(!is_valid_reference(&format!("example.com/{path}a")));
        let two = format!("a/{}", "b".repeat(PATH_MAX_LEN - 2));
        assert!(is_valid_reference(&two));
        assert!(!is_valid_reference(&format!("{two}b")));
        let one = "a".repeat(PATH_MAX_LEN - LIBRARY_PREFIX_LEN);
        for image in [
            one.clone(),
            format!("docker.io/{one}"),
            format!("index.docker.io/{one}:1"),
        ] {
            assert!(is_valid_reference(&image), "{image}");
            let longer = image.replacen(&one, &format!("{one}a"), 1);
            assert!(!is_valid_reference(&longer), "{longer}");
            let reason = invalid_reason(&longer).unwrap_or_default();
            assert!(reason.contains("256 characters, more than 255"), "{reason}");
        }
        let tag = "t".repeat(TAG_MAX_LEN);
        assert!(is_valid_reference(&format!("app:{tag}")));
        assert!(!is_valid_reference(&format!("app:{tag}t")));
    }

    /// A digest names a known algorithm with exactly its length of
    /// lower-case hex digits, as go-digest validates it for the library.
    #[test]
    fn digests_need_a_known_algorithm_and_its_exact_length() {
        let hex = |n: usize| "0123456789abcdef".repeat(9)[..n].to_owned();
        for (algorithm, len) in DIGEST_ALGORITHMS {
            assert!(
                is_valid_reference(&format!("app@{algorithm}:{}", hex(len))),
                "{algorithm}"
            );
            for wrong in [len - 1, len + 1, 32] {
                let image = format!("app@{algorithm}:{}", hex(wrong));
                assert!(!is_valid_reference(&image), "{image}");
                let reason = invalid_reason(&image).unwrap_or_default();
                assert_eq!(
                    reason,
                    format!("digest {algorithm} needs {len} hex digits, got {wrong}")
                );
            }
        }
        let image = format!("validname@invaliddigest:{}", hex(64));
        assert!(!is_valid_reference(&image));
        let reason = invalid_reason(&image).unwrap_or_default();
        assert!(
            reason.contains("unknown digest algorithm `invaliddigest`"),
            "{reason}"
        );
        let upper = format!("app@sha256:{}", hex(64).to_uppercase());
        assert!(!is_valid_reference(&upper));
        assert!(
            invalid_reason(&upper)
                .unwrap_or_default()
                .contains("lower-case hex")
        );
        assert!(!is_valid_reference("app@:abc") && !is_valid_reference("app@sha256"));
    }

    /// Exactly 64 lower-case hex digits is an image ID pasted as an image:
    /// the library refuses it; one digit fewer, or a tag, is a name.
    #[test]
    fn an_image_id_is_not_a_name() {
        let id = "0123456789abcdef".repeat(4);
        assert!(!is_valid_reference(&id));
        assert!(invalid_reason(&id).unwrap_or_default().contains("image ID"));
        assert!(is_valid_reference(&id[1..]));
        assert!(is_valid_reference(&format!("{id}:latest")));
        assert!(is_valid_reference(&format!("library/{id}")));
    }

    #[test]
    fn a_reference_splits_into_name_tag_and_digest() {
        let image = format!("gcr.io:443/a/b:v1@{DIGEST}");
        let r = ImageRef::parse(&image).unwrap();
        assert_eq!(
            (r.name(), r.repository(), r.tag(), r.digest()),
            ("gcr.io:443/a/b", "a/b", Some("v1"), Some(DIGEST))
        );
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (r.name(), r.repository(), r.tag(), r.digest()),
            ("nginx", "nginx", None, None)
        );
        let r = ImageRef::parse("localhost:5000/app:dev").unwrap();
        assert_eq!(
            (r.name(), r.repository(), r.tag()),
            ("localhost:5000/app", "app", Some("dev"))
        );
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
