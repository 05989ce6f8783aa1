//! `imageswap init`: the init container that makes an installation work
//! without manual certificate steps (`../shared/spec/init.md`). It settles the
//! serving pair, writes it to the TLS directory for the server, and keeps the
//! MutatingWebhookConfiguration's `caBundle` right. This is the only part of
//! the program that talks to the Kubernetes API.
//!
//! # Flow
//!
//! 1. Read the MWC template first (unless `IMAGESWAP_DISABLE_AUTO_MWC`), so a
//!    broken template fails before anything is written in the cluster.
//! 2. The serving pair ([`serving_pair`]): the annotated secret's pair in
//!    bring-your-own mode (checked: both keys present, CA secret present,
//!    key matches, `rootca.pem` signs it, covers `<svc>.<ns>.svc`, not
//!    expired; a warning within 30 days), else the stored pair while it is
//!    sound and outside `IMAGESWAP_CERT_RENEW_BEFORE`, else a new pair issued
//!    from ImageSwap's own CA ([`self_signed`], the default) or through the
//!    CSR API ([`csr`]) and stored with a precondition ([`secret`]). In
//!    `self-signed` mode a stored pair from another CA the live `caBundle`
//!    trusts (an upgrade from `csr`) is kept while usable, so old and new
//!    replicas serve one trusted pair during the rollout.
//! 3. `cert.pem` and `key.pem` (mode 0600) into `IMAGESWAP_TLS_DIR` ([`files`]).
//! 4. The MWC ([`webhook`]) with the CA: `rootca.pem` in bring-your-own mode,
//!    the `kube-root-ca.crt` ConfigMap's `ca.crt` otherwise.
//!
//! # Settings (flag, environment variable, default)
//!
//! | flag | variable | default |
//! |---|---|---|
//! | `--namespace` | `IMAGESWAP_NAMESPACE_NAME` | `imageswap-system` |
//! | `--pod-name` | `IMAGESWAP_POD_NAME` | the hostname |
//! | `--service-name` | `IMAGESWAP_SERVICE_NAME` | `imageswap` |
//! | `--tls-secret` | `IMAGESWAP_TLS_SECRET_NAME` | `imageswap-tls` |
//! | `--ca-secret` | `IMAGESWAP_TLS_CA_SECRET_NAME` | `imageswap-tls-ca` |
//! | `--mwc-name` | `IMAGESWAP_MWC_NAME` | `imageswap-webhook` |
//! | `--webhook-name` | `IMAGESWAP_WEBHOOK_NAME` | `imageswap.webhook.k8s.twr.io` |
//! | `--mwc-template` | `IMAGESWAP_MWC_TEMPLATE` | `/mwc/imageswap-mwc.yaml` |
//! | `--tls-dir` | `IMAGESWAP_TLS_DIR` | `/tls` |
//! | `--csr-signer` | `IMAGESWAP_CSR_SIGNER_NAME` | `kubernetes.io/kubelet-serving` |
//! | `--disable-auto-mwc` | `IMAGESWAP_DISABLE_AUTO_MWC` | `false` (any case) |
//! | `--csr-timeout` | `IMAGESWAP_CSR_TIMEOUT` | `60s` |
//! | `--renew-before` | `IMAGESWAP_CERT_RENEW_BEFORE` | `180d` |
//! | `--cert-source` | `IMAGESWAP_CERT_SOURCE` | `self-signed` (`csr` with auto-MWC off; or `byoc`) |
//! | `--self-signed-ca-lifetime` | `IMAGESWAP_SELF_SIGNED_CA_LIFETIME` | `3650d` |
//! | `--self-signed-cert-lifetime` | `IMAGESWAP_SELF_SIGNED_CERT_LIFETIME` | `365d` |
//! | `--watch` | – | off |
//! | `--watch-interval` | `IMAGESWAP_WATCH_INTERVAL` | `1m` |
//! | `--renew-fraction` | `IMAGESWAP_CERT_RENEW_FRACTION` | `1/3` |
//! | `--watch-listen` | `IMAGESWAP_WATCH_LISTEN` | off |
//!
//! # `--watch`
//!
//! The same binary and settings as a native sidecar: the first pass is
//! `init` (its failure ends the sidecar, so the pod stays unready), then
//! [`watch::Watcher`] keeps the pair and the webhook configuration right
//! while the pod runs: renewal at a third of the lifetime, a rotated cluster
//! CA (the old CA kept in the `caBundle` by [`ca_bundle`] while a replica may
//! serve a pair it signed), a renewed bring-your-own secret, drift put back.
//! [`probes`] serves its startup probe and metrics. With
//! `IMAGESWAP_CERT_SOURCE=self-signed`, pairs come from a CA of ImageSwap's own
//! ([`self_signed`]).
//!
//! # Exit
//!
//! 0 when the pod may start serving. 2 with one line naming the variable for a
//! bad setting. 1 with one log line naming the object and what to do for
//! everything else, for example a CSR approved but never signed (set
//! `IMAGESWAP_CSR_SIGNER_NAME` or bring your own certificate), a forbidden API
//! call (which permission to grant), or a bring-your-own pair whose key does
//! not match, which `rootca.pem` does not sign, with the wrong names, or
//! expired.
//!
//! # Decisions
//!
//! - CSRs are named `<svc>.<ns>.<pod>.<random>` and left in place, as the
//!   original did; the controller-manager removes issued CSRs after about an
//!   hour.
//! - The TLS secret is created as `Opaque` with an `imageswap/updated-by-pod`
//!   annotation; a replace keeps the secret's type and other keys.
//! - The MWC is kept with GET, compare, PUT rather than server-side apply, so
//!   an object in sync costs no write (see [`webhook`]).
//! - New keys are ECDSA P-256 (PKCS#8); bring-your-own keys may be PKCS#8,
//!   PKCS#1 RSA or SEC1 EC, whatever the server's rustls loads.

pub mod api_error;
pub mod ca_bundle;
pub mod csr;
pub mod files;
pub mod probes;
pub mod projection;
pub mod secret;
pub mod self_signed;
pub mod serving_pair;
pub mod settings;
pub mod tls_pair;
pub mod watch;
pub mod webhook;

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tracing::info;

pub use serving_pair::PairSource;
pub use settings::{InitArgs, InitSettings};
pub use webhook::MwcOutcome;

/// Why `init` failed; each variant's `Display` is the one line an operator
/// reads.
#[derive(Debug, Error)]
pub enum InitError {
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error(
        "cannot configure the Kubernetes client: {0} (in a pod, check the service account token \
         is mounted; by hand, check KUBECONFIG)"
    )]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Pair(#[from] serving_pair::PairError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error(transparent)]
    SelfSigned(#[from] self_signed::SelfSignedError),
}

/// What `init` did, for the final log line and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOutcome {
    pub pair: PairSource,
    /// Unix seconds.
    pub not_after: i64,
    pub mwc: MwcOutcome,
    /// The CA bundle the `caBundle` was made from (the cluster's, the own
    /// CA's or `rootca.pem`), unless auto-MWC is off.
    pub cluster_ca: Option<Vec<u8>>,
    /// The `caBundle` written or found in sync: `cluster_ca` plus any CA kept
    /// because the stored pair still comes from it (a CA rotation, or an
    /// upgrade to self-signed from a cluster-signed pair). The sidecar
    /// treats these as CAs it trusted, so each gets its grace period once
    /// the pair moves on.
    pub ca_bundle: Option<Vec<u8>>,
}

/// Everything `init` does, against any API server `client` points at.
pub async fn run_with(client: kube::Client, settings: &InitSettings) -> Result<InitOutcome, InitError> {
    settings.validate()?;
    let template = if settings.disable_auto_mwc {
        None
    } else {
        Some(webhook::Template::load(settings)?)
    };

    let now = unix_now();
    let own_ca = match settings.cert_source {
        settings::CertSource::SelfSigned => Some(self_signed::ensure_ca(&client, settings, now, None).await?),
        _ => None,
    };
    let serving = match &own_ca {
        None => serving_pair::ensure(&client, settings, now).await?,
        Some(ca) => {
            let policy = serving_pair::Policy {
                cluster_ca: Some(serving_pair::ClusterCa {
                    fingerprint: ca_bundle::fingerprint(&ca.bundle),
                    pem: ca.bundle.clone(),
                    assumed: None,
                }),
                own_ca: Some(ca.clone()),
                trusted: match &template {
                    Some(_) => {
                        webhook::live_ca_bundle(&client, &settings.mwc_name, &settings.webhook_name).await?
                    }
                    None => None,
                },
                ..serving_pair::Policy::once(settings)
            };
            serving_pair::ensure_with(&client, settings, now, &policy).await?
        }
    };
    files::write_pair(&settings.tls_dir, &serving.pair)?;
    info!(dir = %settings.tls_dir.display(), "Wrote cert.pem and key.pem for the server.");

    let mut cluster_ca = None;
    let mut written_bundle = None;
    let mwc = match template {
        None => {
            info!("IMAGESWAP_DISABLE_AUTO_MWC is set; leaving the webhook configuration alone.");
            MwcOutcome::Disabled
        }
        Some(template) => {
            let ca = match (&serving.byoc_ca, &own_ca) {
                (Some(ca), _) => ca.clone(),
                (None, Some(own)) => own.bundle.clone(),
                (None, None) => secret::read_cluster_ca(&client, &settings.namespace).await?,
            };
            cluster_ca = Some(ca.clone());
            // A CA that left the base but signs the pair this pod serves
            // stays in the caBundle (a restart in the middle of a CA
            // rotation, before the sidecar reissued), so the API server
            // keeps trusting it; any other CA goes.
            let mut retention = ca_bundle::Retention::new(std::time::Duration::ZERO);
            let serving_cert = serving.pair.cert_pem.clone();
            let previous_cert = serving.previous_cert.clone();
            let webhook_name = settings.webhook_name.clone();
            let started = std::time::Instant::now();
            let outcome =
                webhook::ensure_by(&client, &settings.mwc_name, webhook::IfMissing::Create, |live| {
                    let live_bundle = webhook::ca_bundle_of(live, &webhook_name);
                    let bundle = retention.bundle(
                        &ca,
                        live_bundle.as_deref(),
                        &[&serving_cert, &previous_cert],
                        now,
                        started,
                    );
                    written_bundle = Some(bundle.clone());
                    template.with_ca_bundle(&bundle)
                })
                .await?;
            if outcome == MwcOutcome::Unchanged {
                info!(mwc = %settings.mwc_name, "The webhook configuration matches the template.");
            }
            outcome
        }
    };
    Ok(InitOutcome {
        pair: serving.source,
        not_after: serving.info.not_after,
        mwc,
        cluster_ca,
        ca_bundle: written_bundle,
    })
}

/// `init --watch`: the first pass is `init` ([`run_with`]; its error ends
/// the sidecar, so the kubelet restarts it and the pod stays unready), then
/// `ready` is called and the [`watch::Watcher`] keeps it all true until
/// `shutdown` completes.
pub async fn watch_with(
    client: kube::Client,
    settings: &InitSettings,
    metrics: std::sync::Arc<crate::telemetry::metrics::InitMetrics>,
    ready: impl FnOnce(&InitOutcome),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), InitError> {
    let outcome = run_with(client.clone(), settings).await?;
    metrics.reconcile(crate::telemetry::metrics::ReloadResult::success, unix_now());
    metrics.cert_expiry(outcome.not_after);
    ready(&outcome);
    info!(
        interval = %humantime::format_duration(settings.watch_interval),
        "The pair is written; watching the pair and the webhook configuration."
    );
    // The projection (off by default) runs beside the pair's watch and
    // stops with it.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projection = async {
        if let Some(projection) = projection::ProjectionSettings::from_init(settings) {
            let mut stopped = stopped.clone();
            projection::run(client.clone(), projection, metrics.clone(), async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await;
        }
    };
    let pair = async {
        watch::Watcher::new(client.clone(), settings.clone(), metrics.clone())
            .first_bundle(outcome.cluster_ca.as_deref())
            .trusted_at_start(outcome.ca_bundle.as_deref())
            .run(shutdown)
            .await;
        let _ = stop.send(true);
    };
    tokio::join!(pair, projection);
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
