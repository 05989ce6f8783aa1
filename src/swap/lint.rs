//! What `imageswap maps check` finds beyond parsing: rules whose value gives
//! invalid images, rules whose own output is swapped again, and `[EXACT]`
//! keys or `[REPLACE]` patterns that cannot match as written. Pure, like the
//! rest of `swap`. The server runs only [`invalid_results`] at each load (one
//! decision per rule: an operator must hear of a rule that swaps nothing it
//! matches); the rest is for a person before shipping the file.
//!
//! ImageSwap sees a pod more than once (reinvocation after another webhook,
//! the UPDATE of a running pod's images), so a swapped image goes through the
//! rules again; maps.md's "swapping twice" asks that it then stays as it is.
//! For each rule, one image the rule decides is swapped, and its result once
//! more: a second change is the doubled result the warning shows.

use super::engine::{Engine, Rule};
use super::maps::{Finding, FindingKind, KeyKind, MapsFile, RuleLine, Severity};
use super::reference::{invalid_result_reason, is_valid_reference};

/// Repository and tag of the images made up to probe a rule.
const PROBE_REPOSITORY: &str = "imageswap-check/app:1";

/// The findings of `maps check` beyond the parser's: not idempotent rules
/// and patterns that cannot match, sorted by line.
pub fn lint(file: &MapsFile, engine: &Engine) -> Vec<Finding> {
    let mut findings = invalid_results(file, engine);
    for rule in effective_rules(file) {
        if rule.kind == KeyKind::Replace
            && let Some(problem) = pattern_problem(&rule.key)
        {
            findings.push(warning(rule.line, FindingKind::UnmatchablePattern, problem));
        }
        if rule.kind == KeyKind::Exact && !is_valid_reference(&rule.key) {
            findings.push(warning(
                rule.line,
                FindingKind::UnmatchablePattern,
                format!(
                    "[EXACT] key `{}` is not a valid image reference, so this rule never matches \
                     (an invalid image is left unchanged before any rule)",
                    rule.key
                ),
            ));
        }
        if let Some(message) = swapped_again(rule, engine) {
            findings.push(warning(rule.line, FindingKind::NotIdempotent, message));
        }
    }
    findings.sort_by_key(|f| f.line);
    findings
}

/// The rules that decide: for a key given twice, the later line (it wins).
/// One pass from the end, so a 10k-rule file costs the server's reload
/// (which runs [`invalid_results`]) nothing noticeable.
fn effective_rules(file: &MapsFile) -> Vec<&RuleLine> {
    let mut seen = std::collections::HashSet::new();
    let mut rules: Vec<&RuleLine> = file
        .rules
        .iter()
        .rev()
        .filter(|rule| seen.insert((rule.kind, rule.key.as_str())))
        .collect();
    rules.reverse();
    rules
}

/// The rules whose value gives invalid images (maps.md §3 step 7), as
/// errors naming their lines: the server reports these at every load too
/// (`imageswap_maps_findings{severity="error"}`), since such a rule swaps
/// nothing it matches.
pub fn invalid_results(file: &MapsFile, engine: &Engine) -> Vec<Finding> {
    effective_rules(file)
        .into_iter()
        .filter_map(|rule| {
            invalid_result(rule, engine).map(|message| Finding {
                line: Some(rule.line),
                severity: Severity::Error,
                kind: FindingKind::InvalidResult,
                message,
            })
        })
        .collect()
}

fn warning(line: usize, kind: FindingKind, message: String) -> Finding {
    Finding {
        line: Some(line),
        severity: Severity::Warning,
        kind,
        message,
    }
}

/// An image this rule decides, when one can be made up.
fn probe_image(rule: &RuleLine) -> Option<String> {
    let image = match rule.kind {
        KeyKind::Exact => rule.key.clone(),
        // Each wildcard stands for a plain name character; a class for its
        // first member.
        KeyKind::Replace => glob_example(&rule.key)?,
        KeyKind::Registry => format!("{}/{PROBE_REPOSITORY}", rule.key),
        KeyKind::Default => format!("imageswap-check.invalid/{PROBE_REPOSITORY}"),
        KeyKind::NoswapWildcards => return None,
    };
    is_valid_reference(&image).then_some(image)
}

/// The rule word an image decided by this kind of key reports.
fn decides(kind: KeyKind, rule: Rule) -> bool {
    match kind {
        KeyKind::Exact => rule == Rule::Exact,
        KeyKind::Replace => rule == Rule::Replace,
        KeyKind::Registry => matches!(rule, Rule::Registry | Rule::Path),
        KeyKind::Default => rule == Rule::Default,
        KeyKind::NoswapWildcards => false,
    }
}

/// `Some(message)` when the rule gives an invalid image for an image it
/// decides: its value has a scheme, uppercase in a path, `//`, a trailing
/// `/`, a bad port… The server keeps such images unswapped (maps.md §3 step
/// 7), so the rule does nothing but warn: an error, naming the line.
fn invalid_result(rule: &RuleLine, engine: &Engine) -> Option<String> {
    let image = probe_image(rule)?;
    let decision = engine.decide(&image);
    if decision.rule != Rule::InvalidResult || decision.key != Some(rule.key.as_str()) {
        return None;
    }
    let result = decision.rejected?;
    Some(format!(
        "the value `{}` gives invalid images: {image} becomes \"{result}\" ({}); the images this \
         rule matches are never swapped",
        rule.value,
        invalid_result_reason(&result).unwrap_or_default()
    ))
}

/// `Some(message)` when the rule's result is swapped again.
fn swapped_again(rule: &RuleLine, engine: &Engine) -> Option<String> {
    let image = probe_image(rule)?;
    let first = engine.decide(&image);
    if !decides(rule.kind, first.rule) {
        return None;
    }
    let once = first.result?;
    let again = engine.decide(&once);
    let twice = again.result?;
    let key = match rule.kind {
        KeyKind::Exact => format!("[EXACT]{}", rule.key),
        KeyKind::Replace => format!("[REPLACE]{}", rule.key),
        _ => rule.key.clone(),
    };
    Some(format!(
        "not idempotent: `{key}` swaps {image} to {once}, which the {} rule{} swaps again to {twice}; \
         a swapped image goes through the rules again on reinvocation and on pod UPDATE, so give \
         the target an empty rule (`{}::`) or list it in noswap_wildcards",
        again.rule.as_str(),
        again.key.map(|k| format!(" `{k}`")).unwrap_or_default(),
        registry_of(&once),
    ))
}

/// The registry part of an image, as a key for the suggested empty rule.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// A string the glob matches, built from its literal parts: `*` and `?` become
/// `x`, a class its first member. `None` when the pattern holds syntax this
/// cannot follow.
fn glob_example(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => out.push('x'),
            '[' => {
                let negated = chars.next_if(|c| *c == '!' || *c == '^').is_some();
                let first = chars.next()?;
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
                if negated {
                    out.push('x');
                } else {
                    out.push(first);
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Why a `[REPLACE]` pattern cannot match as written: braces are literal
/// (there is no `{a,b}` alternation) and brackets outside a class are
/// literal, and no image reference contains either.
fn pattern_problem(pattern: &str) -> Option<String> {
    if pattern.contains(['{', '}']) {
        return Some(format!(
            "`[REPLACE]{pattern}` cannot match: `{{` and `}}` are literal (globs here have no \
             {{a,b}} alternation) and no image reference contains them; write one rule per alternative"
        ));
    }
    if has_literal_bracket(pattern) {
        return Some(format!(
            "`[REPLACE]{pattern}` cannot match: a `[` or `]` that does not form a class `[abc]` is \
             literal, and no image reference contains one"
        ));
    }
    if let Some(range) = reversed_range(pattern) {
        return Some(format!(
            "`[REPLACE]{pattern}`: the range `{range}` is reversed and matches nothing, as in the shell \
             (write it low to high)"
        ));
    }
    None
}

/// The first range in a class whose end comes before its start (`b-a`).
fn reversed_range(pattern: &str) -> Option<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    let mut class_start = 0;
    while i < chars.len() {
        let c = chars[i];
        if !in_class {
            if c == '[' {
                in_class = true;
                class_start = i + 1;
                if chars.get(class_start) == Some(&'!') {
                    class_start += 1;
                }
                i = class_start;
                continue;
            }
        } else if c == ']' && i > class_start {
            in_class = false;
        } else if i + 2 < chars.len() && chars[i + 1] == '-' && chars[i + 2] != ']' {
            if chars[i + 2] < c {
                return Some(chars[i..=i + 2].iter().collect());
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    None
}

/// Whether a `[` or `]` is left over outside a well-formed class.
fn has_literal_bracket(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            ']' => return true,
            '[' => {
                let mut members = 0;
                let mut closed = false;
                for c in chars.by_ref() {
                    // A `]` first in the class is a member, as in fnmatch.
                    if c == ']' && members > 0 {
                        closed = true;
                        break;
                    }
                    if c != '!' || members > 0 {
                        members += 1;
                    }
                }
                if !closed {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(text: &str) -> Vec<(usize, FindingKind, String)> {
        let file = MapsFile::parse(text);
        let (engine, _) = Engine::from_maps_file(&file);
        lint(&file, &engine)
            .into_iter()
            .map(|f| (f.line.unwrap_or_default(), f.kind, f.message))
            .collect()
    }

    /// issue 21 item 2: a value that makes every result of its rule
    /// invalid is an error naming the line; an `[EXACT]` key that is no
    /// valid reference is a warning (it can never match).
    #[test]
    fn values_that_give_invalid_images_are_errors_on_their_line() {
        let text = "default::harbor.example.com\n\
                    docker.io::http://mirror.example.com\n\
                    quay.io::mirror.example.com/Team\n\
                    gcr.io::mirror.example.com/a//b\n\
                    ghcr.io::mirror.example.com/\n\
                    reg.example:5000::mirror.example.com:99999\n\
                    [EXACT]Nginx:1::x\n\
                    registry.k8s.io::mirror.example.com/k8s\n";
        let file = MapsFile::parse(text);
        let (engine, _) = Engine::from_maps_file(&file);
        let found = lint(&file, &engine);
        let errors: Vec<usize> = found
            .iter()
            .filter(|f| f.kind == FindingKind::InvalidResult && f.severity == Severity::Error)
            .filter_map(|f| f.line)
            .collect();
        assert_eq!(errors, [2, 3, 4, 5, 6], "{found:#?}");
        assert!(found.iter().any(|f| f.line == Some(7)
            && f.kind == FindingKind::UnmatchablePattern
            && f.severity == Severity::Warning));
        assert!(
            !found
                .iter()
                .any(|f| f.line == Some(8) && f.severity == Severity::Error),
            "a good rule is no error"
        );
        // The server's load reports the same errors.
        assert_eq!(invalid_results(&file, &engine).len(), 5);
        // A later line that fixes the key wins: no finding for the bad one.
        let file = MapsFile::parse(
            "default::\nquay.io::mirror.example.com/Team\nquay.io::mirror.example.com/team\n",
        );
        let (engine, _) = Engine::from_maps_file(&file);
        assert!(invalid_results(&file, &engine).is_empty());
    }

    #[test]
    fn a_default_with_a_path_doubles_and_says_so() {
        let found = findings("default::harbor.example.com/proj\n");
        assert_eq!(found.len(), 1, "{found:?}");
        let (line, kind, message) = &found[0];
        assert_eq!((*line, *kind), (1, FindingKind::NotIdempotent));
        assert!(
            message.contains("harbor.example.com/proj/proj/imageswap-check/app:1"),
            "{message}"
        );
        assert!(message.contains("`harbor.example.com::`"), "{message}");
    }

    #[test]
    fn safe_maps_have_no_finding() {
        for text in [
            "default::harbor.example.com\n",
            "default::harbor.example.com/proj\nharbor.example.com::\n",
            "docker.io::mirror.example/hub-\nmirror.example::\ndefault::\n",
            "default::m.example/p\nnoswap_wildcards::m.example\n",
            "[EXACT]nginx:1::m.example/nginx:1\nm.example::\ndefault::\n",
            "[REPLACE]ghcr.io/[ab]*::m.example/x\nm.example::\ndefault::\n",
        ] {
            assert!(findings(text).is_empty(), "{text}: {:?}", findings(text));
        }
    }

    #[test]
    fn every_kind_of_rule_is_probed() {
        let found = findings(
            "default::\n\
             quay.io::m.example/quay\n\
             docker.io/library::m.example/lib\n\
             [EXACT]nginx:1::m.example/quay/nginx:1\n\
             [REPLACE]ghcr.io/*::m.example/quay\n\
             m.example::m.example/quay\n",
        );
        let lines: Vec<usize> = found.iter().map(|f| f.0).collect();
        // quay.io → m.example/quay/…, which `m.example::m.example/quay` swaps again, and so on.
        assert_eq!(lines, [2, 3, 4, 5, 6], "{found:?}");
    }

    #[test]
    fn patterns_that_cannot_match_are_named() {
        let found = findings(
            "default::\n\
             [REPLACE]ghcr.io/{a,b}/*::m.example\n\
             [REPLACE]ghcr.io/[abc::m.example\n\
             [REPLACE]ghcr.io/a]*::m.example\n\
             [REPLACE]ghcr.io/[!a]*::\n\
             [REPLACE]ghcr.io/[c.-*]*::\n",
        );
        let unmatchable: Vec<usize> = found
            .iter()
            .filter(|f| f.1 == FindingKind::UnmatchablePattern)
            .map(|f| f.0)
            .collect();
        assert_eq!(unmatchable, [2, 3, 4, 6], "{found:?}");
        assert!(
            found
                .iter()
                .any(|f| f.0 == 6 && f.2.contains("`.-*` is reversed")),
            "{found:?}"
        );
    }
}
