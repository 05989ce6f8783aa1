//! The test certificate authority, for every test that needs one: it signs
//! the in-process server's serving leaves (for 127.0.0.1 and localhost) and
//! the clients trust it; it is the fake cluster's CA and CSR signer; it is the
//! operator's CA (with intermediates) in the bring-your-own-certificate tests.

use imageswap::init::tls_pair::TlsPair;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A serving pair in PEM, with its certificate in DER for comparisons.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let params = ca_params(common_name, 3650);
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("intermediate key");
        let params = ca_params(common_name, 1825);
        let cert = params.signed_by(&key, &self.issuer).expect("signed intermediate");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving leaf for 127.0.0.1 and localhost, what the in-process
    /// server presents.
    pub fn leaf(&self) -> Leaf {
        let (cert, key) = self.sign_leaf(&["127.0.0.1".to_owned(), "localhost".to_owned()], -1, 365);
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A serving pair for `dns`, valid from `from_days` to `to_days` (relative
    /// to now).
    pub fn issue(&self, dns: &[String], from_days: i64, to_days: i64) -> TlsPair {
        let (cert, key) = self.sign_leaf(dns, from_days, to_days);
        TlsPair {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    fn sign_leaf(&self, dns: &[String], from_days: i64, to_days: i64) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(dns.to_vec()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "imageswap test leaf");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + days(from_days);
        params.not_after = now + days(to_days);
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        (cert, key)
    }

    /// A certificate for an existing key (PKCS#8 PEM), e.g. an RSA key the
    /// original ImageSwap generated, with `common_name` as its subject.
    pub fn issue_for_key(
        &self,
        key_pkcs8_pem: &str,
        common_name: &str,
        dns: &[String],
        from_days: i64,
        to_days: i64,
    ) -> String {
        let key = KeyPair::from_pem(key_pkcs8_pem).expect("a PKCS#8 key");
        let mut params = CertificateParams::new(dns.to_vec()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + days(from_days);
        params.not_after = now + days(to_days);
        params.signed_by(&key, &self.issuer).expect("signed leaf").pem()
    }

    /// What a kubelet-serving signer does with a CSR: keep its subject, names
    /// and key, add serving usages, sign for `valid_days`.
    pub fn sign_csr(&self, csr_pem: &str, valid_days: i64) -> Result<String, rcgen::Error> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = time::OffsetDateTime::now_utc();
        request.params.not_before = now - time::Duration::minutes(5);
        request.params.not_after = now + days(valid_days);
        request.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(request.signed_by(&self.issuer)?.pem())
    }

    /// [`TestCa::sign_csr`] for a certificate living `lifetime` from this
    /// second on (short lifetimes, for renewal tests).
    pub fn sign_csr_for(&self, csr_pem: &str, lifetime: std::time::Duration) -> Result<String, rcgen::Error> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = time::OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        request.params.not_before = now;
        request.params.not_after = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::HOUR);
        request.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(request.signed_by(&self.issuer)?.pem())
    }

    /// A rustls client that trusts this CA (and only it), offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("trust the test CA");
        let mut config = rustls::ClientConfig::builder_with_provider(imageswap::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// A CA's parameters: valid from yesterday for `valid_days`, signing
/// certificates and CRLs.
fn ca_params(common_name: &str, valid_days: i64) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - days(1);
    params.not_after = now + days(valid_days);
    params
}
