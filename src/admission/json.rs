//! Writing the response document by hand: it has a fixed shape, and writing
//! bytes directly avoids building a value tree per request.
//!
//! The JSON string escaper ([`escape`]) lives here, in the pure core at the
//! bottom of the module graph, and the log lines (`telemetry::json_lines`)
//! use it too: telemetry already depends on `admission`, so sharing it adds
//! no edge to the graph.

use std::convert::Infallible;

use super::ApiVersion;

/// Text put in front of every warning, so users know who sent it.
const WARNING_PREFIX: &str = "imageswap: ";
const WARNING_SUFFIX: &str = "; no image was swapped";

/// Writes the `AdmissionReview` response: always `allowed: true`; the patch
/// (raw JSON, base64-encoded here as a *string*) and a warning when given.
pub(super) fn write_response(
    out: &mut Vec<u8>,
    api_version: ApiVersion,
    uid: &str,
    patch: Option<&[u8]>,
    warning: Option<&str>,
) {
    out.extend_from_slice(br#"{"apiVersion":""#);
    out.extend_from_slice(api_version.as_str().as_bytes());
    out.extend_from_slice(br#"","kind":"AdmissionReview","response":{"uid":"#);
    write_str(out, uid);
    out.extend_from_slice(br#","allowed":true"#);
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        write_base64(out, patch);
        out.push(b'"');
    }
    if let Some(warning) = warning {
        out.extend_from_slice(br#","warnings":["#);
        let mut text = String::with_capacity(WARNING_PREFIX.len() + warning.len() + WARNING_SUFFIX.len());
        text.push_str(WARNING_PREFIX);
        text.push_str(warning);
        text.push_str(WARNING_SUFFIX);
        write_str(out, &text);
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
}

/// Appends `data` as standard base64 with padding (RFC 4648 §4).
///
/// `base64-simd` encodes with AVX2 (SSSE3, NEON…: chosen once, at run
/// time), 24 bytes a step; our table of every 12 bits took two lookups per
/// three bytes. `write_response` for the ~650-byte patch of a
/// four-container review: 4.86 k → 1.33 k instructions, the admission
/// 134.7 k → 130.1 k (`loadtest/profile.sh`, LTO, issue 24).
fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    base64_simd::STANDARD.encode_append(data, out);
}

/// Writes `s` as a JSON string (see [`escape`]).
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // The common case, nothing to escape, is copied whole after one check
    // by `escape` itself (see [`needs_no_escape`]): the patch's four images
    // 1.17 k → 0.62 k instructions an admission (`loadtest/profile.sh`,
    // LTO, issue 24).
    let Ok(()) = escape(s, |piece| {
        out.extend_from_slice(piece.as_bytes());
        Ok::<(), Infallible>(())
    });
    out.push(b'"');
}

/// The escapes of the control characters, by code: JSON's short forms
/// where they are common, `\u00XX` for the rest.
#[rustfmt::skip]
const CONTROL_ESCAPES: [&str; 0x20] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\u0008", "\\t",     "\\n",     "\\u000b", "\\u000c", "\\r",     "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// Hands the inside of `s` as a JSON string to `write`, piece by piece:
/// runs that need no escape whole (UTF-8 included), and the escape of each
/// quote, backslash and control character. One scan for both writers: the
/// response's bytes and the log lines' `fmt::Write`.
///
/// Clean runs are skipped eight bytes at a time ([`needs_escape`]): the
/// byte-at-a-time loop cost 15 k instructions per admission (the answer and
/// five log lines, `loadtest/profile.sh`), about 5 per byte.
#[inline]
pub fn escape<E>(s: &str, mut write: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    let bytes = s.as_bytes();
    // Nearly every string (images, names, uids) has nothing to escape: one
    // check decides ([`needs_no_escape`]), and it is copied whole. The loop
    // below, a run at a time, cost about twice as much on these: with an
    // eight-byte first version of this check, the review line 5.7 k -> 4.9 k
    // instructions, the answer 11.8 k -> 11.3 k (`loadtest/profile.sh`, LTO,
    // issue 24).
    if needs_no_escape(s) {
        return if s.is_empty() { Ok(()) } else { write(s) };
    }
    let mut plain_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(clean_to) = clean_run_end(bytes, i) {
            i = clean_to;
            continue;
        }
        let escaped = match bytes.get(i) {
            Some(b'"') => "\\\"",
            Some(b'\\') => "\\\\",
            Some(&b) if b < 0x20 => CONTROL_ESCAPES[usize::from(b)],
            _ => {
                i += 1;
                continue;
            }
        };
        // `i` is a character boundary: the byte is ASCII.
        if plain_from < i {
            write(&s[plain_from..i])?;
        }
        write(escaped)?;
        i += 1;
        plain_from = i;
    }
    if plain_from < s.len() {
        write(&s[plain_from..])?;
    }
    Ok(())
}

/// Whether `s` holds no byte to escape (then a JSON string is `s` between
/// quotes). Sixteen bytes at a time, the last sixteen overlapping what was
/// checked; a string shorter than that a word at a time as [`escape`] does.
/// The fold over a fixed-size block compiles to SSE2 compares (no `unsafe`
/// here): the record's strings and the patch's images, 2.26 k instructions
/// an admission, 1.64 k (`loadtest/profile.sh`, LTO, issue 24).
#[inline]
pub(super) fn needs_no_escape(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(last) = bytes.last_chunk::<16>() else {
        let mut i = 0;
        while i < bytes.len() {
            match clean_run_end(bytes, i) {
                Some(to) => i = to,
                None => return false,
            }
        }
        return true;
    };
    let (blocks, _) = bytes.as_chunks::<16>();
    !blocks.iter().any(has_special) && !has_special(last)
}

/// Whether any of sixteen bytes is a quote, a backslash or a control
/// character: no early exit, so the compares go sixteen at once.
#[inline]
fn has_special(block: &[u8; 16]) -> bool {
    block
        .iter()
        .fold(false, |found, &b| found | (b == b'"') | (b == b'\\') | (b < 0x20))
}

/// Where a run of bytes from `i` that needs no escape ends, checked a word
/// at a time: the next eight bytes, or, near the end, the string's last
/// eight (overlapping bytes already checked), or a short string's bytes
/// one by one. `None` when the checked bytes hold one to escape: the caller
/// then looks at byte `i` alone. Reading the tail as an overlapping word
/// instead of byte by byte (or through a padded copy) made the escape of the
/// log lines' keys and values, mostly under 16 bytes, about 40% cheaper
/// (`loadtest/profile.sh`).
#[inline]
fn clean_run_end(bytes: &[u8], i: usize) -> Option<usize> {
    let len = bytes.len();
    let (from, to) = if len - i >= 8 {
        (i, i + 8)
    } else if len >= 8 {
        (len - 8, len)
    } else {
        return bytes[i..].iter().all(|&b| !is_special(b)).then_some(len);
    };
    let word = <[u8; 8]>::try_from(&bytes[from..to]).ok()?;
    (!needs_escape(u64::from_le_bytes(word))).then_some(to)
}

/// A byte JSON cannot hold as it is in a string.
#[inline]
const fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Whether any of the eight bytes of `word` is a quote, a backslash or a
/// control character (the "has a byte less than n" / "has a zero byte" bit
/// tricks: exact for "any", which is all this asks).
#[inline]
const fn needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * b'"' as u64);
    let backslash = word ^ (ONES * b'\\' as u64);
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_str(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in ["plain", "q\"b\\s", "nl\n\r\t", "\u{0}\u{1f}", "é ü 日本", ""] {
            let written = json_str(s);
            let back: String = serde_json::from_str(&written).expect("valid JSON string");
            assert_eq!(back, s, "{written}");
        }
        assert_eq!(json_str("\u{1}"), "\"\\u0001\"");
    }

    #[test]
    fn the_word_at_a_time_scan_finds_every_escape_at_every_position() {
        // Every escaped byte, and clean bytes on both sides of the
        // eight-byte boundaries (UTF-8 included), at each offset.
        for special in ['"', '\\', '\u{0}', '\n', '\u{1f}', 'é', '\u{7f}', ' ', '~'] {
            for at in 0..20 {
                let s: String = (0..20).map(|i| if i == at { special } else { 'a' }).collect();
                let written = json_str(&s);
                let back: String = serde_json::from_str(&written).expect("valid JSON string");
                assert_eq!(back, s, "{written}");
                // serde_json escapes the same bytes the same way for these.
                assert_eq!(written, serde_json::to_string(&s).expect("json"));
            }
        }
    }

    #[test]
    fn needs_no_escape_finds_every_escape_at_every_position() {
        assert!(needs_no_escape(""));
        for special in ['"', '\\', '\u{0}', '\n', '\u{1f}', 'é', '\u{7f}', ' ', '~'] {
            let escaped =
                serde_json::to_string(&special.to_string()).expect("json").len() > 2 + special.len_utf8();
            for len in [1, 7, 8, 9, 15, 16, 17, 20, 31, 32, 33, 50] {
                for at in 0..len {
                    let s: String = (0..len).map(|i| if i == at { special } else { 'a' }).collect();
                    assert_eq!(needs_no_escape(&s), !escaped, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn response_without_patch_has_no_patch_fields() {
        let mut out = Vec::new();
        write_response(&mut out, ApiVersion::V1Beta1, "u-1", None, None);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                "response": {"uid": "u-1", "allowed": true}})
        );
    }

    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        use base64::Engine as _;
        // Every length up to a few blocks, every byte value, and a patch's size.
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).chain(0..200).collect();
        for len in (0..64).chain([445, bytes.len()]) {
            let data = &bytes[bytes.len() - len..];
            let mut out = b"prefix".to_vec();
            write_base64(&mut out, data);
            let expected = base64::engine::general_purpose::STANDARD.encode(data);
            assert_eq!(std::str::from_utf8(&out[6..]).unwrap(), expected, "{len} bytes");
            assert_eq!(&out[..6], b"prefix");
        }
    }

    #[test]
    fn patch_is_a_base64_string_and_warnings_a_list() {
        let mut out = Vec::new();
        write_response(&mut out, ApiVersion::V1, "u", Some(b"[1]"), Some("x must be y"));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["response"]["patch"], "WzFd");
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        assert_eq!(
            v["response"]["warnings"][0],
            "imageswap: x must be y; no image was swapped"
        );
    }
}
