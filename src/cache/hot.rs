//! A small memo of the latest decisions on each thread, in front of the
//! shared moka cache: a lookup there hashes the image with SipHash, walks
//! the concurrent table, reads the clock for expiry and queues the read for
//! the eviction policy, about 1 k instructions; the 4 lookups of the
//! 4-container review cost 4.1 k instructions of an admission. A slot of
//! this memo costs one multiplicative hash and one compare: the decisions
//! of that review went from 8.8 k to 5.6 k instructions
//! (`loadtest/profile.sh` on a build without LTO).
//!
//! Each memo belongs to one [`RulesState`](super::RulesState), named by its
//! id: a thread that meets a newer state (a maps reload) empties its memo
//! first, so a decision never outlives the maps file that made it, as with
//! the moka cache that is dropped with its state.

use std::cell::RefCell;
use std::sync::Arc;

use crate::admission::ImageDecision;

/// Slots per thread (a power of two). Direct-mapped: an image whose slot
/// holds another simply goes on to the moka cache and takes the slot.
const SLOTS: usize = 256;
const SLOT_BITS: u32 = SLOTS.trailing_zeros();

/// The owner of a rules state that caches nothing (capacity 0): no memo.
pub(super) const NO_MEMO: u64 = 0;

/// The memo of one thread.
struct HotDecisions {
    /// The id of the rules state the slots were filled from.
    owner: u64,
    slots: Vec<Option<(Arc<str>, ImageDecision)>>,
}

thread_local! {
    static HOT: RefCell<HotDecisions> = const {
        RefCell::new(HotDecisions { owner: 0, slots: Vec::new() })
    };
}

/// The memo's decision for `image` under the rules state `owner`, if it has one.
pub(super) fn get(owner: u64, image: &str) -> Option<ImageDecision> {
    if owner == NO_MEMO {
        return None;
    }
    HOT.with(|hot| {
        let hot = hot.try_borrow().ok()?;
        if hot.owner != owner {
            return None;
        }
        match hot.slots.get(slot_of(image))? {
            Some((key, decision)) if **key == *image => Some(decision.clone()),
            _ => None,
        }
    })
}

/// Remembers `decision` for `image` under the rules state `owner`; a memo
/// of another state is emptied first.
pub(super) fn put(owner: u64, image: &str, decision: &ImageDecision) {
    if owner == NO_MEMO {
        return;
    }
    HOT.with(|hot| {
        let Ok(mut hot) = hot.try_borrow_mut() else {
            return;
        };
        if hot.owner != owner || hot.slots.is_empty() {
            hot.owner = owner;
            hot.slots.clear();
            hot.slots.resize(SLOTS, None);
        }
        if let Some(slot) = hot.slots.get_mut(slot_of(image)) {
            *slot = Some((Arc::from(image), decision.clone()));
        }
    });
}

/// The slot of an image: a rotate-xor-multiply hash (FxHash's) over its
/// bytes eight at a time. Not keyed: an image chosen to collide only sends
/// its lookups on to the moka cache.
fn slot_of(image: &str) -> usize {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let bytes = image.as_bytes();
    let mut hash = bytes.len() as u64;
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(*word)).wrapping_mul(K);
    }
    // The bytes after the last whole word: as the string's last eight
    // (overlapping bytes hashed already; the length, hashed first, tells
    // such images apart) rather than copied one by one into a word, unless
    // the image is shorter than a word (the four lookups of the
    // 4-container review 0.66 k → 0.52 k instructions, `loadtest/profile.sh`,
    // LTO, issue 24).
    let last = match bytes.last_chunk::<8>() {
        Some(last) if !rest.is_empty() => *last,
        _ => {
            let mut last = [0u8; 8];
            for (to, from) in last.iter_mut().zip(rest) {
                *to = *from;
            }
            last
        }
    };
    hash = (hash.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    // The high bits are the well-mixed ones.
    (hash >> (u64::BITS - SLOT_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::Rule;

    fn decision(to: &str) -> ImageDecision {
        ImageDecision {
            result: Some(Arc::from(to)),
            rule: Rule::Default,
            kept: None,
        }
    }

    #[test]
    fn a_decision_is_found_only_for_its_image_and_its_rules_state() {
        put(7, "nginx:1", &decision("a/nginx:1"));
        assert_eq!(get(7, "nginx:1"), Some(decision("a/nginx:1")));
        assert_eq!(get(7, "nginx:2"), None);
        assert_eq!(get(8, "nginx:1"), None, "another rules state");
        put(8, "redis", &decision("b/redis"));
        assert_eq!(get(7, "nginx:1"), None, "emptied for the newer state");
        assert_eq!(get(8, "redis"), Some(decision("b/redis")));
    }

    #[test]
    fn slots_spread_images_and_stay_in_range() {
        let images: Vec<String> = (0..SLOTS * 4)
            .map(|i| format!("registry.example.com/team/app-{i}:v{i}"))
            .collect();
        let used: std::collections::HashSet<usize> = images.iter().map(|i| slot_of(i)).collect();
        assert!(used.iter().all(|&s| s < SLOTS));
        // 1024 images over 256 slots leave almost none empty when spread well.
        assert!(
            used.len() > SLOTS * 9 / 10,
            "{} of {SLOTS} slots used",
            used.len()
        );
        assert_ne!(slot_of("a"), slot_of("b"));
    }
}
