//! Registry credentials from a Docker `config.json` (the `.dockerconfigjson`
//! key of a `kubernetes.io/dockerconfigjson` Secret): per host, a user and
//! password (`auth` = base64 `user:password`, or `username`/`password`) or
//! an `identitytoken` (an OAuth2 refresh token). Parsed once per file
//! content; the checks read the published map through [`CredentialsHandle`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use serde::Deserialize;

use super::target::canonical_host;

/// How to authenticate to one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// Exchanged for an access token at the realm (OAuth2 `refresh_token`).
    IdentityToken(String),
}

// Secrets never reach a log line through `{:?}`.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// Every registry's credentials, by API host (`host[:port]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    by_host: HashMap<String, Credential>,
    /// Hosts written more than once in `auths`, for the loader's warning.
    duplicates: Vec<Duplicate>,
}

/// Several `auths` keys naming one registry (`host:port`,
/// `https://host:port/v1/`, `http://host:port`): which one is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub host: String,
    /// The key whose credentials are used.
    pub used: String,
    /// The other keys, ignored.
    pub ignored: Vec<String>,
}

/// The published credentials: swapped whole on each good reload.
pub type CredentialsHandle = Arc<ArcSwap<Credentials>>;

/// A new handle holding no credentials (anonymous everywhere).
pub fn anonymous() -> CredentialsHandle {
    Arc::new(ArcSwap::from_pointee(Credentials::default()))
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("not a Docker config.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("auths.{host}.auth is not base64 of user:password")]
    Auth { host: String },
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl Credentials {
    /// Parses a config.json; an entry with nothing usable in it is skipped
    /// (Docker writes `{}` entries for credential helpers). Several keys
    /// for one registry: the one Docker looks up first wins (the key
    /// written exactly as the registry, `host[:port]`); among the others,
    /// where Docker takes whichever its map yields first, an `https://`
    /// key before an `http://` one, then the first in byte order. The
    /// order of the file never matters (a JSON object has none), so every
    /// load and every replica picks the same.
    pub fn parse(content: &[u8]) -> Result<Credentials, CredentialsError> {
        let config: ConfigJson = serde_json::from_slice(content)?;
        let mut entries: Vec<(String, AuthEntry)> = config.auths.into_iter().collect();
        // Best first: the winner is the first entry of its host kept.
        entries.sort_by(|(a, _), (b, _)| precedence(a).cmp(&precedence(b)).then_with(|| a.cmp(b)));
        let mut by_host = HashMap::with_capacity(entries.len());
        let mut used: HashMap<String, String> = HashMap::new();
        let mut duplicates: Vec<Duplicate> = Vec::new();
        for (key, entry) in entries {
            let host = host_of(&key);
            let credential = if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
                Credential::IdentityToken(token)
            } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| CredentialsError::Auth { host: key.clone() })?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| CredentialsError::Auth { host: key.clone() })?;
                Credential::Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credential::Basic { username, password }
            } else {
                continue;
            };
            if let Some(winner) = used.get(&host) {
                match duplicates.iter_mut().find(|d| d.host == host) {
                    Some(d) => d.ignored.push(key),
                    None => duplicates.push(Duplicate {
                        host: host.clone(),
                        used: winner.clone(),
                        ignored: vec![key],
                    }),
                }
                continue;
            }
            used.insert(host.clone(), key);
            by_host.insert(host, credential);
        }
        Ok(Credentials { by_host, duplicates })
    }

    /// Registries written under more than one key, and the key used.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    pub fn get(&self, host: &str) -> Option<&Credential> {
        self.by_host.get(host)
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// The rank of a key among those of one registry (lower wins): the bare
/// host Docker looks up first, then `https://`, then `http://`.
fn precedence(key: &str) -> u8 {
    if key.starts_with("https://") {
        1
    } else if key.starts_with("http://") {
        2
    } else {
        0
    }
}

/// The API host a config.json key names: keys may be URLs
/// (`https://index.docker.io/v1/`) or bare hosts.
fn host_of(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    canonical_host(host).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_forms_are_read_and_hub_keys_are_normalised() {
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "harbor.example.com": {"username": "robot", "password": "secret"},
            "quay.example.com:8443": {"identitytoken": "refresh"},
            "helper.example.com": {}
        }}"#;
        let c = Credentials::parse(config).expect("valid");
        assert_eq!(
            c.get("registry-1.docker.io"),
            Some(&Credential::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            c.get("harbor.example.com"),
            Some(&Credential::Basic {
                username: "robot".into(),
                password: "secret".into()
            })
        );
        assert_eq!(
            c.get("quay.example.com:8443"),
            Some(&Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(c.len(), 3, "the empty helper entry is skipped");
        assert!(!format!("{c:?}").contains("secret"), "no secret in Debug");
    }

    fn basic(username: &str) -> Credential {
        Credential::Basic {
            username: username.into(),
            password: "p".into(),
        }
    }

    /// Three spellings of one registry: the same winner on every load
    /// (serde's map order varies from run to run), Docker's rule.
    #[test]
    fn duplicate_keys_for_one_host_resolve_the_same_way_every_load() {
        let config = br#"{"auths": {
            "http://r.example:5000": {"username": "http", "password": "p"},
            "https://r.example:5000/v1/": {"username": "https", "password": "p"},
            "r.example:5000": {"username": "bare", "password": "p"},
            "https://s.example/v2/": {"username": "s-https", "password": "p"},
            "http://s.example": {"username": "s-http", "password": "p"}
        }}"#;
        for _ in 0..32 {
            let c = Credentials::parse(config).expect("valid");
            assert_eq!(
                c.get("r.example:5000"),
                Some(&basic("bare")),
                "the key written as the host"
            );
            assert_eq!(c.get("s.example"), Some(&basic("s-https")), "https before http");
            assert_eq!(
                c.duplicates(),
                [
                    Duplicate {
                        host: "r.example:5000".into(),
                        used: "r.example:5000".into(),
                        ignored: vec![
                            "https://r.example:5000/v1/".into(),
                            "http://r.example:5000".into()
                        ],
                    },
                    Duplicate {
                        host: "s.example".into(),
                        used: "https://s.example/v2/".into(),
                        ignored: vec!["http://s.example".into()],
                    },
                ]
            );
        }
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        let e = Credentials::parse(b"{").expect_err("not JSON");
        assert!(e.to_string().starts_with("not a Docker config.json"), "{e}");
        let e = Credentials::parse(br#"{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}"#)
            .expect_err("no colon");
        assert_eq!(
            e.to_string(),
            "auths.r.example.auth is not base64 of user:password"
        );
    }
}
