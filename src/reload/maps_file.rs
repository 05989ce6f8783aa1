//! The maps file as a watched file: compiled through [`rules::compile_maps`]
//! (the one way an engine is built from a file) into a new engine with an
//! empty cache, published into the [`PublishedRules`] every request reads.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::{PublishedRules, RulesState};
use crate::rules::{self, LoadError, log_findings};
use crate::swap::Finding;
use crate::telemetry::metrics::{Metrics, ReloadResult};

use super::watched::{WatchedFile, sha256_hex, unix_now};

/// The maps file and where its rules are published.
#[derive(Debug)]
pub struct MapsFile {
    path: PathBuf,
    cache_capacity: u64,
    rules: Arc<PublishedRules>,
    metrics: Arc<Metrics>,
}

impl MapsFile {
    pub fn new(
        path: PathBuf,
        cache_capacity: u64,
        rules: Arc<PublishedRules>,
        metrics: Arc<Metrics>,
    ) -> MapsFile {
        MapsFile {
            path,
            cache_capacity,
            rules,
            metrics,
        }
    }
}

impl WatchedFile for MapsFile {
    /// The rules, the file's findings and its SHA-256.
    type Value = (RulesState, Vec<Finding>, String);

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(vec![bytes]),
            Err(source) => Err(LoadError::Read {
                path: self.path.clone(),
                source,
            }
            .to_string()),
        }
    }

    fn build(&self, content: &[Vec<u8>]) -> Result<Self::Value, String> {
        let bytes = content.first().cloned().unwrap_or_default();
        let text = rules::maps_text(&self.path, bytes).map_err(|e| e.to_string())?;
        let loaded = rules::compile_maps(&text);
        let sha256 = sha256_hex(text.as_bytes());
        Ok((
            RulesState::new(loaded.engine, self.cache_capacity),
            loaded.findings,
            sha256,
        ))
    }

    fn publish(&self, (state, findings, sha256): Self::Value, first: bool) {
        log_findings(&self.path, &findings);
        self.rules.publish(state);
        self.metrics.maps_loaded(&sha256, unix_now());
        let message = if first { "Maps loaded." } else { "Maps reloaded." };
        tracing::info!(path = %self.path.display(), findings = findings.len(), %sha256, "{message}");
    }

    fn reject(&self, error: &str, kept: bool) {
        if kept {
            tracing::error!(error = %error, "Cannot reload the maps file; keeping the last good maps.");
        } else {
            self.rules.set_error(error.to_owned());
            tracing::error!(error = %error, "Cannot load the maps file; not ready until it can be read.");
        }
    }

    fn count(&self, result: ReloadResult) {
        self.metrics.maps_reload(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::watched::Watched;

    fn maps_file(path: PathBuf) -> (Watched<MapsFile>, Arc<PublishedRules>) {
        let rules = Arc::new(PublishedRules::new());
        let file = MapsFile::new(path, 10, rules.clone(), Arc::new(Metrics::new()));
        (Watched::new(file), rules)
    }

    #[tokio::test]
    async fn a_good_file_is_published_and_a_bad_one_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        std::fs::write(&path, "default::a.example\n").expect("write");
        let (mut watched, rules) = maps_file(path.clone());
        watched.check().await;
        let first = (*rules.load()).clone().expect("loaded");
        assert_eq!(
            first.engine().decide("nginx").result.as_deref(),
            Some("a.example/nginx")
        );
        std::fs::write(&path, b"default::\xff\n").expect("write");
        watched.check().await;
        assert!(
            Arc::ptr_eq(&first, &(*rules.load()).clone().expect("loaded")),
            "the last good maps serve on"
        );
        assert!(
            rules.error().is_none(),
            "readiness is not touched once maps are loaded"
        );
    }

    #[tokio::test]
    async fn the_loaded_metric_names_the_content_serving_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        let metrics = Arc::new(Metrics::new());
        let file = MapsFile::new(path.clone(), 10, Arc::new(PublishedRules::new()), metrics.clone());
        let mut watched = Watched::new(file);
        let series = |text: &str| {
            format!(
                "imageswap_maps_loaded_timestamp_seconds{{sha256=\"{}\"}}",
                sha256_hex(text.as_bytes())
            )
        };
        std::fs::write(&path, "default::a.example\n").expect("write");
        watched.check().await;
        let first = metrics.encode();
        assert!(first.contains(&series("default::a.example\n")), "{first}");
        std::fs::write(&path, "default::b.example\n").expect("write");
        watched.check().await;
        let second = metrics.encode();
        assert!(second.contains(&series("default::b.example\n")), "{second}");
        assert!(
            !second.contains(&series("default::a.example\n")),
            "one series at a time: {second}"
        );
        // A broken version keeps the series of the maps still serving.
        std::fs::write(&path, b"\xff").expect("write");
        watched.check().await;
        assert!(metrics.encode().contains(&series("default::b.example\n")));
    }

    #[tokio::test]
    async fn unreadable_and_non_utf8_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        std::fs::write(&path, b"default::\xff\n").expect("write");
        let (mut watched, rules) = maps_file(path.clone());
        watched.check().await;
        assert!(rules.load().is_none());
        let error = rules.error().expect("the reason is kept for /readyz");
        assert!(error.contains("not UTF-8"), "{error}");
        let (mut missing, rules) = maps_file(dir.path().join("missing.conf"));
        missing.check().await;
        assert!(rules.error().expect("reason").contains("cannot read"));
    }
}
