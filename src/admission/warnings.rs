//! What mirror verification decided for each change, and the warnings the
//! answer carries about it (verify.md "The answer"). The API server shows
//! `response.warnings` to `kubectl` users, so they are bounded: at most
//! [`WARNING_MAX_CHARS`] characters each and [`WARNINGS_MAX`] per response,
//! then one `… and N more`.
//!
//! The verdicts come in as plain values (the request path turns the
//! checker's outcomes and the on-error policy into them), so the pure core
//! does not depend on the registry side.

use super::json::write_str;
use super::{Change, InvalidResult};

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
    /// The target lacks a platform the pod may run on (named, e.g.
    /// `linux/arm64`): keep the original image.
    MissingPlatform(String),
    /// The check could not answer (`reason` says why); `keep` is the
    /// on-error policy (`keep`: keep the original, else patch anyway).
    Unverified { reason: String, keep: bool },
}

impl Checked {
    /// Whether the original image stays.
    pub fn keeps(&self) -> bool {
        match self {
            Checked::Present => false,
            Checked::Missing | Checked::MissingPlatform(_) => true,
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
        self.add(&[Piece::Text(problem), Piece::Text(MALFORMED_SUFFIX)]);
    }

    /// The warning about `change`, if its verification gives one.
    pub fn checked(&mut self, change: &Change<'_>, checked: &Checked) {
        match checked {
            Checked::Present => {}
            Checked::Missing => self.add(&[
                Piece::Text("kept "),
                Piece::Name(change.from),
                Piece::Text(": "),
                Piece::Name(&change.to),
                Piece::Text(" is not in the mirror"),
            ]),
            Checked::MissingPlatform(platform) => self.add(&[
                Piece::Text("kept "),
                Piece::Name(change.from),
                Piece::Text(": "),
                Piece::Name(&change.to),
                Piece::Text(" has no "),
                Piece::Text(platform),
            ]),
            Checked::Unverified { reason, keep: true } => self.add(&[
                Piece::Text("kept "),
                Piece::Name(change.from),
                Piece::Text(": "),
                Piece::Text(reason),
            ]),
            Checked::Unverified { reason, keep: false } => self.add(&[
                Piece::Name(&change.to),
                Piece::Text(" not verified: "),
                Piece::Text(reason),
            ]),
        }
    }

    /// The warning about an image kept because its rule gives an invalid
    /// image (maps.md §3 step 7).
    pub fn kept(&mut self, image: &str, reason: &InvalidResult) {
        self.add(&[
            Piece::Text("kept "),
            Piece::Name(image),
            Piece::Text(": rule "),
            Piece::Text(&reason.key),
            Piece::Text(" gives an invalid image \""),
            Piece::Name(&reason.result),
            Piece::Text("\""),
        ]);
    }

    /// The warning about an original-images annotation that was no JSON
    /// object of strings (its start quoted), replaced by the new record.
    pub fn unparsable_record(&mut self, start: &str) {
        self.add(&[
            Piece::Text("replaced "),
            Piece::Text(super::original_images::ANNOTATION),
            Piece::Text(": not a JSON object of strings: \""),
            Piece::Name(start),
            Piece::Text("\""),
        ]);
    }

    fn add(&mut self, pieces: &[Piece<'_>]) {
        self.total += 1;
        if self.kept.len() >= WARNINGS_MAX {
            return;
        }
        let mut text = String::with_capacity(WARNING_MAX_CHARS * 4);
        text.push_str(PREFIX);
        compose(&mut text, pieces, WARNING_MAX_CHARS - PREFIX.chars().count());
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

/// A part of a warning: an image name, whose middle may be elided to make
/// room, or words, which are kept whole (the reason and what it is about
/// survive a long name: `imageswap: kept ghcr.io/org/…/app:v1: … answered 503`).
#[derive(Clone, Copy)]
enum Piece<'a> {
    Name(&'a str),
    Text(&'a str),
}

/// The fewest characters an elided name keeps (its head, `…`, its tail):
/// enough to tell the registry and the tag.
const NAME_MIN_CHARS: usize = 24;

/// Writes the pieces within `budget` characters when it can: the longest
/// names lose their middles first, down to [`NAME_MIN_CHARS`]; what still
/// does not fit is cut at the end by [`truncate`].
fn compose(text: &mut String, pieces: &[Piece<'_>], budget: usize) {
    let chars = |p: &Piece<'_>| match p {
        Piece::Name(s) | Piece::Text(s) => s.chars().count(),
    };
    let mut lengths: Vec<usize> = pieces.iter().map(chars).collect();
    let mut excess = lengths.iter().sum::<usize>().saturating_sub(budget);
    while excess > 0 {
        // The longest name that can still give characters.
        let longest = (0..pieces.len())
            .filter(|&i| matches!(pieces[i], Piece::Name(_)) && lengths[i] > NAME_MIN_CHARS)
            .max_by_key(|&i| lengths[i]);
        let Some(i) = longest else { break };
        // Down to the next longest name at most, so long names share the
        // cut (one character at a time past that: a few hundred at most).
        let next = (0..pieces.len())
            .filter(|&j| j != i && matches!(pieces[j], Piece::Name(_)))
            .map(|j| lengths[j])
            .max()
            .unwrap_or(0)
            .max(NAME_MIN_CHARS);
        let give = excess.min(lengths[i].saturating_sub(next).max(1));
        lengths[i] -= give;
        excess -= give;
    }
    for (piece, &len) in pieces.iter().zip(&lengths) {
        match piece {
            Piece::Text(s) => text.push_str(s),
            Piece::Name(s) => elide_middle(text, s, len),
        }
    }
}

/// `name` in `len` characters: its head, `…`, its tail (the tag and the
/// last path component are at the end, the registry at the start).
fn elide_middle(text: &mut String, name: &str, len: usize) {
    let total = name.chars().count();
    if total <= len {
        text.push_str(name);
        return;
    }
    let keep = len.saturating_sub(1);
    // The registry whole when the tail keeps a dozen characters, else two
    // fifths of what is kept.
    let registry = name.find('/').map_or(0, |slash| name[..=slash].chars().count());
    let head = if registry + 12 <= keep {
        registry
    } else {
        keep * 2 / 5
    };
    let tail = keep - head;
    text.extend(name.chars().take(head));
    text.push('…');
    text.extend(name.chars().skip(total - tail));
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
            name: None,
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

    /// issue 21 item 7: a long image name used to push the reason out of
    /// the 120 characters (`kept ghcr.io/…/repository-path-number-0:v1.2.3-build.456…`);
    /// now the names lose their middles and the reason and the target's
    /// registry and tag survive.
    #[test]
    fn long_names_are_elided_in_the_middle_and_the_reason_survives() {
        let from = format!(
            "ghcr.io/org/{}/repository-path-number-0:v1.2.3-build.456",
            "team/".repeat(12)
        );
        let to = format!(
            "harbor.example.com/ghcr/org/{}/repository-path-number-0:v1.2.3-build.456",
            "team/".repeat(12)
        );
        let long = change(Box::leak(from.into_boxed_str()), &to);
        let mut warnings = Warnings::default();
        warnings.checked(&long, &Checked::Missing);
        warnings.checked(
            &long,
            &Checked::Unverified {
                reason: "harbor.example.com answered 503".into(),
                keep: true,
            },
        );
        warnings.checked(
            &long,
            &Checked::Unverified {
                reason: "timeout after 845ms".into(),
                keep: false,
            },
        );
        let texts = written(&warnings);
        for text in &texts {
            assert!(text.chars().count() <= WARNING_MAX_CHARS, "{text}");
            assert!(text.contains('…'), "{text}");
        }
        assert!(texts[0].starts_with("imageswap: kept ghcr.io/"), "{}", texts[0]);
        assert!(
            texts[0].ends_with(":v1.2.3-build.456 is not in the mirror"),
            "{}",
            texts[0]
        );
        assert!(
            texts[0].contains(": harbor.example.com/"),
            "the target's registry: {}",
            texts[0]
        );
        assert!(
            texts[1].ends_with("-build.456: harbor.example.com answered 503"),
            "{}",
            texts[1]
        );
        assert!(
            texts[2].ends_with("-build.456 not verified: timeout after 845ms"),
            "{}",
            texts[2]
        );
        // Short ones are written whole.
        let mut short = Warnings::default();
        short.checked(&change("a", "m/a"), &Checked::Missing);
        assert_eq!(written(&short), ["imageswap: kept a: m/a is not in the mirror"]);
    }

    #[test]
    fn what_cannot_fit_is_cut_to_120_characters() {
        let mut warnings = Warnings::default();
        // Words are not elided: a key too long for the line is cut at the end.
        warnings.kept(
            "a",
            &InvalidResult {
                key: "é".repeat(200).into(),
                result: "x".into(),
            },
        );
        let exact = "x".repeat(WARNING_MAX_CHARS - PREFIX.len());
        warnings.malformed(&exact[..exact.len() - MALFORMED_SUFFIX.len()]);
        let texts = written(&warnings);
        assert_eq!(texts[0].chars().count(), WARNING_MAX_CHARS);
        assert!(texts[0].ends_with('…') && texts[0].starts_with("imageswap: kept a: rule éé"));
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
