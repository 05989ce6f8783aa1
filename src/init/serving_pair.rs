//! Where the serving pair comes from (spec §1): the operator's own pair when
//! the TLS secret carries the `imageswap-byoc` annotation (checked, never
//! rotated), else the pair already in the secret while it is sound and far
//! from expiry, else a new one issued through the CSR API and stored.
//!
//! Replicas that start together race. Each issues through its own CSR, then
//! writes with a precondition; the loser re-reads and takes the winner's pair
//! when it is usable, so every pod ends with a certificate that matches its
//! key and the secret holds one consistent pair. A pod issues at most once: a
//! second round only retries the write.

use thiserror::Error;
use tracing::{info, warn};

use super::csr::{self, CsrError};
use super::secret::{self, SecretError, Secrets, Written};
use super::settings::{CertSource, InitSettings};
use super::tls_pair::{self, PairInfo, PairProblem, TlsPair};

/// Reads and writes of the secret before giving up on a race that does not
/// settle (only a writer looping against us could cause that).
const MAX_WRITE_ROUNDS: usize = 5;
/// Warn about a bring-your-own certificate this close to expiry.
const BYOC_EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

/// How this pod got its pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairSource {
    /// The operator's pair from the annotated secret.
    Byoc,
    /// The pair already stored was sound.
    Existing,
    /// This pod issued the pair and stored it.
    Issued { csr_name: String },
    /// This pod lost the race and took the pair another replica stored.
    Winner,
}

/// The pair the server will use, and the CA for the webhook configuration
/// when the operator brought it.
#[derive(Debug)]
pub struct ServingPair {
    pub pair: TlsPair,
    pub info: PairInfo,
    pub source: PairSource,
    pub byoc_ca: Option<Vec<u8>>,
    /// The secret's [`secret::PREVIOUS_CERT_KEY`] (empty when none): its CA
    /// stays in the `caBundle` while it has not expired.
    pub previous_cert: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum PairError {
    #[error("bring-your-own certificate in secret {secret}: {problem}: {action}")]
    Byoc {
        secret: String,
        problem: PairProblem,
        action: String,
    },
    #[error(
        "secret {secret} is marked {annotation} but its CA secret {ca_secret} does not exist: create it \
         with the issuing CA certificate under {key:?}, or store it under {ca_crt:?} in the secret itself \
         (as cert-manager does)",
        annotation = secret::BYOC_ANNOTATION,
        key = secret::ROOTCA_KEY,
        ca_crt = secret::CA_CRT_KEY
    )]
    ByocCaMissing { secret: String, ca_secret: String },
    #[error(
        "CA secret {ca_secret} has no {key:?} or it is empty: store there (or under {ca_crt:?}) the CA \
         certificate that signed the certificate in {secret}",
        key = secret::ROOTCA_KEY,
        ca_crt = secret::CA_CRT_KEY
    )]
    ByocCaEmpty { secret: String, ca_secret: String },
    #[error(
        "IMAGESWAP_CERT_SOURCE is byoc but secret {secret} does not exist: create it with your pair under \"cert.pem\" and \"key.pem\" (or \"tls.crt\" and \"tls.key\")"
    )]
    ByocMissing { secret: String },
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(transparent)]
    SelfSigned(#[from] super::self_signed::SelfSignedError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "secret {secret} kept changing under {rounds} write attempts: find what else writes it \
         (annotation {annotation} names the last imageswap pod)",
        annotation = secret::UPDATED_BY_ANNOTATION
    )]
    RaceUnsettled { secret: String, rounds: usize },
}

/// What makes a stored pair good enough to keep, beyond parsing, matching
/// its key and covering the service names.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Renew when it expires within this many seconds.
    pub renew_before_secs: i64,
    /// `--watch`: renew when this share of its lifetime is left, if that
    /// comes later than `renew_before_secs` (a short-lived pair must not be
    /// renewed on every pass).
    pub renew_fraction: Option<f64>,
    /// `--watch`: the cluster CA bundle the pair must chain to, and its
    /// fingerprint, which a pair stored by `--watch` carries in an
    /// annotation: a pair issued under another bundle is reissued (the
    /// cluster CA rotated).
    pub cluster_ca: Option<ClusterCa>,
    /// `self-signed`: issue from this CA instead of through a CSR (and
    /// `cluster_ca` is its bundle).
    pub own_ca: Option<super::self_signed::OwnCa>,
    /// `self-signed`: the live `caBundle`, what the API server trusts now.
    /// A stored pair from another CA in it (an upgrade from `csr` or from the
    /// original: a cluster-signed pair) is kept until its renewal is due
    /// instead of being replaced at the first start: replicas of the old
    /// version serve that pair during the rollout, and replacing it would
    /// leave them, or the new ones, with a pair one `caBundle` does not
    /// trust while old and new sidecars disagree about it. Its renewal
    /// remembers it in [`secret::PREVIOUS_CERT_KEY`], whose CA then stays in
    /// the `caBundle` until it expires (old pods never adopt a new pair).
    pub trusted: Option<Vec<u8>>,
}

/// The cluster CA bundle as `--watch` saw it.
#[derive(Clone, Debug)]
pub struct ClusterCa {
    pub pem: Vec<u8>,
    pub fingerprint: String,
    /// The fingerprint to assume for a stored pair without the annotation
    /// (stored by `init`, or before this version): the bundle this sidecar
    /// first saw.
    pub assumed: Option<String>,
}

impl Policy {
    /// `init`'s policy: the pair must stay valid longer than
    /// `IMAGESWAP_CERT_RENEW_BEFORE`.
    pub fn once(settings: &InitSettings) -> Policy {
        Policy {
            renew_before_secs: i64::try_from(settings.renew_before.as_secs()).unwrap_or(i64::MAX),
            renew_fraction: None,
            cluster_ca: None,
            own_ca: None,
            trusted: None,
        }
    }

    /// Seconds of validity below which `info`'s pair is renewed.
    pub fn threshold(&self, info: &PairInfo) -> i64 {
        match self.renew_fraction {
            None => self.renew_before_secs,
            Some(fraction) => {
                let lifetime = info.not_after.saturating_sub(info.not_before).max(0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                let share = (lifetime as f64 * fraction) as i64;
                share.min(self.renew_before_secs)
            }
        }
    }

    /// The whole verdict on a stored secret's pair. `strict` is false after
    /// a lost race: then any usable pair chained to the cluster CA is taken,
    /// whatever the renewal threshold.
    pub fn judge(
        &self,
        secret: &k8s_openapi::api::core::v1::Secret,
        names: &[String],
        now: i64,
        strict: bool,
    ) -> Result<PairInfo, PairProblem> {
        let pair = secret::pair_of(secret);
        let info = tls_pair::inspect(&pair)?;
        // A pair from another CA the API server trusts (see `trusted`): at a
        // pod start it is kept while usable at all, whatever the threshold,
        // so an upgrade never replaces it mid-rollout; the sidecar renews it
        // at its usual share of the lifetime.
        let legacy = self.is_legacy(&pair.cert_pem);
        let threshold = if strict && !(legacy && self.renew_fraction.is_none()) {
            self.threshold(&info)
        } else {
            0
        };
        tls_pair::check_managed(&pair, names, now, threshold)?;
        if legacy {
            return Ok(info);
        }
        if let Some(ca) = &self.cluster_ca {
            tls_pair::verify_chain(&pair.cert_pem, &ca.pem)?;
            // The bundle changed since the pair was issued: reissue, unless
            // the pair already comes from the newest CA in it (the signer
            // switched first; the old CA merely left the bundle).
            let stamped = secret::annotation(secret, secret::CLUSTER_CA_ANNOTATION).or(ca.assumed.as_deref());
            if strict
                && stamped.is_some_and(|stamped| stamped != ca.fingerprint)
                && !super::ca_bundle::signed_by_newest(&pair.cert_pem, &ca.pem)
            {
                return Err(PairProblem::IssuedUnderOtherCa);
            }
        }
        Ok(info)
    }

    /// Whether `cert_pem` comes from another CA than the bundle's, one the
    /// live `caBundle` trusts (see `trusted`).
    fn is_legacy(&self, cert_pem: &[u8]) -> bool {
        self.cluster_ca.as_ref().is_some_and(|ca| {
            tls_pair::verify_chain(cert_pem, &ca.pem).is_err()
                && self
                    .trusted
                    .as_deref()
                    .is_some_and(|trusted| tls_pair::verify_chain(cert_pem, trusted).is_ok())
        })
    }

    fn annotations(&self) -> Vec<(&'static str, String)> {
        match &self.cluster_ca {
            Some(ca) => vec![(secret::CLUSTER_CA_ANNOTATION, ca.fingerprint.clone())],
            None => Vec::new(),
        }
    }
}

/// Settles the serving pair; `now` is Unix seconds.
pub async fn ensure(
    client: &kube::Client,
    settings: &InitSettings,
    now: i64,
) -> Result<ServingPair, PairError> {
    ensure_with(client, settings, now, &Policy::once(settings)).await
}

/// [`ensure`] with another [`Policy`] (`--watch`).
pub async fn ensure_with(
    client: &kube::Client,
    settings: &InitSettings,
    now: i64,
    policy: &Policy,
) -> Result<ServingPair, PairError> {
    let secrets = Secrets::new(client, &settings.namespace);
    let names = settings.service_dns_names();
    let secret_ref = format!("{}/{}", settings.namespace, settings.tls_secret);

    let mut current = secrets.read(&settings.tls_secret).await?;
    let mut issued: Option<csr::Issued> = None;
    for round in 0..MAX_WRITE_ROUNDS {
        if let Some(found) = current.as_ref().filter(|found| is_byoc(settings, found)) {
            return byoc(&secrets, settings, found, now).await;
        }
        if current.is_none() && settings.cert_source == CertSource::Byoc {
            return Err(PairError::ByocMissing { secret: secret_ref });
        }
        if let Some(found) = &current {
            let pair = secret::pair_of(found);
            // After a lost race the secret holds a pair another replica just
            // issued: take it if it is usable at all, rather than overwrite
            // it because of the renewal threshold (a cluster signing shorter
            // than the threshold would otherwise churn forever).
            let verdict = policy.judge(found, &names, now, round == 0);
            match verdict {
                Ok(info) => {
                    let source = if round == 0 {
                        PairSource::Existing
                    } else {
                        PairSource::Winner
                    };
                    info!(
                        secret = %secret_ref,
                        not_after = %tls_pair::format_time(info.not_after),
                        "Using the serving certificate stored in the secret."
                    );
                    return Ok(ServingPair {
                        pair,
                        info,
                        source,
                        byoc_ca: None,
                        previous_cert: secret::data(found, secret::PREVIOUS_CERT_KEY),
                    });
                }
                Err(problem) => {
                    info!(secret = %secret_ref, reason = %problem, "The stored serving certificate must be reissued.");
                }
            }
        } else {
            info!(secret = %secret_ref, "No serving certificate stored yet; issuing one.");
        }

        let fresh = match (issued.take(), &policy.own_ca) {
            (Some(fresh), _) => fresh,
            (None, Some(ca)) => super::self_signed::issue(ca, settings, now)?,
            (None, None) => csr::issue(client, settings).await?,
        };
        // Replacing a pair from another CA the API server trusts (the
        // cluster-signed pair of an upgrade from csr): remember it while it
        // is valid, so its CA stays in the caBundle for replicas of the old
        // version, which never adopt the new pair. Otherwise whatever was
        // remembered stays.
        let replaced = current
            .as_ref()
            .map(|found| secret::pair_of(found).cert_pem)
            .filter(|cert| policy.is_legacy(cert) && tls_pair::not_after(cert).is_some_and(|end| end > now));
        let previous_cert = replaced
            .clone()
            .or_else(|| {
                current
                    .as_ref()
                    .map(|found| secret::data(found, secret::PREVIOUS_CERT_KEY))
            })
            .unwrap_or_default();
        match secrets
            .write_pair_annotated(
                &settings.tls_secret,
                current.as_ref(),
                &fresh.pair,
                &settings.pod_name,
                &policy.annotations(),
                replaced.as_deref(),
            )
            .await?
        {
            Written::Stored => {
                info!(secret = %secret_ref, csr = %fresh.csr_name, "Stored the new serving certificate.");
                let info = fresh.info;
                if info.seconds_left(now) <= policy.threshold(&info) {
                    warn!(
                        csr = %fresh.csr_name,
                        not_after = %tls_pair::format_time(info.not_after),
                        "The signer issued a certificate that already falls within IMAGESWAP_CERT_RENEW_BEFORE; every restart will reissue it."
                    );
                }
                return Ok(ServingPair {
                    pair: fresh.pair,
                    info,
                    source: PairSource::Issued {
                        csr_name: fresh.csr_name,
                    },
                    byoc_ca: None,
                    previous_cert,
                });
            }
            Written::LostRace => {
                info!(secret = %secret_ref, "Another replica wrote the secret first; reading it again.");
                issued = Some(fresh);
                current = secrets.read(&settings.tls_secret).await?;
            }
        }
    }
    Err(PairError::RaceUnsettled {
        secret: secret_ref,
        rounds: MAX_WRITE_ROUNDS,
    })
}

/// Whether the secret's pair is the operator's: the annotation, or
/// `IMAGESWAP_CERT_SOURCE=byoc`.
pub fn is_byoc(settings: &InitSettings, found: &k8s_openapi::api::core::v1::Secret) -> bool {
    secret::is_byoc(found) || settings.cert_source == CertSource::Byoc
}

/// The bring-your-own path: every check, no writes.
pub(crate) async fn byoc(
    secrets: &Secrets,
    settings: &InitSettings,
    found: &k8s_openapi::api::core::v1::Secret,
    now: i64,
) -> Result<ServingPair, PairError> {
    let secret_ref = format!("{}/{}", settings.namespace, settings.tls_secret);
    let ca_ref = format!("{}/{}", settings.namespace, settings.ca_secret);
    info!(secret = %secret_ref, "The secret is marked imageswap-byoc; using the pair in it as is.");
    let fail = |problem: PairProblem| PairError::Byoc {
        action: byoc_action(&problem, settings, &ca_ref),
        secret: secret_ref.clone(),
        problem,
    };

    let pair = secret::pair_of(found);
    if pair.cert_pem.iter().all(u8::is_ascii_whitespace) {
        return Err(fail(PairProblem::EmptyCert));
    }
    if pair.key_pem.iter().all(u8::is_ascii_whitespace) {
        return Err(fail(PairProblem::EmptyKey));
    }
    // The CA: the CA secret when there is one (`rootca.pem`, or cert-manager's
    // `ca.crt`), else the `ca.crt` cert-manager keeps beside the pair.
    let rootca = match secrets.read(&settings.ca_secret).await? {
        Some(ca_secret) => secret::ca_of(&ca_secret),
        None => {
            let own = secret::data(found, secret::CA_CRT_KEY);
            if own.iter().all(u8::is_ascii_whitespace) {
                return Err(PairError::ByocCaMissing {
                    secret: secret_ref,
                    ca_secret: ca_ref,
                });
            }
            own
        }
    };
    if rootca.iter().all(u8::is_ascii_whitespace) {
        return Err(PairError::ByocCaEmpty {
            secret: secret_ref,
            ca_secret: ca_ref,
        });
    }

    let info = tls_pair::inspect(&pair).map_err(fail)?;
    tls_pair::check_ca_bundle(&rootca).map_err(fail)?;
    tls_pair::verify_chain(&pair.cert_pem, &rootca).map_err(fail)?;
    // The API server dials `<svc>.<ns>.svc` and nothing else, so only that
    // name is required; the short names are what the original put in its
    // own certificates, and their absence is worth a warning only.
    tls_pair::require_names(&info, &[settings.service_host()]).map_err(fail)?;
    let names = settings.service_dns_names();
    let missing = info.missing_names(&names);
    if !missing.is_empty() {
        warn!(secret = %secret_ref, missing = %missing.join(", "), "The bring-your-own certificate does not cover every service name.");
    }
    tls_pair::require_valid_at(&info, now).map_err(fail)?;
    if info.seconds_left(now) <= BYOC_EXPIRY_WARNING_SECS {
        warn!(
            secret = %secret_ref,
            not_after = %tls_pair::format_time(info.not_after),
            "The bring-your-own certificate expires within 30 days; renew it and update the secret."
        );
    }
    Ok(ServingPair {
        pair,
        info,
        source: PairSource::Byoc,
        byoc_ca: Some(rootca),
        previous_cert: Vec::new(),
    })
}

/// What the operator should do about a bring-your-own pair's problem.
fn byoc_action(problem: &PairProblem, settings: &InitSettings, ca_ref: &str) -> String {
    match problem {
        PairProblem::EmptyCert | PairProblem::EmptyKey => {
            "store the PEM pair in the secret, or remove the imageswap-byoc annotation to let imageswap issue one"
                .to_owned()
        }
        PairProblem::NoCertificate | PairProblem::BadCertificate(_) => {
            "store the PEM certificate (leaf first, then any intermediates) under \"cert.pem\"".to_owned()
        }
        PairProblem::BadKey(_) => {
            "store the unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) under \"key.pem\"".to_owned()
        }
        PairProblem::KeyMismatch => "store the private key that belongs to the certificate".to_owned(),
        PairProblem::MissingNames { .. } => {
            format!("reissue it with the DNS name {}", settings.service_host())
        }
        PairProblem::Expired(_) | PairProblem::ExpiresSoon(_) => {
            "renew it and update the secret".to_owned()
        }
        PairProblem::NotYetValid(_) => "check the certificate's dates and the node clocks".to_owned(),
        PairProblem::NoCaCertificate | PairProblem::BadCaCertificate(_) => {
            format!("store the PEM CA certificate(s) under \"rootca.pem\" in {ca_ref}")
        }
        PairProblem::IssuedUnderOtherCa => "renew it and update the secret".to_owned(),
        PairProblem::NotSignedByCa => format!(
            "store the CA that issued it under \"rootca.pem\" in {ca_ref}, or append the intermediates to \"cert.pem\""
        ),
    }
}
