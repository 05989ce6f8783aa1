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
    /// (Docker writes `{}` entries for credential helpers).
    pub fn parse(content: &[u8]) -> Result<Credentials, CredentialsError> {
        let config: ConfigJson = serde_json::from_slice(content)?;
        let mut by_host = HashMap::with_capacity(config.auths.len());
        for (key, entry) in config.auths {
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
            by_host.insert(host, credential);
        }
        Ok(Credentials { by_host })
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
