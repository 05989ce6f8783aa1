//! The webhook's `caBundle` while a CA changes (`--watch`). The API server
//! trusts the webhook only through this bundle, and every replica may serve a
//! pair from a different CA for a moment (each adopts a new pair at its own
//! pass), so a CA leaves the bundle only when no replica can still serve a
//! pair it signed.
//!
//! The bundle is the *base* (the cluster CA bundle, or `rootca.pem` for a
//! bring-your-own pair) followed by every CA the live object carries that
//! the base lost, kept
//!
//! - while it signs the pair in the secret (nothing was reissued yet), then
//! - for a grace period after this sidecar first saw it stop signing that
//!   pair, if it was in a base this sidecar saw or signed the pair while
//!   this sidecar watched (an upgrade from a cluster-signed pair to
//!   `self-signed`): long enough for every
//!   replica to adopt the new pair and for its server to load it (a CA that
//!   someone else added to the live object is drift, and goes at once),
//! - and never past its own expiry.
//!
//! Only the live object is the memory of which CAs were trusted: a retired CA
//! is never added back, so replicas whose grace periods end at different
//! times converge on the shorter one instead of flapping, and a restarted
//! sidecar only ever keeps a CA longer. With no CA retained the bundle is the
//! base byte for byte, as `init` writes it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tracing::info;

use super::tls_pair;

/// PEM lines are 64 base64 characters (RFC 7468).
const PEM_LINE_LEN: usize = 64;

/// The CAs leaving the bundle, by DER, and when this sidecar first saw each
/// one stop signing the stored pair.
#[derive(Debug)]
pub struct Retention {
    grace: Duration,
    since: HashMap<Vec<u8>, Instant>,
    /// Every CA this sidecar saw in a base: only those are retained once
    /// they sign nothing (a CA someone else put in the live object is drift).
    seen: HashSet<Vec<u8>>,
}

impl Retention {
    pub fn new(grace: Duration) -> Retention {
        Retention {
            grace,
            since: HashMap::new(),
            seen: HashSet::new(),
        }
    }

    /// Remembers the CAs of a base the caller trusted (`init`'s first pass).
    pub fn saw_base(&mut self, base: &[u8]) {
        self.seen
            .extend(certificates(base).iter().map(|der| der.as_ref().to_vec()));
    }

    /// The `caBundle` to set: `base`, then the CAs of `live` it lacks that are
    /// still needed for a replica serving one of `served` (PEM, leaf first:
    /// the stored pair's certificate, and a replaced one that replicas of an
    /// older version may still serve; empty ones and expired leaves count for
    /// nothing) or the pair it replaced. `now_unix` dates the CAs; `now` runs
    /// the grace.
    pub fn bundle(
        &mut self,
        base: &[u8],
        live: Option<&[u8]>,
        served: &[&[u8]],
        now_unix: i64,
        now: Instant,
    ) -> Vec<u8> {
        let served: Vec<&[u8]> = served
            .iter()
            .copied()
            .filter(|cert| tls_pair::not_after(cert).is_some_and(|end| end > now_unix))
            .collect();
        let base_certs = certificates(base);
        let mut kept: Vec<CertificateDer<'static>> = Vec::new();
        let mut still_leaving: HashMap<Vec<u8>, Instant> = HashMap::new();
        for ca in live.map(certificates).unwrap_or_default() {
            if base_certs.contains(&ca) || kept.contains(&ca) {
                continue;
            }
            let key = ca.as_ref().to_vec();
            if expired(&ca, now_unix) {
                info!(ca = %subject(&ca), "Dropped an expired CA from the webhook's caBundle.");
                continue;
            }
            let pem = pem_of(&ca);
            if served
                .iter()
                .any(|cert| tls_pair::verify_chain(cert, pem.as_bytes()).is_ok())
            {
                // The stored pair still comes from it: needed, no clock yet,
                // and trusted by this sidecar from now on, so it gets the
                // grace period once the pair moves on (a CA that never was
                // in a base: the cluster CA of a pair kept through an upgrade
                // to self-signed).
                self.seen.insert(key);
                kept.push(ca);
                continue;
            }
            if !self.seen.contains(&key) {
                info!(ca = %subject(&ca), "Dropped a CA from the webhook's caBundle that is neither the cluster's nor a previous one.");
                continue;
            }
            let since = self.since.get(&key).copied().unwrap_or(now);
            if now.saturating_duration_since(since) < self.grace {
                if !self.since.contains_key(&key) {
                    info!(
                        ca = %subject(&ca),
                        grace = %humantime::format_duration(self.grace),
                        "Keeping the previous CA in the webhook's caBundle until every replica serves the new pair."
                    );
                }
                still_leaving.insert(key, since);
                kept.push(ca);
            } else {
                info!(ca = %subject(&ca), "Retired the previous CA from the webhook's caBundle.");
            }
        }
        self.since = still_leaving;
        self.saw_base(base);
        if kept.is_empty() {
            return base.to_vec();
        }
        let mut bundle = base.to_vec();
        if !bundle.ends_with(b"\n") && !bundle.is_empty() {
            bundle.push(b'\n');
        }
        for ca in &kept {
            bundle.extend_from_slice(pem_of(ca).as_bytes());
        }
        bundle
    }
}

/// The certificates of a PEM bundle, in order; what does not parse is left
/// out (the base was checked by whoever reads it, the live object is ours).
pub fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// An order-independent fingerprint of a bundle's certificates, stable
/// across processes of one build: SipHash with fixed keys over the sorted
/// DERs. A build whose hasher differs causes at most one extra reissue.
pub fn fingerprint(pem: &[u8]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut ders: Vec<Vec<u8>> = certificates(pem).iter().map(|c| c.as_ref().to_vec()).collect();
    ders.sort();
    let mut hasher = DefaultHasher::new();
    ders.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Whether the newest CA of `bundle` (latest `notBefore`; the later in the
/// bundle on a tie) signs the leaf of `cert_pem`.
pub fn signed_by_newest(cert_pem: &[u8], bundle: &[u8]) -> bool {
    let newest = certificates(bundle)
        .into_iter()
        .enumerate()
        .filter_map(|(index, der)| {
            let not_before = x509_parser::parse_x509_certificate(der.as_ref())
                .ok()?
                .1
                .validity()
                .not_before
                .timestamp();
            Some(((not_before, index), der))
        })
        .max_by_key(|(order, _)| *order)
        .map(|(_, der)| der);
    newest.is_some_and(|der| tls_pair::verify_chain(cert_pem, pem_of(&der).as_bytes()).is_ok())
}

/// One certificate as PEM.
pub fn pem_of(der: &CertificateDer<'_>) -> String {
    let encoded = BASE64.encode(der.as_ref());
    let mut pem = String::with_capacity(encoded.len() + encoded.len() / PEM_LINE_LEN + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(PEM_LINE_LEN) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn expired(der: &CertificateDer<'_>, now_unix: i64) -> bool {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => cert.validity().not_after.timestamp() <= now_unix,
        Err(_) => false,
    }
}

fn subject(der: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => cert.subject().to_string(),
        Err(_) => "(unparsable)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca(name: &str, days: i64) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca) -> String {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["imageswap.ns.svc".to_owned()]).unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().pem()
    }

    fn now_unix() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn pem_round_trips() {
        let one = ca("one", 10);
        let ders = certificates(one.pem.as_bytes());
        assert_eq!(ders.len(), 1);
        assert_eq!(certificates(pem_of(&ders[0]).as_bytes()), ders);
    }

    #[test]
    fn fingerprints_ignore_order_and_formatting() {
        let (one, two) = (ca("one", 10), ca("two", 10));
        let a = format!("{}{}", one.pem, two.pem);
        let b = format!("{}\n\n{}", two.pem, one.pem);
        assert_eq!(fingerprint(a.as_bytes()), fingerprint(b.as_bytes()));
        assert_ne!(fingerprint(a.as_bytes()), fingerprint(one.pem.as_bytes()));
    }

    #[test]
    fn an_old_ca_stays_while_it_signs_the_pair_then_for_the_grace_only() {
        let (old, new) = (ca("old", 100), ca("new", 100));
        let grace = Duration::from_secs(30);
        let mut retention = Retention::new(grace);
        let t0 = Instant::now();
        let base = new.pem.as_bytes();
        let old_pair = leaf(&old);
        // Before: the old CA is the cluster's.
        let before = retention.bundle(
            old.pem.as_bytes(),
            Some(old.pem.as_bytes()),
            &[old_pair.as_bytes()],
            now_unix(),
            t0,
        );
        assert_eq!(before, old.pem.as_bytes());
        // The cluster switched to the new CA; the stored pair is still old.
        let bundle = retention.bundle(
            base,
            Some(old.pem.as_bytes()),
            &[old_pair.as_bytes()],
            now_unix(),
            t0,
        );
        assert_eq!(
            certificates(&bundle),
            [certificates(base), certificates(old.pem.as_bytes())].concat()
        );
        assert!(bundle.starts_with(base));
        // Still signing the pair: kept however long it takes.
        let again = retention.bundle(
            base,
            Some(&bundle),
            &[old_pair.as_bytes()],
            now_unix(),
            t0 + grace * 3,
        );
        assert_eq!(again, bundle);
        // Reissued under the new CA: the grace starts now.
        let t1 = t0 + grace * 4;
        let new_pair = leaf(&new);
        let during = retention.bundle(base, Some(&bundle), &[new_pair.as_bytes()], now_unix(), t1);
        assert_eq!(during, bundle);
        let still = retention.bundle(
            base,
            Some(&bundle),
            &[new_pair.as_bytes()],
            now_unix(),
            t1 + grace - Duration::from_secs(1),
        );
        assert_eq!(still, bundle);
        let after = retention.bundle(
            base,
            Some(&bundle),
            &[new_pair.as_bytes()],
            now_unix(),
            t1 + grace,
        );
        assert_eq!(after, base, "only the base, byte for byte");
    }

    #[test]
    fn a_ca_that_signed_the_pair_gets_the_grace_though_never_in_a_base() {
        // An upgrade from csr to self-signed: the base is the own CA, the
        // live bundle the cluster CA, which signed the pair kept through the
        // upgrade; once the pair is renewed from the own CA, replicas still
        // serving the old one need the cluster CA for the grace period.
        let (cluster, own) = (ca("cluster", 100), ca("own", 100));
        let grace = Duration::from_secs(30);
        let mut retention = Retention::new(grace);
        let t0 = Instant::now();
        let kept_pair = leaf(&cluster);
        let both = retention.bundle(
            own.pem.as_bytes(),
            Some(cluster.pem.as_bytes()),
            &[kept_pair.as_bytes()],
            now_unix(),
            t0,
        );
        assert_eq!(
            certificates(&both),
            [
                certificates(own.pem.as_bytes()),
                certificates(cluster.pem.as_bytes())
            ]
            .concat()
        );
        let renewed = leaf(&own);
        let t1 = t0 + Duration::from_secs(1);
        let during = retention.bundle(
            own.pem.as_bytes(),
            Some(&both),
            &[renewed.as_bytes()],
            now_unix(),
            t1,
        );
        assert_eq!(during, both, "the cluster CA stays for the grace");
        let after = retention.bundle(
            own.pem.as_bytes(),
            Some(&both),
            &[renewed.as_bytes()],
            now_unix(),
            t1 + grace,
        );
        assert_eq!(after, own.pem.as_bytes());
    }

    #[test]
    fn a_retired_or_expired_ca_is_never_added_back() {
        let (old, new) = (ca("old", 100), ca("new", 100));
        let mut retention = Retention::new(Duration::from_secs(30));
        let now = Instant::now();
        let new_pair = leaf(&new);
        // Not in the live object: not retained, whatever this sidecar remembers.
        let bundle = retention.bundle(
            new.pem.as_bytes(),
            Some(new.pem.as_bytes()),
            &[new_pair.as_bytes()],
            now_unix(),
            now,
        );
        assert_eq!(bundle, new.pem.as_bytes());
        // Expired: dropped at once, even while it signs the pair.
        let expired_ca = ca("expired", -1);
        let live = format!("{}{}", new.pem, expired_ca.pem);
        let old_pair = leaf(&expired_ca);
        let bundle = retention.bundle(
            new.pem.as_bytes(),
            Some(live.as_bytes()),
            &[old_pair.as_bytes()],
            now_unix(),
            now,
        );
        assert_eq!(bundle, new.pem.as_bytes());
        // A live bundle with the base CA twice and formatting noise: the base.
        let noisy = format!("{}\n{}", new.pem, new.pem);
        let bundle = retention.bundle(
            new.pem.as_bytes(),
            Some(noisy.as_bytes()),
            &[new_pair.as_bytes()],
            now_unix(),
            now,
        );
        assert_eq!(bundle, new.pem.as_bytes());
        // A CA someone else added, that signs nothing and never was the
        // cluster's: drift, dropped at once.
        let live = format!("{}{}", new.pem, old.pem);
        let bundle = retention.bundle(
            new.pem.as_bytes(),
            Some(live.as_bytes()),
            &[new_pair.as_bytes()],
            now_unix(),
            now,
        );
        assert_eq!(bundle, new.pem.as_bytes());
    }
}
