//! `imageswap init --watch`: the native sidecar that keeps true, while the
//! pod runs, what `init` made true at its start. Every `--watch-interval`
//! (jittered), and at once when the template file changes, one pass:
//!
//! 1. **The pair.** A bring-your-own secret is followed: read, checked again
//!    as at start, and its pair used (cert-manager renews it in place). A pair
//!    `init` manages is renewed when a third of its lifetime is left
//!    (`IMAGESWAP_CERT_RENEW_FRACTION`), when it no longer chains to the
//!    cluster CA bundle, or when it was issued under another bundle than the
//!    current one (the fingerprint annotation: the cluster CA rotated).
//!    Before issuing, a pass waits a random part of the interval and reads
//!    the secret again, so that of many replicas usually one issues; the
//!    secret's `resourceVersion` precondition settles the rest, and the
//!    losers take the winner's pair.
//! 2. **The webhook configuration** is put back where it differs from the
//!    template (one write per drift, none in sync; a deleted one is left
//!    deleted: `helm uninstall` deletes it while the pods still run, and only
//!    a pod start creates it), its `caBundle` being the
//!    CA of the pair plus any CA still needed by a replica that has not yet
//!    adopted the new pair ([`ca_bundle`](super::ca_bundle)). This comes
//!    before the files, so the API server trusts a new pair before any server
//!    presents it.
//! 3. **The files** are rewritten when they differ from the pair; the
//!    server's reloader picks them up within seconds.
//!
//! A failed pass changes nothing (the server keeps serving its current
//! pair), logs one line and is retried with exponential backoff from the
//! interval up to five minutes; the first pass that succeeds again says so.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::ca_bundle::{self, Retention};
use super::secret::{self, SecretError, Secrets, Written};
use super::serving_pair::{self, ClusterCa, PairSource, Policy};
use super::settings::{CertSource, InitSettings};
use super::webhook::{self, IfMissing, MwcOutcome, Template};
use super::{InitError, files, self_signed, tls_pair, unix_now};
use crate::telemetry::metrics::{InitAction, InitMetrics, ReloadResult};

/// The longest wait between two attempts while passes fail.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Every wait is the interval times a factor drawn from 1 ± this.
const JITTER: f64 = 0.25;
/// Slack on top of three intervals before a CA that no longer signs the
/// stored pair leaves the `caBundle`: the servers' reload after the files
/// change (150 ms after the event, 10 s at worst by the poll).
const RETIRE_SLACK: Duration = Duration::from_secs(5);
/// At most this long between putting a new CA in the `caBundle` and writing
/// the pair it signs (the interval, when shorter).
const CA_PROPAGATION: Duration = Duration::from_secs(2);
/// Quiet time after a template file event (a ConfigMap `..data` swap is a
/// burst of events).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What one pass found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    pub pair: PairSource,
    /// Unix seconds.
    pub not_after: i64,
    pub mwc: MwcOutcome,
    /// `cert.pem` and `key.pem` were rewritten.
    pub wrote_files: bool,
}

/// The sidecar's state between passes.
pub struct Watcher {
    client: kube::Client,
    settings: InitSettings,
    metrics: Arc<InitMetrics>,
    retention: Retention,
    failures: u32,
    /// The cluster CA bundle's fingerprint at this sidecar's first pass.
    first_bundle: Option<String>,
    /// The webhook configuration was found deleted (logged once per
    /// deletion, not on every pass).
    mwc_absent: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    pub fn new(client: kube::Client, settings: InitSettings, metrics: Arc<InitMetrics>) -> Watcher {
        let grace = settings.watch_interval.saturating_mul(3) + RETIRE_SLACK;
        Watcher {
            client,
            settings,
            metrics,
            retention: Retention::new(grace),
            failures: 0,
            first_bundle: None,
            mwc_absent: false,
        }
    }

    /// The cluster CA bundle the first pass (`init`) used: a change from it
    /// is a rotation even before this watcher's own first pass.
    pub fn first_bundle(mut self, pem: Option<&[u8]>) -> Watcher {
        if let Some(pem) = pem {
            self.first_bundle = Some(ca_bundle::fingerprint(pem));
            self.retention.saw_base(pem);
        }
        self
    }

    /// The `caBundle` the first pass wrote (or found in sync): every CA in
    /// it was trusted, so one that stops signing the pair gets the grace
    /// period rather than being dropped as drift.
    pub fn trusted_at_start(mut self, bundle: Option<&[u8]>) -> Watcher {
        if let Some(bundle) = bundle {
            self.retention.saw_base(bundle);
        }
        self
    }

    /// Passes failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Passes until `shutdown` completes; never returns an error (a failed
    /// pass is retried).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let changed = Arc::new(Notify::new());
        let _watch = self.watch_template(changed.clone());
        tokio::pin!(shutdown);
        loop {
            let wait = self.next_wait();
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
                () = changed.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    info!(template = %self.settings.mwc_template.display(), "The webhook configuration template or the maps changed.");
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                _ = self.pass_and_count() => {}
            }
        }
        info!("Stopping the watch.");
    }

    /// One pass, counted and logged; `Err` when it failed.
    pub async fn pass_and_count(&mut self) -> Result<Pass, InitError> {
        let result = self.pass().await;
        let now = unix_now();
        match &result {
            Ok(pass) => {
                if self.failures > 0 {
                    info!(failed_passes = self.failures, "The watch pass succeeded again.");
                }
                self.failures = 0;
                self.metrics.reconcile(ReloadResult::success, now);
                self.metrics.cert_expiry(pass.not_after);
            }
            Err(err) => {
                self.failures = self.failures.saturating_add(1);
                self.metrics.reconcile(ReloadResult::error, now);
                warn!(
                    failures = self.failures,
                    retry_in = %humantime::format_duration(round_ms(self.backoff())),
                    "Watch pass failed, the server keeps its current pair: {err}."
                );
            }
        }
        result
    }

    /// One pass (see the module documentation).
    pub async fn pass(&mut self) -> Result<Pass, InitError> {
        let settings = &self.settings;
        let now = unix_now();
        let template = if settings.disable_auto_mwc {
            None
        } else {
            Some(Template::load(settings)?)
        };
        let secrets = Secrets::new(&self.client, &settings.namespace);
        let current = secrets.read(&settings.tls_secret).await?;
        let live_bundle = match (&template, settings.cert_source) {
            (Some(_), CertSource::SelfSigned) => {
                webhook::live_ca_bundle(&self.client, &settings.mwc_name, &settings.webhook_name).await?
            }
            _ => None,
        };

        let mut own_ca = None;
        let serving = match current
            .as_ref()
            .filter(|found| serving_pair::is_byoc(settings, found))
        {
            Some(found) => serving_pair::byoc(&secrets, settings, found, now).await?,
            None if settings.cert_source == CertSource::SelfSigned => {
                let ca = self_signed::ensure_ca(&self.client, settings, now, Some(settings.renew_fraction))
                    .await?;
                let fingerprint = ca_bundle::fingerprint(&ca.bundle);
                let assumed = self
                    .first_bundle
                    .get_or_insert_with(|| fingerprint.clone())
                    .clone();
                let policy = Policy {
                    renew_fraction: Some(settings.renew_fraction),
                    cluster_ca: Some(ClusterCa {
                        fingerprint,
                        pem: ca.bundle.clone(),
                        assumed: Some(assumed),
                    }),
                    own_ca: Some(ca.clone()),
                    trusted: live_bundle,
                    ..Policy::once(settings)
                };
                own_ca = Some(ca);
                self.managed(&policy, current.as_ref(), now).await?
            }
            None => {
                let cluster_ca = match secret::read_cluster_ca(&self.client, &settings.namespace).await {
                    Ok(pem) => {
                        let fingerprint = ca_bundle::fingerprint(&pem);
                        let assumed = self
                            .first_bundle
                            .get_or_insert_with(|| fingerprint.clone())
                            .clone();
                        Some(ClusterCa {
                            fingerprint,
                            pem,
                            assumed: Some(assumed),
                        })
                    }
                    // Without auto-MWC the cluster CA is not needed; without it
                    // only the chain check is skipped.
                    Err(SecretError::NoClusterCa { .. }) if template.is_none() => None,
                    Err(err) => return Err(err.into()),
                };
                let policy = Policy {
                    renew_fraction: Some(settings.renew_fraction),
                    cluster_ca,
                    ..Policy::once(settings)
                };
                self.managed(&policy, current.as_ref(), now).await?
            }
        };

        let mwc = match &template {
            None => MwcOutcome::Disabled,
            Some(template) => {
                let base = match (&serving.byoc_ca, &own_ca) {
                    (Some(ca), _) => ca.clone(),
                    (None, Some(own)) => own.bundle.clone(),
                    (None, None) => secret::read_cluster_ca(&self.client, &settings.namespace).await?,
                };
                let serving_cert = serving.pair.cert_pem.clone();
                let previous_cert = serving.previous_cert.clone();
                let webhook_name = settings.webhook_name.clone();
                let retention = &mut self.retention;
                let started = Instant::now();
                // A missing object is left missing (see MwcOutcome::Absent).
                let outcome =
                    webhook::ensure_by(&self.client, &settings.mwc_name, IfMissing::Leave, |live| {
                        let live_bundle = webhook::ca_bundle_of(live, &webhook_name);
                        let bundle = retention.bundle(
                            &base,
                            live_bundle.as_deref(),
                            &[&serving_cert, &previous_cert],
                            now,
                            started,
                        );
                        template.with_ca_bundle(&bundle)
                    })
                    .await?;
                if matches!(outcome, MwcOutcome::Created | MwcOutcome::Updated) {
                    self.metrics.action(InitAction::mwc_written);
                }
                let absent = outcome == MwcOutcome::Absent;
                if absent && !self.mwc_absent {
                    warn!(
                        mwc = %settings.mwc_name,
                        "The webhook configuration was deleted; the sidecar does not recreate it (uninstall or break \
                         glass). A pod start creates it again."
                    );
                } else if !absent && self.mwc_absent {
                    info!(mwc = %settings.mwc_name, "The webhook configuration exists again.");
                }
                self.mwc_absent = absent;
                outcome
            }
        };

        let on_disk = files::read_pair(&settings.tls_dir);
        let wrote_files = on_disk.as_ref() != Some(&serving.pair);
        if wrote_files && matches!(mwc, MwcOutcome::Updated) {
            // The API servers learn the new caBundle through their watch of
            // the object: give them a moment before the server presents a
            // pair only the new bundle trusts.
            tokio::time::sleep(settings.watch_interval.min(CA_PROPAGATION)).await;
        }
        if wrote_files {
            files::write_pair(&settings.tls_dir, &serving.pair)?;
            self.metrics.action(InitAction::pair_written);
            info!(
                dir = %settings.tls_dir.display(),
                not_after = %tls_pair::format_time(serving.info.not_after),
                pair = ?serving.source,
                "Wrote the new cert.pem and key.pem for the server."
            );
        }
        if matches!(serving.source, PairSource::Issued { .. }) {
            self.metrics.action(InitAction::pair_issued);
        }
        Ok(Pass {
            pair: serving.source,
            not_after: serving.info.not_after,
            mwc,
            wrote_files,
        })
    }

    /// The managed pair: the stored one while the policy accepts it, else,
    /// after a random part of the interval (another replica may renew it
    /// first), whatever [`serving_pair::ensure_with`] settles.
    async fn managed(
        &self,
        policy: &Policy,
        current: Option<&k8s_openapi::api::core::v1::Secret>,
        now: i64,
    ) -> Result<serving_pair::ServingPair, InitError> {
        let settings = &self.settings;
        let names = settings.service_dns_names();
        if let Some(found) = current {
            match policy.judge(found, &names, now, true) {
                Ok(info) => {
                    return Ok(serving_pair::ServingPair {
                        pair: secret::pair_of(found),
                        info,
                        source: PairSource::Existing,
                        byoc_ca: None,
                        previous_cert: secret::data(found, secret::PREVIOUS_CERT_KEY),
                    });
                }
                Err(problem) => {
                    // Still serviceable (only the renewal is due): renew in
                    // turn, one replica at a time. Unusable: at once.
                    if let Ok(info) = policy.judge(found, &names, now, false) {
                        let keep = || serving_pair::ServingPair {
                            pair: secret::pair_of(found),
                            info: info.clone(),
                            source: PairSource::Existing,
                            byoc_ca: None,
                            previous_cert: secret::data(found, secret::PREVIOUS_CERT_KEY),
                        };
                        if let Some(holder) = secret::renewal_claimed_by_other(found, &settings.pod_name, now)
                        {
                            debug!(holder = %holder, "Another replica renews the serving certificate.");
                            return Ok(keep());
                        }
                        let pause = settings.watch_interval.mul_f64(random_unit() * 0.5);
                        tokio::time::sleep(pause).await;
                        let secrets = Secrets::new(&self.client, &settings.namespace);
                        let Some(again) = secrets.read(&settings.tls_secret).await? else {
                            return Ok(keep());
                        };
                        if again.metadata.resource_version != found.metadata.resource_version {
                            // Someone renewed or claimed meanwhile: look again next pass.
                            return Ok(keep());
                        }
                        let until = unix_now().saturating_add(claim_secs(settings));
                        if secrets.claim_renewal(&again, &settings.pod_name, until).await?
                            == Written::LostRace
                        {
                            return Ok(keep());
                        }
                        info!(
                            reason = %problem,
                            not_after = %tls_pair::format_time(info.not_after),
                            "Renewing the serving certificate (this replica claimed the renewal)."
                        );
                    } else {
                        info!(reason = %problem, "The serving certificate must be reissued now.");
                    }
                }
            }
        }
        Ok(serving_pair::ensure_with(&self.client, settings, unix_now(), policy).await?)
    }

    /// How long to wait before the next pass.
    fn next_wait(&self) -> Duration {
        if self.failures == 0 {
            jittered(self.settings.watch_interval)
        } else {
            self.backoff()
        }
    }

    /// The wait after `failures` failed passes: the interval, doubled for each
    /// further failure, at most [`MAX_BACKOFF`] (or the interval when longer).
    fn backoff(&self) -> Duration {
        let interval = self.settings.watch_interval;
        let doublings = self.failures.saturating_sub(1).min(20);
        let cap = MAX_BACKOFF.max(interval);
        jittered(interval.saturating_mul(1 << doublings).min(cap))
    }

    /// Wakes `changed` on events in the template's directory (a ConfigMap
    /// volume swaps its `..data` symlink there). `None` leaves it to the
    /// interval.
    fn watch_template(&self, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        if self.settings.disable_auto_mwc {
            return None;
        }
        let directory = match self.settings.mwc_template.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let handler = move |event: notify::Result<notify::Event>| {
            // Opening and reading (our own reads among them) cannot change
            // the template; anything else may.
            if let Ok(event) = event
                && !matches!(
                    event.kind,
                    notify::EventKind::Access(
                        notify::event::AccessKind::Open(_)
                            | notify::event::AccessKind::Read
                            | notify::event::AccessKind::Close(notify::event::AccessMode::Read)
                    )
                )
            {
                changed.notify_one();
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(err) => {
                debug!(error = %err, "Cannot watch the template; relying on the interval.");
                return None;
            }
        };
        match watcher.watch(&directory, notify::RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watch_maps(&mut watcher, &directory);
                Some(watcher)
            }
            Err(err) => {
                debug!(directory = %directory.display(), error = %err, "Cannot watch the template's directory; relying on the interval.");
                None
            }
        }
    }

    /// The maps file's directory too: the generated matchConditions follow
    /// the maps, so a maps change is a pass at once (one write, by the same
    /// comparison as a template change), not at the next interval.
    fn watch_maps(&self, watcher: &mut notify::RecommendedWatcher, template_dir: &std::path::Path) {
        use notify::Watcher as _;
        let Some(maps) = self.settings.conditions.as_ref().and_then(|c| c.maps_file()) else {
            return;
        };
        let directory = match maps.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        if directory != template_dir
            && let Err(err) = watcher.watch(&directory, notify::RecursiveMode::NonRecursive)
        {
            debug!(directory = %directory.display(), error = %err, "Cannot watch the maps file's directory; relying on the interval.");
        }
    }
}

/// How long a renewal claim holds: the CSR wait and two passes.
fn claim_secs(settings: &InitSettings) -> i64 {
    let claim = settings.csr_timeout + settings.watch_interval.saturating_mul(2);
    i64::try_from(claim.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// `base` times a random factor in `1 ± JITTER`.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(1.0 - JITTER + 2.0 * JITTER * random_unit())
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// A number in `[0, 1)`, for jitter.
fn random_unit() -> f64 {
    // 53 bits: what an f64 holds exactly.
    #[allow(clippy::cast_precision_loss)]
    let unit = (super::csr::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter() {
        let base = Duration::from_secs(60);
        for _ in 0..1000 {
            let wait = jittered(base);
            assert!(
                wait >= Duration::from_secs(45) && wait < Duration::from_secs(75),
                "{wait:?}"
            );
        }
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
