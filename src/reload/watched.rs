//! The one state machine every reloadable file goes through (maps, the TLS
//! pair, and whatever file comes next): read it on the blocking pool,
//! fingerprint the content, build the new value only when the content
//! changed, publish a good value, and report a bad one once per distinct
//! content while the last good value keeps serving.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use notify::EventKind;
use notify::event::{AccessKind, AccessMode};

use crate::telemetry::metrics::ReloadResult;

/// A content hash: equal content, equal fingerprint. SipHash with fixed
/// keys; collisions would need a crafted file, and the worst they do is
/// delay a reload to the next change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn of<P: AsRef<[u8]>>(parts: &[P]) -> Fingerprint {
        let mut hasher = DefaultHasher::new();
        for part in parts {
            part.as_ref().hash(&mut hasher);
        }
        Fingerprint(hasher.finish())
    }
}

/// A file (or a set of files read together, like a certificate and its key)
/// that the server reloads while it runs. `read` and `build` run on the
/// blocking pool; `publish` and `reject` say what happened where it matters
/// (an `ArcSwap` store, a log line, readiness).
pub trait WatchedFile: Send + Sync + 'static {
    /// What a good file becomes.
    type Value: Send + 'static;

    /// The files read, for the directory watch.
    fn paths(&self) -> Vec<PathBuf>;

    /// Reads the content of every file; the error names the file.
    fn read(&self) -> Result<Vec<Vec<u8>>, String>;

    /// Builds the value from the content `read` returned.
    fn build(&self, content: &[Vec<u8>]) -> Result<Self::Value, String>;

    /// Why a value that built must not replace the one serving, if it must
    /// not (asked only when one is serving): it is reported like a file
    /// that cannot be used, and counted `refused`.
    fn refuse(&self, _value: &Self::Value) -> Option<String> {
        None
    }

    /// Publishes a good value; `first` when nothing was published before.
    fn publish(&self, value: Self::Value, first: bool);

    /// Reports a file that cannot be used, once per distinct content;
    /// `kept` when an earlier good value keeps serving.
    fn reject(&self, error: &str, kept: bool);

    /// Counts a load (the reload metrics of this file).
    fn count(&self, result: ReloadResult);
}

/// What one look at a watched file found.
#[derive(Debug)]
enum Look<T> {
    /// Same content as what is published.
    Unchanged,
    Loaded {
        value: T,
        fingerprint: Fingerprint,
    },
    /// The fingerprint identifies the failure: the content, or the error
    /// when there is no content.
    Failed {
        error: String,
        fingerprint: Fingerprint,
    },
}

/// A watched file and what the reloader knows of it.
pub struct Watched<F> {
    file: Arc<F>,
    /// Content of the published value.
    loaded: Option<Fingerprint>,
    /// Content (or error) of the last failure, so it is reported once.
    failed: Option<Fingerprint>,
}

impl<F: WatchedFile> Watched<F> {
    pub fn new(file: F) -> Watched<F> {
        Watched {
            file: Arc::new(file),
            loaded: None,
            failed: None,
        }
    }

    /// Looks at the file once and publishes or reports what changed.
    pub async fn check(&mut self) {
        let file = self.file.clone();
        let loaded = self.loaded;
        let look = match tokio::task::spawn_blocking(move || look(&*file, loaded)).await {
            Ok(look) => look,
            Err(e) => {
                tracing::error!(error = %e, "A reload task failed.");
                return;
            }
        };
        match look {
            Look::Unchanged => self.failed = None,
            Look::Loaded { value, fingerprint } => {
                let first = self.loaded.is_none();
                let refusal = if first { None } else { self.file.refuse(&value) };
                if let Some(why) = refusal {
                    if self.failed != Some(fingerprint) {
                        self.failed = Some(fingerprint);
                        self.file.count(ReloadResult::refused);
                        self.file.reject(&why, true);
                    }
                    return;
                }
                self.loaded = Some(fingerprint);
                self.failed = None;
                self.file.count(ReloadResult::success);
                self.file.publish(value, first);
            }
            Look::Failed { error, fingerprint } => {
                if self.failed == Some(fingerprint) {
                    return;
                }
                self.failed = Some(fingerprint);
                self.file.count(ReloadResult::error);
                self.file.reject(&error, self.loaded.is_some());
            }
        }
    }
}

fn look<F: WatchedFile>(file: &F, loaded: Option<Fingerprint>) -> Look<F::Value> {
    let content = match file.read() {
        Ok(content) => content,
        Err(error) => {
            let fingerprint = Fingerprint::of(&[error.as_bytes()]);
            return Look::Failed { error, fingerprint };
        }
    };
    let fingerprint = Fingerprint::of(&content);
    if loaded == Some(fingerprint) {
        return Look::Unchanged;
    }
    match file.build(&content) {
        Ok(value) => Look::Loaded { value, fingerprint },
        Err(error) => Look::Failed { error, fingerprint },
    }
}

/// A watched file of any kind, as the reloader holds it.
pub trait Check: Send {
    fn paths(&self) -> Vec<PathBuf>;
    fn check(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<F: WatchedFile> Check for Watched<F> {
    fn paths(&self) -> Vec<PathBuf> {
        self.file.paths()
    }

    fn check(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Watched::check(self))
    }
}

/// The hex SHA-256 of some content, as `sha256sum` prints it: what the
/// `*_loaded_timestamp_seconds` metrics label the loaded content with.
pub fn sha256_hex(content: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Now, in Unix seconds (0 on a clock before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reads every path in turn; the error names the file that failed.
pub fn read_all(paths: &[&std::path::Path]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display())))
        .collect()
}

/// Whether a file event can mean new content. Opening and reading (our own
/// reads among them) cannot; everything else, including a close after
/// writing, can.
pub fn is_relevant(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A text file whose value is its text; `bad` content fails to build.
    /// Records every publish and rejection.
    #[derive(Default)]
    struct Probe {
        path: PathBuf,
        events: Mutex<Vec<String>>,
    }

    impl WatchedFile for Probe {
        type Value = String;
        fn paths(&self) -> Vec<PathBuf> {
            vec![self.path.clone()]
        }
        fn read(&self) -> Result<Vec<Vec<u8>>, String> {
            read_all(&[&self.path])
        }
        fn build(&self, content: &[Vec<u8>]) -> Result<String, String> {
            let text = String::from_utf8(content[0].clone()).map_err(|_| "not UTF-8".to_owned())?;
            if text == "bad" {
                Err("bad content".to_owned())
            } else {
                Ok(text)
            }
        }
        fn refuse(&self, value: &String) -> Option<String> {
            (value == "empty").then(|| "would lose everything".to_owned())
        }
        fn publish(&self, value: String, first: bool) {
            self.events
                .lock()
                .unwrap()
                .push(format!("publish {value} first={first}"));
        }
        fn reject(&self, error: &str, kept: bool) {
            self.events
                .lock()
                .unwrap()
                .push(format!("reject {error} kept={kept}"));
        }
        fn count(&self, result: ReloadResult) {
            self.events.lock().unwrap().push(format!("count {result:?}"));
        }
    }

    fn events(watched: &Watched<Probe>) -> Vec<String> {
        std::mem::take(&mut *watched.file.events.lock().unwrap())
    }

    #[tokio::test]
    async fn unchanged_content_is_not_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        std::fs::write(&path, "a").expect("write");
        let mut watched = Watched::new(Probe {
            path: path.clone(),
            ..Probe::default()
        });
        watched.check().await;
        assert_eq!(events(&watched), ["count success", "publish a first=true"]);
        watched.check().await;
        assert!(
            events(&watched).is_empty(),
            "same content: nothing built or published"
        );
        std::fs::write(&path, "b").expect("write");
        watched.check().await;
        assert_eq!(events(&watched), ["count success", "publish b first=false"]);
    }

    #[tokio::test]
    async fn a_failure_is_reported_once_per_content_and_the_last_good_value_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        let mut watched = Watched::new(Probe {
            path: path.clone(),
            ..Probe::default()
        });
        // Missing: the error is the fingerprint, stable across looks.
        watched.check().await;
        let first = events(&watched);
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(
            first[1].starts_with("reject cannot read") && first[1].ends_with("kept=false"),
            "{first:?}"
        );
        watched.check().await;
        assert!(events(&watched).is_empty(), "the same failure is reported once");
        std::fs::write(&path, b"\xff").expect("write");
        watched.check().await;
        assert_eq!(events(&watched), ["count error", "reject not UTF-8 kept=false"]);
        std::fs::write(&path, "good").expect("write");
        watched.check().await;
        assert_eq!(events(&watched), ["count success", "publish good first=true"]);
        std::fs::write(&path, "bad").expect("write");
        watched.check().await;
        watched.check().await;
        assert_eq!(events(&watched), ["count error", "reject bad content kept=true"]);
    }

    /// A value that builds but is refused keeps the serving one, is counted
    /// `refused` once per content, and is never refused at the first load.
    #[tokio::test]
    async fn a_refused_value_keeps_the_serving_one_and_is_counted_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        std::fs::write(&path, "empty").expect("write");
        let mut watched = Watched::new(Probe {
            path: path.clone(),
            ..Probe::default()
        });
        watched.check().await;
        assert_eq!(events(&watched), ["count success", "publish empty first=true"]);
        std::fs::write(&path, "good").expect("write");
        watched.check().await;
        assert_eq!(events(&watched), ["count success", "publish good first=false"]);
        std::fs::write(&path, "empty").expect("write");
        watched.check().await;
        watched.check().await;
        assert_eq!(
            events(&watched),
            ["count refused", "reject would lose everything kept=true"]
        );
        std::fs::write(&path, "good").expect("write");
        watched.check().await;
        assert!(
            events(&watched).is_empty(),
            "the serving content again: nothing to do"
        );
        std::fs::write(&path, "better").expect("write");
        watched.check().await;
        assert_eq!(events(&watched), ["count success", "publish better first=false"]);
    }

    #[test]
    fn sha256_is_what_sha256sum_prints() {
        // printf 'default::\n' | sha256sum
        assert_eq!(
            sha256_hex(b"default::\n"),
            "e250320c0949d55528f4d572c0477ee48c28d4cded64f6850f9e4d5fdcfa994f"
        );
    }

    #[test]
    fn our_own_reads_are_not_events() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(!is_relevant(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_relevant(&EventKind::Create(CreateKind::Any)));
        assert!(is_relevant(&EventKind::Modify(ModifyKind::Any)));
    }
}
