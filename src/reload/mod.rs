//! Hot reload of the maps file and the serving certificate, off the hot
//! path: a task watches the *directories* of the files (a Kubernetes
//! ConfigMap or Secret mount changes by swapping its `..data` symlink, which
//! a watch on the file itself never sees), waits for the burst of events to
//! settle, and compares content fingerprints; a slow poll does the same as a
//! safety net for events that never arrive.
//!
//! A changed, good file is compiled (maps) or checked (certificate: the key
//! must match) on a blocking thread and published with one `ArcSwap` store.
//! A broken one is logged at error once per distinct content, counted, and
//! ignored: the last good version keeps serving.

mod files;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::cache::RulesState;
use crate::config::{ServeConfig, TlsSource, Transport};
use crate::rules::{RulesSource, log_findings};
use crate::server::state::AppState;
use crate::server::tls::{self, CertStore, TlsError};
use crate::swap::EngineMode;
use crate::telemetry::metrics::ReloadResult;

pub use files::Fingerprint;

/// Quiet time after a file event before reading: a `..data` swap is a burst
/// of creates, renames and deletes, and a hand edit may be several writes.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// The maps file, when the rules come from one.
#[derive(Debug)]
struct MapsWatch {
    path: PathBuf,
    /// Content of the published maps.
    loaded: Option<Fingerprint>,
    /// Content (or error) of the last failure, so it is reported once.
    failed: Option<Fingerprint>,
}

/// The certificate files, when TLS comes from files.
#[derive(Debug)]
struct TlsWatch {
    cert: PathBuf,
    key: PathBuf,
    store: Arc<CertStore>,
    loaded: Option<Fingerprint>,
    failed: Option<Fingerprint>,
}

/// Loads the rules and the certificate at start, then keeps them current.
#[derive(Debug)]
pub struct Reloader {
    state: Arc<AppState>,
    rules: RulesSource,
    cache_capacity: u64,
    maps: Option<MapsWatch>,
    tls: Option<TlsWatch>,
    self_signed: Option<(Vec<String>, Arc<CertStore>)>,
    poll: Duration,
    /// Set by the OS watcher on every relevant event.
    events: Arc<Notify>,
    /// Kept alive while reloading; started before the first load, so no
    /// change between the load and the watch can be missed.
    watcher: Option<notify::RecommendedWatcher>,
}

impl Reloader {
    pub fn new(state: Arc<AppState>, config: &ServeConfig) -> Reloader {
        let maps = match &config.rules {
            RulesSource::Maps(path) => Some(MapsWatch {
                path: path.clone(),
                loaded: None,
                failed: None,
            }),
            RulesSource::Legacy(_) => None,
        };
        let (tls, self_signed) = match (&config.transport, &state.certs) {
            (Transport::Tls(TlsSource::Files { cert, key }), Some(store)) => (
                Some(TlsWatch {
                    cert: cert.clone(),
                    key: key.clone(),
                    store: store.clone(),
                    loaded: None,
                    failed: None,
                }),
                None,
            ),
            (Transport::Tls(TlsSource::SelfSigned { names }), Some(store)) => {
                (None, Some((names.clone(), store.clone())))
            }
            _ => (None, None),
        };
        Reloader {
            state,
            rules: config.rules.clone(),
            cache_capacity: config.cache_capacity,
            maps,
            tls,
            self_signed,
            poll: config.reload_poll,
            events: Arc::new(Notify::new()),
            watcher: None,
        }
    }

    /// The first load, before the listener opens. Only a certificate that
    /// cannot even be generated is fatal; missing or broken files leave the
    /// server unready (`/readyz` says why) until a good version appears.
    pub async fn load_initial(&mut self) -> Result<(), TlsError> {
        self.watcher = self.watch_directories();
        if let RulesSource::Legacy(prefix) = &self.rules {
            let engine = crate::swap::Engine::legacy(prefix.as_deref());
            if engine.mode() == EngineMode::Legacy {
                tracing::warn!("LEGACY mode is deprecated; move to a maps file (IMAGESWAP_MODE=MAPS).");
            }
            if prefix.as_deref().unwrap_or_default().is_empty() {
                tracing::warn!("LEGACY mode without IMAGE_PREFIX: no image will be swapped.");
            }
            self.state
                .rules
                .store(Some(Arc::new(RulesState::new(engine, self.cache_capacity))));
        }
        if let Some((names, store)) = &self.self_signed {
            let names = names.clone();
            let pair = tokio::task::spawn_blocking(move || tls::self_signed(&names))
                .await
                .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))??;
            store.store(pair);
        }
        self.check().await;
        Ok(())
    }

    /// Watches and polls until `stop` turns true (or its sender is dropped).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.watcher.is_none() {
            self.watcher = self.watch_directories();
        }
        let events = self.events.clone();
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                () = events.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    self.check().await;
                }
                _ = poll.tick() => self.check().await,
            }
        }
    }

    /// Starts an OS watch on every directory holding a watched file. A
    /// directory that cannot be watched is left to the poll.
    fn watch_directories(&self) -> Option<notify::RecommendedWatcher> {
        let mut directories: Vec<PathBuf> = Vec::new();
        let files = self
            .maps
            .iter()
            .map(|m| m.path.as_path())
            .chain(self.tls.iter().flat_map(|t| [t.cert.as_path(), t.key.as_path()]));
        for file in files {
            let directory = parent_directory(file);
            if !directories.contains(&directory) {
                directories.push(directory);
            }
        }
        if directories.is_empty() {
            return None;
        }
        let sender = self.events.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && files::is_relevant(&event.kind)
            {
                sender.notify_one();
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, poll = ?self.poll, "Cannot watch files; relying on the poll.");
                return None;
            }
        };
        for directory in directories {
            use notify::Watcher as _;
            match watcher.watch(&directory, notify::RecursiveMode::NonRecursive) {
                Ok(()) => tracing::debug!(directory = %directory.display(), "Watching for changes."),
                Err(e) => tracing::warn!(
                    directory = %directory.display(), error = %e, poll = ?self.poll,
                    "Cannot watch a directory; relying on the poll."
                ),
            }
        }
        Some(watcher)
    }

    /// Reloads whatever changed.
    pub async fn check(&mut self) {
        self.check_maps().await;
        self.check_tls().await;
    }

    async fn check_maps(&mut self) {
        let Some(maps) = &mut self.maps else {
            return;
        };
        let path = maps.path.clone();
        let loaded = maps.loaded;
        let capacity = self.cache_capacity;
        let read = tokio::task::spawn_blocking(move || files::read_maps(&path, loaded, capacity)).await;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "The maps reload task failed.");
                return;
            }
        };
        match read {
            files::Read::Unchanged => maps.failed = None,
            files::Read::Loaded {
                value: (state, findings),
                fingerprint,
            } => {
                let first = maps.loaded.is_none();
                maps.loaded = Some(fingerprint);
                maps.failed = None;
                log_findings(&maps.path, &findings);
                self.state.rules.store(Some(Arc::new(state)));
                self.state.rules_error.store(None);
                self.state.metrics.maps_reload(ReloadResult::success);
                let message = if first { "Maps loaded." } else { "Maps reloaded." };
                tracing::info!(path = %maps.path.display(), findings = findings.len(), "{message}");
            }
            files::Read::Failed { error, fingerprint } => {
                if maps.failed == Some(fingerprint) {
                    return;
                }
                maps.failed = Some(fingerprint);
                self.state.metrics.maps_reload(ReloadResult::error);
                if maps.loaded.is_some() {
                    tracing::error!(error = %error, "Cannot reload the maps file; keeping the last good maps.");
                } else {
                    self.state.rules_error.store(Some(Arc::new(error.clone())));
                    tracing::error!(error = %error, "Cannot load the maps file; not ready until it can be read.");
                }
            }
        }
    }

    async fn check_tls(&mut self) {
        let Some(tls) = &mut self.tls else {
            return;
        };
        let (cert, key, loaded) = (tls.cert.clone(), tls.key.clone(), tls.loaded);
        let read = tokio::task::spawn_blocking(move || files::read_pair(&cert, &key, loaded)).await;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "The certificate reload task failed.");
                return;
            }
        };
        match read {
            files::Read::Unchanged => tls.failed = None,
            files::Read::Loaded { value, fingerprint } => {
                let first = tls.loaded.is_none();
                tls.loaded = Some(fingerprint);
                tls.failed = None;
                tls.store.store(value);
                self.state.metrics.tls_reload(ReloadResult::success);
                let message = if first {
                    "TLS certificate loaded."
                } else {
                    "TLS certificate reloaded; new connections use it."
                };
                tracing::info!(cert = %tls.cert.display(), "{message}");
            }
            files::Read::Failed { error, fingerprint } => {
                if tls.failed == Some(fingerprint) {
                    return;
                }
                tls.failed = Some(fingerprint);
                self.state.metrics.tls_reload(ReloadResult::error);
                if tls.loaded.is_some() {
                    tracing::error!(error = %error, "Cannot reload the TLS certificate; keeping the last good one.");
                } else {
                    tracing::error!(error = %error, "Cannot load the TLS certificate; no TLS connection until it can.");
                }
            }
        }
    }
}

/// The directory a file lives in (`.` for a bare file name).
fn parent_directory(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}
