//! Issuing the serving certificate through the Kubernetes CSR API: a fresh
//! ECDSA P-256 key (rcgen), a PKCS#10 request with the subject the
//! `kubernetes.io/kubelet-serving` signer demands (CN
//! `system:node:<svc>.<ns>.svc`, O `system:nodes`) and the service's DNS
//! names, submitted as a `certificates.k8s.io/v1` CertificateSigningRequest,
//! approved through its `approval` subresource, then polled with backoff until
//! the signer fills `status.certificate` or the timeout passes.
//!
//! The CSR name is `<svc>.<ns>.<pod>.<random>`: unique per pod (replicas
//! starting together never share one) and per attempt (an init container that
//! restarts inside the same pod does not trip over its previous CSR). CSRs are
//! left in place, as the original did: the controller-manager's CSR cleaner
//! removes issued ones after about an hour, and deleting would need one more
//! RBAC verb for no gain in a running cluster.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use thiserror::Error;
use tracing::{debug, info};

use super::api_error::ApiError;
use super::settings::InitSettings;
use super::tls_pair::{self, PairInfo, PairProblem, TlsPair};

/// First pause between polls of the CSR; doubles up to the cap.
const POLL_INITIAL_MS: u64 = 100;
const POLL_MAX_MS: u64 = 2_000;
/// Name collisions and approval conflicts are rare; a few tries settle them.
const MAX_ATTEMPTS: usize = 3;
const MAX_NAME_LEN: usize = 253;
const USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

/// Why no certificate came out of the CSR API.
#[derive(Debug, Error)]
pub enum CsrError {
    #[error("cannot build the certificate signing request: {0}")]
    Build(#[from] rcgen::Error),
    #[error("cannot create CertificateSigningRequest {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error(
        "cannot approve CertificateSigningRequest {name}: {source} (the service account needs \
         'update' on certificatesigningrequests/approval and 'approve' on signers/{signer})"
    )]
    Approve {
        name: String,
        signer: String,
        #[source]
        source: ApiError,
    },
    #[error("cannot read CertificateSigningRequest {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error(
        "CertificateSigningRequest {name} was {verdict} ({reason}): check the signer {signer}, or bring your own certificate"
    )]
    Rejected {
        name: String,
        verdict: &'static str,
        reason: String,
        signer: String,
    },
    #[error(
        "CertificateSigningRequest {name} was approved but {signer} did not sign it within {waited}: \
         on clusters without that signer set IMAGESWAP_CSR_SIGNER_NAME to one that signs, or bring \
         your own certificate (annotate secret {secret} with imageswap-byoc)"
    )]
    NeverSigned {
        name: String,
        signer: String,
        waited: String,
        secret: String,
    },
    #[error(
        "CertificateSigningRequest {name} was signed by {signer}, but the certificate is unusable: {problem}"
    )]
    BadCertificate {
        name: String,
        signer: String,
        problem: PairProblem,
    },
}

/// A freshly issued pair and the CSR it came from.
#[derive(Debug)]
pub struct Issued {
    pub pair: TlsPair,
    pub info: PairInfo,
    pub csr_name: String,
}

/// A new key and the PEM request for it.
pub struct Request {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Builds a new key and its PKCS#10 request (pure; the key never leaves the
/// process except into the secret and the TLS directory).
pub fn build_request(settings: &InitSettings) -> Result<Request, CsrError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(settings.service_dns_names())?;
    let mut subject = DistinguishedName::new();
    subject.push(
        DnType::CommonName,
        format!("system:node:{}", settings.service_host()),
    );
    subject.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name = subject;
    let csr = params.serialize_request(&key)?;
    Ok(Request {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// `<svc>.<ns>.<pod>.<suffix>`, cut to the 253 characters a name may have.
pub fn csr_name(settings: &InitSettings, suffix: &str) -> String {
    let base = format!(
        "{}.{}.{}",
        settings.service_name,
        settings.namespace,
        sanitize(&settings.pod_name)
    );
    let room = MAX_NAME_LEN.saturating_sub(suffix.len() + 1);
    let cut: String = base.chars().take(room).collect();
    format!("{}.{suffix}", cut.trim_end_matches(['-', '.']))
}

/// Issues a pair: create the CSR, approve it, wait for the signer.
pub async fn issue(client: &kube::Client, settings: &InitSettings) -> Result<Issued, CsrError> {
    let request = build_request(settings)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let (name, created) = create(&api, settings, &request).await?;
    info!(csr = %name, signer = %settings.csr_signer, "Created the certificate signing request.");
    approve(&api, settings, &name, created).await?;
    info!(csr = %name, "Approved the certificate signing request.");
    let cert_pem = wait_for_certificate(&api, settings, &name).await?;
    let pair = TlsPair {
        cert_pem,
        key_pem: request.key_pem.into_bytes(),
    };
    let bad = |problem| CsrError::BadCertificate {
        name: name.clone(),
        signer: settings.csr_signer.clone(),
        problem,
    };
    let info = tls_pair::inspect(&pair).map_err(bad)?;
    tls_pair::require_names(&info, &settings.service_dns_names()).map_err(bad)?;
    // Not `require_valid_at`: a signer's clock slightly ahead of ours puts
    // `notBefore` in our future, which is harmless; an expired one is not.
    if info.not_after <= unix_now() {
        return Err(bad(PairProblem::Expired(tls_pair::format_time(info.not_after))));
    }
    info!(
        csr = %name,
        not_after = %tls_pair::format_time(info.not_after),
        "The signer issued the certificate."
    );
    Ok(Issued {
        pair,
        info,
        csr_name: name,
    })
}

async fn create(
    api: &Api<CertificateSigningRequest>,
    settings: &InitSettings,
    request: &Request,
) -> Result<(String, CertificateSigningRequest), CsrError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = csr_name(settings, &random_suffix());
        let csr = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app".to_owned(), "imageswap".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(request.csr_pem.clone().into_bytes()),
                signer_name: settings.csr_signer.clone(),
                usages: Some(USAGES.map(str::to_owned).to_vec()),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        };
        match api.create(&PostParams::default(), &csr).await.map_err(ApiError) {
            Ok(created) => return Ok((name, created)),
            Err(err) if err.is_already_exists() && attempt < MAX_ATTEMPTS => {
                debug!(csr = %name, "The CSR name is taken; trying another suffix.");
            }
            Err(source) => return Err(CsrError::Create { name, source }),
        }
    }
}

async fn approve(
    api: &Api<CertificateSigningRequest>,
    settings: &InitSettings,
    name: &str,
    mut csr: CertificateSigningRequest,
) -> Result<(), CsrError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // An auto-approver may have been faster; a second Approved condition
        // would be rejected as a duplicate.
        if has_condition(&csr, "Approved") {
            return Ok(());
        }
        let status = csr.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(CertificateSigningRequestCondition {
                type_: "Approved".to_owned(),
                status: "True".to_owned(),
                reason: Some("ImageSwapApproved".to_owned()),
                message: Some(format!("Approved by imageswap init in pod {}", settings.pod_name)),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..CertificateSigningRequestCondition::default()
            });
        match api
            .replace_subresource("approval", name, &PostParams::default(), &csr)
            .await
            .map_err(ApiError)
        {
            Ok(_) => return Ok(()),
            Err(err) if err.is_conflict() && attempt < MAX_ATTEMPTS => {
                csr = api.get(name).await.map_err(|source| CsrError::Read {
                    name: name.to_owned(),
                    source: ApiError(source),
                })?;
            }
            Err(source) => {
                return Err(CsrError::Approve {
                    name: name.to_owned(),
                    signer: settings.csr_signer.clone(),
                    source,
                });
            }
        }
    }
}

async fn wait_for_certificate(
    api: &Api<CertificateSigningRequest>,
    settings: &InitSettings,
    name: &str,
) -> Result<Vec<u8>, CsrError> {
    let deadline = tokio::time::Instant::now() + settings.csr_timeout;
    let mut pause = Duration::from_millis(POLL_INITIAL_MS);
    loop {
        let csr = api.get(name).await.map_err(|source| CsrError::Read {
            name: name.to_owned(),
            source: ApiError(source),
        })?;
        if let Some(cert) = csr
            .status
            .as_ref()
            .and_then(|status| status.certificate.as_ref())
            .filter(|cert| !cert.0.is_empty())
        {
            return Ok(cert.0.clone());
        }
        for verdict in ["Denied", "Failed"] {
            if let Some(condition) = condition(&csr, verdict) {
                return Err(CsrError::Rejected {
                    name: name.to_owned(),
                    verdict: if verdict == "Denied" {
                        "denied"
                    } else {
                        "marked failed"
                    },
                    reason: condition
                        .message
                        .clone()
                        .or_else(|| condition.reason.clone())
                        .unwrap_or_else(|| "no reason given".to_owned()),
                    signer: settings.csr_signer.clone(),
                });
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(CsrError::NeverSigned {
                name: name.to_owned(),
                signer: settings.csr_signer.clone(),
                waited: humantime::format_duration(settings.csr_timeout).to_string(),
                secret: format!("{}/{}", settings.namespace, settings.tls_secret),
            });
        }
        debug!(csr = %name, "Waiting for the signer.");
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(POLL_MAX_MS));
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn condition<'a>(
    csr: &'a CertificateSigningRequest,
    kind: &str,
) -> Option<&'a CertificateSigningRequestCondition> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == kind && condition.status.eq_ignore_ascii_case("true"))
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    condition(csr, kind).is_some()
}

/// Lower-case DNS labels only: a pod name already is one, a hostname may not be.
fn sanitize(name: &str) -> String {
    let lowered: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let labels: Vec<&str> = lowered
        .split('.')
        .map(|label| label.trim_matches('-'))
        .filter(|label| !label.is_empty())
        .collect();
    if labels.is_empty() {
        "pod".to_owned()
    } else {
        labels.join(".")
    }
}

/// Eight hex digits, unique enough for a name suffix (it is not a secret).
fn random_suffix() -> String {
    format!("{:08x}", random_u64() as u32)
}

/// 64 random bits; `RandomState` is seeded from the OS, which is all name
/// suffixes and spreading replicas in time need (nothing here is a secret).
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::FromDer;

    use super::*;

    #[test]
    fn the_request_carries_the_kubelet_serving_subject_and_service_names() {
        let settings = InitSettings {
            namespace: "ns".into(),
            ..InitSettings::default()
        };
        let request = build_request(&settings).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(request.csr_pem.as_bytes())
            .map(|der: rustls_pki_types::CertificateSigningRequestDer<'_>| der.as_ref().to_vec())
            .unwrap();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:imageswap.ns.svc"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let mut names = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                        names.push(dns.to_string());
                    }
                }
            }
        }
        assert_eq!(names, ["imageswap", "imageswap.ns", "imageswap.ns.svc"]);
        assert!(request.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn csr_names_are_valid_and_bounded() {
        let settings = InitSettings {
            pod_name: "Imageswap_7d9f..X-".into(),
            ..InitSettings::default()
        };
        assert_eq!(
            csr_name(&settings, "0a1b2c3d"),
            "imageswap.imageswap-system.imageswap-7d9f.x.0a1b2c3d"
        );
        let long = InitSettings {
            pod_name: "p".repeat(400),
            ..InitSettings::default()
        };
        let name = csr_name(&long, "0a1b2c3d");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.ends_with(".0a1b2c3d"));
    }

    #[test]
    fn suffixes_differ() {
        assert_ne!(random_suffix(), random_suffix());
        assert_eq!(random_suffix().len(), 8);
    }
}
