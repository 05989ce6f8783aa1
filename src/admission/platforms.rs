//! The platforms a pod may run on, from its spec (issue 21 item 5): its
//! `nodeSelector` and its required node affinity on `kubernetes.io/arch`
//! and `kubernetes.io/os`. Mirror verification then requires each swapped
//! image to have every one of them. A pod that pins neither gives none
//! (the `IMAGESWAP_VERIFY_PLATFORMS` setting applies); only `In` terms
//! narrow the nodes, so anything else (`NotIn`, a term without the key)
//! leaves the pod free to run anywhere on that axis.

use simd_json::tape::Value;

use super::decode::{member, text};
use super::podspec::SpecMembers;
use crate::swap::platform::Platform;

const ARCH_LABEL: &str = "kubernetes.io/arch";
const OS_LABEL: &str = "kubernetes.io/os";

/// The platforms the pod of a spec may be scheduled on, from the spec's
/// `nodeSelector` and `affinity` (`SpecMembers`); empty when its spec pins
/// neither OS nor architecture.
pub(super) fn of_pod(spec: &SpecMembers<'_, '_>) -> Vec<Platform> {
    // The spec's members read in the walk that finds the containers, not
    // once per key and label: four walks of the pod spec were 2.5 k
    // instructions of every swapping admission, verification on or off
    // (`loadtest/profile.sh`, issue 24).
    let (selector, affinity) = (spec.node_selector, spec.affinity);
    let terms = affinity
        .and_then(|a| member(a, "nodeAffinity"))
        .and_then(|n| member(n, "requiredDuringSchedulingIgnoredDuringExecution"))
        .and_then(|r| member(r, "nodeSelectorTerms"));
    let archs = pinned(selector, terms, ARCH_LABEL);
    let oses = pinned(selector, terms, OS_LABEL);
    if archs.is_none() && oses.is_none() {
        return Vec::new();
    }
    let any = || vec![None];
    let wrap = |values: Option<Vec<String>>| values.map_or_else(any, |v| v.into_iter().map(Some).collect());
    let (archs, oses) = (wrap(archs), wrap(oses));
    let mut platforms = Vec::with_capacity(archs.len() * oses.len());
    for os in &oses {
        for arch in &archs {
            platforms.push(Platform {
                os: os.clone(),
                architecture: arch.clone(),
                variant: None,
            });
        }
    }
    platforms
}

/// The values of node label `key` the pod is limited to: its
/// `nodeSelector`'s (`selector`), else the union over the required
/// affinity's `terms` when every term has an `In` on it (terms are ORed:
/// one free term frees the pod).
fn pinned(selector: Option<Value<'_, '_>>, terms: Option<Value<'_, '_>>, key: &str) -> Option<Vec<String>> {
    if let Some(value) = selector.and_then(|s| member(s, key)).and_then(text) {
        return Some(vec![value.to_ascii_lowercase()]);
    }
    let terms = terms?.as_array()?;
    let mut values: Vec<String> = Vec::new();
    let mut any_term = false;
    for term in terms.iter() {
        any_term = true;
        let expressions = member(term, "matchExpressions").and_then(|e| e.as_array());
        let in_values = expressions.and_then(|exprs| {
            exprs.iter().find_map(|e| {
                let is_in = member(e, "key").and_then(text) == Some(key)
                    && member(e, "operator").and_then(text) == Some("In");
                is_in.then(|| member(e, "values").and_then(|v| v.as_array()))?
            })
        })?;
        for value in in_values.iter().filter_map(text) {
            let value = value.to_ascii_lowercase();
            if !values.contains(&value) {
                values.push(value);
            }
        }
    }
    (any_term && !values.is_empty()).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms(spec: &str) -> Vec<String> {
        let mut bytes = spec.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut bytes).expect("json");
        of_pod(&SpecMembers::of(tape.as_value()))
            .iter()
            .map(Platform::to_string)
            .collect()
    }

    #[test]
    fn node_selector_and_required_affinity_pin_the_platforms() {
        assert!(platforms(r#"{"containers":[]}"#).is_empty(), "pins nothing");
        assert_eq!(
            platforms(r#"{"nodeSelector":{"kubernetes.io/arch":"arm64"}}"#),
            ["arm64"]
        );
        assert_eq!(
            platforms(r#"{"nodeSelector":{"kubernetes.io/arch":"arm64","kubernetes.io/os":"linux"}}"#),
            ["linux/arm64"]
        );
        let affinity = |terms: &str| {
            format!(
                r#"{{"affinity":{{"nodeAffinity":{{"requiredDuringSchedulingIgnoredDuringExecution":{{"nodeSelectorTerms":[{terms}]}}}}}}}}"#
            )
        };
        let term_in = |key: &str, values: &str| {
            format!(r#"{{"matchExpressions":[{{"key":"{key}","operator":"In","values":[{values}]}}]}}"#)
        };
        assert_eq!(
            platforms(&affinity(&term_in("kubernetes.io/arch", r#""amd64","arm64""#))),
            ["amd64", "arm64"],
            "the pod may land on either: both are needed"
        );
        assert_eq!(
            platforms(&affinity(&format!(
                "{},{}",
                term_in("kubernetes.io/arch", r#""amd64""#),
                term_in("kubernetes.io/arch", r#""arm64""#)
            ))),
            ["amd64", "arm64"],
            "terms are ORed"
        );
        assert!(
            platforms(&affinity(&format!(
                "{},{}",
                term_in("kubernetes.io/arch", r#""amd64""#),
                term_in("topology.kubernetes.io/zone", r#""a""#)
            )))
            .is_empty(),
            "a term without the key lets the pod run anywhere"
        );
        let not_in =
            r#"{"matchExpressions":[{"key":"kubernetes.io/arch","operator":"NotIn","values":["arm64"]}]}"#;
        assert!(platforms(&affinity(not_in)).is_empty(), "NotIn pins nothing");
    }
}
