//! `IMAGESWAP_CERT_SOURCE=self-signed`: a CA of ImageSwap's own, for
//! clusters whose CSR API does not sign serving certificates (EKS, some
//! managed clusters), as Kyverno and Gatekeeper do it.
//!
//! The CA lives in the secret `<IMAGESWAP_TLS_SECRET_NAME>-self-signed-ca`
//! (`ca.crt`: the current CA first, then any predecessor that has not
//! expired; `ca.key`: the current CA's key). It is created once: replicas
//! that start together all try a create, the API server lets one succeed and
//! answers the others `409 AlreadyExists`, and they read and use the winner's
//! CA. Its serving pairs are issued locally from it and stored in the TLS
//! secret exactly like a CSR-issued pair (the same precondition, the same
//! race handling). The webhook's `caBundle` is the whole `ca.crt`, so when
//! `--watch` renews the CA (with the same share of its lifetime left as a
//! pair), the old CA stays trusted beside the new one until it expires, and
//! the pairs it signed are reissued under the new one at once (the bundle
//! changed and they do not come from its newest CA).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;
use tracing::info;

use super::api_error::ApiError;
use super::ca_bundle;
use super::csr::Issued;
use super::settings::InitSettings;
use super::tls_pair::{self, TlsPair};

pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
/// Create/replace races with other replicas settle in a round or two.
const MAX_ROUNDS: usize = 5;
/// Validity starts this long before now: nodes' clocks differ.
const CLOCK_SKEW_SECS: i64 = 60;

#[derive(Debug, Error)]
pub enum SelfSignedError {
    #[error("cannot {action} secret {namespace}/{name} (the self-signed CA): {source}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<ApiError>,
    },
    #[error(
        "secret {namespace}/{name} does not hold a usable CA ({reason}): delete it and ImageSwap creates a new one"
    )]
    Broken {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "secret {namespace}/{name} kept changing under {MAX_ROUNDS} attempts to write it: find what else writes it"
    )]
    Unsettled { namespace: String, name: String },
}

/// The CA secret's name for these settings.
pub fn ca_secret_name(settings: &InitSettings) -> String {
    format!("{}-self-signed-ca", settings.tls_secret)
}

/// The CA as read (or just created).
#[derive(Clone)]
pub struct OwnCa {
    /// Every CA certificate of `ca.crt` that has not expired, current first:
    /// the webhook's `caBundle`.
    pub bundle: Vec<u8>,
    cert_pem: String,
    key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for OwnCa {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnCa")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Reads the CA, creating it when absent; with `renew_fraction`
/// (`--watch`), replaces it by a new one (the old kept in `ca.crt`) when
/// that share of its lifetime is left. `now` is Unix seconds.
pub async fn ensure_ca(
    client: &kube::Client,
    settings: &InitSettings,
    now: i64,
    renew_fraction: Option<f64>,
) -> Result<OwnCa, SelfSignedError> {
    let name = ca_secret_name(settings);
    let namespace = settings.namespace.clone();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let api_error = |action: &'static str, source: ApiError| SelfSignedError::Api {
        action,
        namespace: namespace.clone(),
        name: name.clone(),
        source: Box::new(source),
    };
    for _ in 0..MAX_ROUNDS {
        let current = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error("read", ApiError(e)))?;
        let Some(current) = current else {
            let (cert_pem, key_pem) = generate_ca(settings, now)?;
            let secret = ca_secret(&name, &namespace, None, &cert_pem, &key_pem, &[]);
            match api
                .create(&PostParams::default(), &secret)
                .await
                .map_err(ApiError)
            {
                Ok(_) => {
                    info!(secret = %format!("{namespace}/{name}"), "Created the self-signed CA.");
                    return parse(&cert_pem, &key_pem, cert_pem.as_bytes(), now, &namespace, &name);
                }
                Err(err) if err.is_already_exists() => continue,
                Err(err) => return Err(api_error("create", err)),
            }
        };
        let bundle = data(&current, CA_CERT_KEY);
        let key_pem = String::from_utf8_lossy(&data(&current, CA_KEY_KEY)).into_owned();
        let first = ca_bundle::certificates(&bundle)
            .first()
            .map(ca_bundle::pem_of)
            .unwrap_or_default();
        let ca = parse(&first, &key_pem, &bundle, now, &namespace, &name)?;
        let lifetime = ca.not_after.saturating_sub(ca.not_before).max(0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let due =
            renew_fraction.is_some_and(|fraction| ca.not_after - now <= (lifetime as f64 * fraction) as i64);
        if !due {
            return Ok(ca);
        }
        let (cert_pem, new_key) = generate_ca(settings, now)?;
        let secret = ca_secret(&name, &namespace, Some(&current), &cert_pem, &new_key, &ca.bundle);
        match api
            .replace(&name, &PostParams::default(), &secret)
            .await
            .map_err(ApiError)
        {
            Ok(_) => {
                info!(
                    secret = %format!("{namespace}/{name}"),
                    previous_not_after = %tls_pair::format_time(ca.not_after),
                    "Renewed the self-signed CA; the previous one stays in the caBundle until it expires."
                );
                let mut bundle = cert_pem.clone().into_bytes();
                bundle.extend_from_slice(&ca.bundle);
                return parse(&cert_pem, &new_key, &bundle, now, &namespace, &name);
            }
            Err(err) if err.is_conflict() || err.is_not_found() => continue,
            Err(err) => return Err(api_error("update", err)),
        }
    }
    Err(SelfSignedError::Unsettled { namespace, name })
}

/// A serving pair for the service, signed by `ca`, valid from about now for
/// `IMAGESWAP_SELF_SIGNED_CERT_LIFETIME` (at most until the CA expires).
pub fn issue(ca: &OwnCa, settings: &InitSettings, now: i64) -> Result<Issued, SelfSignedError> {
    let issuer = issuer(ca)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(settings.service_dns_names())?;
    params
        .distinguished_name
        .push(DnType::CommonName, settings.service_host());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let lifetime = i64::try_from(settings.self_signed_cert_lifetime.as_secs()).unwrap_or(i64::MAX);
    params.not_before = at(now - CLOCK_SKEW_SECS)?.to_datetime();
    params.not_after = at(now.saturating_add(lifetime).min(ca.not_after))?.to_datetime();
    let cert = params.signed_by(&key, &issuer)?;
    let pair = TlsPair {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    };
    let info = tls_pair::inspect(&pair).map_err(|problem| SelfSignedError::Broken {
        namespace: settings.namespace.clone(),
        name: ca_secret_name(settings),
        reason: problem.to_string(),
    })?;
    info!(
        not_after = %tls_pair::format_time(info.not_after),
        "Issued a serving certificate from the self-signed CA."
    );
    Ok(Issued {
        pair,
        info,
        csr_name: "self-signed".to_owned(),
    })
}

fn generate_ca(settings: &InitSettings, now: i64) -> Result<(String, String), SelfSignedError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = ca_name(&format!("imageswap self-signed CA {} {now}", settings.namespace));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_usages();
    let lifetime = i64::try_from(settings.self_signed_ca_lifetime.as_secs()).unwrap_or(i64::MAX);
    params.not_before = at(now - CLOCK_SKEW_SECS)?.to_datetime();
    params.not_after = at(now.saturating_add(lifetime))?.to_datetime();
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The issuer of a stored CA: its subject (a common name only, as
/// [`generate_ca`] writes it) and its key.
fn issuer(ca: &OwnCa) -> Result<Issuer<'static, KeyPair>, SelfSignedError> {
    let broken = |reason: String| SelfSignedError::Broken {
        namespace: String::new(),
        name: String::new(),
        reason,
    };
    let der = ca_bundle::certificates(ca.cert_pem.as_bytes())
        .into_iter()
        .next()
        .ok_or_else(|| broken("no certificate".to_owned()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| broken(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| broken("no common name".to_owned()))?
        .to_owned();
    let key = KeyPair::from_pem(&ca.key_pem)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = ca_name(&common_name);
    params.key_usages = ca_usages();
    Ok(Issuer::new(params, key))
}

fn ca_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn ca_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// A date for rcgen, through x509-parser's `ASN1Time` (rcgen's and
/// x509-parser's `time` are one crate; the program names it nowhere else).
fn at(unix: i64) -> Result<x509_parser::time::ASN1Time, SelfSignedError> {
    x509_parser::time::ASN1Time::from_timestamp(unix).map_err(|e| SelfSignedError::Broken {
        namespace: String::new(),
        name: String::new(),
        reason: format!("date {unix}: {e}"),
    })
}

/// Checks the key against the current CA certificate and keeps the CAs of
/// `bundle` that have not expired.
fn parse(
    cert_pem: &str,
    key_pem: &str,
    bundle: &[u8],
    now: i64,
    namespace: &str,
    name: &str,
) -> Result<OwnCa, SelfSignedError> {
    let broken = |reason: String| SelfSignedError::Broken {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let pair = TlsPair {
        cert_pem: cert_pem.as_bytes().to_vec(),
        key_pem: key_pem.as_bytes().to_vec(),
    };
    let info = tls_pair::inspect(&pair).map_err(|problem| broken(problem.to_string()))?;
    if info.not_after <= now {
        return Err(broken(format!(
            "it expired at {}",
            tls_pair::format_time(info.not_after)
        )));
    }
    let mut kept = Vec::new();
    for der in ca_bundle::certificates(bundle) {
        let alive = x509_parser::parse_x509_certificate(der.as_ref())
            .map(|(_, cert)| cert.validity().not_after.timestamp() > now)
            .unwrap_or(false);
        if alive {
            kept.extend_from_slice(ca_bundle::pem_of(&der).as_bytes());
        }
    }
    Ok(OwnCa {
        bundle: kept,
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
        not_before: info.not_before,
        not_after: info.not_after,
    })
}

fn ca_secret(
    name: &str,
    namespace: &str,
    current: Option<&Secret>,
    cert_pem: &str,
    key_pem: &str,
    previous: &[u8],
) -> Secret {
    let mut secret = current.cloned().unwrap_or_else(|| Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some([("app".to_owned(), "imageswap".to_owned())].into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    });
    secret.metadata.managed_fields = None;
    let mut bundle = cert_pem.as_bytes().to_vec();
    bundle.extend_from_slice(previous);
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    data.insert(CA_CERT_KEY.to_owned(), ByteString(bundle));
    data.insert(CA_KEY_KEY.to_owned(), ByteString(key_pem.as_bytes().to_vec()));
    secret
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    super::secret::data(secret, key)
}
