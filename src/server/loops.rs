//! The recreate-loop signal (issue 22): a controller that compares a pod's
//! image with the one it asked for (CloudNativePG's #3231 was the original
//! ImageSwap) deletes the swapped pod and creates it again, forever. The
//! same fixed-name pod (no `generateName`: a ReplicaSet's pods get a new
//! name each time and are never counted) created and swapped
//! `IMAGESWAP_LOOP_THRESHOLD` times within [`LOOP_WINDOW`] gives one WARN
//! line naming namespace, name and owner, and
//! `imageswap_recreate_loops_total` counts it: once per episode, which
//! ends when the pod has not been created for a whole window.
//!
//! The counts live in a moka cache capped at [`LOOP_TRACKED_PODS_MAX`]
//! entries, each forgotten after a window without a creation: a cluster
//! creating many distinct fixed-name pods cannot grow it (a loop among
//! more than the cap may then go unnoticed; the cap is far above the few
//! pods a loop involves).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admission::{Admission, Verdict};
use crate::telemetry::metrics::Metrics;

/// Creations of one pod counted together.
pub const LOOP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Fixed-name pods followed at once (about 200 bytes each).
pub const LOOP_TRACKED_PODS_MAX: u64 = 10_000;
/// `IMAGESWAP_LOOP_THRESHOLD`'s default.
pub const DEFAULT_LOOP_THRESHOLD: u64 = 5;

/// The creations of one pod name in its current window.
#[derive(Debug)]
struct Creations {
    window_start: Instant,
    count: u64,
    /// This episode was reported already.
    reported: bool,
}

thread_local! {
    /// The `namespace/name` being looked up, kept between lookups.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Counts swapped creations of fixed-name pods (see the module docs).
pub struct RecreateLoops {
    /// 0: off.
    threshold: u64,
    /// `namespace/name` → its creations.
    pods: moka::sync::Cache<Box<str>, Arc<Mutex<Creations>>, foldhash::quality::RandomState>,
}

impl std::fmt::Debug for RecreateLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecreateLoops")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl RecreateLoops {
    /// Reports a pod created `threshold` times in a window (0: never).
    pub fn new(threshold: u64) -> RecreateLoops {
        RecreateLoops::with_capacity(threshold, LOOP_TRACKED_PODS_MAX)
    }

    /// [`RecreateLoops::new`] following at most `capacity` pods.
    pub fn with_capacity(threshold: u64, capacity: u64) -> RecreateLoops {
        RecreateLoops {
            threshold,
            pods: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(LOOP_WINDOW)
                // Seeded per process like std's SipHash, for keys a tenant
                // chooses, and cheaper on these short keys.
                .build_with_hasher(foldhash::quality::RandomState::default()),
        }
    }

    /// Counts `admission` if it is the swapped creation of a fixed-name
    /// pod (not a dry run): logs and counts a loop when this creation
    /// reaches the threshold. Returns whether it did.
    pub fn admitted(&self, admission: &Admission<'_>, metrics: &Metrics) -> bool {
        let info = &admission.request;
        if admission.verdict != Verdict::Patched
            || admission.changes.is_empty()
            || info.operation != Some("CREATE")
            || info.kind != Some("Pod")
            || info.dry_run
            || info.generate_name
        {
            return false;
        }
        let (Some(namespace), Some(name)) = (info.namespace, info.name) else {
            return false;
        };
        if !self.created(namespace, name, Instant::now()) {
            return false;
        }
        let (owner_kind, owner_name) = info.owner.unwrap_or_default();
        tracing::warn!(
            namespace,
            name,
            owner_kind,
            owner_name,
            creations = self.threshold,
            window = %humantime::format_duration(LOOP_WINDOW),
            "Pod recreated in a loop: the same pod was created and swapped again and again; its controller may be undoing the swap (docs/operations.md)."
        );
        metrics.recreate_loop();
        true
    }

    /// One swapped creation of `namespace/name` at `now`: whether it is
    /// the one that makes its episode a loop.
    pub fn created(&self, namespace: &str, name: &str, now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        // Looked up through a key of this thread first: a pod counted
        // already (every creation of a loop after the first) costs no
        // allocation, and foldhash hashes it (1.18 k -> 0.83 k instructions a request,
        // `loadtest/profile.sh`).
        let found = KEY.with(|cell| {
            let mut key = cell.try_borrow_mut().ok()?;
            key.clear();
            key.push_str(namespace);
            key.push('/');
            key.push_str(name);
            self.pods.get(key.as_str())
        });
        let entry = found.unwrap_or_else(|| self.insert(format!("{namespace}/{name}"), now));
        // A poisoned lock only means another admission panicked while
        // counting: the counts are still usable.
        let mut creations = entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(creations.window_start) > LOOP_WINDOW {
            // Still busy (the entry did not go idle) but slower than the
            // threshold: a new window in the same episode.
            creations.window_start = now;
            creations.count = 0;
        }
        creations.count += 1;
        if creations.count >= self.threshold && !creations.reported {
            creations.reported = true;
            return true;
        }
        false
    }

    /// The entry of a pod not followed yet (or followed by another thread
    /// meanwhile: moka keeps the first).
    fn insert(&self, key: String, now: Instant) -> Arc<Mutex<Creations>> {
        self.pods.get_with(key.into_boxed_str(), || {
            Arc::new(Mutex::new(Creations {
                window_start: now,
                count: 0,
                reported: false,
            }))
        })
    }

    /// Pods followed now (after moka's pending maintenance).
    pub fn tracked(&self) -> u64 {
        self.pods.run_pending_tasks();
        self.pods.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_th_creation_in_a_window_is_reported_once() {
        let loops = RecreateLoops::new(5);
        let t0 = Instant::now();
        let reports: Vec<bool> = (0..12)
            .map(|i| loops.created("db", "pg-1", t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(reports.iter().filter(|r| **r).count(), 1, "once per episode");
        assert_eq!(reports.iter().position(|r| *r), Some(4), "the fifth creation");
        // Another pod, or the same name in another namespace, counts apart.
        assert!(!loops.created("db", "pg-2", t0));
        assert!(!loops.created("other", "pg-1", t0));
    }

    #[test]
    fn creations_spread_over_more_than_a_window_are_no_loop() {
        let loops = RecreateLoops::new(3);
        let t0 = Instant::now();
        // Every 6 minutes: never three within ten.
        for i in 0..10 {
            assert!(
                !loops.created("ns", "p", t0 + Duration::from_secs(i * 6 * 60)),
                "creation {i}"
            );
        }
    }

    #[test]
    fn a_threshold_of_one_reports_the_first_and_zero_never() {
        let t0 = Instant::now();
        assert!(RecreateLoops::new(1).created("ns", "p", t0));
        let off = RecreateLoops::new(0);
        assert!((0..20).all(|_| !off.created("ns", "p", t0)));
        assert_eq!(off.tracked(), 0, "nothing followed when off");
    }

    #[test]
    fn memory_stays_bounded_with_100_000_distinct_names() {
        let loops = RecreateLoops::new(5);
        let t0 = Instant::now();
        for i in 0..100_000 {
            loops.created("ns", &format!("pod-{i}"), t0);
        }
        let tracked = loops.tracked();
        assert!(
            (1..=LOOP_TRACKED_PODS_MAX).contains(&tracked),
            "{tracked} pods followed, cap {LOOP_TRACKED_PODS_MAX}"
        );
    }
}
