//! Mirror verification against the real registry (Debian's docker-registry,
//! CNCF distribution 2.8; see `support::registry`): the client's answers
//! and authentication (`registry`), the behaviour under churn (`churn`),
//! `imageswap swap --verify` (`swap`), and the whole server checking
//! against it (`end_to_end`).

mod churn;
mod end_to_end;
mod hostile;
mod platforms;
mod registry;
mod stale;
mod swap;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imageswap::swap::mirrors::ValueKind;
use imageswap::verify::{
    CheckImages, CheckOutcome, MirrorHosts, OnError, Tuning, Verifier, VerifyArgs, VerifyMetrics, VerifyMode,
};

use crate::support::ca::TestCa;
use crate::support::registry::{Auth, Registry};

/// Long enough that no check of a healthy local registry runs into it.
pub const SLOW: Duration = Duration::from_secs(20);

/// Settings as a test means them: verification on, the given credentials
/// file, CA and plain-HTTP hosts, long TTLs.
pub fn args(config: &Path, ca: Option<&Path>, plain_http: &[&str]) -> VerifyArgs {
    VerifyArgs {
        verify: VerifyMode::On,
        verify_on_error: OnError::Swap,
        verify_timeout: SLOW,
        verify_ttl: Duration::from_secs(3600),
        verify_missing_ttl: Duration::from_secs(3600),
        verify_stale_if_error: Duration::from_secs(3600),
        verify_platforms: Vec::new(),
        registry_config: config.to_owned(),
        registry_ca: ca.map(Path::to_owned),
        registry_plain_http: plain_http.iter().map(|h| (*h).to_owned()).collect(),
    }
}

/// A verifier with its credentials loaded once.
pub fn verifier(args: &VerifyArgs, tuning: Tuning) -> (Verifier, VerifyMetrics) {
    let metrics = VerifyMetrics::new();
    let (verifier, credentials) =
        imageswap::reload::registry_verification_with(args, metrics.clone(), tuning).expect("build");
    credentials.load_once().expect("credentials");
    (verifier, metrics)
}

/// Registries named as maps would name the registries of `images` (an
/// `[EXACT]` rule to each): the verifier contacts no other.
pub fn mirrors_of(images: &[&str]) -> MirrorHosts {
    MirrorHosts::from_values(images.iter().map(|i| (ValueKind::Image, *i)))
}

/// One target's outcome.
pub async fn check(verifier: &impl CheckImages, image: &str) -> CheckOutcome {
    check_within(verifier, image, SLOW).await
}

pub async fn check_within(verifier: &impl CheckImages, image: &str, budget: Duration) -> CheckOutcome {
    let mut outcomes = verifier
        .check(vec![Arc::from(image)], &mirrors_of(&[image]), budget)
        .await;
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

/// The outcomes if the check answers on its first poll (without waiting
/// on anything), else `None`.
pub fn ready_now(verifier: &impl CheckImages, images: &[&str]) -> Option<Vec<CheckOutcome>> {
    let mut future = verifier.check(
        images.iter().map(|i| Arc::from(*i)).collect(),
        &mirrors_of(images),
        SLOW,
    );
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(outcomes) => Some(outcomes),
        std::task::Poll::Pending => None,
    }
}

/// A storage directory, an open plain instance on it to push through,
/// the test CA (in a file too) and a directory for credentials.
pub struct Setup {
    pub open: Registry,
    pub ca: TestCa,
    pub ca_path: PathBuf,
    pub dir: tempfile::TempDir,
    pub storage: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let storage = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("imageswap registry test CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let open = Registry::start(storage.path(), None, Auth::None);
        Setup {
            open,
            ca,
            ca_path,
            dir,
            storage,
        }
    }

    /// Another instance on the same storage, with TLS and `auth`.
    pub fn tls(&self, auth: Auth<'_>) -> Registry {
        Registry::start(self.storage.path(), Some(&self.ca), auth)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// Writes the credentials file with `user:password` for `host`.
    pub fn write_credentials(&self, host: &str, user: &str, password: &str) {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            self.config_path(),
            format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
    }
}
