//! The registry side's metrics (verify.md "Seen from outside"), in one
//! struct the server registers into its Prometheus registry with
//! [`VerifyMetrics::register`]. Cheap to clone (every series is shared).
//!
//! `registry` labels are target registry hosts without their port, which
//! come from the maps file; the verifier still caps them ([`super::verifier`]: 64 hosts, then
//! `other`). The request histogram is prometheus-client's (a mutex per
//! observation): it only sees registry requests, never the warm path.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `result` label of the credentials reload counter (the shape of
/// every `*_reload_total`: `success` or `error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ReloadResult {
    success,
    error,
}

/// Registry request buckets: 5 ms (a mirror next door) to about 10 s (past
/// any verify timeout worth having).
const REQUEST_BUCKETS_START_SECONDS: f64 = 0.005;
const REQUEST_BUCKETS: u16 = 12;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    registry: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RegistryLabel {
    registry: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabel {
    result: ReloadResult,
}

/// How a lookup in the check cache went: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh answer.
    Hit,
    /// Not known (or a missing answer that ran out): the registry is asked.
    Miss,
    /// A present tag past its TTL: answered present, refreshed in the background.
    Stale,
    /// A check that could not answer, answered with what the registry said
    /// last (an expired present or missing within `IMAGESWAP_VERIFY_STALE_IF_ERROR`).
    StaleIfError,
}

impl CacheResult {
    fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::StaleIfError => "stale_if_error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct VerifyMetrics {
    checks: Family<CheckLabels, Counter>,
    durations: Family<RegistryLabel, Histogram, fn() -> Histogram>,
    cache_family: Family<ResultLabel, Counter>,
    /// The series of `cache_family`, resolved once.
    cache: [Counter; 4],
    circuit_open: Family<RegistryLabel, Gauge>,
    credentials_reloads: Family<ReloadLabel, Counter>,
}

impl Default for VerifyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        REQUEST_BUCKETS_START_SECONDS,
        2.0,
        REQUEST_BUCKETS,
    ))
}

impl VerifyMetrics {
    pub fn new() -> VerifyMetrics {
        let cache_family = Family::<ResultLabel, Counter>::default();
        let cache = [
            CacheResult::Hit,
            CacheResult::Miss,
            CacheResult::Stale,
            CacheResult::StaleIfError,
        ]
        .map(|result| {
            cache_family
                .get_or_create(&ResultLabel {
                    result: result.as_str(),
                })
                .clone()
        });
        VerifyMetrics {
            checks: Family::default(),
            durations: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            cache_family,
            cache,
            circuit_open: Family::default(),
            credentials_reloads: Family::default(),
        }
    }

    /// Adds every series to `registry` (the server's one registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "imageswap_verify_checks",
            "Registry checks made (a circuit-open or not-in-the-maps answer asks nobody and is not one), by target registry host and outcome (present, missing, error)",
            self.checks.clone(),
        );
        registry.register_with_unit(
            "imageswap_verify_check_duration",
            "Time of registry requests of mirror checks (token fetches included), by target registry",
            Unit::Seconds,
            self.durations.clone(),
        );
        registry.register(
            "imageswap_verify_cache",
            "Mirror check cache lookups, by result (hit, miss, stale: answered present while refreshed, stale_if_error: a check that could not answer answered with an expired answer)",
            self.cache_family.clone(),
        );
        registry.register(
            "imageswap_verify_circuit_open",
            "Whether the breaker of a target registry is open (1: not asked, checks answer circuit open)",
            self.circuit_open.clone(),
        );
        registry.register(
            "imageswap_registry_credentials_reload",
            "Registry credentials file loads (the first at start, then one per change), by result (an error keeps the last good file)",
            self.credentials_reloads.clone(),
        );
    }

    pub fn check(&self, registry: &str, outcome: &'static str) {
        self.checks
            .get_or_create(&CheckLabels {
                registry: registry.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn request_duration(&self, registry: &str, elapsed: Duration) {
        self.durations
            .get_or_create(&RegistryLabel {
                registry: registry.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts `n` lookups of one result: an atomic add, no label lookup
    /// (this is on the warm path).
    pub fn cache(&self, result: CacheResult, n: u64) {
        if n > 0 {
            self.cache[result as usize].inc_by(n);
        }
    }

    pub fn circuit_open(&self, registry: &str, open: bool) {
        self.circuit_open
            .get_or_create(&RegistryLabel {
                registry: registry.to_owned(),
            })
            .set(i64::from(open));
    }

    /// Counts a load of the credentials file (good or not).
    pub fn credentials_reload(&self, good: bool) {
        let result = if good {
            ReloadResult::success
        } else {
            ReloadResult::error
        };
        self.credentials_reloads
            .get_or_create(&ReloadLabel { result })
            .inc();
    }
}
