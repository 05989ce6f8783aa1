//! The `[REPLACE]` rules: shell globs over the whole image, compiled into one
//! `globset::GlobSet` so one pass finds every match, of which the lowest index
//! (the earliest line) decides.
//!
//! maps.md §3.2 defines the glob as the shell's (`fnmatch`): `*` and `?` cross
//! `/`, classes are `[abc]`, `[a-z]`, `[!a]`, and nothing else is special. The
//! patterns are rewritten so that globset, which knows more syntax, reads them
//! exactly that way (see `to_globset_syntax`).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Up to this many rules, a linear check of their literal prefixes runs
/// before the `GlobSet`: most images match no replace rule, and comparing a
/// few prefixes costs a fraction of a `GlobSet` query (measured with
/// `cargo bench --bench swap`). Beyond it, the `GlobSet` alone keeps the cost
/// flat.
const PREFILTER_MAX_RULES: usize = 8;

/// The compiled replace rules, in matching order.
#[derive(Debug)]
pub struct ReplaceRules {
    set: GlobSet,
    /// `(pattern, value)`, index-aligned with the globs in `set`.
    rules: Vec<(String, String)>,
    /// Each pattern's literal start (before its first `*`, `?` or `[`), when
    /// there are few enough rules to check them one by one.
    prefixes: Option<Vec<String>>,
}

/// A pattern globset cannot compile, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern {
    pub pattern: String,
    pub reason: String,
}

impl ReplaceRules {
    /// Compiles `(pattern, value)` pairs in matching order. Patterns that do
    /// not compile are left out and returned.
    pub fn compile(rules: Vec<(String, String)>) -> (ReplaceRules, Vec<BadPattern>) {
        let mut builder = GlobSetBuilder::new();
        let mut kept = Vec::with_capacity(rules.len());
        let mut bad = Vec::new();
        for (pattern, value) in rules {
            match compile_glob(&pattern) {
                Ok(glob) => {
                    builder.add(glob);
                    kept.push((pattern, value));
                }
                Err(reason) => bad.push(BadPattern { pattern, reason }),
            }
        }
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        let prefixes = (kept.len() <= PREFILTER_MAX_RULES).then(|| {
            kept.iter()
                .map(|(pattern, _)| {
                    pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())].to_owned()
                })
                .collect()
        });
        (
            ReplaceRules {
                set,
                rules: kept,
                prefixes,
            },
            bad,
        )
    }

    /// The first rule in file order whose pattern matches the whole `image`.
    pub fn first_match(&self, image: &str) -> Option<(&str, &str)> {
        if self.rules.is_empty() {
            return None;
        }
        if let Some(prefixes) = &self.prefixes
            && !prefixes.iter().any(|p| image.starts_with(p.as_str()))
        {
            return None;
        }
        let index = if self.rules.len() == 1 {
            self.set.is_match(image).then_some(0)?
        } else {
            self.set.matches(image).into_iter().min()?
        };
        self.rules.get(index).map(|(p, v)| (p.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn compile_glob(pattern: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(&to_globset_syntax(pattern))
        .literal_separator(false)
        .backslash_escape(false)
        .case_insensitive(false)
        .allow_unclosed_class(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// Rewrites a shell glob into globset syntax with the same meaning: runs of
/// `*` become one `*` (globset gives `**` a recursive meaning), and `{`, `}`
/// outside classes become one-character classes (globset reads them as
/// alternation, the shell as themselves).
pub fn to_globset_syntax(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                out.push('*');
                while i + 1 < chars.len() && chars[i + 1] == '*' {
                    i += 1;
                }
            }
            '{' => out.push_str("[{]"),
            '}' => out.push_str("[}]"),
            '[' => match class_end(&chars, i) {
                Some(end) => {
                    push_class(&mut out, &chars[i + 1..end]);
                    i = end;
                }
                None => out.push_str("[[]"),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Writes a class (its members, without the brackets) as globset reads it
/// with the shell's meaning. A reversed range (`[.-*]`, end before start)
/// matches nothing in the shell, while globset refuses the whole pattern:
/// it is left out, and the class keeps its other members. A class left
/// with no member matches nothing (`[!…]` then matches any character).
fn push_class(out: &mut String, members: &[char]) {
    let (negated, members) = match members.first() {
        Some('!') => (true, &members[1..]),
        _ => (false, members),
    };
    let mut kept = String::new();
    let mut i = 0;
    while i < members.len() {
        // `x-y` is a range unless the `-` is the last member.
        if i + 2 < members.len() && members[i + 1] == '-' {
            let (start, end) = (members[i], members[i + 2]);
            if start <= end {
                kept.extend([start, '-', end]);
            }
            i += 3;
        } else {
            kept.push(members[i]);
            i += 1;
        }
    }
    match (kept.is_empty(), negated) {
        (false, false) => {
            out.push('[');
            out.push_str(&kept);
            out.push(']');
        }
        (false, true) => {
            out.push_str("[!");
            out.push_str(&kept);
            out.push(']');
        }
        (true, true) => out.push('?'),
        // NUL is never part of a valid reference: a class that matches nothing.
        (true, false) => out.push_str("[\0]"),
    }
}

/// The index of the `]` that closes the class opened at `open`, as the shell
/// reads it (a `]` right after `[` or `[!` is a member, not the end).
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if chars.get(i) == Some(&'!') {
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    while i < chars.len() {
        if chars[i] == ']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> ReplaceRules {
        let (rules, bad) = ReplaceRules::compile(
            pairs
                .iter()
                .map(|(p, v)| (p.to_string(), v.to_string()))
                .collect(),
        );
        assert!(bad.is_empty(), "{bad:?}");
        rules
    }

    #[test]
    fn glob_syntax() {
        let r = rules(&[("ghcr.io/public*", "a")]);
        assert!(r.first_match("ghcr.io/public-org/tool:2").is_some());
        assert!(r.first_match("ghcr.io/private/tool:2").is_none());
        // `*` crosses `/`, `?` is one character, matching is case-sensitive.
        let r = rules(&[("*/app?:v[0-9]", "a")]);
        assert!(r.first_match("gcr.io/x/y/app1:v3").is_some());
        assert!(r.first_match("gcr.io/x/y/app12:v3").is_none());
        assert!(r.first_match("gcr.io/x/y/app1:va").is_none());
        let r = rules(&[("quay.io/[!x]*", "a")]);
        assert!(r.first_match("quay.io/y/z").is_some());
        assert!(r.first_match("quay.io/x/z").is_none());
        let r = rules(&[("Quay.io/*", "a")]);
        assert!(r.first_match("quay.io/y/z").is_none());
    }

    #[test]
    fn the_earliest_matching_rule_wins() {
        let r = rules(&[
            ("quay.io/team/*", "first"),
            ("quay.io/*", "second"),
            ("*", "third"),
        ]);
        assert_eq!(
            r.first_match("quay.io/team/app"),
            Some(("quay.io/team/*", "first"))
        );
        assert_eq!(r.first_match("quay.io/other/app"), Some(("quay.io/*", "second")));
        assert_eq!(r.first_match("nginx"), Some(("*", "third")));
    }

    #[test]
    fn only_shell_syntax_is_special() {
        assert_eq!(to_globset_syntax("a**b"), "a*b");
        assert_eq!(to_globset_syntax("{a,b}"), "[{]a,b[}]");
        assert_eq!(to_globset_syntax("[{]x"), "[{]x");
        assert_eq!(to_globset_syntax("[]a]"), "[]a]");
        assert_eq!(to_globset_syntax("a[b"), "a[[]b");
        // A reversed range matches nothing, the rest of its class still does.
        assert_eq!(to_globset_syntax("*[c.-*]"), "*[c]");
        let r = rules(&[("*[c.-*]", "a")]);
        assert!(r.first_match("a/c").is_some());
        assert!(r.first_match("a/b").is_none());
        let r = rules(&[("a[z-a]", "x"), ("b[!z-a]", "y")]);
        assert!(r.first_match("az").is_none());
        assert_eq!(r.first_match("bq"), Some(("b[!z-a]", "y")));
        // `**/` is not recursive: it needs at least the `/`.
        let r = rules(&[("gcr.io/**/app", "a")]);
        assert!(r.first_match("gcr.io/app").is_none());
        assert!(r.first_match("gcr.io/x/app").is_some());
        // Braces are literal, so they never match a valid image.
        let r = rules(&[("{gcr,quay}.io/*", "a")]);
        assert!(r.first_match("gcr.io/app").is_none());
    }
}
