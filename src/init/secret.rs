//! The objects that hold certificates: the TLS secret (read, and written with
//! an optimistic-concurrency precondition), the bring-your-own CA secret, and
//! the cluster CA ConfigMap that Kubernetes publishes in every namespace.
//!
//! Writes never overwrite blindly. A create answers `409 AlreadyExists` when
//! another replica created the secret first; a replace carries the
//! `resourceVersion` that was read and answers `409 Conflict` when someone
//! wrote in between. Both come back as [`Written::LostRace`], and the caller
//! re-reads and decides again.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use thiserror::Error;

use super::api_error::ApiError;
use super::tls_pair::TlsPair;

pub const CERT_KEY: &str = "cert.pem";
pub const KEY_KEY: &str = "key.pem";
pub const ROOTCA_KEY: &str = "rootca.pem";
/// cert-manager's names (a `kubernetes.io/tls` secret), accepted as well as
/// the original's: read when the original's key is absent or empty.
pub const TLS_CRT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const CA_CRT_KEY: &str = "ca.crt";
/// The fingerprint of the cluster CA bundle a pair stored by `--watch` was
/// issued under: when the bundle changes, the pair is reissued once, by
/// whichever replica gets there first.
pub const CLUSTER_CA_ANNOTATION: &str = "imageswap/cluster-ca-fingerprint";
/// `<pod> <unix seconds>`: that `--watch` sidecar renews the pair and the
/// others leave it to it until then (one CSR per renewal, not one per
/// replica). Removed by the write of the new pair.
pub const RENEWAL_CLAIM_ANNOTATION: &str = "imageswap/renewal-claimed-by";
/// Any value: its presence marks a bring-your-own-certificate secret.
pub const BYOC_ANNOTATION: &str = "imageswap-byoc";
/// Which pod stored the current pair, for whoever debugs a rollout.
pub const UPDATED_BY_ANNOTATION: &str = "imageswap/updated-by-pod";
/// `self-signed`: the certificate of a pair from another CA (a cluster-signed
/// pair kept through an upgrade from `csr`) that a renewal replaced. Pods of
/// the old version never adopt the new pair, so that CA stays in the
/// `caBundle` until this certificate expires: until no replica can serve it.
pub const PREVIOUS_CERT_KEY: &str = "previous-cert.pem";
pub const CLUSTER_CA_CONFIGMAP: &str = "kube-root-ca.crt";
pub const CLUSTER_CA_KEY: &str = "ca.crt";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read {what} {namespace}/{name}: {source}")]
    Read {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("cannot write secret {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error(
        "ConfigMap {namespace}/{CLUSTER_CA_CONFIGMAP} does not exist or has no {CLUSTER_CA_KEY:?}: it is \
         published by the cluster (kube-controller-manager); without it set IMAGESWAP_DISABLE_AUTO_MWC=true \
         and manage the webhook configuration yourself, or bring your own certificate and CA"
    )]
    NoClusterCa { namespace: String },
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// Another writer got there first: re-read and decide again.
    LostRace,
}

/// The secret, data key by key, as the pair it holds (absent keys are
/// empty): `cert.pem`/`key.pem`, else cert-manager's `tls.crt`/`tls.key`.
pub fn pair_of(secret: &Secret) -> TlsPair {
    TlsPair {
        cert_pem: data_or(secret, CERT_KEY, TLS_CRT_KEY),
        key_pem: data_or(secret, KEY_KEY, TLS_KEY_KEY),
    }
}

/// The CA certificates of a bring-your-own CA secret: `rootca.pem`, else
/// cert-manager's `ca.crt`.
pub fn ca_of(secret: &Secret) -> Vec<u8> {
    data_or(secret, ROOTCA_KEY, CA_CRT_KEY)
}

fn data_or(secret: &Secret, key: &str, fallback: &str) -> Vec<u8> {
    let value = data(secret, key);
    if value.iter().all(u8::is_ascii_whitespace) {
        data(secret, fallback)
    } else {
        value
    }
}

/// An annotation's value.
pub fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

pub fn is_byoc(secret: &Secret) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(BYOC_ANNOTATION))
}

/// A data key's bytes, empty when absent.
pub fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.clone())
        .unwrap_or_default()
}

/// The secrets in one namespace.
pub struct Secrets {
    api: Api<Secret>,
    namespace: String,
}

impl Secrets {
    pub fn new(client: &kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// The secret, or `None` when it does not exist.
    pub async fn read(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        self.api.get_opt(name).await.map_err(|source| SecretError::Read {
            what: "secret",
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            source: ApiError(source),
        })
    }

    /// Stores `pair` in the secret `name`, which was `current` when read:
    /// create when it was absent, replace (same `resourceVersion`, same type,
    /// other keys kept) when present.
    pub async fn write_pair(
        &self,
        name: &str,
        current: Option<&Secret>,
        pair: &TlsPair,
        pod_name: &str,
    ) -> Result<Written, SecretError> {
        self.write_pair_annotated(name, current, pair, pod_name, &[], None)
            .await
    }

    /// [`Secrets::write_pair`], also setting `annotations`, and
    /// [`PREVIOUS_CERT_KEY`] when `previous_cert` is given.
    pub async fn write_pair_annotated(
        &self,
        name: &str,
        current: Option<&Secret>,
        pair: &TlsPair,
        pod_name: &str,
        annotations: &[(&str, String)],
        previous_cert: Option<&[u8]>,
    ) -> Result<Written, SecretError> {
        let mut secret = match current {
            Some(existing) => existing.clone(),
            None => Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some([("app".to_owned(), "imageswap".to_owned())].into()),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".to_owned()),
                ..Secret::default()
            },
        };
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        data.insert(CERT_KEY.to_owned(), ByteString(pair.cert_pem.clone()));
        data.insert(KEY_KEY.to_owned(), ByteString(pair.key_pem.clone()));
        if let Some(previous) = previous_cert {
            data.insert(PREVIOUS_CERT_KEY.to_owned(), ByteString(previous.to_vec()));
        }
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(UPDATED_BY_ANNOTATION.to_owned(), pod_name.to_owned());
        if let Some(annotations) = secret.metadata.annotations.as_mut() {
            annotations.remove(RENEWAL_CLAIM_ANNOTATION);
        }
        for (key, value) in annotations {
            secret
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert((*key).to_owned(), value.clone());
        }
        // `managedFields` is server bookkeeping; sending it back is allowed
        // but pointless.
        secret.metadata.managed_fields = None;

        let result = match current {
            None => self.api.create(&PostParams::default(), &secret).await,
            Some(_) => self.api.replace(name, &PostParams::default(), &secret).await,
        };
        match result.map_err(ApiError) {
            Ok(_) => Ok(Written::Stored),
            // AlreadyExists on create, Conflict on a stale replace, NotFound
            // when it was deleted under us: in every case the read is stale.
            Err(err) if err.is_already_exists() || err.is_conflict() || err.is_not_found() => {
                Ok(Written::LostRace)
            }
            Err(source) => Err(SecretError::Write {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                source,
            }),
        }
    }
}

impl Secrets {
    /// Claims the renewal of the pair in `current` for `pod` until `until`
    /// (Unix seconds): an annotation written with the `resourceVersion` that
    /// was read, so of several replicas one gets it.
    pub async fn claim_renewal(
        &self,
        current: &Secret,
        pod: &str,
        until: i64,
    ) -> Result<Written, SecretError> {
        let mut secret = current.clone();
        secret.metadata.managed_fields = None;
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RENEWAL_CLAIM_ANNOTATION.to_owned(), format!("{pod} {until}"));
        let name = secret.metadata.name.clone().unwrap_or_default();
        match self
            .api
            .replace(&name, &PostParams::default(), &secret)
            .await
            .map_err(ApiError)
        {
            Ok(_) => Ok(Written::Stored),
            Err(err) if err.is_conflict() || err.is_not_found() => Ok(Written::LostRace),
            Err(source) => Err(SecretError::Write {
                namespace: self.namespace.clone(),
                name,
                source,
            }),
        }
    }
}

/// Who claimed the renewal of the secret's pair, and until when, unless the
/// claim is `pod`'s own or has run out at `now`.
pub fn renewal_claimed_by_other(secret: &Secret, pod: &str, now: i64) -> Option<String> {
    let claim = annotation(secret, RENEWAL_CLAIM_ANNOTATION)?;
    let (holder, until) = claim.rsplit_once(' ')?;
    let until: i64 = until.parse().ok()?;
    (holder != pod && until > now).then(|| holder.to_owned())
}

/// The cluster CA bundle (`kube-root-ca.crt`, key `ca.crt`).
pub async fn read_cluster_ca(client: &kube::Client, namespace: &str) -> Result<Vec<u8>, SecretError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let configmap = api
        .get_opt(CLUSTER_CA_CONFIGMAP)
        .await
        .map_err(|source| SecretError::Read {
            what: "ConfigMap",
            namespace: namespace.to_owned(),
            name: CLUSTER_CA_CONFIGMAP.to_owned(),
            source: ApiError(source),
        })?;
    configmap
        .and_then(|configmap| configmap.data)
        .and_then(|mut data| data.remove(CLUSTER_CA_KEY))
        .filter(|pem| !pem.trim().is_empty())
        .map(String::into_bytes)
        .ok_or_else(|| SecretError::NoClusterCa {
            namespace: namespace.to_owned(),
        })
}
