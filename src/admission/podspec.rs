//! Where each kind keeps its pod spec (admission.md), and the walk over the
//! container images in it. Missing pieces mean "no pod spec" (allowed, no
//! patch); pieces of the wrong JSON type mean a malformed object, answered
//! with a warning naming the JSON path.

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::Verdict;
use super::decode::{member, members, text, type_name};

/// The container lists whose `image` is swapped, in patch order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerField {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl ContainerField {
    pub const ALL: [ContainerField; 3] = [
        ContainerField::Containers,
        ContainerField::InitContainers,
        ContainerField::EphemeralContainers,
    ];

    /// The field name in a pod spec (also its JSON-Pointer segment).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerField::Containers => "containers",
            ContainerField::InitContainers => "initContainers",
            ContainerField::EphemeralContainers => "ephemeralContainers",
        }
    }
}

/// Where a kind keeps its pod template: the object path to the object
/// holding the template's `metadata` and `spec` (empty for a Pod, which is
/// its own template).
#[derive(Debug)]
pub(super) struct Location {
    pub kind: &'static str,
    pub template: &'static [&'static str],
}

const WORKLOAD_TEMPLATE: &[&str] = &["spec", "template"];

const LOCATIONS: [Location; 9] = [
    Location {
        kind: "Pod",
        template: &[],
    },
    Location {
        kind: "Deployment",
        template: WORKLOAD_TEMPLATE,
    },
    Location {
        kind: "ReplicaSet",
        template: WORKLOAD_TEMPLATE,
    },
    Location {
        kind: "StatefulSet",
        template: WORKLOAD_TEMPLATE,
    },
    Location {
        kind: "DaemonSet",
        template: WORKLOAD_TEMPLATE,
    },
    Location {
        kind: "Job",
        template: WORKLOAD_TEMPLATE,
    },
    Location {
        kind: "ReplicationController",
        template: WORKLOAD_TEMPLATE,
    },
    Location {
        kind: "PodTemplate",
        template: &["template"],
    },
    Location {
        kind: "CronJob",
        template: &["spec", "jobTemplate", "spec", "template"],
    },
];

/// The kinds ImageSwap finds a pod spec in.
pub const KINDS_WITH_POD_SPEC: [&str; 9] = {
    let mut kinds = [""; 9];
    let mut i = 0;
    while i < LOCATIONS.len() {
        kinds[i] = LOCATIONS[i].kind;
        i += 1;
    }
    kinds
};

pub(super) fn locate(kind: &str) -> Option<&'static Location> {
    LOCATIONS.iter().find(|l| l.kind == kind)
}

/// A pod template found in an object: the object that has the `metadata`
/// and `spec`, and the spec.
#[derive(Clone, Copy)]
pub(super) struct Pod<'t, 'i> {
    pub template: Value<'t, 'i>,
    pub spec: Value<'t, 'i>,
}

/// Follows the kind's path to the pod spec. `Ok(None)` when a piece is
/// missing or null; `Err` (the warning text) when a piece is not an object.
/// `object_spec` is the object's own `spec` member when the caller found it
/// already (decoding does, in its walk of the object: one walk of the
/// object less, `find` 0.30 k → 0.09 k instructions an admission,
/// `loadtest/profile.sh`, LTO, issue 24); `None` looks it up.
pub(super) fn find<'t, 'i>(
    object: Value<'t, 'i>,
    object_spec: Option<Option<Value<'t, 'i>>>,
    location: &Location,
) -> Result<Option<Pod<'t, 'i>>, String> {
    // The member `key` of `parent`, the object's `spec` as found.
    let child = |parent: Value<'t, 'i>, at_object: bool, key: &str| match object_spec {
        Some(spec) if at_object && key == "spec" => child_kind(spec),
        _ => child_kind(member(parent, key)),
    };
    let mut template = object;
    for (depth, segment) in location.template.iter().enumerate() {
        match child(template, depth == 0, segment) {
            Child::Object(next) => template = next,
            Child::Absent => return Ok(None),
            Child::Wrong(found) => {
                return Err(format!(
                    "{} must be an object, found {found}",
                    dotted(&location.template[..=depth], None)
                ));
            }
        }
    }
    match child(template, location.template.is_empty(), "spec") {
        Child::Object(spec) => Ok(Some(Pod { template, spec })),
        Child::Absent => Ok(None),
        Child::Wrong(found) => Err(format!(
            "{} must be an object, found {found}",
            dotted(location.template, Some("spec"))
        )),
    }
}

enum Child<'t, 'i> {
    Object(Value<'t, 'i>),
    Absent,
    Wrong(&'static str),
}

/// What a member found (`None`: absent) is, as a step to the pod spec.
fn child_kind<'t, 'i>(found: Option<Value<'t, 'i>>) -> Child<'t, 'i> {
    match found {
        None => Child::Absent,
        Some(v) if v.is_null() => Child::Absent,
        Some(v) if v.is_object() => Child::Object(v),
        Some(v) => Child::Wrong(type_name(v)),
    }
}

/// `request.object.<segments>[.<last>]`, for messages.
fn dotted(segments: &[&str], last: Option<&str>) -> String {
    let mut path = String::from("request.object");
    for segment in segments.iter().copied().chain(last) {
        path.push('.');
        path.push_str(segment);
    }
    path
}

/// The opt-out: `metadata.labels[label] == "disabled"`. Read leniently: a
/// label of another type is not an opt-out.
pub(super) fn disabled(object: Value<'_, '_>, label: &str) -> bool {
    labels_disable(
        member(object, "metadata").and_then(|m| member(m, "labels")),
        label,
    )
}

/// [`disabled`] given the object's `metadata.labels` (as decoding found
/// them for the review's object).
pub(super) fn labels_disable(labels: Option<Value<'_, '_>>, label: &str) -> bool {
    labels.and_then(|l| member(l, label)).and_then(text) == Some("disabled")
}

/// One container's image as the walk finds it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Image<'i> {
    pub field: ContainerField,
    /// Index in the field's array.
    pub index: usize,
    /// The container's `name`, when it is a string.
    pub name: Option<&'i str>,
    pub image: &'i str,
}

impl Image<'_> {
    /// The same container with the same image: same list, same name (a
    /// container without a name matches nothing).
    pub fn is_same_container(&self, other: &Image<'_>) -> bool {
        self.field == other.field
            && self.name.is_some()
            && self.name == other.name
            && self.image == other.image
    }
}

/// The members of a pod spec an admission reads, found in one walk of the
/// spec: its container lists and what [`platforms::of_pod`] reads. The
/// platforms' own walk of the spec cost 0.49 k instructions of every
/// swapping admission (`of_pod` 0.49 k → 0.10 k, the one walk 0.43 k →
/// 0.55 k for its two keys more: the decisions 0.14 k less,
/// `loadtest/profile.sh`, LTO, issue 24).
///
/// [`platforms::of_pod`]: super::platforms::of_pod
#[derive(Clone, Copy)]
pub(super) struct SpecMembers<'t, 'i> {
    /// The container lists, in [`ContainerField::ALL`]'s order.
    pub lists: [Option<Value<'t, 'i>>; 3],
    pub node_selector: Option<Value<'t, 'i>>,
    pub affinity: Option<Value<'t, 'i>>,
}

impl<'t, 'i> SpecMembers<'t, 'i> {
    pub fn of(spec: Value<'t, 'i>) -> SpecMembers<'t, 'i> {
        let [
            containers,
            init_containers,
            ephemeral_containers,
            node_selector,
            affinity,
        ] = members(
            spec,
            [
                ContainerField::Containers.as_str(),
                ContainerField::InitContainers.as_str(),
                ContainerField::EphemeralContainers.as_str(),
                "nodeSelector",
                "affinity",
            ],
        );
        SpecMembers {
            lists: [containers, init_containers, ephemeral_containers],
            node_selector,
            affinity,
        }
    }
}

/// Calls `visit` for every container with an `image` in the lists of a
/// pod spec (`spec`, see [`SpecMembers`]), in patch order. A container
/// without `image` (allowed in templates) is skipped; a list, container or
/// image of the wrong type stops the walk with [`Verdict::Malformed`];
/// `visit` can stop it with any verdict.
pub(super) fn for_each_image<'i>(
    spec: &SpecMembers<'_, 'i>,
    location: &Location,
    mut visit: impl FnMut(Image<'i>) -> Result<(), Verdict>,
) -> Result<(), Verdict> {
    for (field, list) in ContainerField::ALL.into_iter().zip(spec.lists) {
        let list = match list {
            None => continue,
            Some(v) if v.is_null() => continue,
            Some(v) => v,
        };
        let Some(list) = list.as_array() else {
            return Err(malformed(location, field, None, "an array", type_name(list)));
        };
        for (index, container) in list.iter().enumerate() {
            if !container.is_object() {
                return Err(malformed(
                    location,
                    field,
                    Some((index, None)),
                    "an object",
                    type_name(container),
                ));
            }
            let [image, name] = members(container, ["image", "name"]);
            let image = match image {
                None => continue,
                Some(v) if v.is_null() => continue,
                Some(v) => v,
            };
            let Some(image) = text(image) else {
                return Err(malformed(
                    location,
                    field,
                    Some((index, Some("image"))),
                    "a string",
                    type_name(image),
                ));
            };
            let name = name.and_then(text);
            visit(Image {
                field,
                index,
                name,
                image,
            })?;
        }
    }
    Ok(())
}

fn malformed(
    location: &Location,
    field: ContainerField,
    item: Option<(usize, Option<&str>)>,
    expected: &str,
    found: &str,
) -> Verdict {
    let mut path = dotted(location.template, Some("spec"));
    path.push('.');
    path.push_str(field.as_str());
    if let Some((index, key)) = item {
        path.push_str(&format!("[{index}]"));
        if let Some(key) = key {
            path.push('.');
            path.push_str(key);
        }
    }
    Verdict::Malformed(format!("{path} must be {expected}, found {found}"))
}
