//! The state every request reads: the rules (engine + cache) and the
//! certificate, each behind an `ArcSwap` (their handles are shared with the
//! reloader that publishes into them) so reloads never block a request,
//! plus the readiness flags and the settings of the request path, and the
//! optional mirror verifier (verify.md) with its policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::loops::{DEFAULT_LOOP_THRESHOLD, RecreateLoops};
use crate::admission::PullSecrets;
use crate::cache::PublishedRules;
use crate::telemetry::metrics::Metrics;
use crate::tls::CertStore;
use crate::verify::{CheckImages, OnError};

/// Settings of the admission path, fixed at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub disable_label: String,
    pub shadow: bool,
    pub max_body_bytes: usize,
    pub pod_name: Option<String>,
    /// An INFO line per swapped image (`IMAGESWAP_LOG_SWAPS`).
    pub log_swaps: bool,
}

/// Shared by the request path, the probes and the reloader.
#[derive(Debug)]
pub struct AppState {
    /// The current rules (loaded once per request), and why there are none
    /// yet, for `/readyz`.
    pub rules: Arc<PublishedRules>,
    /// The serving certificate; `None` in plain-HTTP mode.
    pub certs: Option<Arc<CertStore>>,
    shutting_down: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Checks swapped images in their mirror before they are patched;
    /// `None` with `IMAGESWAP_VERIFY=off` (the request path then stays
    /// synchronous, as without verification).
    pub verifier: Option<Arc<dyn CheckImages>>,
    pub verify_policy: VerifyPolicy,
    /// `IMAGESWAP_IMAGE_PULL_SECRETS` (independent of verification).
    pub pull_secrets: PullSecrets,
    /// Swapped creations of fixed-name pods (`IMAGESWAP_LOOP_THRESHOLD`).
    pub loops: RecreateLoops,
}

/// How the request path uses the verifier's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// `IMAGESWAP_VERIFY_ON_ERROR`.
    pub on_error: OnError,
    /// `IMAGESWAP_VERIFY_TIMEOUT`: the longest one admission waits.
    pub timeout: Duration,
}

impl Default for VerifyPolicy {
    /// verify.md's defaults.
    fn default() -> Self {
        VerifyPolicy {
            on_error: OnError::Swap,
            timeout: Duration::from_secs(1),
        }
    }
}

impl AppState {
    pub fn new(
        settings: Settings,
        rules: Arc<PublishedRules>,
        certs: Option<Arc<CertStore>>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            rules,
            certs,
            shutting_down: AtomicBool::new(false),
            metrics,
            settings,
            verifier: None,
            verify_policy: VerifyPolicy::default(),
            pull_secrets: PullSecrets::default(),
            loops: RecreateLoops::new(DEFAULT_LOOP_THRESHOLD),
        }
    }

    /// Reports pods created and swapped `threshold` times in a window (0: off).
    pub fn with_loop_threshold(mut self, threshold: u64) -> AppState {
        self.loops = RecreateLoops::new(threshold);
        self
    }

    /// Verifies swaps with `verifier` (when given) under `policy`.
    pub fn with_verifier(mut self, verifier: Option<Arc<dyn CheckImages>>, policy: VerifyPolicy) -> AppState {
        self.verifier = verifier;
        self.verify_policy = policy;
        self
    }

    /// Adds these pull secrets to pod specs whose images end up in their registries.
    pub fn with_pull_secrets(mut self, pull_secrets: PullSecrets) -> AppState {
        self.pull_secrets = pull_secrets;
        self
    }

    /// Readiness turns false at once; requests still in flight (or arriving
    /// on open connections while draining) are answered normally.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// `Ok` when the server can answer reviews; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".to_owned());
        }
        if self.rules.load().is_none() {
            return Err(match self.rules.error().as_deref() {
                Some(error) => format!("maps not loaded: {error}"),
                None => "maps not loaded yet".to_owned(),
            });
        }
        if let Some(certs) = &self.certs
            && !certs.is_loaded()
        {
            return Err("TLS certificate not loaded yet".to_owned());
        }
        Ok(())
    }
}
