//! The settings of mirror verification (verify.md's table), shared by
//! `imageswap serve` and `imageswap swap`: the same client, the same
//! credentials, the same answers from both.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;

use super::OnError;
use super::platform::Platform;
use crate::settings::{SettingValue, choice, setting};
use crate::swap::reference::check_registry_host;

/// Where the registry credentials are read from when nothing else is set:
/// the `.dockerconfigjson` key of a `kubernetes.io/dockerconfigjson` Secret
/// mounted at `/etc/imageswap/registry`.
pub const DEFAULT_REGISTRY_CONFIG: &str = "/etc/imageswap/registry/.dockerconfigjson";

/// `IMAGESWAP_VERIFY`: off (the original's behaviour) or on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMode {
    /// Swap as the maps say, without asking the mirror.
    #[value(alias = "false")]
    Off,
    /// Check each swapped image in its registry first.
    #[value(alias = "true")]
    On,
}

/// Verification settings (each a variable and a flag).
#[derive(Clone, Debug, Args)]
pub struct VerifyArgs {
    /// Check that each swapped image exists in its registry before patching: off or on.
    /// A bare `--verify` means on (`imageswap swap --verify`, verify.md).
    #[arg(long, env = "IMAGESWAP_VERIFY", default_value = "off", num_args = 0..=1,
        default_missing_value = "on", action = clap::ArgAction::Set, value_parser = choice::<VerifyMode>())]
    pub verify: VerifyMode,

    /// When a check cannot answer (timeout, 5xx, 429, TLS, circuit open): swap anyway, or keep the original.
    #[arg(long, env = "IMAGESWAP_VERIFY_ON_ERROR", default_value = "swap", value_parser = choice::<OnError>())]
    pub verify_on_error: OnError,

    /// Longest one admission waits for its checks (never past its own deadline).
    #[arg(long, env = "IMAGESWAP_VERIFY_TIMEOUT", default_value = "1s", value_parser = setting::<Duration>())]
    pub verify_timeout: Duration,

    /// How long "present" is believed for a tag (a present digest stays present).
    #[arg(long, env = "IMAGESWAP_VERIFY_TTL", default_value = "10m", value_parser = setting::<Duration>())]
    pub verify_ttl: Duration,

    /// How long "missing" is believed.
    #[arg(long, env = "IMAGESWAP_VERIFY_MISSING_TTL", default_value = "30s", value_parser = setting::<Duration>())]
    pub verify_missing_ttl: Duration,

    /// How long past its TTL an answer (present or missing) still serves when a check cannot answer
    /// (registry down, 5xx, timeout, circuit open), and a present tag while its refresh runs; 0 turns both off.
    #[arg(long, env = "IMAGESWAP_VERIFY_STALE_IF_ERROR", default_value = "1h", value_parser = setting::<Duration>())]
    pub verify_stale_if_error: Duration,

    /// Platforms every swapped image must have when the pod spec pins none (nodeSelector or required
    /// node affinity on kubernetes.io/arch, kubernetes.io/os), e.g. linux/amd64,linux/arm64; empty: any.
    #[arg(long, env = "IMAGESWAP_VERIFY_PLATFORMS", value_delimiter = ',', value_parser = setting::<Platform>())]
    pub verify_platforms: Vec<Platform>,

    /// Registry credentials, Docker config.json format; a missing file means anonymous. Reloaded on change.
    #[arg(long, env = "IMAGESWAP_REGISTRY_CONFIG", default_value = DEFAULT_REGISTRY_CONFIG)]
    pub registry_config: PathBuf,

    /// A PEM bundle trusted for registry TLS in addition to the system roots.
    #[arg(long, env = "IMAGESWAP_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,

    /// Comma-separated registry hosts (host[:port]) reached over plain HTTP.
    #[arg(long, env = "IMAGESWAP_REGISTRY_PLAIN_HTTP", value_delimiter = ',',
        value_parser = setting::<PlainHttpHost>().map(|host| host.0))]
    pub registry_plain_http: Vec<String>,
}

/// One entry of `IMAGESWAP_REGISTRY_PLAIN_HTTP`: compared with the host of
/// swapped images, so a URL (`http://reg:5000/path`) would never match and
/// the registry would silently be asked over HTTPS. An empty entry (a
/// trailing comma) is skipped by the client.
#[derive(Clone, Debug)]
pub struct PlainHttpHost(pub String);

impl SettingValue for PlainHttpHost {
    const EXPECTED: &'static str =
        "registry hosts as in the swapped image, host[:port] without scheme or path, comma-separated";

    fn parse_setting(text: &str) -> Result<PlainHttpHost, String> {
        if !text.is_empty() {
            check_registry_host(text)?;
        }
        Ok(PlainHttpHost(text.to_owned()))
    }
}

impl VerifyArgs {
    pub fn enabled(&self) -> bool {
        self.verify == VerifyMode::On
    }
}
