//! The registry credentials file (Docker `config.json`) as a watched file:
//! parsed into [`Credentials`] and published into the handle every registry
//! check reads. A missing file is a valid state (anonymous everywhere, as
//! verify.md says), not an error; a broken one keeps the last good
//! credentials.

use std::path::PathBuf;
use std::sync::Arc;

use crate::telemetry::metrics::ReloadResult;
use crate::verify::credentials::{Credentials, CredentialsHandle};
use crate::verify::metrics::VerifyMetrics;
use crate::verify::{CheckImages, Tuning, Verifier, VerifyArgs, VerifyError};

/// Everything the registry side needs, in one call: the checker the
/// admission path calls, and its credentials file for the server's
/// reloader (`reloader.watch(credentials)` before `load_initial`).
pub fn registry_verification(
    args: &VerifyArgs,
    metrics: VerifyMetrics,
) -> Result<(Arc<dyn CheckImages>, RegistryCredentials), VerifyError> {
    let (verifier, credentials) = registry_verification_with(args, metrics, Tuning::default())?;
    Ok((Arc::new(verifier), credentials))
}

/// [`registry_verification`] with other tuning, and the concrete verifier.
pub fn registry_verification_with(
    args: &VerifyArgs,
    metrics: VerifyMetrics,
    tuning: Tuning,
) -> Result<(Verifier, RegistryCredentials), VerifyError> {
    let (verifier, handle) = crate::verify::build_with(args, metrics.clone(), tuning)?;
    let file = RegistryCredentials::new(args.registry_config.clone(), handle, metrics);
    Ok((verifier, file))
}

use super::watched::WatchedFile;

/// The credentials file and where its content is published.
#[derive(Debug)]
pub struct RegistryCredentials {
    path: PathBuf,
    handle: CredentialsHandle,
    metrics: VerifyMetrics,
}

impl RegistryCredentials {
    pub fn new(path: PathBuf, handle: CredentialsHandle, metrics: VerifyMetrics) -> RegistryCredentials {
        RegistryCredentials {
            path,
            handle,
            metrics,
        }
    }

    /// The handle the checks read.
    pub fn handle(&self) -> CredentialsHandle {
        self.handle.clone()
    }

    /// Reads the file once and publishes it (for `imageswap swap`, which
    /// runs no reloader); the error says why it cannot be used.
    pub fn load_once(&self) -> Result<(), String> {
        let content = self.read()?;
        let value = self.build(&content)?;
        self.publish(value, true);
        Ok(())
    }
}

impl WatchedFile for RegistryCredentials {
    /// `None`: the file does not exist (anonymous).
    type Value = Option<Credentials>;

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    /// No content at all (not even an empty file) when the file is missing.
    fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(vec![bytes]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    fn build(&self, content: &[Vec<u8>]) -> Result<Self::Value, String> {
        match content.first() {
            None => Ok(None),
            Some(bytes) => Credentials::parse(bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.path.display())),
        }
    }

    fn publish(&self, value: Self::Value, first: bool) {
        let path = self.path.display();
        match &value {
            None => tracing::info!(%path, "No registry credentials file; checking registries anonymously."),
            Some(credentials) => {
                let message = if first {
                    "Registry credentials loaded."
                } else {
                    "Registry credentials reloaded."
                };
                tracing::info!(%path, registries = credentials.len(), "{message}");
                for d in credentials.duplicates() {
                    tracing::warn!(%path, registry = d.host.as_str(), used = d.used.as_str(), ignored = d.ignored.join(", ").as_str(),
                        "Registry credentials written under several keys; using one (verify.md, duplicate keys).");
                }
            }
        }
        self.handle.store(Arc::new(value.unwrap_or_default()));
    }

    fn reject(&self, error: &str, kept: bool) {
        if kept {
            tracing::error!(error = %error, "Cannot reload the registry credentials; keeping the last good ones.");
        } else {
            tracing::error!(error = %error, "Cannot load the registry credentials; checking registries anonymously until they can be read.");
        }
    }

    fn count(&self, result: ReloadResult) {
        self.metrics.credentials_reload(result == ReloadResult::success);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::watched::Watched;
    use crate::verify::credentials::{Credential, anonymous};

    #[tokio::test]
    async fn missing_is_anonymous_good_is_published_broken_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".dockerconfigjson");
        let handle = anonymous();
        let mut watched = Watched::new(RegistryCredentials::new(
            path.clone(),
            handle.clone(),
            VerifyMetrics::new(),
        ));
        watched.check().await;
        assert!(handle.load().is_empty(), "no file: anonymous");
        std::fs::write(
            &path,
            br#"{"auths": {"r.example": {"username": "u", "password": "p"}}}"#,
        )
        .expect("write");
        watched.check().await;
        let good = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(handle.load().get("r.example"), Some(&good));
        std::fs::write(&path, b"{ broken").expect("write");
        watched.check().await;
        assert_eq!(
            handle.load().get("r.example"),
            Some(&good),
            "the last good file serves on"
        );
        std::fs::remove_file(&path).expect("remove");
        watched.check().await;
        assert!(handle.load().is_empty(), "removed: anonymous again");
    }
}
