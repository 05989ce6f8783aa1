//! The decision cache: image → (result, rule), in front of the swap engine.
//!
//! Clusters run the same few hundred images over and over, so nearly every
//! decision is a cache hit. The cache lives *inside* [`RulesState`] with the
//! engine that filled it: a maps reload publishes a new state (new engine,
//! empty cache) in one atomic swap, and a request that loaded the old state
//! keeps using the old pair to its end. No response can mix two maps files.

mod hot;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwapOption, Guard};

use crate::admission::{Decide, ImageDecision};
use crate::settings::setting;
use crate::swap::Engine;

/// Distinct images remembered; a large cluster runs a few thousand.
pub const DEFAULT_CACHE_CAPACITY: &str = "10000";

/// The cache's one setting.
#[derive(Clone, Debug, clap::Args)]
pub struct CacheArgs {
    /// Image decisions remembered (entries; 0 disables the cache).
    #[arg(long, env = "IMAGESWAP_CACHE_CAPACITY", default_value = DEFAULT_CACHE_CAPACITY,
        value_parser = setting::<u64>())]
    pub cache_capacity: u64,
}

/// The rules every request reads, and why there are none yet: the handle the
/// server start and the maps reloader publish into. One `ArcSwap` load per
/// request; a publish never blocks a reader.
#[derive(Debug, Default)]
pub struct PublishedRules {
    current: ArcSwapOption<RulesState>,
    error: ArcSwapOption<String>,
}

impl PublishedRules {
    pub fn new() -> PublishedRules {
        PublishedRules::default()
    }

    /// The current rules; `None` until a maps file (or the LEGACY prefix)
    /// has been loaded once.
    pub fn load(&self) -> Guard<Option<Arc<RulesState>>> {
        self.current.load()
    }

    /// Publishes new rules (and their empty cache) for the next requests.
    pub fn publish(&self, state: RulesState) {
        self.current.store(Some(Arc::new(state)));
        self.error.store(None);
    }

    /// Records why the first load failed, for `/readyz`; published rules
    /// stay as they are.
    pub fn set_error(&self, error: String) {
        self.error.store(Some(Arc::new(error)));
    }

    /// Why no rules are published, when a load has failed.
    pub fn error(&self) -> Option<Arc<String>> {
        self.error.load_full()
    }
}

/// Longest image cached. Valid references stay well below this (a 255-byte
/// name, a 128-byte tag and a digest); anything longer is invalid input that
/// is decided every time rather than letting one pod fill the cache with
/// megabytes of junk.
pub const MAX_CACHED_IMAGE_BYTES: usize = 1024;

/// An engine and the cache of its decisions, published and dropped together.
pub struct RulesState {
    engine: Engine,
    cache: moka::sync::Cache<Arc<str>, ImageDecision>,
    /// Names this state for the threads' memos of its decisions ([`hot`]);
    /// `hot::NO_MEMO` when caching is off (no memo either).
    id: u64,
}

/// The ids of rules states, never reused (0 is `hot::NO_MEMO`).
static NEXT_STATE_ID: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for RulesState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesState")
            .field("engine", &self.engine.mode())
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl RulesState {
    /// `capacity` is in entries; 0 disables caching.
    pub fn new(engine: Engine, capacity: u64) -> RulesState {
        RulesState {
            engine,
            cache: moka::sync::Cache::builder().max_capacity(capacity).build(),
            id: if capacity == 0 {
                hot::NO_MEMO
            } else {
                NEXT_STATE_ID.fetch_add(1, Ordering::Relaxed)
            },
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A decider for one request, counting its own hits and misses so the
    /// shared metrics are touched once per request, not once per image.
    pub fn decider(&self) -> CachedDecider<'_> {
        CachedDecider {
            state: self,
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    fn decide_uncached(&self, image: &str) -> ImageDecision {
        ImageDecision::from(self.engine.decide(image))
    }
}

/// The cache-then-engine [`Decide`] of one request.
pub struct CachedDecider<'s> {
    state: &'s RulesState,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl CachedDecider<'_> {
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    pub fn misses(&self) -> u64 {
        self.misses.get()
    }
}

impl Decide for CachedDecider<'_> {
    fn decide(&self, image: &str) -> ImageDecision {
        if image.len() > MAX_CACHED_IMAGE_BYTES {
            return self.state.decide_uncached(image);
        }
        let id = self.state.id;
        if let Some(hit) = hot::get(id, image) {
            self.hits.set(self.hits.get() + 1);
            return hit;
        }
        if let Some(hit) = self.state.cache.get(image) {
            self.hits.set(self.hits.get() + 1);
            hot::put(id, image, &hit);
            return hit;
        }
        self.misses.set(self.misses.get() + 1);
        let decision = self.state.decide_uncached(image);
        self.state.cache.insert(Arc::from(image), decision.clone());
        hot::put(id, image, &decision);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::Rule;

    fn state(maps: &str, capacity: u64) -> RulesState {
        RulesState::new(Engine::from_maps_text(maps).0, capacity)
    }

    #[test]
    fn second_lookup_is_a_hit_with_the_same_decision() {
        let s = state("default::mirror.example", 100);
        let d = s.decider();
        let first = d.decide("nginx:1");
        let second = d.decide("nginx:1");
        assert_eq!(first, second);
        assert_eq!(first.result.as_deref(), Some("mirror.example/nginx:1"));
        assert_eq!(first.rule, Rule::Default);
        assert_eq!((d.hits(), d.misses()), (1, 1));
    }

    #[test]
    fn long_images_are_decided_but_never_cached() {
        let s = state("default::mirror.example", 100);
        let d = s.decider();
        let long = "a".repeat(MAX_CACHED_IMAGE_BYTES + 1);
        assert_eq!(d.decide(&long).rule, Rule::Invalid);
        assert_eq!(d.decide(&long).rule, Rule::Invalid);
        assert_eq!((d.hits(), d.misses()), (0, 0));
        s.cache.run_pending_tasks();
        assert_eq!(s.cache.entry_count(), 0);
    }

    #[test]
    fn a_new_rules_state_never_answers_with_the_old_ones_decisions() {
        // Same thread, same image, the maps changed in between: the
        // thread's memo belongs to the first state and must not answer.
        let old = state("default::old.example", 100);
        let d = old.decider();
        assert_eq!(d.decide("nginx").result.as_deref(), Some("old.example/nginx"));
        assert_eq!(d.decide("nginx").result.as_deref(), Some("old.example/nginx"));
        assert_eq!((d.hits(), d.misses()), (1, 1));
        let new = state("default::new.example", 100);
        let d = new.decider();
        assert_eq!(d.decide("nginx").result.as_deref(), Some("new.example/nginx"));
        assert_eq!((d.hits(), d.misses()), (0, 1));
        // And the old state, still in use by a request that loaded it, keeps its own answers.
        assert_eq!(
            old.decider().decide("nginx").result.as_deref(),
            Some("old.example/nginx")
        );
    }

    #[test]
    fn many_images_on_one_thread_each_get_their_own_decision() {
        // More images than the thread's memo has slots: collisions go on
        // to the moka cache, and every answer is still the engine's.
        let s = state("default::mirror.example", 100_000);
        let images: Vec<String> = (0..2_000).map(|i| format!("team-{}/app:{i}", i % 7)).collect();
        for round in 0..3 {
            let d = s.decider();
            for image in &images {
                assert_eq!(
                    d.decide(image),
                    s.decide_uncached(image),
                    "round {round}: {image}"
                );
            }
            if round > 0 {
                assert_eq!((d.hits(), d.misses()), (2_000, 0), "round {round}");
            }
        }
    }

    #[test]
    fn capacity_zero_still_decides() {
        let s = state("default::mirror.example", 0);
        let d = s.decider();
        assert_eq!(d.decide("nginx").result.as_deref(), Some("mirror.example/nginx"));
        assert_eq!(d.decide("nginx").result.as_deref(), Some("mirror.example/nginx"));
        assert_eq!((d.hits(), d.misses()), (0, 2), "no memo either");
    }
}
