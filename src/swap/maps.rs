//! The maps file parser (maps.md §1): lines to rules, plus a finding for every
//! line a person should look at. Parsing never fails; bad lines are skipped
//! and reported, so one typo never takes the other rules down with it.

use std::fmt;

/// The key whose value applies when no other rule does.
pub const DEFAULT_KEY: &str = "default";
/// The key whose comma-separated substrings opt images out.
pub const NOSWAP_WILDCARDS_KEY: &str = "noswap_wildcards";
const EXACT_PREFIX: &str = "[EXACT]";
const REPLACE_PREFIX: &str = "[REPLACE]";

/// What a rule's key says about how it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `[EXACT]image`: the whole image.
    Exact,
    /// `[REPLACE]glob`: a shell glob over the whole image.
    Replace,
    /// `default`.
    Default,
    /// `noswap_wildcards`.
    NoswapWildcards,
    /// A registry (`quay.io`) or, when it contains `/`, a path (`docker.io/library`).
    Registry,
}

/// One rule as written, after comments and whitespace are removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub kind: KeyKind,
    /// The key without its `[EXACT]`/`[REPLACE]` keyword.
    pub key: String,
    pub value: String,
}

/// How serious a finding is: errors make `maps check` fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// What a finding is about, so callers can summarise (the server logs the
/// deprecated separator once per load, not once per line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FindingKind {
    InvalidLine,
    DeprecatedSeparator,
    DuplicateKey,
    NoDefault,
    EmptyWildcardPattern,
    InnerWhitespace,
    DeadRule,
    /// A rule whose result the maps swap again (`maps check` only).
    NotIdempotent,
    /// A `[REPLACE]` pattern that cannot match as written, or an
    /// `[EXACT]` key that is no valid reference (`maps check` only).
    UnmatchablePattern,
    /// A rule whose value gives an invalid image (maps.md §3 step 7: the
    /// images it matches are never swapped; the server reports it too).
    InvalidResult,
}

impl FindingKind {
    /// The word `maps check --output json` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::InvalidLine => "invalid-line",
            FindingKind::DeprecatedSeparator => "deprecated-separator",
            FindingKind::DuplicateKey => "duplicate-key",
            FindingKind::NoDefault => "no-default",
            FindingKind::EmptyWildcardPattern => "empty-wildcard-pattern",
            FindingKind::InnerWhitespace => "inner-whitespace",
            FindingKind::DeadRule => "dead-rule",
            FindingKind::NotIdempotent => "not-idempotent",
            FindingKind::UnmatchablePattern => "unmatchable-pattern",
            FindingKind::InvalidResult => "invalid-result",
        }
    }
}

/// Something about the file worth telling a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The line it is about; `None` for the file as a whole.
    pub line: Option<usize>,
    pub severity: Severity,
    pub kind: FindingKind,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match self.line {
            Some(line) => write!(f, "line {line}: {level}: {}", self.message),
            None => write!(f, "{level}: {}", self.message),
        }
    }
}

/// A parsed maps file: its rules in file order (duplicates included; the
/// engine applies "later wins") and its findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapsFile {
    pub rules: Vec<RuleLine>,
    pub findings: Vec<Finding>,
}

impl MapsFile {
    /// Parses the text of a maps file.
    pub fn parse(text: &str) -> MapsFile {
        let mut file = MapsFile::default();
        for (index, raw) in text.lines().enumerate() {
            file.parse_line(index + 1, raw);
        }
        file.check_duplicates();
        if !file.rules.iter().any(|r| r.kind == KeyKind::Default) {
            file.findings.push(Finding {
                line: None,
                severity: Severity::Error,
                kind: FindingKind::NoDefault,
                message: "no `default` key: only [EXACT] and [REPLACE] rules apply; registry, \
                          path and noswap_wildcards rules are ignored and every other image is \
                          left unchanged (add `default::` to swap by registry without a default)"
                    .to_owned(),
            });
        }
        file.findings.sort_by_key(|f| (f.line.is_none(), f.line));
        file
    }

    /// Whether `maps check` should fail: an invalid line or no `default`.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn finding(&mut self, line: usize, severity: Severity, kind: FindingKind, message: String) {
        self.findings.push(Finding {
            line: Some(line),
            severity,
            kind,
            message,
        });
    }

    fn parse_line(&mut self, line: usize, raw: &str) {
        if raw.starts_with('#') {
            return;
        }
        // Everything from the first `#` is a comment (fix: the original cut at
        // the last one); `#` never occurs in an image reference.
        let uncommented = raw.split_once('#').map_or(raw, |(before, _)| before);
        // All whitespace goes, inside values too (fix: tabs made rules dead).
        let compact: String = uncommented.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            return;
        }
        let (key, value) = match split_rule(&compact) {
            Ok(Separator::Double(key, value)) => (key, value),
            Ok(Separator::Single(key, value)) => {
                self.finding(
                    line,
                    Severity::Warning,
                    FindingKind::DeprecatedSeparator,
                    format!("the single `:` separator is deprecated, write `{key}::{value}`"),
                );
                (key, value)
            }
            Err(reason) => {
                self.finding(
                    line,
                    Severity::Error,
                    FindingKind::InvalidLine,
                    format!("invalid rule `{}` skipped: {reason}", uncommented.trim()),
                );
                return;
            }
        };
        self.check_inner_whitespace(line, uncommented);
        let (kind, key) = classify(key);
        if key.is_empty() {
            self.finding(
                line,
                Severity::Warning,
                FindingKind::DeadRule,
                "the key is empty, so this rule never matches".to_owned(),
            );
        }
        if kind == KeyKind::NoswapWildcards && value.split(',').any(str::is_empty) {
            self.finding(
                line,
                Severity::Warning,
                FindingKind::EmptyWildcardPattern,
                "empty pattern in noswap_wildcards (a stray comma) is ignored".to_owned(),
            );
        }
        if kind == KeyKind::Registry && key.ends_with('/') {
            self.finding(
                line,
                Severity::Warning,
                FindingKind::DeadRule,
                format!(
                    "path key `{key}` ends with `/`, so it never matches; write `{}`",
                    key.trim_end_matches('/')
                ),
            );
        }
        self.rules.push(RuleLine {
            line,
            kind,
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }

    /// Whitespace between the characters of a key or value was removed; say
    /// so, because `a.io, b.io` meaning `a.io,b.io` may not be what was meant.
    fn check_inner_whitespace(&mut self, line: usize, uncommented: &str) {
        let separator = if uncommented.contains("::") { "::" } else { ":" };
        let inner = uncommented
            .split(separator)
            .map(str::trim)
            .find(|part| part.contains(char::is_whitespace));
        if let Some(part) = inner {
            let compact: String = part.chars().filter(|c| !c.is_whitespace()).collect();
            self.finding(
                line,
                Severity::Warning,
                FindingKind::InnerWhitespace,
                format!("spaces or tabs inside `{part}` are removed; it reads as `{compact}`"),
            );
        }
    }

    fn check_duplicates(&mut self) {
        let mut seen: std::collections::HashMap<(KeyKind, &str), usize> = Default::default();
        let mut duplicates = Vec::new();
        for rule in &self.rules {
            if let Some(previous) = seen.insert((rule.kind, rule.key.as_str()), rule.line) {
                duplicates.push((rule.line, previous, rule.kind, rule.key.clone()));
            }
        }
        for (line, previous, kind, key) in duplicates {
            let shown = match kind {
                KeyKind::Exact => format!("{EXACT_PREFIX}{key}"),
                KeyKind::Replace => format!("{REPLACE_PREFIX}{key}"),
                _ => key,
            };
            let order = if kind == KeyKind::Replace {
                format!(" (the pattern keeps the matching position of line {previous})")
            } else {
                String::new()
            };
            self.finding(
                line,
                Severity::Warning,
                FindingKind::DuplicateKey,
                format!("key `{shown}` repeats line {previous}; this line's value wins{order}"),
            );
        }
    }
}

enum Separator<'a> {
    Double(&'a str, &'a str),
    Single(&'a str, &'a str),
}

/// Steps 5 to 7 of maps.md §1: `::` first, the deprecated `:` second.
fn split_rule(line: &str) -> Result<Separator<'_>, &'static str> {
    let separators = double_colons(line);
    if let Some(&first) = separators.first() {
        return match separators.len() {
            1 => Ok(Separator::Double(&line[..first], &line[first + 2..])),
            _ => Err("more than one `::` separator"),
        };
    }
    let mut parts = line.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(key), Some(value), None) => Ok(Separator::Single(key, value)),
        (_, None, _) => Err("no `::` separator between key and value"),
        _ => Err("more than one `:`; a port in the key or value requires the `::` separator"),
    }
}

/// Where `::` separators start: left to right, not overlapping, and not
/// inside an IPv6 host in brackets (`[fd00::1]:5000`: a `[`, hex digits,
/// `:` and `.`, a `]`). Any other `[` (`[EXACT]`, a glob class, an
/// unclosed `[abc`) is an ordinary character.
fn double_colons(line: &str) -> Vec<usize> {
    let b = line.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'['
            && let Some(len) = b[i + 1..].iter().position(|&c| c == b']')
            && b[i + 1..i + 1 + len]
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            i += len + 2;
            continue;
        }
        if b[i] == b':' && b.get(i + 1) == Some(&b':') {
            found.push(i);
            i += 2;
            continue;
        }
        i += 1;
    }
    found
}

fn classify(key: &str) -> (KeyKind, &str) {
    if let Some(k) = key.strip_prefix(EXACT_PREFIX) {
        (KeyKind::Exact, k)
    } else if let Some(k) = key.strip_prefix(REPLACE_PREFIX) {
        (KeyKind::Replace, k)
    } else if key == DEFAULT_KEY {
        (KeyKind::Default, key)
    } else if key == NOSWAP_WILDCARDS_KEY {
        (KeyKind::NoswapWildcards, key)
    } else {
        (KeyKind::Registry, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(line: usize, kind: KeyKind, key: &str, value: &str) -> RuleLine {
        RuleLine {
            line,
            kind,
            key: key.into(),
            value: value.into(),
        }
    }

    fn kinds(file: &MapsFile) -> Vec<(Option<usize>, FindingKind)> {
        file.findings.iter().map(|f| (f.line, f.kind)).collect()
    }

    #[test]
    fn comments_whitespace_and_separators() {
        let file = MapsFile::parse(
            "# a comment\n\
             \n\
             default::default.example.com   # trailing # comment\n\
             docker.io ::\tmy.example.com/mirror-\n\
             noswap_wildcards::a.io, b.io\n\
             quay.io:quay.example.com\n\
             [EXACT]ghcr.io/a:v1::x.io/b:v2\n\
             [REPLACE]ghcr.io/public*::my.io\n",
        );
        assert_eq!(
            file.rules,
            vec![
                rule(3, KeyKind::Default, "default", "default.example.com"),
                rule(4, KeyKind::Registry, "docker.io", "my.example.com/mirror-"),
                rule(5, KeyKind::NoswapWildcards, "noswap_wildcards", "a.io,b.io"),
                rule(6, KeyKind::Registry, "quay.io", "quay.example.com"),
                rule(7, KeyKind::Exact, "ghcr.io/a:v1", "x.io/b:v2"),
                rule(8, KeyKind::Replace, "ghcr.io/public*", "my.io"),
            ]
        );
        assert_eq!(
            kinds(&file),
            vec![
                (Some(5), FindingKind::InnerWhitespace),
                (Some(6), FindingKind::DeprecatedSeparator),
            ]
        );
        assert!(!file.has_errors());
    }

    #[test]
    fn first_hash_starts_the_comment() {
        // fix: the original left `a::b#x` here.
        let file = MapsFile::parse("default::\na::b # x # y\n");
        assert_eq!(file.rules[1], rule(2, KeyKind::Registry, "a", "b"));
    }

    #[test]
    fn tabs_are_removed_like_spaces() {
        // fix: the original removed only spaces, so this rule was dead.
        let file = MapsFile::parse("default::\n\tquay.io::\tquay.example.com\t\n");
        assert_eq!(
            file.rules[1],
            rule(2, KeyKind::Registry, "quay.io", "quay.example.com")
        );
    }

    #[test]
    fn invalid_lines_are_skipped_with_reasons() {
        let file = MapsFile::parse(
            "default::\n\
             no-separator-here\n\
             a::b::c\n\
             registry.io:5000:mirror.io\n\
             good.io::mirror.io\n",
        );
        assert_eq!(file.rules.len(), 2);
        let messages: Vec<String> = file.findings.iter().map(ToString::to_string).collect();
        assert!(
            messages[0].starts_with("line 2: error: invalid rule `no-separator-here` skipped: no `::`"),
            "{messages:?}"
        );
        assert!(messages[1].contains("line 3") && messages[1].contains("more than one `::`"));
        assert!(
            messages[2].contains("line 4")
                && messages[2].contains("a port in the key or value requires the `::` separator")
        );
        assert!(file.has_errors());
    }

    /// maps.md §1 step 5: a `::` inside brackets (an IPv6 host) is no
    /// separator, on either side.
    #[test]
    fn ipv6_hosts_in_brackets_are_keys_and_values() {
        let file = MapsFile::parse(
            "default::\n\
             src.example::[::1]:5000/mirror\n\
             [fd00::1]:5000::mirror.example.com\n\
             [EXACT][::1]:5000/a:1::[fd00::2]/b:2\n",
        );
        assert_eq!(
            file.rules[1..],
            [
                rule(2, KeyKind::Registry, "src.example", "[::1]:5000/mirror"),
                rule(3, KeyKind::Registry, "[fd00::1]:5000", "mirror.example.com"),
                rule(4, KeyKind::Exact, "[::1]:5000/a:1", "[fd00::2]/b:2"),
            ]
        );
        assert!(file.findings.is_empty(), "{:?}", file.findings);
    }

    #[test]
    fn missing_default_is_an_error() {
        let file = MapsFile::parse("docker.io::mirror.io\n");
        assert_eq!(kinds(&file), vec![(None, FindingKind::NoDefault)]);
        assert!(file.has_errors());
        assert!(!MapsFile::parse("default::\n").has_errors());
    }

    #[test]
    fn duplicates_name_the_winner() {
        let file = MapsFile::parse("default::\nquay.io::a\n[REPLACE]x*::a\nquay.io::b\n[REPLACE]x*::b\n");
        let dupes: Vec<&Finding> = file
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::DuplicateKey)
            .collect();
        assert_eq!(dupes.len(), 2);
        assert!(dupes[0].to_string().contains("line 4") && dupes[0].message.contains("repeats line 2"));
        assert!(dupes[1].message.contains("keeps the matching position of line 3"));
    }

    #[test]
    fn empty_wildcard_patterns_are_reported() {
        let file = MapsFile::parse("default::\nnoswap_wildcards::a.io,,b.io,\n");
        assert_eq!(kinds(&file), vec![(Some(2), FindingKind::EmptyWildcardPattern)]);
    }

    #[test]
    fn whitespace_around_the_separator_is_not_reported() {
        let file = MapsFile::parse("default :: \nquay.io :: mirror.io\n");
        assert!(file.findings.is_empty(), "{:?}", file.findings);
    }

    #[test]
    fn crlf_line_endings() {
        let file = MapsFile::parse("default::d.io\r\nquay.io::q.io\r\n");
        assert_eq!(file.rules[1], rule(2, KeyKind::Registry, "quay.io", "q.io"));
        assert!(file.findings.is_empty());
    }
}
