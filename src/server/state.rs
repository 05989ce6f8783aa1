//! The state every request reads: the rules (engine + cache) and the
//! certificate, each behind an `ArcSwap` so reloads never block a request,
//! plus the readiness flags and the settings of the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

use super::tls::CertStore;
use crate::cache::RulesState;
use crate::telemetry::metrics::Metrics;

/// Settings of the admission path, fixed at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub disable_label: String,
    pub shadow: bool,
    pub max_body_bytes: usize,
    pub pod_name: Option<String>,
}

/// Shared by the request path, the probes and the reloader.
#[derive(Debug)]
pub struct AppState {
    /// The current rules; `None` until a maps file (or the LEGACY prefix)
    /// has been loaded once. Loaded once per request.
    pub rules: ArcSwapOption<RulesState>,
    /// Why the rules are not loaded yet, for `/readyz`.
    pub rules_error: ArcSwapOption<String>,
    /// The serving certificate; `None` in plain-HTTP mode.
    pub certs: Option<Arc<CertStore>>,
    shutting_down: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
}

impl AppState {
    pub fn new(settings: Settings, certs: Option<Arc<CertStore>>, metrics: Arc<Metrics>) -> AppState {
        AppState {
            rules: ArcSwapOption::empty(),
            rules_error: ArcSwapOption::empty(),
            certs,
            shutting_down: AtomicBool::new(false),
            metrics,
            settings,
        }
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
            return Err(match self.rules_error.load().as_deref() {
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
