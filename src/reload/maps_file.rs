//! The maps file as a watched file: compiled through [`rules::compile_maps`]
//! (the one way an engine is built from a file) into a new engine with an
//! empty cache, published into the [`PublishedRules`] every request reads.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::{PublishedRules, RulesState};
use crate::rules::{self, LoadError, log_findings};
use crate::swap::{Finding, Severity};
use crate::telemetry::metrics::{Metrics, ReloadResult};

use super::watched::{WatchedFile, sha256_hex, unix_now};

/// The maps file and where its rules are published.
#[derive(Debug)]
pub struct MapsFile {
    path: PathBuf,
    cache_capacity: u64,
    /// Images never rewritten, whatever the file says.
    keep_images: Vec<String>,
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
            keep_images: Vec::new(),
            rules,
            metrics,
        }
    }

    /// Every engine built from the file keeps `images` (the keep list).
    pub fn keeping(mut self, images: Vec<String>) -> MapsFile {
        self.keep_images = images;
        self
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
            RulesState::new(loaded.engine.keeping(&self.keep_images), self.cache_capacity),
            loaded.findings,
            sha256,
        ))
    }

    /// maps.md "A reload that loses every rule is refused": a file with no
    /// rule at all (empty, only comments or only invalid lines: what a
    /// broken ConfigMap edit or a truncated write looks like) never replaces
    /// maps that have rules. `default::` is a rule: swapping nothing on
    /// purpose is loaded.
    fn refuse(&self, (state, _, _): &Self::Value) -> Option<String> {
        let serving = (*self.rules.load()).clone()?.engine().rule_count();
        (state.engine().rule_count() == 0 && serving > 0).then(|| {
            format!(
                "the new maps file {} has no rule (empty, only comments or only invalid lines); \
                 keeping the last good maps ({serving} rules). To swap nothing on purpose, write `default::`",
                self.path.display()
            )
        })
    }

    fn publish(&self, (state, findings, sha256): Self::Value, first: bool) {
        log_findings(&self.path, &findings);
        let rules = state.engine().rule_count();
        if rules == 0 {
            tracing::warn!(path = %self.path.display(), "The maps file has no rule: no image will be swapped.");
        }
        let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
        self.metrics.maps_rules(rules, errors, findings.len() - errors);
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

    /// issue 21: an emptied file (a broken ConfigMap edit, a truncated
    /// write), one of comments only or of invalid lines only is refused
    /// while the serving maps have rules; `default::` loads and swaps
    /// nothing; at start an empty file still loads.
    #[tokio::test]
    async fn a_reload_that_loses_every_rule_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        let metrics = Arc::new(Metrics::new());
        let rules = Arc::new(PublishedRules::new());
        let mut watched = Watched::new(MapsFile::new(path.clone(), 10, rules.clone(), metrics.clone()));
        std::fs::write(&path, "").expect("write");
        watched.check().await;
        let empty_at_start = (*rules.load()).clone().expect("an empty file loads at start");
        assert_eq!(empty_at_start.engine().rule_count(), 0);
        assert!(metrics.encode().contains("imageswap_maps_rules 0"));

        std::fs::write(&path, "default::a.example\n").expect("write");
        watched.check().await;
        let good = (*rules.load()).clone().expect("loaded");
        assert!(metrics.encode().contains("imageswap_maps_rules 1"));
        for (n, text) in ["", "# only a comment\n\n", "no separator here\nbad line\n"]
            .into_iter()
            .enumerate()
        {
            std::fs::write(&path, text).expect("write");
            watched.check().await;
            let serving = (*rules.load()).clone().expect("loaded");
            assert!(Arc::ptr_eq(&good, &serving), "{text:?} replaced the good maps");
            assert_eq!(
                serving.engine().decide("nginx").result.as_deref(),
                Some("a.example/nginx")
            );
            let refused = format!("imageswap_maps_reload_total{{result=\"refused\"}} {}", n + 1);
            assert!(
                metrics.encode().contains(&refused),
                "{text:?}: {}",
                metrics.encode()
            );
        }
        assert!(
            metrics.encode().contains("imageswap_maps_rules 1"),
            "the gauge is the serving file's"
        );
        std::fs::write(&path, "default::\n").expect("write");
        watched.check().await;
        let nothing = (*rules.load()).clone().expect("loaded");
        assert!(!Arc::ptr_eq(&good, &nothing), "`default::` is loaded");
        assert_eq!(nothing.engine().decide("nginx").result, None);
        assert!(
            metrics
                .encode()
                .contains("imageswap_maps_reload_total{result=\"refused\"} 3")
        );
    }

    /// The findings gauge counts the serving file's findings by severity.
    #[tokio::test]
    async fn the_findings_gauge_follows_the_serving_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        let metrics = Arc::new(Metrics::new());
        let file = MapsFile::new(path.clone(), 10, Arc::new(PublishedRules::new()), metrics.clone());
        let mut watched = Watched::new(file);
        let cases = [
            // An invalid line (an error), an empty key and a repeated key (warnings).
            (
                "default::a.example\nbad line\n::x\nquay.io::q\nquay.io::r\n",
                1,
                2,
            ),
            // A value that gives invalid images is an error the server reports too.
            ("default::a.example\nquay.io::http://mirror.example\n", 1, 0),
            ("default::a.example\n", 0, 0),
        ];
        for (maps, errors, warnings) in cases {
            std::fs::write(&path, maps).expect("write");
            watched.check().await;
            let text = metrics.encode();
            for (severity, count) in [("error", errors), ("warning", warnings)] {
                let series = format!("imageswap_maps_findings{{severity=\"{severity}\"}} {count}");
                assert!(text.contains(&series), "{maps:?}: {series} in {text}");
            }
        }
    }
}
