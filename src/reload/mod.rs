//! Hot reload of the files the server reads while it runs, off the hot
//! path. The server hands the reloader each file together with the handle
//! it publishes into ([`MapsFile`] → the published rules, [`TlsFiles`] → the
//! certificate store); the reloader knows nothing else of the server.
//!
//! A task watches the *directories* of the files (a Kubernetes ConfigMap or
//! Secret mount changes by swapping its `..data` symlink, which a watch on
//! the file itself never sees), waits for the burst of events to settle, and
//! looks at every file through one state machine ([`watched`]): content
//! fingerprints, build on the blocking pool, publish with one store; a
//! broken file is logged once per distinct content, counted, and ignored
//! while the last good version keeps serving. A slow poll does the same as a
//! safety net for events that never arrive.

mod maps_file;
mod registry_credentials;
mod tls_files;
pub mod watched;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{Notify, watch};

pub use maps_file::MapsFile;
pub use registry_credentials::{RegistryCredentials, registry_verification, registry_verification_with};
pub use tls_files::TlsFiles;
pub use watched::{Fingerprint, Watched, WatchedFile};

use std::sync::Arc;

/// Quiet time after a file event before reading: a `..data` swap is a burst
/// of creates, renames and deletes, and a hand edit may be several writes.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Loads the watched files at start, then keeps them current.
pub struct Reloader {
    files: Vec<Box<dyn watched::Check>>,
    poll: Duration,
    /// Set by the OS watcher on every relevant event.
    events: Arc<Notify>,
    /// Kept alive while reloading; started before the first load, so no
    /// change between the load and the watch can be missed.
    watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("files", &self.files.iter().map(|f| f.paths()).collect::<Vec<_>>())
            .field("poll", &self.poll)
            .finish()
    }
}

impl Reloader {
    /// A reloader that re-reads every file each `poll` even without events.
    pub fn new(poll: Duration) -> Reloader {
        Reloader {
            files: Vec::new(),
            poll,
            events: Arc::new(Notify::new()),
            watcher: None,
        }
    }

    /// Adds a file to watch; it is first read by [`Reloader::load_initial`].
    pub fn watch<F: WatchedFile>(&mut self, file: F) {
        self.files.push(Box::new(Watched::new(file)));
    }

    /// The first load, before the listener opens. Missing or broken files
    /// are reported by their own `reject` (the server stays unready until a
    /// good version appears); nothing here is fatal.
    pub async fn load_initial(&mut self) {
        self.watcher = self.watch_directories();
        self.check().await;
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

    /// Looks at every file once and reloads whatever changed.
    pub async fn check(&mut self) {
        for file in &mut self.files {
            file.check().await;
        }
    }

    /// Starts an OS watch on every directory holding a watched file. A
    /// directory that cannot be watched is left to the poll.
    fn watch_directories(&self) -> Option<notify::RecommendedWatcher> {
        let mut directories: Vec<PathBuf> = Vec::new();
        for file in self.files.iter().flat_map(|f| f.paths()) {
            let directory = parent_directory(&file);
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
                && watched::is_relevant(&event.kind)
            {
                sender.notify_one();
            }
        };
        let poll = humantime::format_duration(self.poll).to_string();
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, %poll, "Cannot watch files; changes are seen by the poll only.");
                return None;
            }
        };
        for directory in directories {
            use notify::Watcher as _;
            match watcher.watch(&directory, notify::RecursiveMode::NonRecursive) {
                // Said at start, so an operator knows which promise holds:
                // a watched change is reloaded within about 2 s, an
                // unwatched one within the poll interval.
                Ok(()) => tracing::info!(
                    directory = %directory.display(), %poll,
                    "Watching for changes (reloaded within 2 s; the poll is a safety net)."
                ),
                Err(e) => tracing::warn!(
                    directory = %directory.display(), error = %e, %poll,
                    "Cannot watch a directory; its changes are seen by the poll only."
                ),
            }
        }
        Some(watcher)
    }
}

/// The directory a file lives in (`.` for a bare file name).
fn parent_directory(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}
