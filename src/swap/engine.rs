//! The swap engine: maps.md §3 (MAPS mode) and §4 (LEGACY mode) over rules
//! compiled once per load. Immutable and `Send + Sync`; share it in an `Arc`.
//!
//! Cost per decision does not grow with the file: exact and registry keys are
//! hash lookups, path keys are one lookup per `/` of the image (longest
//! first), and all `[REPLACE]` globs run as one `GlobSet`.

use std::collections::HashMap;
use std::fmt;

use super::maps::{Finding, FindingKind, KeyKind, MapsFile, Severity};
use super::mirrors::{MirrorHosts, ValueKind};
use super::reference::{ImageRef, is_valid_result, last_component};
use super::replace::ReplaceRules;

/// Hash maps keyed by rule keys. foldhash rather than SipHash: keys come from
/// the operator's maps file, not from attackers choosing collisions, and the
/// lookup is on the per-container hot path.
type FastMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// The rule that decided, named by the words of maps.md §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    Invalid,
    Exact,
    Replace,
    None,
    Path,
    Registry,
    Wildcard,
    Default,
    Legacy,
    /// §3 step 7: the deciding rule gave an invalid reference; the image
    /// stays (the rule's key is the decision's key).
    InvalidResult,
    /// Before step 1: a placeholder of the keep list (`auto`, Istio's),
    /// never rewritten.
    KeptPlaceholder,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::Invalid,
        Rule::Exact,
        Rule::Replace,
        Rule::None,
        Rule::Path,
        Rule::Registry,
        Rule::Wildcard,
        Rule::Default,
        Rule::Legacy,
        Rule::InvalidResult,
        Rule::KeptPlaceholder,
    ];

    /// The word of maps.md §6.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Invalid => "invalid",
            Rule::Exact => "exact",
            Rule::Replace => "replace",
            Rule::None => "none",
            Rule::Path => "path",
            Rule::Registry => "registry",
            Rule::Wildcard => "wildcard",
            Rule::Default => "default",
            Rule::Legacy => "legacy",
            Rule::InvalidResult => "invalid-result",
            Rule::KeptPlaceholder => "kept-placeholder",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one image becomes and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'e> {
    /// The new image, or `None` when the image stays as it is.
    pub result: Option<String>,
    /// The rule that decided (it may decide "unchanged").
    pub rule: Rule,
    /// The key that matched: the exact image, the glob, the registry or path
    /// key, the wildcard pattern, `default`, or the LEGACY prefix (for
    /// `invalid-result`, the key of the rule that gave it; for
    /// `kept-placeholder`, the placeholder).
    pub key: Option<&'e str>,
    /// For `invalid-result`: the invalid image the rule gave, never patched.
    pub rejected: Option<String>,
}

impl Decision<'_> {
    fn new<'e>(image: &str, result: Option<String>, rule: Rule, key: Option<&'e str>) -> Decision<'e> {
        // "A result that equals `image` is unchanged."
        let result = result.filter(|r| r != image);
        Decision {
            result,
            rule,
            key,
            rejected: None,
        }
    }

    pub fn changed(&self) -> bool {
        self.result.is_some()
    }
}

/// Which mode an engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineMode {
    Maps,
    Legacy,
}

/// Decides what each image becomes.
#[derive(Debug)]
pub struct Engine {
    rules: Rules,
    /// Images never rewritten (`IMAGESWAP_KEEP_IMAGES`), compared exactly
    /// before any rule; a handful at most, so a list.
    keep: Vec<String>,
    /// The rule lines the maps file holds (valid lines, repeats included;
    /// 1 for a LEGACY prefix): 0 means the file swaps nothing by accident,
    /// as opposed to `default::`, one rule that swaps nothing on purpose.
    rule_count: usize,
    /// The registries the rules' values name (what verification may contact).
    mirrors: MirrorHosts,
}

#[derive(Debug)]
enum Rules {
    Maps(Box<MapsRules>),
    Legacy { prefix: String },
}

#[derive(Debug)]
struct MapsRules {
    exact: FastMap<String>,
    replace: ReplaceRules,
    /// Keys without `/`: a registry, with or without port.
    registry: FastMap<String>,
    /// Keys with `/`: a registry and a path prefix.
    path: FastMap<String>,
    /// `noswap_wildcards` split on `,`, empty patterns dropped, each with a
    /// prebuilt substring searcher (building one per search costs more than
    /// the search on an image-sized string).
    wildcards: Vec<(String, memchr::memmem::Finder<'static>)>,
    /// The `default` value; `None` when the file has no `default` key.
    default: Option<String>,
}

impl Engine {
    /// Parses and compiles a maps file; returns every finding of both steps.
    pub fn from_maps_text(text: &str) -> (Engine, Vec<Finding>) {
        Self::from_maps_file(&MapsFile::parse(text))
    }

    /// Compiles parsed maps ("later wins" for repeated keys; a repeated
    /// `[REPLACE]` pattern keeps its first position). Returns the parse
    /// findings plus any pattern that could not be compiled.
    pub fn from_maps_file(file: &MapsFile) -> (Engine, Vec<Finding>) {
        let mut findings = file.findings.clone();
        let mut exact = FastMap::default();
        let mut registry = FastMap::default();
        let mut path = FastMap::default();
        let mut replace: Vec<(String, String)> = Vec::new();
        let mut replace_index: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
        let mut wildcards = Vec::new();
        let mut default = None;
        for rule in &file.rules {
            let value = rule.value.clone();
            match rule.kind {
                KeyKind::Exact => {
                    exact.insert(rule.key.clone(), value);
                }
                // A repeated pattern keeps its first position, with the new value.
                KeyKind::Replace => match replace_index.get(rule.key.as_str()) {
                    Some(&index) => replace[index].1 = value,
                    None => {
                        replace_index.insert(rule.key.as_str(), replace.len());
                        replace.push((rule.key.clone(), value));
                    }
                },
                KeyKind::Default => default = Some(value),
                KeyKind::NoswapWildcards => {
                    wildcards = value
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| (p.to_owned(), memchr::memmem::Finder::new(p).into_owned()))
                        .collect();
                }
                KeyKind::Registry if rule.key.contains('/') => {
                    path.insert(rule.key.clone(), value);
                }
                KeyKind::Registry => {
                    registry.insert(rule.key.clone(), value);
                }
            }
        }
        // From the final values (a repeated key's later value wins).
        let mirrors = MirrorHosts::from_values(
            exact
                .values()
                .map(|v| (ValueKind::Image, v.as_str()))
                .chain(replace.iter().map(|(_, v)| (ValueKind::Replace, v.as_str())))
                .chain(
                    registry
                        .values()
                        .chain(path.values())
                        .chain(default.as_ref())
                        .map(|v| (ValueKind::Prefix, v.as_str())),
                ),
        );
        let (replace, bad) = ReplaceRules::compile(replace);
        for pattern in bad {
            findings.push(Finding {
                line: file
                    .rules
                    .iter()
                    .find(|r| r.kind == KeyKind::Replace && r.key == pattern.pattern)
                    .map(|r| r.line),
                severity: Severity::Error,
                kind: FindingKind::InvalidLine,
                message: format!(
                    "[REPLACE] pattern `{}` is not a valid glob ({}); rule skipped",
                    pattern.pattern, pattern.reason
                ),
            });
        }
        let rules = MapsRules {
            exact,
            replace,
            registry,
            path,
            wildcards,
            default,
        };
        (
            Engine {
                rules: Rules::Maps(Box::new(rules)),
                keep: Vec::new(),
                rule_count: file.rules.len(),
                mirrors,
            },
            findings,
        )
    }

    /// LEGACY mode (deprecated): only the prefix; an unset prefix swaps nothing.
    pub fn legacy(prefix: Option<&str>) -> Engine {
        let prefix = prefix.unwrap_or_default().to_owned();
        Engine {
            rule_count: usize::from(!prefix.is_empty()),
            keep: Vec::new(),
            mirrors: MirrorHosts::from_values([(ValueKind::Prefix, prefix.as_str())]),
            rules: Rules::Legacy { prefix },
        }
    }

    /// The same rules, with `images` never rewritten (maps.md §3, before
    /// step 1: placeholders such as Istio's `auto`, which its injector
    /// replaces only while it is still `auto`).
    pub fn keeping(mut self, images: &[String]) -> Engine {
        self.keep = images.to_vec();
        self
    }

    /// How many rules the maps file holds (see the field).
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The registries this engine's results can name: mirror verification
    /// contacts only these (verify.md).
    pub fn mirror_hosts(&self) -> &MirrorHosts {
        &self.mirrors
    }

    pub fn mode(&self) -> EngineMode {
        match self.rules {
            Rules::Maps(_) => EngineMode::Maps,
            Rules::Legacy { .. } => EngineMode::Legacy,
        }
    }

    /// What `image` becomes, and the rule that decided.
    pub fn decide<'e>(&'e self, image: &str) -> Decision<'e> {
        if let Some(placeholder) = self.keep.iter().find(|k| *k == image) {
            return Decision::new(image, None, Rule::KeptPlaceholder, Some(placeholder));
        }
        let Some(reference) = ImageRef::parse(image) else {
            return Decision::new(image, None, Rule::Invalid, None);
        };
        let decision = match &self.rules {
            Rules::Maps(rules) => rules.decide(&reference),
            Rules::Legacy { prefix } => decide_legacy(prefix, image),
        };
        // §3 step 7: only valid results. A value with a scheme, uppercase
        // or `//`, or a port carried into the path, gives what the kubelet
        // refuses (`InvalidImageName`), a port past 65535 what it cannot
        // pull: the pod keeps its image instead.
        match decision.result {
            Some(result) if !is_valid_result(&result) => Decision {
                result: None,
                rule: Rule::InvalidResult,
                key: decision.key,
                rejected: Some(result),
            },
            _ => decision,
        }
    }
}

impl MapsRules {
    fn decide<'e>(&'e self, r: &ImageRef<'_>) -> Decision<'e> {
        let image = r.image;
        // §3.1 Exact. An empty value would write an empty image; it opts out.
        if let Some((key, value)) = self.exact.get_key_value(image) {
            let result = (!value.is_empty()).then(|| value.clone());
            return Decision::new(image, result, Rule::Exact, Some(key));
        }
        // §3.2 Replace: first match in file order.
        if let Some((pattern, value)) = self.replace.first_match(image) {
            let last = last_component(image);
            let result = if value.is_empty() || value.ends_with('/') {
                concat(&[value, last])
            } else {
                concat(&[value, "/", last])
            };
            return Decision::new(image, Some(result), Rule::Replace, Some(pattern));
        }
        // §3.3 No default, no swap.
        let Some(default) = &self.default else {
            return Decision::new(image, None, Rule::None, None);
        };
        // §3.4 Registry rules: the longest path key, then the registry key.
        if let Some(decision) = self.decide_by_path(r) {
            return decision;
        }
        let registry_key = self
            .registry
            .get_key_value(r.reg)
            .or_else(|| self.registry.get_key_value(r.reg_noport()));
        if let Some((key, value)) = registry_key {
            let result = if value.is_empty() {
                None
            } else if value.ends_with('-') {
                Some(concat(&[value, r.reg_noport(), "/", r.rest]))
            } else if r.explicit {
                Some(concat(&[value, &image[key.len()..]]))
            } else {
                Some(concat(&[value, "/", image]))
            };
            return Decision::new(image, result, Rule::Registry, Some(key));
        }
        // §3.5 No-swap wildcards.
        let wildcard = self
            .wildcards
            .iter()
            .find(|(_, finder)| finder.find(image.as_bytes()).is_some());
        if let Some((pattern, _)) = wildcard {
            return Decision::new(image, None, Rule::Wildcard, Some(pattern));
        }
        // §3.6 Default.
        let result = if default.is_empty() {
            None
        } else if default.ends_with('-') {
            Some(concat(&[default, r.reg_noport(), "/", r.rest]))
        } else if r.explicit {
            Some(concat(&[default, "/", r.rest]))
        } else {
            Some(concat(&[default, "/", image]))
        };
        Decision::new(image, result, Rule::Default, Some(super::maps::DEFAULT_KEY))
    }

    /// §3.4 path keys: `K` matches when `full` starts with `K/`; the longest wins.
    fn decide_by_path<'e>(&'e self, r: &ImageRef<'_>) -> Option<Decision<'e>> {
        if self.path.is_empty() {
            return None;
        }
        let owned;
        let full: &str = if r.is_library() {
            owned = concat(&["docker.io/library/", r.rest]);
            &owned
        } else if r.explicit {
            r.image
        } else {
            owned = concat(&["docker.io/", r.rest]);
            &owned
        };
        let (key, value) = full
            .rmatch_indices('/')
            .find_map(|(slash, _)| self.path.get_key_value(&full[..slash]))?;
        let result = if value.is_empty() {
            None
        } else if value.ends_with('-') {
            Some(concat(&[value, r.reg_noport(), "/", r.rest]))
        } else {
            Some(concat(&[value, &full[key.len()..]]))
        };
        Some(Decision::new(r.image, result, Rule::Path, Some(key)))
    }
}

/// maps.md §4, for a valid reference.
fn decide_legacy<'e>(prefix: &'e str, image: &str) -> Decision<'e> {
    let key = (!prefix.is_empty()).then_some(prefix);
    let result = if prefix.is_empty() || image.contains(prefix) {
        None
    } else if prefix.ends_with('-') {
        Some(concat(&[prefix, image]))
    } else if !image.contains('/') {
        Some(concat(&[prefix, "/", image]))
    } else {
        Some(concat(&[prefix, "/", last_component(image)]))
    };
    Decision::new(image, result, Rule::Legacy, key)
}

/// Joins parts with one allocation of the right size.
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}
