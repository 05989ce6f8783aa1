//! Pull secrets for the mirror (verify.md "Pull secrets for the mirror"): a
//! pod spec in which any container's final image (after the swap and the
//! verification) is in a configured registry gets that registry's secret in
//! `imagePullSecrets`, unless an entry of that name is already there.
//!
//! Phase 1 of the review ([`super::decide`]) gathers what the pod spec says
//! (the names already listed, the secrets its untouched images need) while
//! the tape is alive; phase 2 ([`super::Decided::answer`]) adds the secrets
//! the final images of the changes need, once the verification has decided
//! which changes are kept. With no registry configured nothing here runs
//! and nothing is allocated.

use clap::Args;
use simd_json::prelude::*;
use simd_json::tape::Value;

use super::decode::{member, text};
use super::json::write_str;
use super::patch::push_segment;
use crate::settings::{SettingValue, setting};
use crate::swap::reference::{DOCKER_HUB, ImageRef, check_registry_host};

/// The other names of Docker Hub, which image references and settings may
/// use; they are all compared as `docker.io` (the registry of `nginx`).
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];
/// The longest Kubernetes object name (a DNS-1123 subdomain).
const SECRET_NAME_MAX_LEN: usize = 253;

/// `IMAGESWAP_IMAGE_PULL_SECRETS`, shared by `serve` and `swap`.
#[derive(Clone, Debug, Default, Args)]
pub struct PullSecretsArgs {
    /// REGISTRY=SECRET[,REGISTRY=SECRET…]: pods whose images end up in REGISTRY (host[:port]) get
    /// imagePullSecrets entry SECRET (independent of IMAGESWAP_VERIFY).
    #[arg(long, env = "IMAGESWAP_IMAGE_PULL_SECRETS", value_parser = setting::<PullSecrets>())]
    pub image_pull_secrets: Option<PullSecrets>,
}

impl PullSecretsArgs {
    /// The configured secrets (none when the setting is absent).
    pub fn pull_secrets(&self) -> PullSecrets {
        self.image_pull_secrets.clone().unwrap_or_default()
    }
}

/// Registry → secret, as configured. Few entries (one per mirror), so a
/// list scanned in order beats a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullSecrets {
    entries: Vec<(String, String)>,
}

impl PullSecrets {
    /// No registry has a secret (the setting's default).
    pub const NONE: PullSecrets = PullSecrets { entries: Vec::new() };

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `(registry, secret)` pairs, as configured (registries normalised).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(r, s)| (r.as_str(), s.as_str()))
    }

    /// The secret an image's pods need: the one of the image's registry
    /// (`host[:port]` compared exactly, Docker Hub's names as one), `None`
    /// when the registry has none or the image is not a valid reference.
    pub fn secret_for(&self, image: &str) -> Option<&str> {
        if self.entries.is_empty() {
            return None;
        }
        let registry = canonical_registry(ImageRef::parse(image)?.reg);
        self.entries
            .iter()
            .find(|(r, _)| r == registry)
            .map(|(_, s)| s.as_str())
    }
}

fn canonical_registry(registry: &str) -> &str {
    if DOCKER_HUB_ALIASES.contains(&registry) {
        DOCKER_HUB
    } else {
        registry
    }
}

impl SettingValue for PullSecrets {
    const EXPECTED: &'static str =
        "REGISTRY=SECRET[,REGISTRY=SECRET…] such as harbor.example.com=harbor-pull";

    fn parse_setting(text: &str) -> Result<PullSecrets, String> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((registry, secret)) = pair.split_once('=') else {
                return Err(format!("{pair:?} has no `=`"));
            };
            let (registry, secret) = (registry.trim(), secret.trim());
            check_registry_host(registry)?;
            check_secret(secret)?;
            let registry = canonical_registry(registry);
            if entries.iter().any(|(r, _)| r == registry) {
                return Err(format!("registry {registry} is given twice"));
            }
            entries.push((registry.to_owned(), secret.to_owned()));
        }
        Ok(PullSecrets { entries })
    }
}

/// A Secret's name: a DNS-1123 subdomain (lowercase letters, digits, `-`
/// and `.`, starting and ending alphanumeric).
fn check_secret(secret: &str) -> Result<(), String> {
    let bytes = secret.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = !bytes.is_empty()
        && bytes.len() <= SECRET_NAME_MAX_LEN
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || matches!(b, b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{secret:?} is not a Secret name (lowercase letters, digits, '-' and '.')"
        ))
    }
}

/// What phase 1 found in one pod spec for phase 2.
#[derive(Debug, Default)]
pub(super) struct Found<'i, 'c> {
    /// Whether this pod spec may get secrets: not on a Pod UPDATE (the
    /// field is immutable there, the API server would refuse the patch),
    /// not when the configuration has none, not when `imagePullSecrets`
    /// has a shape a patch cannot extend.
    pub eligible: bool,
    /// `imagePullSecrets` is a list (else absent or null).
    pub list_present: bool,
    /// The names already in the list.
    pub existing: Vec<&'i str>,
    /// Secrets needed by images that are not changed (left alone by the
    /// decider, or admitted before on an UPDATE).
    pub needed: Vec<&'c str>,
}

impl<'i, 'c> Found<'i, 'c> {
    /// Reads `imagePullSecrets` of `spec`. `eligible` is false when nothing
    /// may be added there.
    pub fn read(spec: Value<'_, 'i>, eligible: bool) -> Found<'i, 'c> {
        let mut found = Found::default();
        if !eligible {
            return found;
        }
        match member(spec, "imagePullSecrets") {
            None => {}
            Some(list) if list.is_null() => {}
            Some(list) => {
                let Some(list) = list.as_array() else {
                    // Not a list: `add …/-` would fail the whole patch.
                    return found;
                };
                found.list_present = true;
                found.existing = list
                    .iter()
                    .filter_map(|entry| member(entry, "name").and_then(text))
                    .collect();
            }
        }
        found.eligible = true;
        found
    }

    /// Remembers the secret `image` needs.
    pub fn need(&mut self, secrets: &'c PullSecrets, image: &str) {
        if self.eligible
            && let Some(secret) = secrets.secret_for(image)
            && !self.needed.contains(&secret)
        {
            self.needed.push(secret);
        }
    }

    /// The secrets to add: needed and not yet listed, each once, in the
    /// order first needed.
    pub fn to_add(&self) -> impl Iterator<Item = &'c str> + '_ {
        self.needed
            .iter()
            .enumerate()
            .filter(|&(i, &secret)| {
                !self.existing.iter().any(|listed| *listed == secret) && !self.needed[..i].contains(&secret)
            })
            .map(|(_, &secret)| secret)
    }
}

/// Writes the `add` operations for `secrets` (each preceded by a comma when
/// `comma`), for the pod spec at `template` (object path; empty for a Pod):
/// the whole one-element list when the field is absent, then `…/-`.
pub(super) fn write_adds<'c>(
    out: &mut Vec<u8>,
    template: &[&str],
    list_present: bool,
    secrets: impl Iterator<Item = &'c str>,
    mut comma: bool,
) -> usize {
    let mut pointer = String::with_capacity(64);
    for segment in template {
        push_segment(&mut pointer, segment);
    }
    push_segment(&mut pointer, "spec");
    push_segment(&mut pointer, "imagePullSecrets");
    let list_end = pointer.len();
    let mut added = 0;
    for secret in secrets {
        if comma {
            out.push(b',');
        }
        comma = true;
        pointer.truncate(list_end);
        let whole_list = !list_present && added == 0;
        if !whole_list {
            push_segment(&mut pointer, "-");
        }
        out.extend_from_slice(br#"{"op":"add","path":"#);
        write_str(out, &pointer);
        out.extend_from_slice(br#","value":"#);
        if whole_list {
            out.push(b'[');
        }
        out.extend_from_slice(br#"{"name":"#);
        write_str(out, secret);
        out.push(b'}');
        if whole_list {
            out.push(b']');
        }
        out.push(b'}');
        added += 1;
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PullSecrets, String> {
        PullSecrets::parse_setting(text)
    }

    #[test]
    fn the_setting_is_registry_equals_secret_pairs() {
        let secrets = parse("harbor.example.com=harbor-pull, registry.local:5000=local ,").expect("valid");
        assert_eq!(
            secrets.entries().collect::<Vec<_>>(),
            [
                ("harbor.example.com", "harbor-pull"),
                ("registry.local:5000", "local")
            ]
        );
        assert!(parse("").expect("empty is none").is_empty());
        for (bad, why) in [
            ("harbor.example.com", "no `=`"),
            ("=s", "not a registry"),
            ("harbor.example.com/proj=s", "not a registry"),
            ("h=Upper", "not a Secret name"),
            ("h=", "not a Secret name"),
            ("h=a,h=b", "given twice"),
            ("docker.io=a,index.docker.io=b", "given twice"),
        ] {
            let message = parse(bad).expect_err(bad);
            assert!(message.contains(why), "{bad}: {message}");
        }
    }

    #[test]
    fn registries_compare_exactly_with_docker_hub_as_one() {
        let secrets = parse("harbor.example.com=h,registry.local:5000=l,docker.io=hub").expect("valid");
        for (image, secret) in [
            ("harbor.example.com/dockerhub/library/nginx:1.27", Some("h")),
            ("harbor.example.com:443/x/nginx", None),
            ("sub.harbor.example.com/x/nginx", None),
            (
                "registry.local:5000/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                Some("l"),
            ),
            ("registry.local/app", None),
            ("nginx", Some("hub")),
            ("library/nginx:1", Some("hub")),
            ("index.docker.io/library/nginx", Some("hub")),
            ("quay.io/x/y", None),
            ("not a reference", None),
        ] {
            assert_eq!(secrets.secret_for(image), secret, "{image}");
        }
    }

    fn adds(template: &[&str], list_present: bool, secrets: &[&str]) -> serde_json::Value {
        let mut out = b"[".to_vec();
        write_adds(&mut out, template, list_present, secrets.iter().copied(), false);
        out.push(b']');
        serde_json::from_slice(&out).expect("JSON")
    }

    #[test]
    fn the_list_is_added_whole_when_absent_and_appended_to_otherwise() {
        assert_eq!(
            adds(&[], false, &["a", "b"]),
            serde_json::json!([
                {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "a"}]},
                {"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "b"}},
            ])
        );
        assert_eq!(
            adds(&["spec", "jobTemplate", "spec", "template"], true, &["a"]),
            serde_json::json!([
                {"op": "add", "path": "/spec/jobTemplate/spec/template/spec/imagePullSecrets/-",
                 "value": {"name": "a"}},
            ])
        );
    }

    #[test]
    fn to_add_skips_listed_names_and_repeats() {
        let found = Found {
            eligible: true,
            list_present: true,
            existing: vec!["b"],
            needed: vec!["a", "b", "a", "c"],
        };
        assert_eq!(found.to_add().collect::<Vec<_>>(), ["a", "c"]);
    }
}
