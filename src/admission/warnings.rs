//! What mirror verification decided for each change, and the warnings the
//! answer carries about it (verify.md "The answer"). The API server shows
//! `response.warnings` to `kubectl` users, so they are bounded: at most
//! [`WARNING_MAX_CHARS`] characters each and [`WARNINGS_MAX`] per response,
//! then one `… and N more`.
//!
//! The verdicts come in as plain values (the request path turns the
//! checker's outcomes and the on-error policy into them), so the pure core
//! does not depend on the registry side.

use std::fmt::Write as _;

use super::Change;
use super::json::write_str;

/// Longest warning, in characters; longer ones end in `…`.
pub const WARNING_MAX_CHARS: usize = 120;
/// Warnings per response; the rest are summed up in one more line.
pub const WARNINGS_MAX: usize = 10;

/// The same prefix and suffix as the malformed-object warning of
/// `json::write_response`, so a merged list reads alike.
const PREFIX: &str = "imageswap: ";
const MALFORMED_SUFFIX: &str = "; no image was swapped";

/// What the verification decided for one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// The target is in the mirror: patch as without verification.
    Present,
    /// The target is not in the mirror: keep the original image.
    Missing,
    /// The check could not answer (`reason` says why); `keep` is the
    /// on-error policy (`keep`: keep the original, else patch anyway).
    Unverified { reason: String, keep: bool },
}

impl Checked {
    /// Whether the original image stays.
    pub fn keeps(&self) -> bool {
        match self {
            Checked::Present => false,
            Checked::Missing => true,
            Checked::Unverified { keep, .. } => *keep,
        }
    }
}

/// The warnings of one response, bounded as they are added.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    kept: Vec<String>,
    /// Every warning added, also those beyond [`WARNINGS_MAX`].
    total: usize,
}

impl Warnings {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The warning of a malformed object (the same text the answer without
    /// verification carries).
    pub fn malformed(&mut self, problem: &str) {
        self.add(|text| {
            text.push_str(problem);
            text.push_str(MALFORMED_SUFFIX);
        });
    }

    /// The warning about `change`, if its verification gives one.
    pub fn checked(&mut self, change: &Change<'_>, checked: &Checked) {
        match checked {
            Checked::Present => {}
            Checked::Missing => self.add(|text| {
                let _ = write!(text, "kept {}: {} is not in the mirror", change.from, change.to);
            }),
            Checked::Unverified { reason, keep: true } => self.add(|text| {
                let _ = write!(text, "kept {}: {reason}", change.from);
            }),
            Checked::Unverified { reason, keep: false } => self.add(|text| {
                let _ = write!(text, "{} not verified: {reason}", change.to);
            }),
        }
    }

    /// The warning about an image kept although a rule matched it
    /// (`reason` in the decision's words, e.g. maps.md §3 step 7).
    pub fn kept(&mut self, image: &str, reason: &str) {
        self.add(|text| {
            let _ = write!(text, "kept {image}: {reason}");
        });
    }

    fn add(&mut self, write: impl FnOnce(&mut String)) {
        self.total += 1;
        if self.kept.len() >= WARNINGS_MAX {
            return;
        }
        let mut text = String::with_capacity(WARNING_MAX_CHARS);
        text.push_str(PREFIX);
        write(&mut text);
        truncate(&mut text);
        self.kept.push(text);
    }

    /// Writes `,"warnings":[…]` (nothing when there are none).
    pub fn write(&self, out: &mut Vec<u8>) {
        if self.is_empty() {
            return;
        }
        out.extend_from_slice(br#","warnings":["#);
        for (n, text) in self.kept.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_str(out, text);
        }
        let more = self.total - self.kept.len();
        if more > 0 {
            out.push(b',');
            write_str(out, &format!("{PREFIX}… and {more} more"));
        }
        out.push(b']');
    }
}

/// Cuts `text` to [`WARNING_MAX_CHARS`] characters, the last one `…`.
fn truncate(text: &mut String) {
    if let Some((cut, _)) = text.char_indices().nth(WARNING_MAX_CHARS - 1)
        && text[cut..].chars().nth(1).is_some()
    {
        text.truncate(cut);
        text.push('…');
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::admission::ContainerField;
    use crate::swap::Rule;

    fn change(from: &'static str, to: &str) -> Change<'static> {
        Change {
            field: ContainerField::Containers,
            index: 0,
            from,
            to: Arc::from(to),
            rule: Rule::Default,
        }
    }

    fn written(warnings: &Warnings) -> Vec<String> {
        let mut out = b"{\"x\":0".to_vec();
        warnings.write(&mut out);
        out.push(b'}');
        let value: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        match value.get("warnings") {
            None => Vec::new(),
            Some(list) => serde_json::from_value(list.clone()).expect("strings"),
        }
    }

    #[test]
    fn each_outcome_has_its_words() {
        let nginx = change("nginx:1.27", "harbor.example.com/dockerhub/library/nginx:1.27");
        let mut warnings = Warnings::default();
        for checked in [
            Checked::Present,
            Checked::Missing,
            Checked::Unverified {
                reason: "timeout after 1s".into(),
                keep: false,
            },
            Checked::Unverified {
                reason: "harbor.example.com answered 503".into(),
                keep: true,
            },
        ] {
            warnings.checked(&nginx, &checked);
        }
        assert_eq!(
            written(&warnings),
            [
                "imageswap: kept nginx:1.27: harbor.example.com/dockerhub/library/nginx:1.27 is not in the mirror",
                "imageswap: harbor.example.com/dockerhub/library/nginx:1.27 not verified: timeout after 1s",
                "imageswap: kept nginx:1.27: harbor.example.com answered 503",
            ]
        );
        assert!(written(&Warnings::default()).is_empty());
    }

    #[test]
    fn long_warnings_are_cut_to_120_characters() {
        let long = "é".repeat(200);
        let mut warnings = Warnings::default();
        warnings.checked(&change("a", &long), &Checked::Missing);
        let exact = "x".repeat(WARNING_MAX_CHARS - PREFIX.len());
        warnings.malformed(&exact[..exact.len() - MALFORMED_SUFFIX.len()]);
        let texts = written(&warnings);
        assert_eq!(texts[0].chars().count(), WARNING_MAX_CHARS);
        assert!(texts[0].ends_with('…') && texts[0].starts_with("imageswap: kept a: éé"));
        assert_eq!(texts[1].chars().count(), WARNING_MAX_CHARS, "{}", texts[1]);
        assert!(!texts[1].contains('…'), "exactly 120 is not cut");
    }

    #[test]
    fn ten_warnings_then_one_line_for_the_rest() {
        let mut warnings = Warnings::default();
        for _ in 0..WARNINGS_MAX {
            warnings.checked(&change("a", "m/a"), &Checked::Missing);
        }
        assert_eq!(written(&warnings).len(), WARNINGS_MAX);
        for _ in 0..3 {
            warnings.checked(&change("b", "m/b"), &Checked::Missing);
        }
        let texts = written(&warnings);
        assert_eq!(texts.len(), WARNINGS_MAX + 1);
        assert_eq!(texts[WARNINGS_MAX], "imageswap: … and 3 more");
        assert!(texts[..WARNINGS_MAX].iter().all(|t| t.contains("kept a")));
    }
}
