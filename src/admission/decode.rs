//! Reading the envelope of an `AdmissionReview` from the tape: what must be
//! there for an answer to exist (`apiVersion`, `kind`, `request.uid`) and
//! what the log line names. A missing or mistyped envelope field is a
//! [`BadReview`] (400); anything wrong inside `request.object` is left to the
//! pod-spec walk, which answers 200 with a warning.

use simd_json::prelude::*;
use simd_json::tape::Value;

/// The review versions the API server can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1Beta1,
}

impl ApiVersion {
    pub const V1_STR: &'static str = "admission.k8s.io/v1";
    pub const V1BETA1_STR: &'static str = "admission.k8s.io/v1beta1";

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => Self::V1_STR,
            ApiVersion::V1Beta1 => Self::V1BETA1_STR,
        }
    }
}

/// Why a body is not an `AdmissionReview` that can be answered; the text,
/// with the JSON path, goes back in the 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReview {
    /// In words (simd-json's own text is its enum's names: `ExpectedNull at
    /// character 0`), with the byte offset to look at.
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("the body nests JSON deeper than {max} levels, more than any AdmissionReview does")]
    TooDeep { max: usize },
    #[error("`{path}` is missing")]
    Missing { path: &'static str },
    #[error("`{path}` must be {expected}, found {found}")]
    WrongType {
        path: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`{path}` must be {expected}, found \"{found}\"")]
    WrongValue {
        path: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("`request.uid` is empty")]
    EmptyUid,
}

/// Longest string value quoted back in an error message.
const QUOTED_VALUE_MAX_CHARS: usize = 64;

impl BadReview {
    /// The answer to a body simd-json refused, in words; `body_len` is the
    /// body's length before parsing (the parse works in place). simd-json's
    /// kinds and offsets are approximate (its first stage finds structure,
    /// not the first wrong byte), so the words say what kind of thing is
    /// wrong *near* a byte, with the character found there.
    pub(super) fn from_parse_error(error: &simd_json::Error, body_len: usize) -> BadReview {
        use simd_json::ErrorType as E;
        if body_len == 0 {
            return BadReview::NotJson("the body is empty".to_owned());
        }
        let what = match error.error() {
            E::DepthLimitExceeded => {
                return BadReview::TooDeep {
                    max: simd_json::DEFAULT_MAX_DEPTH,
                };
            }
            E::Eof => return BadReview::NotJson("the body ends before a JSON value does".to_owned()),
            E::InputTooLarge => {
                return BadReview::NotJson(
                    "the body is larger than the JSON parser reads (4 GiB)".to_owned(),
                );
            }
            E::TrailingData => "more text after the JSON value",
            E::UnterminatedString => "a string that is not closed",
            E::InvalidUtf8 => "bytes that are not UTF-8",
            E::InvalidEscape | E::InvalidUnicodeEscape | E::InvalidUnicodeCodepoint => {
                "a bad escape in a string"
            }
            E::InvalidNumber | E::InvalidExponent => "a malformed number",
            E::ExpectedNull | E::ExpectedTrue | E::ExpectedFalse => "a word that is not null, true or false",
            E::ExpectedArrayComma | E::ExpectedArrayContent => "a malformed array",
            E::ExpectedMapComma
            | E::ExpectedMapEnd
            | E::ExpectedObjectColon
            | E::ExpectedObjectContent
            | E::ExpectedObjectKey
            | E::KeyMustBeAString
            | E::BadKeyType => "a malformed object",
            _ => "malformed JSON",
        };
        let found = match error.character() {
            Some(c) if !c.is_control() => format!(" (`{c}`)"),
            _ => String::new(),
        };
        BadReview::NotJson(format!("{what} near byte {}{found}", error.index()))
    }

    fn wrong_value(path: &'static str, expected: &'static str, found: &str) -> BadReview {
        BadReview::WrongValue {
            path,
            expected,
            found: found.chars().take(QUOTED_VALUE_MAX_CHARS).collect(),
        }
    }
}

/// What the log line and the answer need from `request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo<'i> {
    pub api_version: ApiVersion,
    pub uid: &'i str,
    /// `request.kind.kind`, else the object's own `kind`.
    pub kind: Option<&'i str>,
    pub namespace: Option<&'i str>,
    /// `request.name`, else the object's name, else its `generateName`.
    pub name: Option<&'i str>,
    /// The object has no name of its own but a `generateName` (the API
    /// server names it after the mutating webhooks): every creation is a
    /// new pod.
    pub generate_name: bool,
    /// The object's owner (`kind`, `name`): its controller's
    /// `ownerReferences` entry, else the first.
    pub owner: Option<(&'i str, &'i str)>,
    pub operation: Option<&'i str>,
    /// `request.subResource`: `status`, `ephemeralcontainers`, `scale`, …
    pub sub_resource: Option<&'i str>,
    pub dry_run: bool,
}

/// `request.object`, as far as the envelope is concerned.
#[derive(Clone, Copy, Debug)]
pub(super) enum Object<'t, 'i> {
    /// Absent or null (a DELETE, a CONNECT).
    Absent,
    /// Present but not an object: the name of the JSON type found.
    Malformed(&'static str),
    Present(Value<'t, 'i>),
}

pub(super) struct Review<'t, 'i> {
    pub info: RequestInfo<'i>,
    pub object: Object<'t, 'i>,
    /// `request.oldObject` when it is an object (an UPDATE); read leniently.
    pub old_object: Option<Value<'t, 'i>>,
    /// The object's `metadata` and `spec` members as found (of any type),
    /// and the metadata's `labels` and `annotations` when it is an object:
    /// read here with the names, so the opt-out, the way to the pod spec
    /// and a Pod's original-images record do not walk the object and its
    /// metadata again (the opt-out 0.52 k → 0.06 k instructions an
    /// admission, the record's read 0.61 k → 0.14 k: `loadtest/profile.sh`,
    /// LTO, issue 24).
    pub object_members: ObjectMembers<'t, 'i>,
}

/// See [`Review::object_members`].
#[derive(Clone, Copy, Default)]
pub(super) struct ObjectMembers<'t, 'i> {
    pub metadata: Option<Value<'t, 'i>>,
    pub spec: Option<Value<'t, 'i>>,
    pub labels: Option<Value<'t, 'i>>,
    pub annotations: Option<Value<'t, 'i>>,
}

/// The JSON type of a value, as error messages name it.
pub(super) fn type_name(value: Value<'_, '_>) -> &'static str {
    match value.value_type() {
        ValueType::Null => "null",
        ValueType::Bool => "a boolean",
        ValueType::String => "a string",
        ValueType::Array => "an array",
        ValueType::Object => "an object",
        _ => "a number",
    }
}

pub(super) fn decode<'t, 'i>(root: Value<'t, 'i>) -> Result<Review<'t, 'i>, BadReview> {
    if !root.is_object() {
        return Err(BadReview::WrongType {
            path: "$",
            expected: "an object (an AdmissionReview)",
            found: type_name(root),
        });
    }
    // The envelope's three members in one walk of the root, not one walk
    // each (and the object's metadata once, see `Review::metadata`):
    // `decode` 2.10 k → 1.77 k instructions an admission
    // (`loadtest/profile.sh`, LTO, issue 24).
    let [api_version, kind, request] = members(root, ["apiVersion", "kind", "request"]);
    let api_version = match required_str(api_version, "apiVersion")? {
        ApiVersion::V1_STR => ApiVersion::V1,
        ApiVersion::V1BETA1_STR => ApiVersion::V1Beta1,
        other => {
            return Err(BadReview::wrong_value(
                "apiVersion",
                "\"admission.k8s.io/v1\" or \"admission.k8s.io/v1beta1\"",
                other,
            ));
        }
    };
    let kind = required_str(kind, "kind")?;
    if kind != "AdmissionReview" {
        return Err(BadReview::wrong_value("kind", "\"AdmissionReview\"", kind));
    }
    let request = match request {
        None => return Err(BadReview::Missing { path: "request" }),
        Some(r) if r.is_object() => r,
        Some(r) => {
            return Err(BadReview::WrongType {
                path: "request",
                expected: "an object",
                found: type_name(r),
            });
        }
    };
    let fields = RequestFields::of(request);
    let uid = match fields.uid {
        None => return Err(BadReview::Missing { path: "request.uid" }),
        Some(v) => text(v).ok_or(BadReview::WrongType {
            path: "request.uid",
            expected: "a string",
            found: type_name(v),
        })?,
    };
    if uid.is_empty() {
        return Err(BadReview::EmptyUid);
    }

    let object = match fields.object {
        None => Object::Absent,
        Some(o) if o.is_null() => Object::Absent,
        Some(o) if o.is_object() => Object::Present(o),
        Some(o) => Object::Malformed(type_name(o)),
    };
    let object_value = match object {
        Object::Present(o) => Some(o),
        _ => None,
    };
    // The informational fields are read leniently: a wrong type there does
    // not stop an answer, it only leaves a blank in the log line.
    let kind = fields
        .kind
        .and_then(|k| member(k, "kind"))
        .and_then(text)
        .or_else(|| object_value.and_then(|o| member(o, "kind")).and_then(text));
    let [metadata, spec] = object_value.map_or([None; 2], |o| members(o, ["metadata", "spec"]));
    let [own_name, generate_name, owners, labels, annotations] = metadata.map_or([None; 5], |m| {
        members(
            m,
            ["name", "generateName", "ownerReferences", "labels", "annotations"],
        )
    });
    let own_name = own_name.and_then(text).filter(|n| !n.is_empty());
    let generate_name = generate_name.and_then(text).filter(|n| !n.is_empty());
    let request_name = fields.name.and_then(text).filter(|n| !n.is_empty());
    let name = request_name.or(own_name).or(generate_name);
    let info = RequestInfo {
        api_version,
        uid,
        kind,
        namespace: fields.namespace.and_then(text),
        name,
        generate_name: request_name.is_none() && own_name.is_none() && generate_name.is_some(),
        owner: owners.and_then(owner),
        operation: fields.operation.and_then(text),
        sub_resource: fields.sub_resource.and_then(text).filter(|s| !s.is_empty()),
        dry_run: fields.dry_run.and_then(|d| d.as_bool()).unwrap_or(false),
    };
    let old_object = fields.old_object.filter(|o| o.is_object());
    Ok(Review {
        info,
        object,
        old_object,
        object_members: ObjectMembers {
            metadata,
            spec,
            labels,
            annotations,
        },
    })
}

/// The controller's entry of `ownerReferences`, else the first, as
/// (`kind`, `name`); read leniently (entries of another shape are skipped).
fn owner<'i>(references: Value<'_, 'i>) -> Option<(&'i str, &'i str)> {
    let mut first = None;
    for reference in references.as_array()?.iter() {
        let [kind, name, controller] = members(reference, ["kind", "name", "controller"]);
        let (Some(kind), Some(name)) = (kind.and_then(text), name.and_then(text)) else {
            continue;
        };
        if controller.and_then(|c| c.as_bool()) == Some(true) {
            return Some((kind, name));
        }
        first = first.or(Some((kind, name)));
    }
    first
}

/// The members of `request` the envelope reads, found in one pass over its
/// keys by [`members`], the last of a repeated key winning as in [`member`]. Looking each
/// up on its own walked `request`'s keys nine times: about 2 k
/// instructions of an admission (`loadtest/profile.sh`).
#[derive(Clone, Copy)]
struct RequestFields<'t, 'i> {
    uid: Option<Value<'t, 'i>>,
    object: Option<Value<'t, 'i>>,
    kind: Option<Value<'t, 'i>>,
    name: Option<Value<'t, 'i>>,
    namespace: Option<Value<'t, 'i>>,
    operation: Option<Value<'t, 'i>>,
    sub_resource: Option<Value<'t, 'i>>,
    dry_run: Option<Value<'t, 'i>>,
    old_object: Option<Value<'t, 'i>>,
}

impl<'t, 'i> RequestFields<'t, 'i> {
    fn of(request: Value<'t, 'i>) -> RequestFields<'t, 'i> {
        let [
            uid,
            object,
            kind,
            name,
            namespace,
            operation,
            sub_resource,
            dry_run,
            old_object,
        ] = members(
            request,
            [
                "uid",
                "object",
                "kind",
                "name",
                "namespace",
                "operation",
                "subResource",
                "dryRun",
                "oldObject",
            ],
        );
        RequestFields {
            uid,
            object,
            kind,
            name,
            namespace,
            operation,
            sub_resource,
            dry_run,
            old_object,
        }
    }
}

/// The value of `key` in an object, read as Go's `encoding/json` (and so the
/// API server) reads it: when a key is repeated, the last one wins. (The
/// tape's own `get` returns the first; a parser that disagrees with the API
/// server about a document is a smuggling risk.) `None` for a value that is
/// not an object or has no such key. Inlined as [`members`] is, for its
/// constant keys (with the object's `spec` found by decoding, see
/// `podspec::find`: the decisions above the parse 5.98 k → 5.71 k
/// instructions an admission, `loadtest/profile.sh`, LTO, issue 24).
#[inline(always)]
pub(super) fn member<'t, 'i>(object: Value<'t, 'i>, key: &str) -> Option<Value<'t, 'i>> {
    object
        .as_object()?
        .iter()
        .filter(|(name, _)| *name == key)
        .last()
        .map(|(_, value)| value)
}

/// The values of several `keys` of an object in one pass over its members,
/// each as [`member`] reads it (the last of a repeated key wins). Looking
/// each up on its own walks the members once per key: the pod spec's three
/// container lists and each container's `image` and `name` cost about 3 k
/// instructions of an admission more that way (`loadtest/profile.sh`).
///
/// Inlined at each call so the keys are constants there: a name of a
/// key's length is compared by a load or two instead of a call to `bcmp`
/// (the decisions above the parse 6.83 k → 5.98 k instructions an
/// admission, the containers' walk 2.97 k → 2.46 k of it:
/// `loadtest/profile.sh`, LTO, issue 24).
#[inline(always)]
pub(super) fn members<'t, 'i, const N: usize>(
    object: Value<'t, 'i>,
    keys: [&str; N],
) -> [Option<Value<'t, 'i>>; N] {
    let mut found = [None; N];
    // (Passing over a member whose name has no key's length, by a mask of
    // the keys' lengths, cost more than it saved with LTO: 2.0 k → 2.2 k
    // instructions an admission, `loadtest/profile.sh`, issue 24. The
    // compares with the keys, constants once inlined, are cheap.)
    if let Some(object) = object.as_object() {
        for (name, value) in object.iter() {
            if let Some(slot) = keys.iter().position(|key| *key == name) {
                found[slot] = Some(value);
            }
        }
    }
    found
}

/// A string value, borrowed from the input (not from the tape).
pub(super) fn text<'i>(value: Value<'_, 'i>) -> Option<&'i str> {
    value.into_string()
}

/// The string of a member that must be there, `path` naming it.
fn required_str<'i>(value: Option<Value<'_, 'i>>, path: &'static str) -> Result<&'i str, BadReview> {
    match value {
        None => Err(BadReview::Missing { path }),
        Some(v) => text(v).ok_or(BadReview::WrongType {
            path,
            expected: "a string",
            found: type_name(v),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_finds_keys_of_every_length_and_skips_the_others() {
        // Keys of 0 to 70 bytes, members of the same lengths that are no
        // key, and a key given twice.
        let key = |n: usize| "k".repeat(n);
        let other = |n: usize| "o".repeat(n);
        let mut members_json: Vec<String> = (0..71)
            .flat_map(|n| [format!("\"{}\":{n}", other(n)), format!("\"{}\":{n}", key(n))])
            .collect();
        members_json.push(format!("\"{}\":\"last\"", key(64)));
        let mut json = format!("{{{}}}", members_json.join(",")).into_bytes();
        let tape = simd_json::to_tape(&mut json).expect("json");
        for n in 0..71 {
            let [found, missing] = members(tape.as_value(), [key(n).as_str(), "absent"]);
            assert!(missing.is_none());
            let found = found.unwrap_or_else(|| panic!("key of {n} bytes not found"));
            if n == 64 {
                assert_eq!(text(found), Some("last"), "the last of a repeated key wins");
            } else {
                assert_eq!(found.as_u64(), Some(n as u64), "key of {n} bytes");
            }
        }
    }
}
