//! The registries a maps file names (verify.md "Only the maps' registries"):
//! the hosts, with their ports, that rule values put at the front of a
//! swapped image. Mirror verification contacts only these. A target whose
//! host or port came from the pod's own image (a registry key without a
//! port keeps the image's port, maps.md §3) is not among them, so a pod
//! author cannot make the webhook connect to a port of their choosing.
//!
//! Derived once per load from the compiled rules and published with them;
//! pure data, no I/O, like the rest of `swap`.

use super::reference::{DOCKER_HUB, ImageRef};

/// One registry a rule value names: `name` as written (`harbor.example.com`,
/// `[fd00::1]`, `docker.io` for a value that names no registry), `port`
/// when the value writes one (none: the scheme's default).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MirrorHost {
    pub name: String,
    pub port: Option<u16>,
}

/// Every registry the rules name, sorted, without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorHosts {
    hosts: Vec<MirrorHost>,
}

/// How a rule's value becomes an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A registry, path, `default` or LEGACY value: a prefix, possibly
    /// completed with the image's registry (`…-`) or port.
    Prefix,
    /// A `[REPLACE]` value: a prefix joined to the image's last component.
    Replace,
    /// An `[EXACT]` value: a whole image reference.
    Image,
}

impl MirrorHosts {
    /// The registries named by `values`.
    pub fn from_values<'v>(values: impl IntoIterator<Item = (ValueKind, &'v str)>) -> MirrorHosts {
        let mut hosts: Vec<MirrorHost> = values
            .into_iter()
            .filter_map(|(kind, value)| named_registry(kind, value))
            .map(|reg| {
                let (name, port) = split_port(reg);
                MirrorHost {
                    name: name.to_owned(),
                    port,
                }
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        MirrorHosts { hosts }
    }

    pub fn iter(&self) -> impl Iterator<Item = &MirrorHost> {
        self.hosts.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// The registry (`host[:port]`) a value puts in front of every image it
/// makes, when that is literal in the value; `None` when the value swaps
/// nothing or leaves the host to the image (`mirror-` without `/` becomes
/// `mirror-<the image's registry>`).
fn named_registry(kind: ValueKind, value: &str) -> Option<&str> {
    if value.is_empty() {
        return None;
    }
    if kind == ValueKind::Image {
        return ImageRef::parse(value).map(|r| r.reg);
    }
    let first = match value.split_once('/') {
        Some((first, _)) => first,
        None if kind == ValueKind::Prefix && value.ends_with('-') => return None,
        None => value,
    };
    // The one reference parser decides whether `first` is a registry: in
    // `first/x` it is when the parser splits it off; else the image is
    // Docker Hub's.
    match ImageRef::parse(&format!("{first}/x")) {
        Some(r) if r.rest == "x" => Some(first),
        _ => Some(DOCKER_HUB),
    }
}

/// `host:port` → (`host`, port); a bracketed IPv6 host keeps its colons.
pub fn split_port(reg: &str) -> (&str, Option<u16>) {
    if let Some(end) = reg.strip_prefix('[').and_then(|r| r.find(']')) {
        let (name, rest) = reg.split_at(end + 2);
        return (name, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match reg.rsplit_once(':') {
        Some((name, port)) => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (reg, None),
        },
        None => (reg, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(values: &[(ValueKind, &str)]) -> Vec<(String, Option<u16>)> {
        MirrorHosts::from_values(values.iter().copied())
            .iter()
            .map(|h| (h.name.clone(), h.port))
            .collect()
    }

    #[test]
    fn each_value_names_its_literal_registry() {
        use ValueKind::*;
        let h = |n: &str, p| (n.to_owned(), p);
        assert_eq!(
            hosts(&[
                (Prefix, "harbor.example.com/dockerhub"),
                (Prefix, "127.0.0.1"),
                (Prefix, "mirror.example.com:5000/x-"),
                (Prefix, "mirror-"),
                (Prefix, ""),
                (Prefix, "[::1]:5000/m"),
                (Replace, "quay.example.com"),
                (Image, "nginx:1.27"),
                (Image, "localhost:5000/a:1"),
                (Prefix, "mirror/"),
            ]),
            [
                h("127.0.0.1", None),
                h("[::1]", Some(5000)),
                h("docker.io", None),
                h("harbor.example.com", None),
                h("localhost", Some(5000)),
                h("mirror.example.com", Some(5000)),
                h("quay.example.com", None),
            ]
        );
    }

    /// A maps file's mirrors: a registry key without a port names the
    /// value's host only (the image's port is not the value's), and an
    /// IPv6 mirror in brackets works end to end.
    #[test]
    fn an_engine_lists_what_its_values_name() {
        let (engine, findings) = crate::swap::Engine::from_maps_text(
            "default::\nsrc.example::127.0.0.1\nv6.example::[::1]:5000/m\n[EXACT]a:1::ghcr.io/a:1\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(
            engine.decide("v6.example/app:1").result.as_deref(),
            Some("[::1]:5000/m/app:1")
        );
        assert_eq!(
            engine.decide("src.example:22/x:1").result.as_deref(),
            Some("127.0.0.1:22/x:1"),
            "the image's port is kept (maps.md §3)…"
        );
        let named: Vec<(String, Option<u16>)> = engine
            .mirror_hosts()
            .iter()
            .map(|h| (h.name.clone(), h.port))
            .collect();
        assert_eq!(
            named,
            [
                ("127.0.0.1".to_owned(), None),
                ("[::1]".to_owned(), Some(5000)),
                ("ghcr.io".to_owned(), None)
            ],
            "…but not named: verification does not contact it"
        );
    }

    #[test]
    fn ports_split_off_ipv6_hosts_keep_their_colons() {
        assert_eq!(split_port("[::1]:5000"), ("[::1]", Some(5000)));
        assert_eq!(split_port("[fd00::1]"), ("[fd00::1]", None));
        assert_eq!(split_port("a.example:443"), ("a.example", Some(443)));
        assert_eq!(split_port("a.example"), ("a.example", None));
    }
}
