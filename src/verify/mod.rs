//! Mirror verification (verify.md): before a swap is patched, ask the target
//! registry whether the swapped image is there, so a pod is never rewritten
//! to an image that cannot be pulled.
//!
//! This module is the seam between the request path and the registry side.
//! The request path only sees [`CheckImages`]: a batch of targets in, one
//! [`CheckOutcome`] per target out, within a budget. Everything that makes
//! that cheap under churn (the cache with two TTLs and stale-while-revalidate,
//! coalescing, the per-registry breaker and concurrency cap, background
//! completion) lives behind it, so the admission code cannot get it wrong.

pub mod client;
pub mod credentials;
pub mod metrics;
pub mod platform;
pub mod settings;
pub mod target;
pub mod verifier;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use metrics::VerifyMetrics;
pub use settings::{VerifyArgs, VerifyMode};
pub use verifier::{Tuning, Verifier};

use credentials::CredentialsHandle;

/// What one check of a target found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The registry has the manifest: patch as without verification.
    Present,
    /// The registry answered 404: keep the original image (always).
    Missing,
    /// The manifest is there but lacks a platform the pod may run on
    /// (`linux/arm64`, as [`platform::Platform`] writes it): keep the
    /// original image (always), as for a missing one.
    NoPlatform(String),
    /// The check could not answer: `IMAGESWAP_VERIFY_ON_ERROR` decides.
    Error(CheckError),
}

impl CheckOutcome {
    /// The `outcome` label of `imageswap_verify_checks_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckOutcome::Present => "present",
            CheckOutcome::Missing | CheckOutcome::NoPlatform(_) => "missing",
            CheckOutcome::Error(_) => "error",
        }
    }
}

/// Why a check could not answer. `Display` is the reason as the warning and
/// the log line give it (verify.md: `timeout after 1s`, `harbor.example.com
/// answered 503`, `circuit open`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The budget (or the verify timeout) ran out before an answer.
    Timeout(Duration),
    /// The registry answered with a status that is neither 200 nor 404
    /// (5xx, 429, 401/403 after authenticating…).
    Status { registry: String, status: u16 },
    /// The breaker of this registry is open: it was not asked.
    CircuitOpen,
    /// Connection, TLS, token or protocol error; the text says which.
    Failed(String),
    /// The target's registry (host and port) is not one the maps file
    /// names: it was not contacted (verify.md "Only the maps' registries").
    NotInMaps,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Timeout(after) => write!(f, "timeout after {}", ShortDuration(*after)),
            CheckError::Status { registry, status } => write!(f, "{registry} answered {status}"),
            CheckError::CircuitOpen => f.write_str("circuit open"),
            CheckError::Failed(reason) => f.write_str(reason),
            CheckError::NotInMaps => f.write_str("registry not in the maps file"),
        }
    }
}

/// A duration as people write it in a warning: `845ms`, `1s`, `2.5s` — not
/// humantime's every unit (`845ms 428us 766ns`, what a remaining budget
/// gives). Milliseconds are the precision a person acts on.
pub struct ShortDuration(pub std::time::Duration);

impl fmt::Display for ShortDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match (millis / 1000, millis % 1000) {
            (0, ms) => write!(f, "{ms}ms"),
            (s, 0) => write!(f, "{s}s"),
            (s, ms) => {
                let fraction = format!("{ms:03}");
                write!(f, "{s}.{}s", fraction.trim_end_matches('0'))
            }
        }
    }
}

/// What to do with a swap whose check could not answer
/// (`IMAGESWAP_VERIFY_ON_ERROR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Trust the maps: patch anyway (right for air-gapped clusters).
    Swap,
    /// Keep the original image.
    Keep,
}

pub use crate::swap::MirrorHosts;

pub type CheckFuture = Pin<Box<dyn Future<Output = Vec<CheckOutcome>> + Send + 'static>>;

/// Checks swapped images against their registries.
pub trait CheckImages: Send + Sync + fmt::Debug + 'static {
    /// One outcome per target, in order, within `budget`: a target whose
    /// check is still running when the budget runs out is answered
    /// `Error(Timeout(budget))` and its check goes on in the background to
    /// fill the cache; answers known by then are kept. Targets are final
    /// image references (after the swap); only registries in `mirrors`
    /// (the loaded maps' [`crate::swap::Engine::mirror_hosts`]) are
    /// contacted, any other target is answered `Error(NotInMaps)`.
    fn check(&self, targets: Vec<Arc<str>>, mirrors: &MirrorHosts, budget: Duration) -> CheckFuture;

    /// [`CheckImages::check`] for a pod that runs only on `platforms`
    /// (from its spec; empty: the pod pins none, and the checker's own
    /// setting, `IMAGESWAP_VERIFY_PLATFORMS`, applies). A checker that
    /// knows no platforms checks existence only.
    fn check_on(
        &self,
        targets: Vec<Arc<str>>,
        platforms: &[platform::Platform],
        mirrors: &MirrorHosts,
        budget: Duration,
    ) -> CheckFuture {
        let _ = platforms;
        self.check(targets, mirrors, budget)
    }
}

/// Why verification cannot start (a bad `--registry-ca`).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// One line: the cause is in the text, so it is not also a `source`
    /// (a `{:#}` chain would print it again).
    #[error("{setting}: {cause}", setting = crate::settings::SettingName::in_args::<VerifyArgs>("registry_ca"), cause = .0)]
    Client(client::ClientError),
}

impl From<client::ClientError> for VerifyError {
    fn from(error: client::ClientError) -> VerifyError {
        VerifyError::Client(error)
    }
}

/// The checker the admission path calls, built from the settings, and
/// the credentials handle it reads. The server hands the handle to the
/// reloader as a `reload::RegistryCredentials` (or calls
/// `reload::registry_verification`, which does both); until the first load
/// the checks are anonymous.
pub fn build(
    args: &VerifyArgs,
    metrics: VerifyMetrics,
) -> Result<(Arc<dyn CheckImages>, CredentialsHandle), VerifyError> {
    let (verifier, credentials) = build_with(args, metrics, Tuning::default())?;
    Ok((Arc::new(verifier), credentials))
}

/// [`build`] with other tuning (tests shorten the breaker's open time).
pub fn build_with(
    args: &VerifyArgs,
    metrics: VerifyMetrics,
    tuning: Tuning,
) -> Result<(Verifier, CredentialsHandle), VerifyError> {
    let client = client::RegistryClient::new(
        args.registry_ca.as_deref(),
        &args.registry_plain_http,
        args.verify_timeout,
    )?;
    let handle = credentials::anonymous();
    let lifetimes = verifier::Lifetimes {
        timeout: args.verify_timeout,
        ttl: args.verify_ttl,
        missing_ttl: args.verify_missing_ttl,
        stale_if_error: args.verify_stale_if_error,
    };
    let tuning = Tuning {
        platforms: platform::required(&args.verify_platforms),
        ..tuning
    };
    Ok((
        Verifier::new(client, handle.clone(), metrics, lifetimes, tuning),
        handle,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// issue 21 item 7: a timeout after what was left of a budget read
    /// `timeout after 845ms 428us 766ns`.
    #[test]
    fn durations_are_written_as_people_write_them() {
        for (duration, text) in [
            (Duration::from_nanos(845_428_766), "845ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(2_500), "2.5s"),
            (Duration::from_millis(1_025), "1.025s"),
            (Duration::from_micros(300), "0ms"),
        ] {
            assert_eq!(
                CheckError::Timeout(duration).to_string(),
                format!("timeout after {text}")
            );
        }
    }
}
