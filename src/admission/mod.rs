//! The admission core, pure: the bytes of an `AdmissionReview` in, the bytes
//! of its answer out (admission.md). No I/O, no async, no locks.
//!
//! The review is parsed once into a simd-json tape (a flat array of nodes
//! pointing into the request buffer): nothing is copied or allocated per JSON
//! value, and walking it never recurses, so deep nesting cannot overflow the
//! stack. Only the fields the answer needs are read: `request.uid`, the kind,
//! a few names for the log line, the opt-out labels and the container images.
//!
//! What each image becomes is asked of a [`Decide`] passed in, so the server
//! can put its cache in front of the engine and tests can pass a closure.

mod decode;
pub mod json;
mod original_images;
mod patch;
mod platforms;
mod podspec;
pub mod pull_secrets;
mod scratch;
pub mod warnings;

#[cfg(test)]
mod original_images_tests;
#[cfg(test)]
mod phase2_tests;

use std::sync::Arc;
use std::time::Instant;

use crate::swap::Rule;

pub use decode::{ApiVersion, BadReview, RequestInfo};
pub use original_images::ANNOTATION as ORIGINAL_IMAGES_ANNOTATION;
pub use podspec::{ContainerField, KINDS_WITH_POD_SPEC};
pub use pull_secrets::{PullSecrets, PullSecretsArgs};
pub use scratch::{SMALL_REVIEW_MAX_BYTES, release_large_scratch};
pub use warnings::Checked;
use warnings::Warnings;

/// Images decided between two looks at the clock. Reading the clock costs
/// about as much as a cached decision, so it is not done for every image.
const IMAGES_PER_DEADLINE_CHECK: usize = 8;

/// What one image becomes: the new image (`None` = unchanged) and the rule
/// that decided. Cheap to clone (the result is shared), so a cache can hand
/// out copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDecision {
    pub result: Option<Arc<str>>,
    pub rule: Rule,
    /// Why the image stays although a rule matched it (maps.md §3 step 7:
    /// the rule gives an invalid image); `None` for every other decision.
    pub kept: Option<Arc<InvalidResult>>,
}

impl From<crate::swap::Decision<'_>> for ImageDecision {
    /// The engine's decision as the request path keeps it (the result
    /// shared, an invalid result's key and image kept for its warning).
    fn from(decision: crate::swap::Decision<'_>) -> ImageDecision {
        let kept = decision.rejected.map(|result| {
            Arc::new(InvalidResult {
                key: decision.key.unwrap_or(decision.rule.as_str()).into(),
                result: result.into(),
            })
        });
        ImageDecision {
            result: decision.result.map(Arc::from),
            rule: decision.rule,
            kept,
        }
    }
}

/// A rule whose result is no valid image (maps.md §3 step 7): its key and
/// what it gave, kept apart so a warning can shorten the image, not the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidResult {
    pub key: Box<str>,
    pub result: Box<str>,
}

impl std::fmt::Display for InvalidResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rule {} gives an invalid image \"{}\"", self.key, self.result)
    }
}

/// Decides what an image becomes; the server's implementation is the cache
/// in front of the swap engine.
pub trait Decide {
    fn decide(&self, image: &str) -> ImageDecision;
}

impl<F: Fn(&str) -> ImageDecision> Decide for F {
    fn decide(&self, image: &str) -> ImageDecision {
        self(image)
    }
}

/// Settings of one review.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// The opt-out label (`IMAGESWAP_DISABLE_LABEL`).
    pub disable_label: &'a str,
    /// Decide and report, but never return a patch (`--shadow`).
    pub shadow: bool,
    /// After this instant, stop deciding and answer "allowed" without a
    /// patch: a late answer is worth less than no swap.
    pub deadline: Option<Instant>,
}

/// One image to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<'i> {
    pub field: ContainerField,
    /// Index in the field's array.
    pub index: usize,
    /// The container's `name` (the key of its original-images entry).
    pub name: Option<&'i str>,
    pub from: &'i str,
    pub to: Arc<str>,
    pub rule: Rule,
}

/// How a review was answered (always allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// One `replace` per change went back in the patch.
    Patched,
    /// Changes were decided but not returned (`--shadow`).
    Shadowed,
    /// Every image stays as it is.
    Unchanged,
    /// The object or its pod template carries the opt-out label.
    Disabled,
    /// The kind has no pod spec ImageSwap knows about.
    UnknownKind,
    /// No object, or an object without a pod spec (for example a DELETE).
    NoPodSpec,
    /// The object does not have the shape its kind promises; the message is
    /// sent back as a warning.
    Malformed(String),
    /// The deadline passed before every image was decided.
    DeadlineExceeded,
    /// A subresource other than `ephemeralcontainers` (`status`, `scale`,
    /// `exec`…): no patch, whatever its object holds.
    Subresource,
}

impl Verdict {
    /// A short word for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Patched => "patched",
            Verdict::Shadowed => "shadowed",
            Verdict::Unchanged => "unchanged",
            Verdict::Disabled => "disabled",
            Verdict::UnknownKind => "unknown_kind",
            Verdict::NoPodSpec => "no_pod_spec",
            Verdict::Malformed(_) => "malformed",
            Verdict::DeadlineExceeded => "deadline_exceeded",
            Verdict::Subresource => "subresource",
        }
    }
}

/// The answer to one review: what the request was, what was decided and the
/// response document.
#[derive(Debug)]
pub struct Admission<'i> {
    pub request: RequestInfo<'i>,
    pub verdict: Verdict,
    /// The changes patched (also in shadow mode, those decided; empty
    /// unless Patched or Shadowed). Changes whose verification kept the
    /// original are not here.
    pub changes: Vec<Change<'i>>,
    /// Container images decided (seen in the pod spec and asked of the
    /// decider); fewer than the pod has when the deadline cut it short.
    pub images: usize,
    /// Images kept although a rule matched them (see [`Decided::kept`]).
    pub kept: Vec<Kept<'i>>,
    /// Why images stayed although a rule matched them, all reasons.
    pub kept_because: KeptBecause,
    /// `imagePullSecrets` entries the patch adds.
    pub pull_secrets_added: usize,
    /// The `AdmissionReview` response, JSON.
    pub body: Vec<u8>,
}

/// Reviews one `AdmissionReview`. `input` is parsed in place (simd-json
/// unescapes strings inside it), so it is taken mutably.
///
/// An error means the body is not a review ImageSwap can answer (no
/// `request.uid` to echo): the caller answers 400 with the error's text.
/// Everything else is an [`Admission`] with `allowed: true`.
///
/// Both phases at once, without verification or pull secrets: what the
/// request path does when those are off.
pub fn admit<'i>(
    input: &'i mut [u8],
    options: &Options<'_>,
    decider: &impl Decide,
) -> Result<Admission<'i>, BadReview> {
    decide(input, options, &NO_PULL_SECRETS, decider).map(|decided| decided.answer(&[]))
}

static NO_PULL_SECRETS: PullSecrets = PullSecrets::NONE;

/// Phase 1: parses the review and decides every image, gathering what the
/// answer needs from the pod spec (the names in its `imagePullSecrets`
/// when `pull_secrets` has any) while the tape is alive. The result owns
/// no tape, so the request path can wait for the mirror checks of
/// [`Decided::changes`] before [`Decided::answer`] builds the response.
pub fn decide<'i, 'c>(
    input: &'i mut [u8],
    options: &Options<'_>,
    pull_secrets: &'c PullSecrets,
    decider: &impl Decide,
) -> Result<Decided<'i, 'c>, BadReview> {
    let len = input.len();
    decide_padded(input, len, options, pull_secrets, decider)
}

/// [`decide`] of the review `input[..len]`; with at least
/// [`simd_json::INPUT_PADDING`] bytes of any content after it, the parser
/// skips its padded copy of the review (the server's bodies are read so).
pub fn decide_padded<'i, 'c>(
    input: &'i mut [u8],
    len: usize,
    options: &Options<'_>,
    pull_secrets: &'c PullSecrets,
    decider: &impl Decide,
) -> Result<Decided<'i, 'c>, BadReview> {
    let body_len = len.min(input.len());
    scratch::with_tape_padded(input, body_len, |tape| {
        let tape = tape.map_err(|e| BadReview::from_parse_error(&e, body_len))?;
        let review = decode::decode(tape.as_value())?;
        let mut secrets = pull_secrets::Found::default();
        let mut kept = Vec::new();
        let mut kept_because = KeptBecause::default();
        let mut platforms = Vec::new();
        let mut record = original_images::Record::default();
        let (verdict, changes, images) = decide_object(
            &review,
            options,
            pull_secrets,
            (&mut secrets, &mut kept, &mut kept_because, &mut platforms),
            &mut record,
            decider,
        );
        Ok(Decided {
            request: review.info,
            verdict,
            changes,
            images,
            kept,
            kept_because,
            platforms,
            pull_secrets,
            secrets,
            record,
        })
    })
}

/// A review decided, its answer not yet built (see [`decide`]).
#[derive(Debug)]
pub struct Decided<'i, 'c> {
    pub request: RequestInfo<'i>,
    pub verdict: Verdict,
    /// The decided changes, in patch order (also in shadow mode).
    pub changes: Vec<Change<'i>>,
    /// Container images decided.
    pub images: usize,
    /// Images kept although a rule matched them, with why (an invalid
    /// result): each gets a warning and a WARN line.
    pub kept: Vec<Kept<'i>>,
    /// Why images stayed although a rule matched them (phase 1's reasons;
    /// [`Decided::answer`] adds the verification's).
    pub kept_because: KeptBecause,
    /// The platforms the pod may run on, from its spec (empty: it pins
    /// none); read only when there are changes to verify.
    pub platforms: Vec<crate::swap::platform::Platform>,
    pull_secrets: &'c PullSecrets,
    secrets: pull_secrets::Found<'i, 'c>,
    /// The pod template's original-images annotation, read when there are
    /// changes.
    record: original_images::Record<'i>,
}

/// Why a review's images stayed as written although a rule matched them,
/// for the review's log line: `no rule` and `kept: the mirror lacks it`
/// must not read alike (issue 21).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeptBecause(u8);

impl KeptBecause {
    /// The mirror lacks the target (verification).
    pub const MISSING: KeptBecause = KeptBecause(1);
    /// The check could not answer and the on-error policy keeps.
    pub const UNVERIFIED: KeptBecause = KeptBecause(2);
    /// The rule gives an invalid image (maps.md §3 step 7).
    pub const INVALID_RESULT: KeptBecause = KeptBecause(4);
    /// A placeholder of the keep list.
    pub const PLACEHOLDER: KeptBecause = KeptBecause(8);
    /// The mirror's image lacks a platform the pod may run on.
    pub const PLATFORM: KeptBecause = KeptBecause(16);
    const WORDS: [(KeptBecause, &'static str); 5] = [
        (KeptBecause::MISSING, "missing"),
        (KeptBecause::PLATFORM, "platform"),
        (KeptBecause::UNVERIFIED, "unverified"),
        (KeptBecause::INVALID_RESULT, "invalid-result"),
        (KeptBecause::PLACEHOLDER, "placeholder"),
    ];

    pub fn add(&mut self, reason: KeptBecause) {
        self.0 |= reason.0;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The reasons as words joined by `,` (`missing,placeholder`), in a
    /// fixed order; empty when none.
    pub fn words(self) -> String {
        Self::WORDS
            .iter()
            .filter(|(flag, _)| self.0 & flag.0 != 0)
            .map(|(_, word)| *word)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An image left as it is although a rule matched it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept<'i> {
    pub field: ContainerField,
    pub index: usize,
    pub image: &'i str,
    /// Why (`rule KEY gives an invalid image "RESULT"` when written).
    pub reason: Arc<InvalidResult>,
}

impl<'i> Decided<'i, '_> {
    /// Phase 2: the answer, from the changes the verification keeps
    /// (`checks` holds one verdict per change, in order; empty when nothing
    /// was verified, which patches every change), the pull secrets the
    /// final images need, and the warnings. In shadow mode nothing is
    /// patched and nothing warned, whatever the checks said.
    pub fn answer(self, checks: &[Checked]) -> Admission<'i> {
        let Decided {
            request,
            mut verdict,
            mut changes,
            images,
            kept,
            mut kept_because,
            pull_secrets,
            mut secrets,
            record,
            ..
        } = self;
        let mut warnings = Warnings::default();
        if matches!(verdict, Verdict::Patched | Verdict::Unchanged) {
            for k in &kept {
                warnings.kept(k.image, &k.reason);
            }
        }
        if let Verdict::Malformed(problem) = &verdict
            && !checks.is_empty()
        {
            warnings.malformed(problem);
        }
        if verdict == Verdict::Patched && !checks.is_empty() {
            let mut index = 0;
            changes.retain(|change| {
                let checked = checks.get(index).unwrap_or(&Checked::Present);
                index += 1;
                warnings.checked(change, checked);
                match checked {
                    Checked::Missing => kept_because.add(KeptBecause::MISSING),
                    Checked::MissingPlatform(_) => kept_because.add(KeptBecause::PLATFORM),
                    Checked::Unverified { keep: true, .. } => kept_because.add(KeptBecause::UNVERIFIED),
                    _ => {}
                }
                if checked.keeps() {
                    // The original stays: it is the final image.
                    secrets.need(pull_secrets, change.from);
                }
                !checked.keeps()
            });
        }
        let mut pull_secrets_added = 0;
        let mut patch = None;
        if matches!(verdict, Verdict::Patched | Verdict::Unchanged) {
            let template = request
                .kind
                .and_then(podspec::locate)
                .map(|l| l.template)
                .unwrap_or_default();
            if secrets.eligible {
                for change in &changes {
                    secrets.need(pull_secrets, &change.to);
                }
            }
            let mut to_add = secrets.to_add().peekable();
            if !changes.is_empty() || to_add.peek().is_some() {
                // A replace and an entry of the record per change, and the
                // record's op: sized so the patch is written without a
                // reallocation.
                let mut ops = Vec::with_capacity(128 + changes.len() * 192);
                patch::write(&mut ops, template, &changes);
                if to_add.peek().is_some() {
                    // Reopen the list for the `add`s.
                    ops.pop();
                    pull_secrets_added = pull_secrets::write_adds(
                        &mut ops,
                        template,
                        secrets.list_present,
                        to_add,
                        !changes.is_empty(),
                    );
                    ops.push(b']');
                }
                if !changes.is_empty() {
                    // Reopen the list for the record of what was replaced.
                    ops.pop();
                    let recorded = record.write_add(&mut ops, template, &changes);
                    ops.push(b']');
                    if recorded && let Some(old) = record.unparsable() {
                        warnings.unparsable_record(old);
                    }
                }
                patch = Some(ops);
                verdict = Verdict::Patched;
            } else {
                verdict = Verdict::Unchanged;
            }
        }
        // The envelope and the patch in base64 (4 bytes per 3).
        let patch_len = patch.as_ref().map_or(0, Vec::len);
        let mut body = Vec::with_capacity(256 + patch_len / 3 * 4);
        write_answer(&mut body, &request, &verdict, patch.as_deref(), &warnings);
        Admission {
            request,
            verdict,
            changes,
            images,
            kept,
            kept_because,
            pull_secrets_added,
            body,
        }
    }
}

fn decide_object<'i, 'c>(
    review: &decode::Review<'_, 'i>,
    options: &Options<'_>,
    pull_secrets: &'c PullSecrets,
    (secrets, kept, kept_because, platforms): (
        &mut pull_secrets::Found<'i, 'c>,
        &mut Vec<Kept<'i>>,
        &mut KeptBecause,
        &mut Vec<crate::swap::platform::Platform>,
    ),
    record: &mut original_images::Record<'i>,
    decider: &impl Decide,
) -> (Verdict, Vec<Change<'i>>, usize) {
    // The kubelet's `pods/status`, `scale`, `exec`…: never a patch. Only
    // `ephemeralcontainers` adds images to a running pod.
    if review
        .info
        .sub_resource
        .is_some_and(|sub| sub != EPHEMERAL_CONTAINERS_SUBRESOURCE)
    {
        return (Verdict::Subresource, Vec::new(), 0);
    }
    let Some(kind) = review.info.kind else {
        return (Verdict::UnknownKind, Vec::new(), 0);
    };
    let Some(location) = podspec::locate(kind) else {
        return (Verdict::UnknownKind, Vec::new(), 0);
    };
    let object = match review.object {
        decode::Object::Absent => return (Verdict::NoPodSpec, Vec::new(), 0),
        decode::Object::Malformed(found) => {
            let message = format!("request.object must be an object, found {found}");
            return (Verdict::Malformed(message), Vec::new(), 0);
        }
        decode::Object::Present(object) => object,
    };
    let pod = match podspec::find(object, Some(review.object_members.spec), location) {
        Ok(Some(pod)) => pod,
        Ok(None) => return (Verdict::NoPodSpec, Vec::new(), 0),
        Err(message) => return (Verdict::Malformed(message), Vec::new(), 0),
    };
    // A Pod is its own template: its labels are read once.
    let template_is_object = location.template.is_empty();
    if podspec::labels_disable(review.object_members.labels, options.disable_label)
        || (!template_is_object && podspec::disabled(pod.template, options.disable_label))
    {
        return (Verdict::Disabled, Vec::new(), 0);
    }
    if !pull_secrets.is_empty() {
        // Never on a Pod UPDATE: a Pod's imagePullSecrets is immutable.
        let pod_update = location.template.is_empty() && review.info.operation == Some("UPDATE");
        *secrets = pull_secrets::Found::read(pod.spec, !pod_update);
    }
    let admitted = admitted_images(review, location);
    let mut changes = Vec::new();
    let mut decided = 0usize;
    let spec = podspec::SpecMembers::of(pod.spec);
    let walk = podspec::for_each_image(&spec, location, |found| {
        if admitted.iter().any(|old| old.is_same_container(&found)) {
            // Admitted before (an UPDATE that left this image alone): it
            // may already be swapped, and swapping it again would restart
            // the container on an image that may not exist.
            secrets.need(pull_secrets, found.image);
            return Ok(());
        }
        if decided.is_multiple_of(IMAGES_PER_DEADLINE_CHECK)
            && options.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(Verdict::DeadlineExceeded);
        }
        decided += 1;
        let decision = decider.decide(found.image);
        match decision.result {
            Some(to) => {
                if changes.is_empty() {
                    // Read once, and only for a review that swaps.
                    *record = if template_is_object {
                        let found = review.object_members;
                        original_images::Record::read_members(found.metadata, found.annotations)
                    } else {
                        original_images::Record::read(pod.template)
                    };
                }
                if let Some(name) = found.name
                    && let Some(recorded) = record.recorded(name)
                    && recorded != found.image
                    && decider.decide(recorded).result.as_deref() == Some(found.image)
                {
                    // The current image is what the recorded original
                    // swaps to: that original is still the one written.
                    record.keep_first(name);
                }
                changes.push(Change {
                    field: found.field,
                    index: found.index,
                    name: found.name,
                    from: found.image,
                    to,
                    rule: decision.rule,
                })
            }
            // Left as it is: the image is final already.
            None => {
                match decision.rule {
                    Rule::InvalidResult => kept_because.add(KeptBecause::INVALID_RESULT),
                    Rule::KeptPlaceholder => kept_because.add(KeptBecause::PLACEHOLDER),
                    _ => {}
                }
                if let Some(reason) = decision.kept {
                    kept.push(Kept {
                        field: found.field,
                        index: found.index,
                        image: found.image,
                        reason,
                    });
                }
                secrets.need(pull_secrets, found.image)
            }
        }
        Ok(())
    });
    let verdict = match walk {
        Err(verdict) => {
            changes.clear();
            verdict
        }
        Ok(()) if changes.is_empty() => Verdict::Unchanged,
        Ok(()) if options.shadow => Verdict::Shadowed,
        Ok(()) => Verdict::Patched,
    };
    if !changes.is_empty() {
        *platforms = platforms::of_pod(&spec);
    }
    (verdict, changes, decided)
}

/// The subresource whose UPDATE adds containers (`kubectl debug`).
const EPHEMERAL_CONTAINERS_SUBRESOURCE: &str = "ephemeralcontainers";

/// On an UPDATE, the images of `oldObject`'s pod spec: a container whose
/// image is the same as in the old object, for the container of the same
/// name in the same list, was admitted before and is left alone. Read
/// leniently: an old object without a readable pod spec admits nothing.
fn admitted_images<'i>(
    review: &decode::Review<'_, 'i>,
    location: &podspec::Location,
) -> Vec<podspec::Image<'i>> {
    let mut admitted = Vec::new();
    if review.info.operation != Some("UPDATE") {
        return admitted;
    }
    let Some(old) = review.old_object else {
        return admitted;
    };
    if let Ok(Some(pod)) = podspec::find(old, None, location) {
        let _ = podspec::for_each_image(&podspec::SpecMembers::of(pod.spec), location, |image| {
            admitted.push(image);
            Ok(())
        });
    }
    admitted
}

fn write_answer(
    out: &mut Vec<u8>,
    info: &RequestInfo<'_>,
    verdict: &Verdict,
    patch: Option<&[u8]>,
    warnings: &Warnings,
) {
    if warnings.is_empty() {
        let warning = match verdict {
            Verdict::Malformed(message) => Some(message.as_str()),
            _ => None,
        };
        json::write_response(out, info.api_version, info.uid, patch, warning);
        return;
    }
    // More than the one warning `write_response` knows: its document ends
    // `}}` (response, review), so the list goes in before that.
    json::write_response(out, info.api_version, info.uid, patch, None);
    if out.ends_with(b"}}") {
        out.truncate(out.len() - 2);
        warnings.write(out);
        out.extend_from_slice(b"}}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LABEL: &str = "k8s.twr.io/imageswap";

    fn options() -> Options<'static> {
        Options {
            disable_label: LABEL,
            shadow: false,
            deadline: None,
        }
    }

    /// Prefixes every image with `m/`, naming the rule `default`.
    fn mirror(image: &str) -> ImageDecision {
        ImageDecision {
            result: Some(Arc::from(format!("m/{image}"))),
            rule: Rule::Default,
            kept: None,
        }
    }

    fn review(request: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
        }))
        .expect("json")
    }

    fn pod(spec: serde_json::Value) -> Vec<u8> {
        review(
            serde_json::json!({"uid": "u1", "kind": {"kind": "Pod"}, "object": {"kind": "Pod", "spec": spec}}),
        )
    }

    fn run(mut body: Vec<u8>) -> Result<(Verdict, serde_json::Value), BadReview> {
        let admission = admit(&mut body, &options(), &mirror)?;
        let answer = serde_json::from_slice(&admission.body).expect("answer is JSON");
        Ok((admission.verdict, answer))
    }

    fn bad(body: &[u8]) -> String {
        match run(body.to_vec()) {
            Err(e) => e.to_string(),
            Ok((verdict, _)) => panic!("accepted as {verdict:?}"),
        }
    }

    /// A Pod UPDATE from `old` to `new` container lists.
    fn pod_update(old: serde_json::Value, new: serde_json::Value, sub: Option<&str>) -> Vec<u8> {
        let mut request = serde_json::json!({
            "uid": "u1", "kind": {"kind": "Pod"}, "operation": "UPDATE",
            "object": {"kind": "Pod", "spec": new},
            "oldObject": {"kind": "Pod", "spec": old},
        });
        if let Some(sub) = sub {
            request["subResource"] = serde_json::json!(sub);
        }
        review(request)
    }

    fn swapped(mut body: Vec<u8>) -> Vec<(String, String)> {
        let admission = admit(&mut body, &options(), &mirror).expect("answered");
        admission
            .changes
            .iter()
            .map(|c| (format!("{}/{}", c.field.as_str(), c.index), c.to.to_string()))
            .collect()
    }

    #[test]
    fn an_update_decides_only_new_or_changed_images() {
        // `mirror` is not idempotent (m/x becomes m/m/x): re-deciding an
        // admitted image would double its prefix, as a maps file like
        // `default::harbor.example.com/proj` does.
        let old = serde_json::json!({
            "initContainers": [{"name": "init", "image": "m/busybox"}],
            "containers": [{"name": "app", "image": "m/nginx"}, {"name": "side", "image": "m/redis"}],
        });
        let new = serde_json::json!({
            "initContainers": [{"name": "init", "image": "m/busybox"}],
            "containers": [
                {"name": "app", "image": "m/nginx"},
                {"name": "side", "image": "redis:8"},
                {"name": "new", "image": "envoy"},
                {"image": "unnamed"},
                {"name": "init", "image": "m/busybox"},
            ],
        });
        assert_eq!(
            swapped(pod_update(old.clone(), new.clone(), None)),
            [
                ("containers/1".to_owned(), "m/redis:8".to_owned()),
                ("containers/2".to_owned(), "m/envoy".to_owned()),
                ("containers/3".to_owned(), "m/unnamed".to_owned()),
                // Same name and image, but another list: not admitted there.
                ("containers/4".to_owned(), "m/m/busybox".to_owned()),
            ]
        );
        // A CREATE decides everything, whatever oldObject says.
        let mut create = pod_update(old, new, None);
        let text = String::from_utf8(create.clone())
            .expect("utf-8")
            .replace("UPDATE", "CREATE");
        create = text.into_bytes();
        assert_eq!(swapped(create).len(), 6);
    }

    #[test]
    fn subresources_other_than_ephemeral_containers_get_no_patch() {
        let old = serde_json::json!({"containers": [{"name": "app", "image": "nginx:1"}]});
        let new = serde_json::json!({
            "containers": [{"name": "app", "image": "nginx:2"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        });
        for sub in ["status", "scale", "exec", "binding"] {
            let mut body = pod_update(old.clone(), new.clone(), Some(sub));
            let admission = admit(&mut body, &options(), &mirror).expect("answered");
            assert_eq!(admission.verdict, Verdict::Subresource, "{sub}");
            let answer: serde_json::Value = serde_json::from_slice(&admission.body).expect("json");
            assert!(answer["response"]["patch"].is_null(), "{sub}: {answer}");
        }
        assert_eq!(
            swapped(pod_update(old, new, Some("ephemeralcontainers"))),
            [
                ("containers/0".to_owned(), "m/nginx:2".to_owned()),
                ("ephemeralContainers/0".to_owned(), "m/busybox".to_owned()),
            ]
        );
    }

    #[test]
    fn repeated_keys_are_read_as_go_reads_them_the_last_one_wins() {
        // Python's json (like Go's encoding/json, which the API server uses)
        // keeps the last of a repeated key; so does the review decoder.
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"first","uid":"last","kind":{"kind":"Deployment"},"kind":{"kind":"Pod"},
            "object":{"metadata":{"labels":{"k8s.twr.io/imageswap":"disabled"}},"spec":{}},
            "object":{"kind":"Pod","metadata":{"labels":{"k8s.twr.io/imageswap":"disabled","k8s.twr.io/imageswap":"enabled"}},
              "spec":{"containers":[{"image":"hidden-list"},{"image":"hidden-list"}],
                "containers":[{"name":"a","image":"hidden","image":"nginx"}]}}}}"#;
        let as_go: serde_json::Value = serde_json::from_slice(body).expect("json");
        assert_eq!(as_go["request"]["uid"], "last", "serde_json keeps the last too");
        let (verdict, answer) = run(body.to_vec()).expect("answered");
        assert_eq!(verdict, Verdict::Patched);
        assert_eq!(answer["response"]["uid"], "last");
        let patch = crate::admission::tests::decoded(&answer);
        assert_eq!(patch[0]["path"], "/spec/containers/0/image");
        assert_eq!(patch[0]["value"], "m/nginx");
        // One replace (only the last list), then the record of the
        // original, read from the last `image` too.
        assert_eq!(
            patch.as_array().map(Vec::len),
            Some(2),
            "only the last list: {patch}"
        );
        assert_eq!(
            patch[1]["value"],
            serde_json::json!({ORIGINAL_IMAGES_ANNOTATION: r#"{"a":"nginx"}"#})
        );
    }

    fn decoded(answer: &serde_json::Value) -> serde_json::Value {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().expect("a patch"))
            .expect("base64");
        serde_json::from_slice(&raw).expect("patch is JSON")
    }

    #[test]
    fn envelope_errors_name_the_json_path() {
        // In words, never simd-json's enum names.
        for (body, words) in [
            (
                &b"not json"[..],
                "not JSON: a word that is not null, true or false near byte 0 (`n`)",
            ),
            (b"", "not JSON: the body is empty"),
            (b"   ", "not JSON: the body ends before a JSON value does"),
            (b"\xff\xfe", "not JSON: bytes that are not UTF-8 near byte 0"),
            (b"[1.e]", "not JSON: a malformed number near byte 3 (`e`)"),
            (b"{\"a\" 1}", "not JSON: a malformed object near byte 5 (`1`)"),
            (b"[1 2]", "not JSON: a malformed array near byte 3 (`2`)"),
            (b"{\"a\":1} x", "not JSON: malformed JSON near byte 6 (`}`)"),
        ] {
            assert_eq!(bad(body), words, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            bad(b"[1]"),
            "`$` must be an object (an AdmissionReview), found an array"
        );
        assert_eq!(bad(b"{}"), "`apiVersion` is missing");
        assert_eq!(
            bad(br#"{"apiVersion":"v1","kind":"AdmissionReview"}"#),
            "`apiVersion` must be \"admission.k8s.io/v1\" or \"admission.k8s.io/v1beta1\", found \"v1\""
        );
        assert_eq!(
            bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#),
            "`kind` must be \"AdmissionReview\", found \"Pod\""
        );
        assert_eq!(
            bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
            "`request` is missing"
        );
        assert_eq!(
            bad(&review(serde_json::json!([]))),
            "`request` must be an object, found an array"
        );
        assert_eq!(bad(&review(serde_json::json!({}))), "`request.uid` is missing");
        assert_eq!(
            bad(&review(serde_json::json!({"uid": 42}))),
            "`request.uid` must be a string, found a number"
        );
        assert_eq!(
            bad(&review(serde_json::json!({"uid": ""}))),
            "`request.uid` is empty"
        );
    }

    #[test]
    fn malformed_objects_are_allowed_with_a_warning_naming_the_path() {
        let cases = [
            (
                serde_json::json!({"containers": "nginx"}),
                "request.object.spec.containers must be an array, found a string",
            ),
            (
                serde_json::json!({"containers": [{"image": "a"}], "initContainers": [7]}),
                "request.object.spec.initContainers[0] must be an object, found a number",
            ),
            (
                serde_json::json!({"ephemeralContainers": [{"image": "a"}, {"image": ["x"]}]}),
                "request.object.spec.ephemeralContainers[1].image must be a string, found an array",
            ),
        ];
        for (spec, message) in cases {
            let (verdict, answer) = run(pod(spec)).expect("answered");
            assert_eq!(verdict, Verdict::Malformed(message.to_owned()));
            assert_eq!(answer["response"]["allowed"], true);
            assert!(answer["response"].get("patch").is_none());
            let warning = answer["response"]["warnings"][0].as_str().expect("warning");
            assert!(warning.contains(message), "{warning}");
        }
        let body = review(serde_json::json!({"uid": "u", "kind": {"kind": "CronJob"},
            "object": {"spec": {"jobTemplate": []}}}));
        let (verdict, _) = run(body).expect("answered");
        assert_eq!(
            verdict,
            Verdict::Malformed("request.object.spec.jobTemplate must be an object, found an array".into())
        );
        let body = review(serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "object": "x"}));
        assert!(matches!(run(body).expect("answered").0, Verdict::Malformed(_)));
    }

    #[test]
    fn missing_pieces_mean_no_pod_spec() {
        let body = review(
            serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "operation": "DELETE",
            "object": null, "oldObject": {"spec": {"containers": [{"image": "a"}]}}}),
        );
        assert_eq!(run(body).expect("answered").0, Verdict::NoPodSpec);
        let body =
            review(serde_json::json!({"uid": "u", "kind": {"kind": "Deployment"}, "object": {"spec": {}}}));
        assert_eq!(run(body).expect("answered").0, Verdict::NoPodSpec);
        // A container without an image (a template filled in later) is skipped.
        let (verdict, answer) = run(pod(
            serde_json::json!({"containers": [{"name": "x"}, {"image": "b"}]}),
        ))
        .expect("answered");
        assert_eq!(verdict, Verdict::Patched);
        assert!(answer["response"]["patch"].is_string());
    }

    #[test]
    fn images_counts_every_decided_image() {
        let mut body = pod(serde_json::json!({"containers": [{"image": "a"}, {"image": "b"}],
            "initContainers": [{"image": "c"}], "ephemeralContainers": [{"name": "no-image"}]}));
        let unchanged = |_: &str| ImageDecision {
            result: None,
            rule: Rule::Default,
            kept: None,
        };
        let admission = admit(&mut body, &options(), &unchanged).expect("answered");
        assert_eq!((admission.verdict, admission.images), (Verdict::Unchanged, 3));
        let mut body = pod(serde_json::json!({"containers": [{"image": "a"}]}));
        let admission = admit(&mut body, &options(), &mirror).expect("answered");
        assert_eq!((admission.images, admission.changes.len()), (1, 1));
        let mut body = review(serde_json::json!({"uid": "u", "kind": {"kind": "Service"}, "object": {}}));
        assert_eq!(admit(&mut body, &options(), &mirror).expect("answered").images, 0);
    }

    #[test]
    fn kind_comes_from_the_request_else_the_object() {
        let body = review(serde_json::json!({"uid": "u", "object": {"kind": "Pod",
            "spec": {"containers": [{"image": "a"}]}}}));
        assert_eq!(run(body).expect("answered").0, Verdict::Patched);
        let body =
            review(serde_json::json!({"uid": "u", "object": {"spec": {"containers": [{"image": "a"}]}}}));
        assert_eq!(run(body).expect("answered").0, Verdict::UnknownKind);
    }

    #[test]
    fn only_the_exact_word_disabled_opts_out() {
        for (value, expected) in [
            ("disabled", Verdict::Disabled),
            ("Disabled", Verdict::Patched),
            ("", Verdict::Patched),
        ] {
            let body = review(
                serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "object": {
                "metadata": {"labels": {LABEL: value}}, "spec": {"containers": [{"image": "a"}]}}}),
            );
            assert_eq!(run(body).expect("answered").0, expected, "{value:?}");
        }
    }

    #[test]
    fn a_passed_deadline_answers_without_a_patch() {
        let mut body = pod(serde_json::json!({"containers": [{"image": "a"}, {"image": "b"}]}));
        let options = Options {
            deadline: Some(Instant::now()),
            ..options()
        };
        let admission = admit(&mut body, &options, &mirror).expect("answered");
        assert_eq!(admission.verdict, Verdict::DeadlineExceeded);
        let answer: serde_json::Value = serde_json::from_slice(&admission.body).expect("json");
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
    }

    #[test]
    fn a_slow_decider_is_cut_off_at_the_deadline() {
        let images: Vec<serde_json::Value> = (0..64)
            .map(|i| serde_json::json!({"image": format!("img{i}")}))
            .collect();
        let mut body = pod(serde_json::json!({ "containers": images }));
        let calls = std::cell::Cell::new(0);
        let slow = |image: &str| {
            calls.set(calls.get() + 1);
            std::thread::sleep(Duration::from_millis(5));
            mirror(image)
        };
        let options = Options {
            deadline: Some(Instant::now() + Duration::from_millis(20)),
            ..options()
        };
        let admission = admit(&mut body, &options, &slow).expect("answered");
        assert_eq!(admission.verdict, Verdict::DeadlineExceeded);
        assert!(calls.get() < 64, "stopped early after {} decisions", calls.get());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let depth = 100_000;
        let mut body =
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":"#
                .to_vec();
        body.extend(std::iter::repeat_n(b'[', depth));
        body.extend(std::iter::repeat_n(b']', depth));
        body.extend_from_slice(b"}}");
        let message = bad(&body);
        assert!(message.contains("deeper than 1024"), "{message}");
    }

    #[test]
    fn escaped_strings_are_unescaped_and_echoed_safely() {
        let body = review(serde_json::json!({"uid": "a\"b\\c\u{1}", "kind": {"kind": "Pod"},
            "object": {"spec": {"containers": [{"image": "ngin\u{78}"}]}}}));
        let (_, answer) = run(body).expect("answered");
        assert_eq!(answer["response"]["uid"], "a\"b\\c\u{1}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut body = bytes;
            let _ = admit(&mut body, &options(), &mirror);
        }

        #[test]
        fn arbitrary_json_in_the_object_never_panics(object in arb_json()) {
            let mut body = review(serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "object": object}));
            let admission = admit(&mut body, &options(), &mirror);
            proptest::prop_assert!(admission.is_ok());
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i32>().prop_map(|n| serde_json::json!(n)),
            prop_oneof![
                Just("spec"),
                Just("containers"),
                Just("image"),
                Just("nginx"),
                Just("")
            ]
            .prop_map(|s| serde_json::json!(s)),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("spec"),
                            Just("containers"),
                            Just("initContainers"),
                            Just("image"),
                            Just("metadata")
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| serde_json::Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }
}
