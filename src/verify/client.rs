//! The registry client: one manifest `HEAD` per check, with the registry
//! auth dance of the distribution spec (a `Bearer` challenge → a token from
//! the realm, reused until it expires; a `Basic` challenge → the
//! credentials), a `GET` for registries that refuse `HEAD` with 405.
//!
//! Hand-written on hyper-util's client and hyper-rustls (both already in
//! the tree) rather than `oci-client` 0.18, measured on 2026-12-01 with
//! `cargo tree -e normal` on this crate's dependencies plus oci-client:
//! its default `rustls-tls` feature brings in aws-lc-rs/aws-lc-sys (refused:
//! we keep ring); with `rustls-tls-no-provider` it still adds 60 crates
//! (reqwest 0.13, url/idna/ICU, oci-spec, derive_builder…) to our 218 for
//! one HEAD request. A clean debug build of a scratch crate with only the
//! client's dependencies: 29 s / 44 crates for hyper-util + hyper-rustls,
//! 94 s / 140 crates for oci-client without a provider (`cargo build -j 2`
//! on the shared 2-core machine, so rough). It also asks `GET /v2/` before every first pull of a
//! registry (2 requests per anonymous check where this client makes 1; 3
//! with a token, as here), does not retry a 405 with GET, and folds status
//! codes into its own error enum, where the breaker and the warnings need
//! the status. Tested against the real registry (tests/it/verify/).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use super::CheckError;
use super::credentials::Credential;
use super::platform::Platform;
use super::target::Target;

/// Every manifest type a target may be (verify.md): OCI index and manifest,
/// Docker manifest list and v2 manifest. Without them a registry may answer
/// 404 for an index it only serves to clients that accept it.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

const USER_AGENT: &str = concat!("imageswap/", env!("CARGO_PKG_VERSION"));

/// A token without `expires_in` lives 60 s (the distribution token spec).
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// The longest a token is reused, whatever `expires_in` says: the number
/// comes from the network, and an `Instant` cannot hold 2^63 s (the sum
/// panicked). Renewing hourly costs one request per repository an hour.
const TOKEN_LIFETIME_MAX: Duration = Duration::from_secs(3600);
/// The longest `Retry-After` honoured (a 429 keeps its target from being
/// asked again for this long at most).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// A token is renewed this long before it expires, so it does not run out
/// between our check and the registry's.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// The largest token response read (real ones are a few KiB).
const TOKEN_RESPONSE_MAX_BYTES: usize = 64 * 1024;
/// The largest manifest or image config read for its platforms (real
/// indexes are a few KiB; distribution refuses manifests over 4 MiB).
const DOCUMENT_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Digests whose platforms are kept (least recently used go first).
const PLATFORMS_CACHED_MAX: u64 = 10_000;

/// What the platforms are read from: an index's `manifests` or a
/// manifest's `config`.
#[derive(Deserialize)]
struct ManifestJson {
    manifests: Option<Vec<EntryJson>>,
    config: Option<DescriptorJson>,
}

#[derive(Deserialize)]
struct EntryJson {
    platform: Option<PlatformJson>,
}

#[derive(Deserialize)]
struct DescriptorJson {
    digest: String,
}

/// An index entry's `platform`, or an image config (the same names).
#[derive(Deserialize)]
struct PlatformJson {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

impl PlatformJson {
    fn into_platform(self) -> Platform {
        Platform {
            os: self.os,
            architecture: self.architecture,
            variant: self.variant,
        }
    }
}

/// Cached tokens kept at most (one per repository checked); past it the
/// cache starts over rather than grow.
const TOKENS_MAX: usize = 10_000;

/// What the registry said of a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Present,
    Missing,
}

/// What a failed check says about the registry: the breaker only counts
/// what shows the registry unwell, never an answer about one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer: connection refused or reset, TLS failure, no response.
    Unreachable,
    /// A 5xx (of the registry or its token endpoint).
    ServerError,
    /// A 4xx other than 404 and the first 401 (403, 429, a 401 after
    /// authenticating: token registries answer that for a repository that
    /// does not exist): the registry is well; this repository is refused.
    Refused,
    /// Anything else (a bad token response, a challenge we cannot answer):
    /// no evidence either way.
    Other,
}

/// A check that found neither present nor missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: CheckError,
    pub kind: FailureKind,
    /// A 429's `Retry-After` (delta seconds), capped at [`RETRY_AFTER_MAX`].
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn new(error: CheckError, kind: FailureKind) -> Failure {
        Failure {
            error,
            kind,
            retry_after: None,
        }
    }

    fn other(reason: String) -> Failure {
        Failure::new(CheckError::Failed(reason), FailureKind::Other)
    }

    /// The failure a status answers for: 5xx is the registry's, 4xx the
    /// repository's.
    fn status(host: &str, status: StatusCode) -> Failure {
        let kind = if status.is_server_error() {
            FailureKind::ServerError
        } else if status.is_client_error() {
            FailureKind::Refused
        } else {
            FailureKind::Other
        };
        Failure::new(
            CheckError::Status {
                registry: host.to_owned(),
                status: status.as_u16(),
            },
            kind,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the registry CA bundle {path}: {source}")]
    CaRead {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the registry CA bundle {path} holds no usable PEM certificate")]
    CaEmpty { path: std::path::PathBuf },
    #[error("cannot build the registry TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

#[derive(Clone, Debug)]
struct Token {
    value: Arc<str>,
    expires: Instant,
}

/// The HTTP(S) client of every registry check, with its token cache.
pub struct RegistryClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Hosts (`host[:port]`) spoken to over plain HTTP.
    plain_http: Vec<String>,
    /// Bearer tokens by (host, repository), reused until they expire.
    tokens: DashMap<(String, String), Token>,
    /// Hosts that answered with a `Bearer` challenge: Basic credentials
    /// go to their token realm, not with every request to them.
    bearer_hosts: DashMap<String, ()>,
    /// Platforms by (host, digest) of an index, manifest or config.
    platforms: moka::sync::Cache<(String, String), Arc<[Platform]>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("plain_http", &self.plain_http)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client trusting the system roots plus `extra_ca` (a PEM bundle).
    pub fn new(
        extra_ca: Option<&std::path::Path>,
        plain_http: &[String],
        connect_timeout: Duration,
    ) -> Result<RegistryClient, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped: the extra CA may be
        // all a private mirror needs.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
                path: path.to_owned(),
                source,
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ClientError::CaEmpty {
                    path: path.to_owned(),
                });
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(ClientError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(RegistryClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            plain_http: plain_http
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            tokens: DashMap::new(),
            bearer_hosts: DashMap::new(),
            platforms: moka::sync::Cache::new(PLATFORMS_CACHED_MAX),
        })
    }

    /// The port a registry without one is reached on: 80 for hosts
    /// listed as plain HTTP, 443 for the rest.
    pub fn default_port(&self, host: &str) -> u16 {
        if self.scheme(host) == "http" { 80 } else { 443 }
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.plain_http.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }

    /// Asks the registry for the target's manifest. No timeout of its own:
    /// the caller bounds the whole check (token fetch included). A present
    /// manifest comes with its digest when the registry names it
    /// (`Docker-Content-Digest`), for [`RegistryClient::platforms`].
    pub async fn check(
        &self,
        target: &Target,
        credential: Option<&Credential>,
    ) -> Result<(Found, Option<String>), Failure> {
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme(&target.host),
            target.host,
            target.repository,
            target.reference
        );
        let key = (target.host.clone(), target.repository.clone());
        let mut authorization = self.known_authorization(&key, credential);
        let mut method = Method::HEAD;
        // One answer to a challenge per check: a second 401 is the answer.
        let mut answered_challenge = false;
        // At most: 405 → GET, 401 → authenticate, the real answer.
        for _ in 0..4 {
            let response = self
                .send(method.clone(), &url, authorization.as_deref(), None)
                .await?;
            let status = response.status();
            match status {
                StatusCode::OK => {
                    let digest = response
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .filter(|d| d.starts_with("sha256:") && d.len() == 71)
                        .map(str::to_owned);
                    return Ok((Found::Present, digest));
                }
                StatusCode::NOT_FOUND => return Ok((Found::Missing, None)),
                StatusCode::METHOD_NOT_ALLOWED if method == Method::HEAD => method = Method::GET,
                StatusCode::UNAUTHORIZED if !answered_challenge => {
                    answered_challenge = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(Challenge::parse);
                    match challenge {
                        Some(Challenge::Bearer { realm, service }) => {
                            self.bearer_hosts.insert(target.host.clone(), ());
                            // The realm comes from the registry's answer:
                            // it gets the credentials only where verify.md
                            // says they may go.
                            let credential =
                                credential.filter(|_| self.may_send_credentials(&target.host, &realm));
                            let token = self
                                .fetch_token(&realm, service.as_deref(), &target.repository, credential)
                                .await?;
                            authorization = Some(format!("Bearer {}", token.value));
                            if self.tokens.len() >= TOKENS_MAX {
                                self.tokens.clear();
                            }
                            self.tokens.insert(key.clone(), token);
                        }
                        Some(Challenge::Basic) => match credential {
                            Some(Credential::Basic { username, password }) => {
                                authorization = Some(basic(username, password));
                            }
                            _ => return Err(Failure::status(&target.host, status)),
                        },
                        None => return Err(Failure::status(&target.host, status)),
                    }
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let mut failure = Failure::status(&target.host, status);
                    failure.retry_after = retry_after(response.headers());
                    return Err(failure);
                }
                _ => return Err(Failure::status(&target.host, status)),
            }
        }
        Err(Failure::other(format!(
            "{} kept asking to authenticate",
            target.host
        )))
    }

    /// The platforms of a present target (issue 21 item 5): the
    /// `platform` entries of its index or manifest list, or the one of its
    /// single manifest's config blob. Read by digest and cached by it (a
    /// digest's content never changes), so an index seen once is not
    /// fetched again: the target's `digest` from its check, else its own
    /// reference. Uses the authorization the check left (its token or
    /// Basic credentials); a blob's redirect to storage is followed once,
    /// without it.
    pub async fn platforms(
        &self,
        target: &Target,
        digest: Option<&str>,
        credential: Option<&Credential>,
    ) -> Result<Arc<[Platform]>, Failure> {
        let reference = digest.unwrap_or(&target.reference);
        let cached = |digest: &str| self.platforms.get(&(target.host.clone(), digest.to_owned()));
        if let Some(found) = digest.and_then(cached) {
            return Ok(found);
        }
        let body = self.get(target, "manifests", reference, credential).await?;
        let manifest: ManifestJson = serde_json::from_slice(&body)
            .map_err(|e| Failure::other(format!("bad manifest of {}: {e}", target.repository)))?;
        let platforms: Arc<[Platform]> = if let Some(entries) = manifest.manifests {
            entries
                .into_iter()
                .filter_map(|e| e.platform.map(PlatformJson::into_platform))
                .collect()
        } else if let Some(config) = manifest.config {
            if let Some(found) = cached(&config.digest) {
                found
            } else {
                let blob = self.get(target, "blobs", &config.digest, credential).await?;
                let platform: PlatformJson = serde_json::from_slice(&blob)
                    .map_err(|e| Failure::other(format!("bad image config of {}: {e}", target.repository)))?;
                let found: Arc<[Platform]> = Arc::from([platform.into_platform()]);
                self.platforms
                    .insert((target.host.clone(), config.digest), found.clone());
                found
            }
        } else {
            return Err(Failure::other(format!(
                "the manifest of {} names neither platforms nor a config",
                target.repository
            )));
        };
        if let Some(digest) = digest {
            self.platforms
                .insert((target.host.clone(), digest.to_owned()), platforms.clone());
        }
        Ok(platforms)
    }

    /// `GET /v2/<repository>/<kind>/<reference>`'s body (at most
    /// [`DOCUMENT_MAX_BYTES`]), following one redirect.
    async fn get(
        &self,
        target: &Target,
        kind: &str,
        reference: &str,
        credential: Option<&Credential>,
    ) -> Result<Bytes, Failure> {
        let url = format!(
            "{}://{}/v2/{}/{kind}/{reference}",
            self.scheme(&target.host),
            target.host,
            target.repository
        );
        let key = (target.host.clone(), target.repository.clone());
        let authorization = self.known_authorization(&key, credential);
        let mut response = self
            .send(Method::GET, &url, authorization.as_deref(), None)
            .await?;
        if response.status().is_redirection()
            && let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        {
            // Storage behind a redirect is signed by its URL: our
            // credentials are the registry's, not its.
            response = self.send(Method::GET, &location, None, None).await?;
        }
        let status = response.status();
        if status != StatusCode::OK {
            return Err(Failure::status(&target.host, status));
        }
        Ok(Limited::new(response.into_body(), DOCUMENT_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::other(format!("cannot read {url}: {e}")))?
            .to_bytes())
    }

    /// Whether a token realm named by `registry`'s challenge may receive
    /// its credentials (verify.md "Credentials"): over TLS or to a host
    /// listed as plain HTTP, and only on the registry's own host, a host
    /// of the same parent domain (`registry-1.docker.io` and
    /// `auth.docker.io`), or a listed host. Docker sends them to any realm;
    /// a registry answer is not enough for us to hand credentials over.
    fn may_send_credentials(&self, registry: &str, realm: &str) -> bool {
        let Ok(uri) = realm.parse::<http::Uri>() else {
            return false;
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        let listed = self.plain_http.iter().any(|h| h == authority.as_str());
        let secure = uri.scheme_str() == Some("https") || (uri.scheme_str() == Some("http") && listed);
        if !secure {
            return false;
        }
        let registry_name = host_name(registry);
        let realm_name = authority.host();
        listed
            || realm_name.eq_ignore_ascii_case(registry_name)
            || same_parent_domain(registry_name, realm_name)
    }

    /// The `Authorization` to send before any challenge: a cached token, or
    /// the host's Basic credentials unless it is known to want tokens. Sent
    /// at once, not after an anonymous request and its 401: the file names
    /// them for exactly this host, and the request goes over TLS or to a
    /// host listed as plain HTTP (each new connection used to cost one
    /// 401 round trip first).
    fn known_authorization(&self, key: &(String, String), credential: Option<&Credential>) -> Option<String> {
        if let Some(token) = self.tokens.get(key)
            && token.expires > Instant::now()
        {
            return Some(format!("Bearer {}", token.value));
        }
        if let Some(Credential::Basic { username, password }) = credential
            && !self.bearer_hosts.contains_key(&key.0)
        {
            return Some(basic(username, password));
        }
        None
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
        form: Option<String>,
    ) -> Result<http::Response<hyper::body::Incoming>, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| Failure::other(format!("bad request URL {url}: {e}")))?;
        self.http
            .request(request)
            .await
            .map_err(|e| Failure::new(CheckError::Failed(describe(&e)), FailureKind::Unreachable))
    }

    /// Fetches a pull token for `repository` from the challenge's realm.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        repository: &str,
        credential: Option<&Credential>,
    ) -> Result<Token, Failure> {
        let scope = format!("repository:{repository}:pull");
        let mut query = format!("scope={}", encode(&scope));
        if let Some(service) = service {
            query.push_str("&service=");
            query.push_str(&encode(service));
        }
        let (method, url, authorization, form) = match credential {
            // The OAuth2 flow Docker uses for identity tokens.
            Some(Credential::IdentityToken(refresh)) => {
                let form = format!(
                    "grant_type=refresh_token&client_id=imageswap&refresh_token={}&{query}",
                    encode(refresh)
                );
                (Method::POST, realm.to_owned(), None, Some(form))
            }
            Some(Credential::Basic { username, password }) => (
                Method::GET,
                with_query(realm, &query),
                Some(basic(username, password)),
                None,
            ),
            None => (Method::GET, with_query(realm, &query), None, None),
        };
        let response = self.send(method, &url, authorization.as_deref(), form).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let host = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.to_string()))
                .unwrap_or_else(|| realm.to_owned());
            let kind = if status.is_server_error() {
                FailureKind::ServerError
            } else {
                // Refused a token for this repository (or these credentials).
                FailureKind::Refused
            };
            return Err(Failure::new(
                CheckError::Failed(format!("token endpoint {host} answered {}", status.as_u16())),
                kind,
            ));
        }
        let body = Limited::new(response.into_body(), TOKEN_RESPONSE_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::other(format!("cannot read the token response: {e}")))?
            .to_bytes();
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| Failure::other(format!("bad token response: {e}")))?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::other("the token response holds no token".to_owned()))?;
        let now = Instant::now();
        Ok(Token {
            value: value.into(),
            expires: now.checked_add(token_lifetime(parsed.expires_in)).unwrap_or(now),
        })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn basic(username: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

/// How long a token is reused: `expires_in` (60 s when absent or 0),
/// capped at [`TOKEN_LIFETIME_MAX`], minus the renewal margin. Saturating
/// throughout: the number is the token service's, not ours.
fn token_lifetime(expires_in: Option<u64>) -> Duration {
    expires_in
        .filter(|s| *s > 0)
        .map_or(TOKEN_DEFAULT_LIFETIME, |s| {
            Duration::from_secs(s.min(TOKEN_LIFETIME_MAX.as_secs()))
        })
        .saturating_sub(TOKEN_EXPIRY_MARGIN)
}

/// A `Retry-After` in delta seconds, capped at [`RETRY_AFTER_MAX`]; an
/// HTTP date or garbage counts as absent (the default refusal time holds).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

/// `host[:port]` (or `[v6]:port`) without its port.
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether two DNS names share a parent domain of at least two labels
/// (`registry-1.docker.io` and `auth.docker.io`: `docker.io`). Never for
/// IP addresses, and never for a bare top-level domain (`a.com`, `b.com`).
fn same_parent_domain(a: &str, b: &str) -> bool {
    let parent = |name: &str| -> Option<String> {
        if name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[') {
            return None;
        }
        let (_, parent) = name.split_once('.')?;
        parent.contains('.').then(|| parent.to_ascii_lowercase())
    };
    matches!((parent(a), parent(b)), (Some(x), Some(y)) if x == y)
}

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn with_query(realm: &str, query: &str) -> String {
    let separator = if realm.contains('?') { '&' } else { '?' };
    format!("{realm}{separator}{query}")
}

/// The innermost cause of a client error: "connection refused", a TLS
/// alert, not hyper's "client error (Connect)".
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    let kind = if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {source}")
}

/// A `WWW-Authenticate` challenge we can answer.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer { realm: String, service: Option<String> },
    Basic,
}

impl Challenge {
    fn parse(value: &str) -> Option<Challenge> {
        let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(params);
        let find = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: find("realm")?,
            service: find("service"),
        })
    }
}

/// `key="value", key=token` pairs; a quoted value may hold commas
/// (`scope="repository:a:pull,push"`) and `\"`.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_owned();
        rest = &rest[eq + 1..];
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value.push_str(rest[..end].trim());
            rest = &rest[end..];
        }
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_durations_are_capped_never_overflow() {
        assert_eq!(token_lifetime(None), Duration::from_secs(55));
        assert_eq!(token_lifetime(Some(0)), Duration::from_secs(55));
        assert_eq!(token_lifetime(Some(3)), Duration::ZERO, "shorter than the margin");
        for huge in [u64::MAX, i64::MAX as u64, 1 << 40] {
            assert_eq!(
                token_lifetime(Some(huge)),
                TOKEN_LIFETIME_MAX - TOKEN_EXPIRY_MARGIN
            );
        }
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::RETRY_AFTER, v.parse().expect("header"));
            h
        };
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers("18446744073709551615")),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            None,
            "a date: the default"
        );
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_realm_gets_credentials_over_tls_on_the_registry_s_own_domain_or_listed() {
        let client = RegistryClient::new(None, &["plain.example:5000".to_owned()], Duration::from_secs(1))
            .expect("client");
        let may = |registry: &str, realm: &str| client.may_send_credentials(registry, realm);
        assert!(may(
            "harbor.example.com",
            "https://harbor.example.com/service/token"
        ));
        assert!(
            may("harbor.example.com:8443", "https://harbor.example.com/token"),
            "any port of its host"
        );
        assert!(
            may("registry-1.docker.io", "https://auth.docker.io/token"),
            "the same parent domain"
        );
        assert!(
            !may("harbor.example.com", "http://harbor.example.com/token"),
            "cleartext"
        );
        assert!(
            !may("harbor.example.com", "https://evil.example.net/token"),
            "another domain"
        );
        assert!(
            !may("a.com", "https://b.com/token"),
            "a top-level domain is no shared parent"
        );
        assert!(
            !may("10.0.0.1", "https://10.0.0.2/token"),
            "addresses share nothing"
        );
        assert!(
            may("harbor.example.com", "http://plain.example:5000/token"),
            "listed as plain HTTP"
        );
        assert!(
            !may("harbor.example.com", "http://plain.example:5001/token"),
            "another port is not listed"
        );
        assert!(!may("harbor.example.com", "not a url"));
        assert_eq!(host_name("[::1]:5000"), "[::1]");
        assert_eq!(host_name("a.example:443"), "a.example");
    }

    #[test]
    fn challenges_are_parsed_with_quoted_commas() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse("Bearer service=x"),
            None,
            "no realm, nothing to ask"
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(
            auth_params(r#"a="x\"y", b=plain,c="""#),
            [
                ("a".into(), "x\"y".into()),
                ("b".into(), "plain".into()),
                ("c".into(), String::new())
            ]
        );
    }
}
