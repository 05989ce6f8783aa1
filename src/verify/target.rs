//! What a check asks for (verify.md "What a check is"): the registry host to
//! talk to, the repository and the tag or digest of one swapped image,
//! split with the project's one reference parser ([`ImageRef`]).

use crate::swap::reference::{DOCKER_HUB, ImageRef};

/// The host Docker Hub's registry API answers on (`docker.io` is its name
/// in references, not a registry endpoint).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The tag of a reference that names neither tag nor digest.
const DEFAULT_TAG: &str = "latest";

/// One manifest to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as the request goes to it.
    pub host: String,
    /// The repository path (`library/nginx` for Docker Hub's `nginx`).
    pub repository: String,
    /// The digest when the reference has one (it wins over a tag), else the tag.
    pub reference: String,
    /// Whether `reference` is a digest: a present digest stays present.
    pub is_digest: bool,
}

impl Target {
    /// Splits a swapped image; `None` when it is not a valid reference.
    pub fn parse(image: &str) -> Option<Target> {
        let parsed = ImageRef::parse(image)?;
        let repository = parsed.repository();
        let hub = is_docker_hub(parsed.reg);
        let repository = if hub && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        let digest = parsed.digest();
        Some(Target {
            host: canonical_host(parsed.reg).to_owned(),
            repository,
            reference: digest.or(parsed.tag()).unwrap_or(DEFAULT_TAG).to_owned(),
            is_digest: digest.is_some(),
        })
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(host, DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API)
}

/// The host the registry API is reached on: Docker Hub's names become
/// [`DOCKER_HUB_API`]; everything else as written.
pub fn canonical_host(host: &str) -> &str {
    if is_docker_hub(host) { DOCKER_HUB_API } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(image: &str) -> (String, String, String, bool) {
        let t = Target::parse(image).expect("valid");
        (t.host, t.repository, t.reference, t.is_digest)
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_split_into_host_repository_and_tag_or_digest() {
        let s = |a: &str, b: &str, c: &str, d| (a.to_owned(), b.to_owned(), c.to_owned(), d);
        assert_eq!(
            split("nginx"),
            s(DOCKER_HUB_API, "library/nginx", "latest", false)
        );
        assert_eq!(
            split("docker.io/bitnami/redis:7"),
            s(DOCKER_HUB_API, "bitnami/redis", "7", false)
        );
        assert_eq!(
            split("harbor.example.com:8443/hub/library/nginx:1.27"),
            s("harbor.example.com:8443", "hub/library/nginx", "1.27", false)
        );
        assert_eq!(
            split(&format!("harbor.example.com/a/b@{DIGEST}")),
            s("harbor.example.com", "a/b", DIGEST, true)
        );
        assert_eq!(
            split(&format!("localhost:5000/a:1.0@{DIGEST}")),
            s("localhost:5000", "a", DIGEST, true)
        );
        assert_eq!(Target::parse("Not A Reference"), None);
    }
}
