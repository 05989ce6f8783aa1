//! The RFC 6902 JSON Patch: one `replace` per changed image, at a JSON
//! Pointer (RFC 6901) of segments that need no escape (see [`write`]).

use super::json::write_str;
use super::{Change, ContainerField};

/// Writes `[{"op":"replace","path":…,"value":…},…]` for `changes`, whose
/// pod template sits at `template` (object path segments; empty for a Pod).
///
/// The pointer's segments are ours and need no escape, neither RFC 6901's
/// nor JSON's: the kinds' template paths and the list names are ASCII
/// letters, the index digits (tests below and in `original_images`). So
/// the path goes straight into the patch, not built as a pointer and then
/// scanned as a JSON string: `push_segment`'s 1.53 k instructions and the
/// pointers' 0.69 k of `write_str` an admission are gone, the answer 8.2 k
/// → 6.1 k (`loadtest/profile.sh`, LTO, issue 24). The image is a
/// decider's answer, escaped as ever.
pub(super) fn write(out: &mut Vec<u8>, template: &[&str], changes: &[Change<'_>]) {
    let mut index = itoa::Buffer::new();
    out.push(b'[');
    for (n, change) in changes.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"op":"replace","path":""#);
        for segment in template {
            out.push(b'/');
            out.extend_from_slice(segment.as_bytes());
        }
        // `/spec/<list>/` as one constant, and an index under ten as its
        // digit: no copy of runtime length for either (the answer 4.88 k →
        // 4.67 k instructions an admission, `loadtest/profile.sh`, LTO,
        // issue 24).
        out.extend_from_slice(spec_list_pointer(change.field).as_bytes());
        match u8::try_from(change.index) {
            Ok(digit @ 0..=9) => out.push(b'0' + digit),
            _ => out.extend_from_slice(index.format(change.index).as_bytes()),
        }
        out.extend_from_slice(br#"/image","value":"#);
        write_str(out, &change.to);
        out.push(b'}');
    }
    out.push(b']');
}

/// `/spec/<the list's name>/`: the pointer from a pod template to an entry
/// of one of its container lists, short of the entry's index.
fn spec_list_pointer(field: ContainerField) -> &'static str {
    match field {
        ContainerField::Containers => "/spec/containers/",
        ContainerField::InitContainers => "/spec/initContainers/",
        ContainerField::EphemeralContainers => "/spec/ephemeralContainers/",
    }
}

/// Appends `/segment` with RFC 6901 escaping: `~` → `~0`, `/` → `~1`.
pub(super) fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    // Every segment of a patch today (`spec`, a list's name, an index,
    // `image`) has nothing to escape: copied whole, not a `char` at a time,
    // it costs 2 k instructions an admission less (`loadtest/profile.sh`).
    if !segment.bytes().any(|b| b == b'~' || b == b'/') {
        pointer.push_str(segment);
        return;
    }
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::swap::Rule;

    #[test]
    fn pointer_segments_are_escaped() {
        let mut p = String::new();
        push_segment(&mut p, "a/b~c");
        push_segment(&mut p, "plain");
        assert_eq!(p, "/a~1b~0c/plain");
    }

    #[test]
    fn the_list_names_written_as_they_are_need_no_escape() {
        for field in ContainerField::ALL {
            let name = field.as_str();
            assert_eq!(spec_list_pointer(field), format!("/spec/{name}/"));
            let mut pointer = String::new();
            push_segment(&mut pointer, name);
            assert_eq!(pointer, format!("/{name}"));
            assert!(name.bytes().all(|b| b.is_ascii_alphabetic()), "{name}");
        }
    }

    #[test]
    fn one_replace_per_change_at_the_template_path() {
        let changes = [
            Change {
                field: ContainerField::Containers,
                index: 0,
                name: None,
                from: "nginx",
                to: Arc::from("mirror.example/nginx"),
                rule: Rule::Default,
            },
            Change {
                field: ContainerField::InitContainers,
                index: 12,
                name: None,
                from: "busybox",
                to: Arc::from("mirror.example/\"odd\""),
                rule: Rule::Default,
            },
        ];
        let mut out = Vec::new();
        write(&mut out, &["spec", "jobTemplate", "spec", "template"], &changes);
        let patch: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "replace", "path": "/spec/jobTemplate/spec/template/spec/containers/0/image",
                 "value": "mirror.example/nginx"},
                {"op": "replace", "path": "/spec/jobTemplate/spec/template/spec/initContainers/12/image",
                 "value": "mirror.example/\"odd\""},
            ])
        );
    }
}
