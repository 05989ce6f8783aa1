//! Checks on a serving pair (`cert.pem` + `key.pem`), with no I/O: does it
//! parse, does the key belong to the certificate, which names does it cover,
//! how long is it valid, and (bring-your-own-certificate) does the operator's
//! CA sign it. The key is loaded with the same rustls provider the server
//! uses, so a pair that passes here is a pair the server can load. Times are
//! Unix seconds passed in by the caller, so the checks are testable.

use std::sync::Arc;

use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How deep a chain from the leaf to a CA in `rootca.pem` may be; real
/// chains are two or three certificates, this only bounds a malformed input.
const MAX_CHAIN_DEPTH: usize = 8;

/// A certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPair {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsPair {
    // Never print the private key, not even at DEBUG.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPair")
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key_pem_len", &self.key_pem.len())
            .finish()
    }
}

/// What a pair that parses and matches tells about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairInfo {
    pub not_before: i64,
    pub not_after: i64,
    /// DNS subject alternative names of the leaf, as written.
    pub dns_names: Vec<String>,
}

impl PairInfo {
    /// The wanted names the certificate does not cover (wildcards count).
    pub fn missing_names<'a>(&self, wanted: &'a [String]) -> Vec<&'a str> {
        wanted
            .iter()
            .filter(|host| !self.dns_names.iter().any(|pattern| name_matches(pattern, host)))
            .map(String::as_str)
            .collect()
    }

    /// Seconds of validity left at `now` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now)
    }
}

/// Why a pair cannot be used.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PairProblem {
    #[error("\"cert.pem\" is missing or empty")]
    EmptyCert,
    #[error("\"key.pem\" is missing or empty")]
    EmptyKey,
    #[error("\"cert.pem\" holds no PEM certificate")]
    NoCertificate,
    #[error("\"cert.pem\" does not parse as an X.509 certificate ({0})")]
    BadCertificate(String),
    #[error("\"key.pem\" holds no usable PEM private key ({0})")]
    BadKey(String),
    #[error("\"key.pem\" does not match the certificate in \"cert.pem\"")]
    KeyMismatch,
    #[error("the certificate does not cover {missing} (its DNS names: {present})")]
    MissingNames { missing: String, present: String },
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    #[error("the certificate expires at {0}, within the renewal threshold")]
    ExpiresSoon(String),
    #[error("\"rootca.pem\" holds no PEM certificate")]
    NoCaCertificate,
    #[error("\"rootca.pem\" does not parse as X.509 certificates ({0})")]
    BadCaCertificate(String),
    #[error(
        "the certificate is not signed by any CA in \"rootca.pem\" (directly or through the chain in \"cert.pem\")"
    )]
    NotSignedByCa,
    #[error("the certificate was issued under another cluster CA bundle (the cluster CA rotated)")]
    IssuedUnderOtherCa,
}

/// Parses the pair and checks that the key belongs to the leaf certificate.
pub fn inspect(pair: &TlsPair) -> Result<PairInfo, PairProblem> {
    if is_blank(&pair.cert_pem) {
        return Err(PairProblem::EmptyCert);
    }
    if is_blank(&pair.key_pem) {
        return Err(PairProblem::EmptyKey);
    }
    let chain = certificates(&pair.cert_pem).map_err(PairProblem::BadCertificate)?;
    let Some(leaf_der) = chain.first() else {
        return Err(PairProblem::NoCertificate);
    };
    let leaf = parse_certificate(leaf_der).map_err(PairProblem::BadCertificate)?;
    let key = signing_key(&pair.key_pem)?;
    keys_match(leaf_der, key)?;
    Ok(PairInfo {
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        dns_names: dns_names(&leaf),
    })
}

/// The whole check for a pair `init` manages: it must parse, match, cover
/// every service name and stay valid longer than `renew_before_secs`.
pub fn check_managed(
    pair: &TlsPair,
    names: &[String],
    now: i64,
    renew_before_secs: i64,
) -> Result<PairInfo, PairProblem> {
    let info = inspect(pair)?;
    require_names(&info, names)?;
    if info.seconds_left(now) <= 0 {
        return Err(PairProblem::Expired(format_time(info.not_after)));
    }
    if info.seconds_left(now) <= renew_before_secs {
        return Err(PairProblem::ExpiresSoon(format_time(info.not_after)));
    }
    Ok(info)
}

/// Fails with the names the certificate lacks.
pub fn require_names(info: &PairInfo, names: &[String]) -> Result<(), PairProblem> {
    let missing = info.missing_names(names);
    if missing.is_empty() {
        return Ok(());
    }
    Err(PairProblem::MissingNames {
        missing: missing.join(", "),
        present: if info.dns_names.is_empty() {
            "none".to_owned()
        } else {
            info.dns_names.join(", ")
        },
    })
}

/// Fails when the certificate is expired or not yet valid at `now`.
pub fn require_valid_at(info: &PairInfo, now: i64) -> Result<(), PairProblem> {
    if info.not_after <= now {
        return Err(PairProblem::Expired(format_time(info.not_after)));
    }
    if info.not_before > now {
        return Err(PairProblem::NotYetValid(format_time(info.not_before)));
    }
    Ok(())
}

/// Checks that a CA bundle holds at least one certificate; returns how many.
pub fn check_ca_bundle(ca_pem: &[u8]) -> Result<usize, PairProblem> {
    let roots = certificates(ca_pem).map_err(PairProblem::BadCaCertificate)?;
    for der in &roots {
        parse_certificate(der).map_err(PairProblem::BadCaCertificate)?;
    }
    match roots.len() {
        0 => Err(PairProblem::NoCaCertificate),
        count => Ok(count),
    }
}

/// Checks that a CA in `ca_pem` signed the leaf of `cert_pem`, directly or
/// through the intermediates that follow the leaf in `cert_pem`.
pub fn verify_chain(cert_pem: &[u8], ca_pem: &[u8]) -> Result<(), PairProblem> {
    let chain_der = certificates(cert_pem).map_err(PairProblem::BadCertificate)?;
    let roots_der = certificates(ca_pem).map_err(PairProblem::BadCaCertificate)?;
    if roots_der.is_empty() {
        return Err(PairProblem::NoCaCertificate);
    }
    let chain = chain_der
        .iter()
        .map(|der| parse_certificate(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PairProblem::BadCertificate)?;
    let roots = roots_der
        .iter()
        .map(|der| parse_certificate(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PairProblem::BadCaCertificate)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(PairProblem::NoCertificate);
    };

    let mut current = leaf;
    for _ in 0..MAX_CHAIN_DEPTH {
        if roots.iter().any(|root| signed_by(current, root)) {
            return Ok(());
        }
        match intermediates
            .iter()
            .find(|candidate| signed_by(current, candidate))
        {
            Some(next) => current = next,
            None => break,
        }
    }
    Err(PairProblem::NotSignedByCa)
}

/// The `notAfter` (Unix seconds) of the leaf of `cert_pem`; `None` when it
/// does not parse.
pub fn not_after(cert_pem: &[u8]) -> Option<i64> {
    let ders = certificates(cert_pem).ok()?;
    let leaf = parse_certificate(ders.first()?).ok()?;
    Some(leaf.validity().not_after.timestamp())
}

/// RFC 3339 UTC, for messages.
pub fn format_time(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{unix_seconds} (Unix time)"))
}

fn signed_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == issuer.subject().as_raw()
        && child.verify_signature(Some(issuer.public_key())).is_ok()
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| err.to_string())
}

fn parse_certificate<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => Ok(cert),
        Err(err) => Err(err.to_string()),
    }
}

fn signing_key(key_pem: &[u8]) -> Result<Arc<dyn SigningKey>, PairProblem> {
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| PairProblem::BadKey(err.to_string()))?;
    crate::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| PairProblem::BadKey(err.to_string()))
}

fn keys_match(leaf: &CertificateDer<'_>, key: Arc<dyn SigningKey>) -> Result<(), PairProblem> {
    let certified = CertifiedKey::new(vec![leaf.clone().into_owned()], key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PairProblem::KeyMismatch)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Err(PairProblem::BadKey(
            "cannot derive its public key to compare with the certificate".to_owned(),
        )),
        Err(other) => Err(PairProblem::BadCertificate(other.to_string())),
    }
}

fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        // TLS clients (Go's included) ignore the subject CN, so no SAN means
        // no names.
        _ => Vec::new(),
    }
}

/// RFC 6125 matching: exact (any case), or a `*.` wildcard standing for one
/// whole left-most label.
fn name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, host_rest)| !label.is_empty() && host_rest == rest),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    const DAY: i64 = 86_400;

    fn names() -> Vec<String> {
        ["imageswap", "imageswap.ns", "imageswap.ns.svc"]
            .map(str::to_owned)
            .to_vec()
    }

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(issuer: &Ca, dns: &[&str], from_days: i64, to_days: i64) -> TlsPair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params.signed_by(&key, &issuer.issuer).unwrap();
        TlsPair {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_good_pair_passes_every_check() {
        let ca = ca("test ca");
        let pair = leaf(&ca, &["imageswap", "imageswap.ns", "imageswap.ns.svc"], -1, 365);
        let info = check_managed(&pair, &names(), now(), 180 * DAY).unwrap();
        assert_eq!(info.dns_names, names());
        assert!(verify_chain(&pair.cert_pem, ca.pem.as_bytes()).is_ok());
        assert!(require_valid_at(&info, now()).is_ok());
    }

    #[test]
    fn empty_parts_are_named() {
        let pair = TlsPair {
            cert_pem: b"  \n".to_vec(),
            key_pem: b"x".to_vec(),
        };
        assert_eq!(inspect(&pair), Err(PairProblem::EmptyCert));
        let pair = TlsPair {
            cert_pem: b"x".to_vec(),
            key_pem: Vec::new(),
        };
        assert_eq!(inspect(&pair), Err(PairProblem::EmptyKey));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let ca = ca("ca");
        let good = leaf(&ca, &["imageswap"], -1, 10);
        let pair = TlsPair {
            cert_pem: b"not a pem".to_vec(),
            key_pem: good.key_pem.clone(),
        };
        assert_eq!(inspect(&pair), Err(PairProblem::NoCertificate));
        let pair = TlsPair {
            cert_pem: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            key_pem: good.key_pem,
        };
        assert!(matches!(inspect(&pair), Err(PairProblem::BadCertificate(_))));
    }

    #[test]
    fn a_key_from_another_pair_does_not_match() {
        let ca = ca("ca");
        let one = leaf(&ca, &["imageswap"], -1, 10);
        let two = leaf(&ca, &["imageswap"], -1, 10);
        let mixed = TlsPair {
            cert_pem: one.cert_pem,
            key_pem: two.key_pem,
        };
        assert_eq!(inspect(&mixed), Err(PairProblem::KeyMismatch));
    }

    #[test]
    fn an_rsa_pkcs1_key_is_understood() {
        // The original wrote "BEGIN RSA PRIVATE KEY" keys; ring cannot make
        // RSA keys, so this one is fixed: it only has to parse and mismatch.
        let ca = ca("ca");
        let pair = leaf(&ca, &["imageswap"], -1, 10);
        let rsa = TlsPair {
            cert_pem: pair.cert_pem,
            key_pem: include_bytes!("../../tests/fixtures/init/original-rsa-pkcs1.key").to_vec(),
        };
        assert_eq!(inspect(&rsa), Err(PairProblem::KeyMismatch));
    }

    #[test]
    fn missing_names_are_listed() {
        let ca = ca("ca");
        let pair = leaf(&ca, &["imageswap.ns.svc", "other.example"], -1, 365);
        match check_managed(&pair, &names(), now(), 0) {
            Err(PairProblem::MissingNames { missing, present }) => {
                assert_eq!(missing, "imageswap, imageswap.ns");
                assert_eq!(present, "imageswap.ns.svc, other.example");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(name_matches("*.ns.svc", "imageswap.ns.svc"));
        assert!(name_matches("IMAGESWAP.NS.SVC.", "imageswap.ns.svc"));
        assert!(!name_matches("*.ns.svc", "ns.svc"));
        assert!(!name_matches("*.svc", "imageswap.ns.svc"));
    }

    #[test]
    fn expiry_and_renewal_threshold() {
        let ca = ca("ca");
        let soon = leaf(&ca, &["imageswap", "imageswap.ns", "imageswap.ns.svc"], -1, 100);
        assert!(matches!(
            check_managed(&soon, &names(), now(), 180 * DAY),
            Err(PairProblem::ExpiresSoon(_))
        ));
        assert!(check_managed(&soon, &names(), now(), 30 * DAY).is_ok());
        let expired = leaf(&ca, &["imageswap", "imageswap.ns", "imageswap.ns.svc"], -10, -1);
        assert!(matches!(
            check_managed(&expired, &names(), now(), 0),
            Err(PairProblem::Expired(_))
        ));
        let info = inspect(&expired).unwrap();
        assert!(matches!(
            require_valid_at(&info, now()),
            Err(PairProblem::Expired(_))
        ));
        let future = leaf(&ca, &["imageswap"], 2, 10);
        let info = inspect(&future).unwrap();
        assert!(matches!(
            require_valid_at(&info, now()),
            Err(PairProblem::NotYetValid(_))
        ));
    }

    #[test]
    fn chains_verify_directly_and_through_intermediates() {
        let root = ca("root");
        let other = ca("other");
        // An intermediate signed by root, and a leaf signed by the intermediate.
        let inter_key = KeyPair::generate().unwrap();
        let mut inter_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        inter_params
            .distinguished_name
            .push(DnType::CommonName, "intermediate");
        inter_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let inter_cert = inter_params.signed_by(&inter_key, &root.issuer).unwrap();
        let inter = Ca {
            pem: inter_cert.pem(),
            issuer: Issuer::new(inter_params, inter_key),
        };
        let pair = leaf(&inter, &["imageswap"], -1, 10);

        let leaf_only = pair.cert_pem.clone();
        let mut with_chain = pair.cert_pem.clone();
        with_chain.extend_from_slice(inter.pem.as_bytes());

        assert_eq!(
            verify_chain(&leaf_only, root.pem.as_bytes()),
            Err(PairProblem::NotSignedByCa)
        );
        assert_eq!(verify_chain(&with_chain, root.pem.as_bytes()), Ok(()));
        assert_eq!(verify_chain(&leaf_only, inter.pem.as_bytes()), Ok(()));
        assert_eq!(
            verify_chain(&with_chain, other.pem.as_bytes()),
            Err(PairProblem::NotSignedByCa)
        );
        // A bundle with several CAs: any one of them may be the issuer.
        let bundle = format!("{}{}", other.pem, root.pem);
        assert_eq!(verify_chain(&with_chain, bundle.as_bytes()), Ok(()));
    }

    #[test]
    fn ca_bundles_must_hold_a_certificate() {
        assert_eq!(check_ca_bundle(b""), Err(PairProblem::NoCaCertificate));
        assert_eq!(check_ca_bundle(ca("x").pem.as_bytes()), Ok(1));
        assert_eq!(verify_chain(b"", b""), Err(PairProblem::NoCaCertificate));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let pair = TlsPair {
            cert_pem: b"cert".to_vec(),
            key_pem: b"SECRET".to_vec(),
        };
        assert!(!format!("{pair:?}").contains("SECRET"));
    }
}
