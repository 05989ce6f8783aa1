//! Generated `matchConditions` (issue 22): CEL expressions, computed from the
//! maps, the keep list, the pull-secret mapping and the disable label, that
//! let the API server skip calling the webhook when its answer is certainly
//! "no patch". The cheapest admission is the one never sent.
//!
//! Each condition is true when the webhook must be called; the API server
//! skips the call when any is false. So every expression is the negation of
//! one *proof* that the server's answer has no patch, and soundness is the
//! only requirement: a condition may fail to skip, never skip a review the
//! server would patch. With `failurePolicy: Fail` an expression that errors
//! rejects the pod, so every optional field is guarded with `has()` and
//! every branch that reads a field sits behind a `?:` that proved it there.
//! Only standard CEL (macros `all`, `exists`, `map`, `has`; `startsWith`,
//! `matches` with a constant RE2 pattern, `in`, `==`): any conforming implementation evaluates them as the API
//! server does, and the cost is linear in the number of containers.
//!
//! The proofs:
//! - `imageswap-not-disabled`: the object carries the opt-out label with
//!   the value `disabled` (the server answers `Disabled`).
//! - `imageswap-update-changes-images`: a Pod UPDATE whose containers,
//!   list by list, have the same names and images in the same order as in
//!   `oldObject` (the server decides nothing there, admission.md; a Pod
//!   UPDATE never gets pull secrets, its list is immutable).
//! - `imageswap-images-may-change`: a Pod whose every image is in the keep
//!   list or starts with a *stable prefix* `HOST/…` — one for which
//!   [`stable`] proves, rule step by rule step (maps.md §3), that every
//!   image under it is left unchanged by an empty or identity rule — and
//!   whose registry's pull secret, if one is configured, is already listed.
//!   An image left unchanged only by §3 step 7 (`invalid-result`) is never
//!   proved stable: its review carries a warning the operator should see,
//!   and a neutral rule gives no result to reject.

use std::path::Path;

use clap::Args;
use serde::Serialize;

use crate::admission::{PullSecrets, PullSecretsArgs};
use crate::config::defaults::DISABLE_LABEL;
use crate::rules::{LoadError, Mode, RulesArgs, read_maps_text};
use crate::swap::maps::{KeyKind, MapsFile};
use crate::swap::reference::{DOCKER_HUB, ImageRef};

/// Stable prefixes per expression: the expression grows by one
/// `startsWith` per prefix per container list, and a few hundred characters
/// per family is the issue's budget.
const MAX_PREFIXES: usize = 12;
/// Registries with a pull secret whose prefixes still count: one more pass
/// over the containers each.
const MAX_SECRETS: usize = 3;
/// Keep-list images written into the expression.
const MAX_KEEP: usize = 8;
/// Hosts tried (each proof reads every rule once): a 10,000-rule file
/// costs `init` a bounded time.
const MAX_CANDIDATES: usize = 64;
/// The pod spec's container lists, as the server walks them.
const LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// One entry of a webhook's `matchConditions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchCondition {
    pub name: String,
    pub expression: String,
}

/// What the conditions are computed from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The maps; `None` in LEGACY mode (no image is proved stable then).
    pub maps: Option<&'a MapsFile>,
    /// `IMAGESWAP_KEEP_IMAGES`.
    pub keep: &'a [String],
    /// `IMAGESWAP_IMAGE_PULL_SECRETS`.
    pub pull_secrets: &'a PullSecrets,
    /// `IMAGESWAP_DISABLE_LABEL`.
    pub disable_label: &'a str,
}

/// The conditions, in a fixed order (equal inputs give equal output, so a
/// sidecar comparing them writes only on a real change).
pub fn generate(inputs: &Inputs<'_>) -> Vec<MatchCondition> {
    let mut conditions = vec![
        MatchCondition {
            name: "imageswap-not-disabled".to_owned(),
            expression: format!(
                "!(object != null && has(object.metadata) && has(object.metadata.labels) && {label} in object.metadata.labels && object.metadata.labels[{label}] == 'disabled')",
                label = literal(inputs.disable_label)
            ),
        },
        MatchCondition {
            name: "imageswap-update-changes-images".to_owned(),
            expression: update_expression(),
        },
    ];
    if let Some(expression) = images_expression(inputs) {
        conditions.push(MatchCondition {
            name: "imageswap-images-may-change".to_owned(),
            expression,
        });
    }
    conditions
}

/// The server's settings the conditions follow (the same variables, read
/// by `maps match-conditions` and by `init` from the shared ConfigMap).
#[derive(Clone, Debug, Args)]
pub struct ConditionsArgs {
    #[command(flatten)]
    pub rules: RulesArgs,

    #[command(flatten)]
    pub pull_secrets: PullSecretsArgs,

    /// The opt-out label (as the server's IMAGESWAP_DISABLE_LABEL).
    #[arg(long, env = "IMAGESWAP_DISABLE_LABEL", default_value = DISABLE_LABEL)]
    pub disable_label: String,
}

impl ConditionsArgs {
    /// The conditions for these settings (the maps file is read in MAPS
    /// mode; LEGACY mode proves no image stable).
    pub fn generate(&self) -> Result<Vec<MatchCondition>, LoadError> {
        let maps = match self.rules.mode {
            Mode::Maps => Some(MapsFile::parse(&read_maps_text(&self.rules.maps_file)?)),
            Mode::Legacy => None,
        };
        Ok(self.generate_from(maps.as_ref()))
    }

    /// As [`generate`](Self::generate); a maps file that cannot be read
    /// gives the conditions that need no maps (the label, the UPDATE), with
    /// a warning: `init` must not fail over what only saves calls, and
    /// proving less is always sound.
    pub fn generate_or_fewer(&self) -> Vec<MatchCondition> {
        self.generate().unwrap_or_else(|err| {
            tracing::warn!("No matchConditions from the maps: {err}; the webhook gets the others.");
            self.generate_from(None)
        })
    }

    /// The maps file whose changes change the conditions (MAPS mode).
    pub fn maps_file(&self) -> Option<&Path> {
        (self.rules.mode == Mode::Maps).then_some(self.rules.maps_file.as_path())
    }

    fn generate_from(&self, maps: Option<&MapsFile>) -> Vec<MatchCondition> {
        let keep = self.rules.keep_images();
        generate(&Inputs {
            maps,
            keep: &keep,
            pull_secrets: &self.pull_secrets.pull_secrets(),
            disable_label: &self.disable_label,
        })
    }
}

/// The template's conditions plus the generated ones whose names it does
/// not use (the operator's own win on a name clash), template first.
pub fn merge(template: &[MatchCondition], generated: &[MatchCondition]) -> Vec<MatchCondition> {
    let mut merged = template.to_vec();
    merged.extend(
        generated
            .iter()
            .filter(|g| !template.iter().any(|t| t.name == g.name))
            .cloned(),
    );
    merged
}

const IS_POD: &str = "request.kind.kind == 'Pod' && object != null && has(object.spec)";

/// Every container of `object`'s pod spec, the three lists in one (CEL
/// list concatenation: one pass per condition, whatever the lists).
fn all_containers(object: &str) -> String {
    LISTS
        .iter()
        .map(|list| format!("(has({object}.spec.{list}) ? {object}.spec.{list} : [])"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Each container as one string `LIST NAME =IMAGE` (`!` for no image, which
/// the server skips as well); names are DNS labels, so the parts cannot run
/// into each other. Lists of equal strings in equal order mean the same
/// container names with the same images in the same lists.
fn containers_as_text(object: &str) -> String {
    LISTS
        .iter()
        .map(|list| {
            format!(
                "(has({object}.spec.{list}) ? {object}.spec.{list}.map(c, '{list} ' + (has(c.name) ? c.name : '') + (has(c.image) ? ' =' + c.image : ' !')) : [])"
            )
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn update_expression() -> String {
    // A container without a name matches nothing on the server: only pods
    // whose new containers all have one are proved.
    format!(
        "!(request.operation == 'UPDATE' && {IS_POD} && oldObject != null && has(oldObject.spec) && ({new}).all(c, has(c.name)) && {new_text} == {old_text})",
        new = all_containers("object"),
        new_text = containers_as_text("object"),
        old_text = containers_as_text("oldObject"),
    )
}

/// A stable prefix and the pull secret its images need listed, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stable {
    secret: Option<String>,
    prefix: String,
    /// `HOST:PORT/` for every port (`prefix` is then `HOST:`): tested with
    /// a regular expression, because `HOST:` alone also starts Docker Hub
    /// images such as `registry.local:1` (the name `registry.local`, tag 1).
    any_port: bool,
}

fn images_expression(inputs: &Inputs<'_>) -> Option<String> {
    let maps = inputs.maps?;
    let rules = Effective::of(maps);
    let mut stable: Vec<Stable> = Vec::new();
    for host in candidates(maps).into_iter().take(MAX_CANDIDATES) {
        let prefix = format!("{host}/");
        if rules.stable(&prefix) {
            let secret = inputs
                .pull_secrets
                .secret_for(&format!("{prefix}imageswap-probe"))
                .map(str::to_owned);
            stable.push(Stable {
                secret,
                prefix,
                any_port: false,
            });
        }
        // The same registry on any port, when no secret is configured for
        // one of its ports (which secret is needed would depend on it).
        let secret_on_a_port = inputs
            .pull_secrets
            .entries()
            .any(|(registry, _)| registry.starts_with(&format!("{host}:")));
        if !host.contains(':') && !secret_on_a_port && rules.stable_on_any_port(&host) {
            stable.push(Stable {
                secret: None,
                prefix: format!("{host}:"),
                any_port: true,
            });
        }
        if stable.len() >= MAX_PREFIXES {
            break;
        }
    }
    stable.truncate(MAX_PREFIXES);
    stable.sort();
    let mut secrets: Vec<String> = stable.iter().filter_map(|s| s.secret.clone()).collect();
    secrets.dedup();
    secrets.truncate(MAX_SECRETS);
    stable.retain(|s| s.secret.as_ref().is_none_or(|secret| secrets.contains(secret)));
    // Keep-list images need no rule, only no secret to add.
    let keep: Vec<&str> = inputs
        .keep
        .iter()
        .filter(|image| inputs.pull_secrets.secret_for(image).is_none())
        .map(String::as_str)
        .take(MAX_KEEP)
        .collect();
    if stable.is_empty() && keep.is_empty() {
        return None;
    }
    // Every image covered by the prefixes of no secret or of a listed one:
    // covered by all of them, and for each secret not listed, covered
    // without that secret's prefixes.
    let mut proof = vec![images_all(&stable, &keep, None)];
    for secret in &secrets {
        let listed = format!(
            "has(object.spec.imagePullSecrets) && object.spec.imagePullSecrets.exists(s, has(s.name) && s.name == {})",
            literal(secret)
        );
        proof.push(format!(
            "({listed} || {})",
            images_all(&stable, &keep, Some(secret))
        ));
    }
    Some(format!("!({IS_POD} && {})", proof.join(" && ")))
}

/// Every image of the pod in the keep list or under one of the prefixes
/// (those of `without`'s secret left out).
fn images_all(stable: &[Stable], keep: &[&str], without: Option<&str>) -> String {
    let quoted = |items: &mut dyn Iterator<Item = &str>| items.map(literal).collect::<Vec<_>>().join(", ");
    let used = || {
        stable
            .iter()
            .filter(move |s| without.is_none() || s.secret.as_deref() != without)
    };
    let prefixes = quoted(&mut used().filter(|s| !s.any_port).map(|s| s.prefix.as_str()));
    let ports: Vec<String> = used()
        .filter(|s| s.any_port)
        .map(|s| format!("^{}[0-9]+/", regex_escape(&s.prefix)))
        .collect();

    let mut tests: Vec<String> = Vec::new();
    if !keep.is_empty() {
        tests.push(format!("c.image in [{}]", quoted(&mut keep.iter().copied())));
    }
    if !prefixes.is_empty() {
        tests.push(format!("[{prefixes}].exists(p, c.image.startsWith(p))"));
    }
    // One call per expression, its pattern a literal: the API server
    // compiles a constant pattern once, not per container.
    for pattern in &ports {
        tests.push(format!("c.image.matches({})", literal(pattern)));
    }
    let test = if tests.is_empty() {
        "false".to_owned()
    } else {
        tests.join(" || ")
    };
    format!("({}).all(c, !has(c.image) || {test})", all_containers("object"))
}

/// Hosts worth proving stable, most useful first: the hosts of the rules'
/// values (the mirrors; `default`'s first), then of keys that opt out,
/// host-like wildcards, then every other key's. Docker Hub is left out: its
/// library images are read as `docker.io/library/…` (§2), which a prefix of
/// the image does not see.
fn candidates(maps: &MapsFile) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    let mut push = |text: &str| {
        let host = text.split('/').next().unwrap_or_default();
        let host = host.strip_suffix('-').unwrap_or(host);
        if is_explicit_host(host) && host != DOCKER_HUB && !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_owned());
        }
    };
    let rules = &maps.rules;
    for rule in rules.iter().filter(|r| r.kind == KeyKind::Default) {
        push(&rule.value);
    }
    for rule in rules.iter().filter(|r| r.kind != KeyKind::NoswapWildcards) {
        push(&rule.value);
    }
    for rule in rules
        .iter()
        .filter(|r| r.kind == KeyKind::Registry && r.value.is_empty())
    {
        push(&rule.key);
    }
    for rule in rules.iter().filter(|r| r.kind == KeyKind::NoswapWildcards) {
        rule.value.split(',').for_each(&mut push);
    }
    for rule in rules.iter().filter(|r| r.kind == KeyKind::Registry) {
        push(&rule.key);
    }
    hosts
}

/// A registry as an image names it explicitly (maps.md §2): a valid host
/// with a `.`, a `:` or uppercase, or `localhost`.
fn is_explicit_host(host: &str) -> bool {
    let probe = format!("{host}/imageswap-probe");
    ImageRef::parse(&probe).is_some_and(|r| r.explicit && r.reg == host)
}

/// The rules that decide (for a key given twice, the later line), read once
/// for all the candidates.
struct Effective<'m> {
    /// `[EXACT]` keys that change their image.
    exact_changing: Vec<&'m str>,
    /// The literal start of each `[REPLACE]` glob (up to its first `*`, `?`
    /// or `[`).
    replace_literals: Vec<&'m str>,
    /// Registry keys without `/`, and path keys, with their values.
    registry: Vec<(&'m str, &'m str)>,
    paths: Vec<(&'m str, &'m str)>,
    wildcards: Vec<&'m str>,
    /// `None`: no `default` key (§3.3).
    default: Option<&'m str>,
}

impl<'m> Effective<'m> {
    fn of(maps: &'m MapsFile) -> Effective<'m> {
        let mut latest: Vec<(KeyKind, &'m str, &'m str)> = Vec::new();
        let mut index: std::collections::HashMap<(KeyKind, &str), usize> = std::collections::HashMap::new();
        for rule in &maps.rules {
            match index.get(&(rule.kind, rule.key.as_str())) {
                Some(&i) => latest[i].2 = &rule.value,
                None => {
                    index.insert((rule.kind, &rule.key), latest.len());
                    latest.push((rule.kind, &rule.key, &rule.value));
                }
            }
        }
        let of_kind = |kind: KeyKind| latest.iter().filter(move |(k, _, _)| *k == kind);
        Effective {
            exact_changing: of_kind(KeyKind::Exact)
                .filter(|(_, key, value)| !value.is_empty() && value != key)
                .map(|(_, key, _)| *key)
                .collect(),
            replace_literals: of_kind(KeyKind::Replace)
                .map(|(_, glob, _)| glob.split(['*', '?', '[']).next().unwrap_or_default())
                .collect(),
            registry: of_kind(KeyKind::Registry)
                .filter(|(_, key, _)| !key.contains('/'))
                .map(|(_, key, value)| (*key, *value))
                .collect(),
            paths: of_kind(KeyKind::Registry)
                .filter(|(_, key, _)| key.contains('/'))
                .map(|(_, key, value)| (*key, *value))
                .collect(),
            wildcards: of_kind(KeyKind::NoswapWildcards)
                .next_back()
                .map(|(_, _, value)| value.split(',').filter(|p| !p.is_empty()).collect())
                .unwrap_or_default(),
            default: of_kind(KeyKind::Default).next_back().map(|(_, _, value)| *value),
        }
    }

    /// §3.1 and §3.2: an exact key under `prefix` that changes its image,
    /// or a glob whose literal start is compatible with `prefix` (it may
    /// match an image under it).
    fn exact_or_replace_may_touch(&self, prefix: &str) -> bool {
        self.exact_changing.iter().any(|key| key.starts_with(prefix))
            || self
                .replace_literals
                .iter()
                .any(|literal| literal.starts_with(prefix) || prefix.starts_with(literal))
    }

    /// Whether every valid image starting with `prefix` (`HOST/`, `HOST` an
    /// explicit registry other than Docker Hub) is left unchanged,
    /// following maps.md §3 step by step. Any doubt answers `false`.
    fn stable(&self, prefix: &str) -> bool {
        let host = &prefix[..prefix.len() - 1];
        let host_noport = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        if self.exact_or_replace_may_touch(prefix) {
            return false;
        }
        // §3.3: no default, no swap.
        let Some(default) = self.default else {
            return true;
        };
        // §3.4 path keys: `full` is the image itself (explicit, not Docker
        // Hub), and a key matches under the prefix only when it starts with
        // it (a key has a `/`, the prefix only its last). Each must leave
        // its images alone; the images none matches go on.
        if self
            .paths
            .iter()
            .any(|(key, value)| key.starts_with(prefix) && !neutral(key, value))
        {
            return false;
        }
        let registry = |key: &str| self.registry.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
        if let Some((key, value)) = registry(host)
            .map(|v| (host, v))
            .or_else(|| registry(host_noport).map(|v| (host_noport, v)))
        {
            return neutral(key, value);
        }
        // §3.5: a wildcard inside the prefix is in every image under it.
        if self.wildcards.iter().any(|w| prefix.contains(w)) {
            return true;
        }
        // §3.6: the default gives `V/rest`, the image itself only when V
        // is the host.
        default.is_empty() || default == host
    }

    /// Whether every valid image `HOST:PORT/…`, for any port, is left
    /// unchanged (`host` without a port). The same steps as
    /// [`stable`](Self::stable), for a registry key that may be `HOST:PORT`
    /// or `HOST` and a default that can never give the image back.
    fn stable_on_any_port(&self, host: &str) -> bool {
        let prefix = format!("{host}:");
        let prefix = prefix.as_str();
        if self.exact_or_replace_may_touch(prefix) {
            return false;
        }
        let Some(default) = self.default else {
            return true;
        };
        // Path keys and `HOST:PORT` keys: each, where it matches, must leave
        // the image alone.
        if self
            .paths
            .iter()
            .chain(&self.registry)
            .any(|(key, value)| key.starts_with(prefix) && !neutral(key, value))
        {
            return false;
        }
        // `HOST`, for the ports without their own key.
        if let Some(&(key, value)) = self.registry.iter().find(|(k, _)| *k == host) {
            return neutral(key, value);
        }
        if self.wildcards.iter().any(|w| prefix.contains(w)) {
            return true;
        }
        default.is_empty()
    }
}

/// A rule leaves its images alone when its value is empty or, for
/// `V + image[len(K):]`, is its key.
fn neutral(key: &str, value: &str) -> bool {
    value.is_empty() || (value == key && !value.ends_with('-'))
}

/// `text` matched literally in an RE2 expression (hosts: only `.` and `-`
/// are special there, and `-` only in a class).
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && !matches!(c, '-' | ':' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEL string literal (single quotes; backslash and quote escaped).
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(text: &str) -> Vec<String> {
        let maps = MapsFile::parse(text);
        let rules = Effective::of(&maps);
        candidates(&maps)
            .into_iter()
            .filter(|h| rules.stable(&format!("{h}/")))
            .collect()
    }

    #[test]
    fn an_opted_out_mirror_is_stable_and_a_swapped_registry_is_not() {
        let found =
            prefixes("default::harbor.example.com\nharbor.example.com::\nquay.io::harbor.example.com/quay\n");
        assert_eq!(found, ["harbor.example.com"]);
    }

    #[test]
    fn a_glob_or_exact_key_under_the_mirror_spoils_it() {
        assert!(
            prefixes("default::h.example.com\nh.example.com::\n[REPLACE]h.example.com/x*::m.io\n").is_empty()
        );
        assert!(prefixes("default::h.example.com\nh.example.com::\n[REPLACE]*::m.io\n").is_empty());
        assert!(
            prefixes("default::h.example.com\nh.example.com::\n[EXACT]h.example.com/a:1::m.io/a:1\n")
                .is_empty()
        );
    }

    #[test]
    fn a_default_onto_its_own_host_is_a_fixed_point() {
        assert_eq!(prefixes("default::h.example.com\n"), ["h.example.com"]);
        assert!(prefixes("default::h.example.com/mirror\n").is_empty());
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal(r"a'b\c"), r"'a\'b\\c'");
    }
}
