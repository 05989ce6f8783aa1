//! The `imageswap.k8s.twr.io/original-images` annotation (issue 22): every
//! patched object records what it replaced, a JSON object of container
//! name → original image, added or updated by the same JSON Patch that
//! swaps the images, so a controller that compares a pod's image with the
//! one it asked for (CloudNativePG, Argo CD, Flux) or an operator can see
//! what was written.
//!
//! It goes on the *pod template's* metadata (the object's own for a Pod):
//! the pods a Deployment creates then carry it, and an image the engine
//! leaves alone in the pod (already on the mirror) keeps the record the
//! template had. The decisions (docs/operations.md, "What a patch records"):
//!
//! - an existing record is merged: entries of containers not swapped now
//!   stay; a swapped container's entry keeps its first original when the
//!   current image is what that original swaps to (a non-idempotent rule
//!   swapping again), and takes the current image otherwise (someone wrote
//!   a new image since: that is the new original);
//! - an existing value that is not a JSON object of strings is replaced by
//!   the new record, with a warning in the answer quoting its start;
//! - containers without a name are not recorded (the API server refuses
//!   them anyway); the object's order of keys carries no meaning.
//!
//! The existing value is read from the review's tape in phase 1 (no second
//! parse of the review; only the annotation's own text is parsed, and only
//! when it is there).

use std::collections::BTreeMap;
use std::convert::Infallible;

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::Change;
use super::decode::{member, text, type_name};
use super::json::{escape, needs_no_escape, write_str};

/// The annotation's key.
pub const ANNOTATION: &str = "imageswap.k8s.twr.io/original-images";
/// The key as a JSON-Pointer segment (RFC 6901: `/` is written `~1`).
const ANNOTATION_SEGMENT: &str = "imageswap.k8s.twr.io~1original-images";
/// Characters of an unparsable value quoted back in the warning (what
/// fits in a warning's 120 with the rest of its text).
const UNPARSABLE_QUOTED_CHARS: usize = 24;

/// What the pod template's metadata offers the record, and what it holds.
#[derive(Debug, Default)]
pub(super) struct Record<'i> {
    place: Place,
    /// The entries already recorded (empty when there is no annotation).
    existing: BTreeMap<String, String>,
    /// The start of an existing value that is no JSON object of strings.
    unparsable: Option<String>,
    /// Swapped containers whose recorded original stays.
    keep_first: Vec<&'i str>,
}

/// Where the annotation can go: the patch `add`s the smallest piece that
/// is missing (RFC 6902 `add` creates no intermediate objects).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Place {
    /// `metadata` or `metadata.annotations` is not an object (the API
    /// server refuses such an object): nothing is recorded. Also the value
    /// before the template is read.
    #[default]
    Unwritable,
    /// No `metadata`: add `{"annotations": {KEY: …}}` there.
    NoMetadata,
    /// No `metadata.annotations`: add `{KEY: …}` there.
    NoAnnotations,
    /// Add (or replace: `add` on an object member does) the key.
    Annotations,
}

/// A member that is neither absent, `null`, nor an object.
struct NotAnObject;

/// A member (`None`: absent) when it is an object; `Ok(None)` when it is
/// absent or `null` (both mean "add it").
fn as_object<'t, 'i>(member: Option<Value<'t, 'i>>) -> Result<Option<Value<'t, 'i>>, NotAnObject> {
    match member {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) if v.is_object() => Ok(Some(v)),
        Some(_) => Err(NotAnObject),
    }
}

impl<'i> Record<'i> {
    /// Reads the template's (a Pod's own) `metadata.annotations`.
    pub fn read(template: Value<'_, 'i>) -> Record<'i> {
        let metadata = member(template, "metadata");
        let annotations = metadata.and_then(|m| member(m, "annotations"));
        Record::read_members(metadata, annotations)
    }

    /// [`Record::read`] given the template's `metadata` member as found
    /// and that member's `annotations` (as decoding found them for a Pod:
    /// 0.61 k → 0.14 k instructions an admission, `loadtest/profile.sh`,
    /// LTO, issue 24).
    pub fn read_members(metadata: Option<Value<'_, 'i>>, annotations: Option<Value<'_, 'i>>) -> Record<'i> {
        let mut record = Record::default();
        match as_object(metadata) {
            Ok(Some(_)) => {}
            Ok(None) => {
                record.place = Place::NoMetadata;
                return record;
            }
            Err(NotAnObject) => return record,
        }
        let annotations = match as_object(annotations) {
            Ok(Some(a)) => a,
            Ok(None) => {
                record.place = Place::NoAnnotations;
                return record;
            }
            Err(NotAnObject) => return record,
        };
        record.place = Place::Annotations;
        if let Some(value) = member(annotations, ANNOTATION) {
            match text(value) {
                Some(value) => match serde_json::from_str::<BTreeMap<String, String>>(value) {
                    Ok(existing) => record.existing = existing,
                    Err(_) => record.unparsable = Some(value.chars().take(UNPARSABLE_QUOTED_CHARS).collect()),
                },
                None => record.unparsable = Some(type_name(value).to_owned()),
            }
        }
        record
    }

    /// The original recorded for a container, if any.
    pub fn recorded(&self, name: &str) -> Option<&str> {
        self.existing.get(name).map(String::as_str)
    }

    /// Keeps the recorded original of `name` although its image is swapped.
    pub fn keep_first(&mut self, name: &'i str) {
        self.keep_first.push(name);
    }

    /// The warning about a replaced value, if there was one.
    pub fn unparsable(&self) -> Option<&str> {
        self.unparsable.as_deref()
    }

    /// Appends `,{"op":"add",…}` recording `changes` (those patched) to a
    /// patch whose list is open; nothing when there is nothing to record or
    /// nowhere to put it. Returns whether it wrote.
    pub fn write_add(&self, out: &mut Vec<u8>, template: &[&str], changes: &[Change<'_>]) -> bool {
        if self.place == Place::Unwritable || !changes.iter().any(|c| c.name.is_some()) {
            return false;
        }
        // The pointer's segments (the kinds' template paths, `metadata`,
        // `annotations`, the escaped key) hold nothing JSON or RFC 6901
        // would escape: written as they are, without a pointer built first.
        out.extend_from_slice(br#",{"op":"add","path":""#);
        for segment in template {
            out.push(b'/');
            out.extend_from_slice(segment.as_bytes());
        }
        out.extend_from_slice(b"/metadata");
        if self.place != Place::NoMetadata {
            out.extend_from_slice(b"/annotations");
        }
        if self.place == Place::Annotations {
            out.push(b'/');
            out.extend_from_slice(ANNOTATION_SEGMENT.as_bytes());
        }
        out.extend_from_slice(br#"","value":"#);
        match self.place {
            Place::NoMetadata => out.extend_from_slice(br#"{"annotations":{"#),
            Place::NoAnnotations => out.push(b'{'),
            _ => {}
        }
        if self.place != Place::Annotations {
            write_str(out, ANNOTATION);
            out.push(b':');
        }
        self.write_value(out, changes);
        match self.place {
            Place::NoMetadata => out.extend_from_slice(b"}}"),
            Place::NoAnnotations => out.push(b'}'),
            _ => {}
        }
        out.push(b'}');
        true
    }

    /// The annotation's text as a JSON string: the JSON object of the
    /// record after `changes`, written escaped twice in one go (no value
    /// built first, then escaped as a whole).
    fn write_value(&self, out: &mut Vec<u8>, changes: &[Change<'_>]) {
        out.extend_from_slice(b"\"{");
        if self.existing.is_empty() {
            // The common case, no record yet: the changes in patch order,
            // without building a map (a name given twice, which the API
            // server refuses, is written once).
            let mut first = true;
            for (n, change) in changes.iter().enumerate() {
                let Some(name) = change.name else { continue };
                if changes[..n].iter().any(|c| c.name == Some(name)) {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                write_entry(out, name, change.from);
            }
        } else {
            let mut merged: BTreeMap<&str, &str> = self
                .existing
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for change in changes {
                if let Some(name) = change.name
                    && !self.keep_first.contains(&name)
                {
                    merged.insert(name, change.from);
                }
            }
            for (n, (name, original)) in merged.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_entry(out, name, original);
            }
        }
        out.extend_from_slice(b"}\"");
    }
}

/// `"name":"original"` inside the annotation's JSON string.
fn write_entry(out: &mut Vec<u8>, name: &str, original: &str) {
    write_nested_str(out, name);
    out.push(b':');
    write_nested_str(out, original);
}

/// `s` as a JSON string inside a JSON string: its quotes written `\"`, its
/// text escaped once for the inner document and once more for the outer.
fn write_nested_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(br#"\""#);
    // Names and images hardly ever hold a byte to escape: checked once, a
    // word at a time (a byte at a time, the record's eight strings cost
    // 1.6 k instructions → 1.1 k: `loadtest/profile.sh`, LTO, issue 24),
    // copied whole.
    if needs_no_escape(s) {
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(br#"\""#);
        return;
    }
    let Ok(()) = escape(s, |piece| {
        escape(piece, |twice| {
            out.extend_from_slice(twice.as_bytes());
            Ok::<(), Infallible>(())
        })
    });
    out.extend_from_slice(br#"\""#);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::patch::push_segment;

    #[test]
    fn the_pointer_segments_written_as_they_are_need_no_escape() {
        let mut pointer = String::new();
        push_segment(&mut pointer, ANNOTATION);
        assert_eq!(pointer, format!("/{ANNOTATION_SEGMENT}"));
        let mut json = Vec::new();
        write_str(&mut json, ANNOTATION_SEGMENT);
        assert_eq!(json, format!("\"{ANNOTATION_SEGMENT}\"").as_bytes());
        for location in super::super::podspec::KINDS_WITH_POD_SPEC
            .iter()
            .filter_map(|kind| super::super::podspec::locate(kind))
        {
            for segment in location.template {
                let mut pointer = String::new();
                push_segment(&mut pointer, segment);
                assert_eq!(pointer, format!("/{segment}"));
                assert!(segment.bytes().all(|b| b.is_ascii_alphabetic()), "{segment}");
            }
        }
    }
}
