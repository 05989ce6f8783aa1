//! Typed settings of `imageswap init`: the names of every Kubernetes object it
//! touches, where it writes, and its two tunables (CSR wait, renewal
//! threshold). The defaults are the original ImageSwap's names, so an existing
//! installation keeps working. [`InitArgs`] are the flags and variables;
//! [`InitSettings`] the checked values: the namespace and service become
//! certificate names, so they must be DNS labels.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::admission::PullSecrets;
use crate::conditions::ConditionsArgs;
use crate::settings::{SettingName, choice, setting};

pub const DEFAULT_NAMESPACE: &str = "imageswap-system";
pub const DEFAULT_SERVICE_NAME: &str = "imageswap";
pub const DEFAULT_TLS_SECRET: &str = "imageswap-tls";
pub const DEFAULT_CA_SECRET: &str = "imageswap-tls-ca";
pub const DEFAULT_MWC_NAME: &str = "imageswap-webhook";
pub const DEFAULT_WEBHOOK_NAME: &str = "imageswap.webhook.k8s.twr.io";
pub const DEFAULT_MWC_TEMPLATE: &str = "/mwc/imageswap-mwc.yaml";
pub const DEFAULT_TLS_DIR: &str = "/tls";
pub const DEFAULT_CSR_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Long enough for a busy controller-manager, short enough that a cluster
/// without the signer fails the pod visibly instead of hanging it.
pub const DEFAULT_CSR_TIMEOUT: &str = "60s";
/// The original's threshold: kubelet-serving certificates live a year, so
/// renewing in the last 180 days leaves half a year of slack.
pub const DEFAULT_RENEW_BEFORE: &str = "180d";
/// How often `init --watch` looks again: a renewal months ahead and a
/// webhook configuration edited by hand are both fine within a minute, and
/// one GET of each object per minute per replica is nothing to an API server.
pub const DEFAULT_WATCH_INTERVAL: &str = "1m";
/// `init --watch` renews a pair it manages when this share of its lifetime
/// is left (kubelet-serving pairs of a year: after eight months).
pub const DEFAULT_RENEW_FRACTION: &str = "1/3";
/// The namespaces that get copies of the pull secrets: the webhook's own
/// opt-in label, so "ImageSwap rewrites my pods" and "my pods can pull from
/// the mirror" go together.
pub const DEFAULT_PROJECT_NAMESPACE_SELECTOR: &str = "k8s.twr.io/imageswap=enabled";

/// `IMAGESWAP_PROJECT_PULL_SECRETS`: off (the default: no rights beyond the
/// namespace needed) or on (src/init/projection.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Projection {
    #[value(alias = "false")]
    Off,
    #[value(alias = "true")]
    On,
}
/// Where a pair comes from when `IMAGESWAP_CERT_SOURCE` is unset: a CA of
/// ImageSwap's own, which needs no cluster-wide certificate rights (issue 19;
/// the CSR approval rights of `csr` let the service account approve kubelet
/// serving certificates). With `IMAGESWAP_DISABLE_AUTO_MWC` the operator
/// keeps the `caBundle`, made for the cluster CA: then `csr` stays
/// ([`CertSource::unset`]).
pub const DEFAULT_CERT_SOURCE: CertSource = CertSource::SelfSigned;
/// `self-signed`: the CA lives ten years, its serving pairs one, as the
/// kubelet-serving signer's do.
pub const DEFAULT_SELF_SIGNED_CA_LIFETIME: &str = "3650d";
pub const DEFAULT_SELF_SIGNED_CERT_LIFETIME: &str = "365d";

/// `imageswap init`: the names are the original ImageSwap's, so existing
/// installations keep working.
#[derive(Clone, Debug, Args)]
pub struct InitArgs {
    /// Namespace of the service, the secrets and the cluster CA ConfigMap.
    #[arg(long, env = "IMAGESWAP_NAMESPACE_NAME", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// This pod's name, to make the CSR name traceable (default: the hostname).
    #[arg(long, env = "IMAGESWAP_POD_NAME")]
    pub pod_name: Option<String>,

    /// The webhook's Service; the certificate covers its DNS names.
    #[arg(long, env = "IMAGESWAP_SERVICE_NAME", default_value = DEFAULT_SERVICE_NAME)]
    pub service_name: String,

    /// Secret holding the serving pair (`cert.pem`, `key.pem`).
    #[arg(long, env = "IMAGESWAP_TLS_SECRET_NAME", default_value = DEFAULT_TLS_SECRET)]
    pub tls_secret: String,

    /// Secret holding the bring-your-own CA (`rootca.pem`).
    #[arg(long, env = "IMAGESWAP_TLS_CA_SECRET_NAME", default_value = DEFAULT_CA_SECRET)]
    pub ca_secret: String,

    /// The MutatingWebhookConfiguration to create or update.
    #[arg(long, env = "IMAGESWAP_MWC_NAME", default_value = DEFAULT_MWC_NAME)]
    pub mwc_name: String,

    /// The webhook, in the template, whose caBundle is set.
    #[arg(long, env = "IMAGESWAP_WEBHOOK_NAME", default_value = DEFAULT_WEBHOOK_NAME)]
    pub webhook_name: String,

    /// The MutatingWebhookConfiguration template (YAML).
    #[arg(long, env = "IMAGESWAP_MWC_TEMPLATE", default_value = DEFAULT_MWC_TEMPLATE)]
    pub mwc_template: PathBuf,

    /// Directory where `cert.pem` and `key.pem` are written for the server.
    #[arg(long, env = "IMAGESWAP_TLS_DIR", default_value = DEFAULT_TLS_DIR)]
    pub tls_dir: PathBuf,

    /// The signer asked to sign the CSR.
    #[arg(long, env = "IMAGESWAP_CSR_SIGNER_NAME", default_value = DEFAULT_CSR_SIGNER)]
    pub csr_signer: String,

    /// Leave the MutatingWebhookConfiguration alone (true/false, any case).
    #[arg(
        long,
        env = "IMAGESWAP_DISABLE_AUTO_MWC",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = setting::<bool>(),
    )]
    pub disable_auto_mwc: bool,

    /// How long to wait for the CSR to be signed.
    #[arg(
        long,
        env = "IMAGESWAP_CSR_TIMEOUT",
        default_value = DEFAULT_CSR_TIMEOUT,
        value_parser = setting::<Duration>(),
    )]
    pub csr_timeout: Duration,

    /// Reissue the certificate when it expires within this long.
    #[arg(
        long,
        env = "IMAGESWAP_CERT_RENEW_BEFORE",
        default_value = DEFAULT_RENEW_BEFORE,
        value_parser = setting::<Duration>(),
    )]
    pub renew_before: Duration,

    /// Do what `init` does, then keep it true while the pod runs (the native
    /// sidecar): renew the pair, follow a renewed bring-your-own secret and a
    /// rotated cluster CA, put back an edited webhook configuration. A flag
    /// without a variable on purpose: it is the container's role, written in
    /// its `args`, and the settings ConfigMap is shared with the one-shot init.
    #[arg(long)]
    pub watch: bool,

    /// `--watch`: how often to look again (each wait is jittered by ±25 % so
    /// replicas do not act in step).
    #[arg(
        long,
        env = "IMAGESWAP_WATCH_INTERVAL",
        default_value = DEFAULT_WATCH_INTERVAL,
        value_parser = setting::<Duration>(),
    )]
    pub watch_interval: Duration,

    /// `--watch`: renew a managed pair when this share of its lifetime is left
    /// (`1/3` or `0.33`), or within IMAGESWAP_CERT_RENEW_BEFORE if that is later.
    #[arg(
        long,
        env = "IMAGESWAP_CERT_RENEW_FRACTION",
        default_value = DEFAULT_RENEW_FRACTION,
        value_parser = setting::<Fraction>(),
    )]
    pub renew_fraction: Fraction,

    /// Where a pair comes from: `self-signed` (a CA of ImageSwap's own, kept
    /// in a secret), `csr` (the cluster's signer; the default with
    /// IMAGESWAP_DISABLE_AUTO_MWC), or `byoc` (the TLS secret is yours, with
    /// or without its `imageswap-byoc` annotation, which selects
    /// bring-your-own in any case) [default: self-signed]
    #[arg(long, env = "IMAGESWAP_CERT_SOURCE", value_parser = setting::<CertSource>())]
    pub cert_source: Option<CertSource>,

    /// `self-signed`: how long the CA lives (renewed with the same share left
    /// as a pair, its predecessor kept in the caBundle until it expires).
    #[arg(
        long,
        env = "IMAGESWAP_SELF_SIGNED_CA_LIFETIME",
        default_value = DEFAULT_SELF_SIGNED_CA_LIFETIME,
        value_parser = setting::<Duration>(),
    )]
    pub self_signed_ca_lifetime: Duration,

    /// `self-signed`: how long a serving pair lives (at most as long as its CA).
    #[arg(
        long,
        env = "IMAGESWAP_SELF_SIGNED_CERT_LIFETIME",
        default_value = DEFAULT_SELF_SIGNED_CERT_LIFETIME,
        value_parser = setting::<Duration>(),
    )]
    pub self_signed_cert_lifetime: Duration,

    /// The server's rules, keep list, pull secrets and disable label: the
    /// webhook's generated matchConditions follow them, and `--watch`
    /// projects those pull secrets.
    #[command(flatten)]
    pub conditions: ConditionsArgs,

    /// `--watch`: serve `/metrics`, `/healthz` and `/readyz` (200 once the first
    /// pass wrote the pair: the sidecar's startup probe) over plain HTTP here.
    #[arg(long, env = "IMAGESWAP_WATCH_LISTEN", value_parser = setting::<SocketAddr>())]
    pub watch_listen: Option<SocketAddr>,

    /// `--watch`: keep a copy of each IMAGESWAP_IMAGE_PULL_SECRETS secret (from this namespace)
    /// in every namespace IMAGESWAP_PROJECT_NAMESPACE_SELECTOR selects: off or on. Needs the
    /// rights of deploy/components/pull-secret-projection.
    #[arg(long, env = "IMAGESWAP_PROJECT_PULL_SECRETS", default_value = "off",
        value_parser = choice::<Projection>())]
    pub project_pull_secrets: Projection,

    /// `--watch`: the label selector (equality terms: `k=v`, `k!=v`, `k`, `!k`, comma-separated)
    /// of the namespaces that get the pull secret copies.
    #[arg(long, env = "IMAGESWAP_PROJECT_NAMESPACE_SELECTOR",
        default_value = DEFAULT_PROJECT_NAMESPACE_SELECTOR)]
    pub project_namespace_selector: String,
}

/// Where the serving pair comes from (`IMAGESWAP_CERT_SOURCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// A CertificateSigningRequest to the cluster's signer.
    Csr,
    /// A CA of ImageSwap's own, created once in a secret.
    SelfSigned,
    /// The operator's pair in the TLS secret.
    Byoc,
}

impl CertSource {
    /// The source when `IMAGESWAP_CERT_SOURCE` is unset: [`DEFAULT_CERT_SOURCE`],
    /// except that with the webhook configuration left to the operator
    /// (`IMAGESWAP_DISABLE_AUTO_MWC`) `csr` stays, with one line saying why:
    /// their `caBundle` trusts the cluster CA, not a CA ImageSwap would make,
    /// so switching would leave the API server distrusting the webhook.
    pub fn unset(disable_auto_mwc: bool) -> CertSource {
        if disable_auto_mwc {
            tracing::warn!(
                "IMAGESWAP_CERT_SOURCE is unset and IMAGESWAP_DISABLE_AUTO_MWC is true: keeping csr, because \
                 the caBundle you maintain trusts the cluster CA; set IMAGESWAP_CERT_SOURCE=csr to keep \
                 this (and silence this line), or self-signed and put the CA of the secret \
                 <IMAGESWAP_TLS_SECRET_NAME>-self-signed-ca in your caBundle."
            );
            CertSource::Csr
        } else {
            DEFAULT_CERT_SOURCE
        }
    }
}

impl crate::settings::SettingValue for CertSource {
    const EXPECTED: &'static str = "csr, self-signed or byoc";

    fn parse_setting(text: &str) -> Result<CertSource, String> {
        match text.to_ascii_lowercase().as_str() {
            "csr" => Ok(CertSource::Csr),
            "self-signed" => Ok(CertSource::SelfSigned),
            "byoc" => Ok(CertSource::Byoc),
            _ => Err("not a certificate source".to_owned()),
        }
    }
}

/// A share strictly between 0 and 1, written `1/3` or `0.33`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction(pub f64);

impl crate::settings::SettingValue for Fraction {
    const EXPECTED: &'static str = "a fraction between 0 and 1 such as 1/3 or 0.33";

    fn parse_setting(text: &str) -> Result<Fraction, String> {
        let value = match text.split_once('/') {
            Some((numerator, denominator)) => {
                let numerator: f64 = numerator
                    .trim()
                    .parse()
                    .map_err(|e: std::num::ParseFloatError| e.to_string())?;
                let denominator: f64 = denominator
                    .trim()
                    .parse()
                    .map_err(|e: std::num::ParseFloatError| e.to_string())?;
                numerator / denominator
            }
            None => text
                .parse()
                .map_err(|e: std::num::ParseFloatError| e.to_string())?,
        };
        if value.is_finite() && value > 0.0 && value < 1.0 {
            Ok(Fraction(value))
        } else {
            Err("not strictly between 0 and 1".to_owned())
        }
    }
}

/// Used in the CSR name when neither `IMAGESWAP_POD_NAME` nor a hostname is
/// known; the random suffix keeps it unique anyway.
const FALLBACK_POD_NAME: &str = "imageswap";
const DNS_LABEL_MAX_LEN: usize = 63;
const DNS_SUBDOMAIN_MAX_LEN: usize = 253;

/// A bad setting, named by its environment variable and flag.
#[derive(Debug, Error)]
#[error("{setting} {value:?}: {reason}")]
pub struct SettingsError {
    pub setting: SettingName,
    pub value: String,
    pub reason: &'static str,
}

/// Everything `init` needs to know, already checked.
#[derive(Clone, Debug)]
pub struct InitSettings {
    pub namespace: String,
    /// Goes into the CSR name, so a CSR can be traced to the pod that made it.
    pub pod_name: String,
    pub service_name: String,
    pub tls_secret: String,
    pub ca_secret: String,
    pub mwc_name: String,
    pub webhook_name: String,
    pub mwc_template: PathBuf,
    pub tls_dir: PathBuf,
    pub csr_signer: String,
    pub disable_auto_mwc: bool,
    pub csr_timeout: Duration,
    pub renew_before: Duration,
    /// `--watch` only: the loop's period.
    pub watch_interval: Duration,
    /// `--watch` only: renew when this share of the lifetime is left.
    pub renew_fraction: f64,
    /// `--watch` only: the sidecar's metrics and probe listener.
    pub watch_listen: Option<SocketAddr>,
    pub cert_source: CertSource,
    pub self_signed_ca_lifetime: Duration,
    pub self_signed_cert_lifetime: Duration,
    /// Where the generated matchConditions come from; `None` writes the
    /// template's alone.
    pub conditions: Option<ConditionsArgs>,
    /// `--watch` only: project the pull secrets into namespaces.
    pub project_pull_secrets: Projection,
    pub project_namespace_selector: String,
    pub pull_secrets: PullSecrets,
}

impl Default for InitSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            pod_name: FALLBACK_POD_NAME.to_owned(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            tls_secret: DEFAULT_TLS_SECRET.to_owned(),
            ca_secret: DEFAULT_CA_SECRET.to_owned(),
            mwc_name: DEFAULT_MWC_NAME.to_owned(),
            webhook_name: DEFAULT_WEBHOOK_NAME.to_owned(),
            mwc_template: PathBuf::from(DEFAULT_MWC_TEMPLATE),
            tls_dir: PathBuf::from(DEFAULT_TLS_DIR),
            csr_signer: DEFAULT_CSR_SIGNER.to_owned(),
            disable_auto_mwc: false,
            csr_timeout: Duration::from_secs(60),
            renew_before: Duration::from_secs(180 * 24 * 3600),
            watch_interval: Duration::from_secs(60),
            renew_fraction: 1.0 / 3.0,
            watch_listen: None,
            cert_source: DEFAULT_CERT_SOURCE,
            self_signed_ca_lifetime: Duration::from_secs(3650 * 86_400),
            self_signed_cert_lifetime: Duration::from_secs(365 * 86_400),
            conditions: None,
            project_pull_secrets: Projection::Off,
            project_namespace_selector: DEFAULT_PROJECT_NAMESPACE_SELECTOR.to_owned(),
            pull_secrets: PullSecrets::default(),
        }
    }
}

impl InitSettings {
    /// Checks the parsed flags; a pod name falls back to the hostname.
    pub fn from_args(args: &InitArgs) -> Result<Self, SettingsError> {
        let settings = Self {
            namespace: args.namespace.trim().to_owned(),
            pod_name: args
                .pod_name
                .as_deref()
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .or_else(hostname)
                .unwrap_or_else(|| FALLBACK_POD_NAME.to_owned()),
            service_name: args.service_name.trim().to_owned(),
            tls_secret: args.tls_secret.trim().to_owned(),
            ca_secret: args.ca_secret.trim().to_owned(),
            mwc_name: args.mwc_name.trim().to_owned(),
            webhook_name: args.webhook_name.trim().to_owned(),
            mwc_template: args.mwc_template.clone(),
            tls_dir: args.tls_dir.clone(),
            csr_signer: args.csr_signer.trim().to_owned(),
            disable_auto_mwc: args.disable_auto_mwc,
            csr_timeout: args.csr_timeout,
            renew_before: args.renew_before,
            watch_interval: args.watch_interval,
            renew_fraction: args.renew_fraction.0,
            watch_listen: args.watch_listen,
            cert_source: args
                .cert_source
                .unwrap_or_else(|| CertSource::unset(args.disable_auto_mwc)),
            self_signed_ca_lifetime: args.self_signed_ca_lifetime,
            self_signed_cert_lifetime: args.self_signed_cert_lifetime,
            conditions: Some(args.conditions.clone()),
            project_pull_secrets: args.project_pull_secrets,
            project_namespace_selector: args.project_namespace_selector.trim().to_owned(),
            pull_secrets: args.conditions.pull_secrets.pull_secrets(),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The checks `from_args` applies; public so callers that build settings
    /// by hand (tests, embedders) get the same guarantees.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_label("namespace", &self.namespace)?;
        check_label("service_name", &self.service_name)?;
        check_subdomain("tls_secret", &self.tls_secret)?;
        check_subdomain("ca_secret", &self.ca_secret)?;
        check_subdomain("mwc_name", &self.mwc_name)?;
        check_subdomain("webhook_name", &self.webhook_name)?;
        if self.csr_signer.is_empty() {
            return Err(invalid(
                "csr_signer",
                &self.csr_signer,
                "must name a signer, such as kubernetes.io/kubelet-serving",
            ));
        }
        if self.csr_timeout.is_zero() {
            return Err(invalid("csr_timeout", "0s", "must be longer than zero"));
        }
        if self.watch_interval.is_zero() {
            return Err(invalid("watch_interval", "0s", "must be longer than zero"));
        }
        if self.self_signed_ca_lifetime.is_zero() || self.self_signed_ca_lifetime.as_secs() < 2 {
            return Err(invalid(
                "self_signed_ca_lifetime",
                "0s",
                "must be at least two seconds",
            ));
        }
        if self.self_signed_cert_lifetime.as_secs() < 2 {
            return Err(invalid(
                "self_signed_cert_lifetime",
                "0s",
                "must be at least two seconds",
            ));
        }
        if !(self.renew_fraction > 0.0 && self.renew_fraction < 1.0) {
            return Err(invalid(
                "renew_fraction",
                &self.renew_fraction.to_string(),
                "must be strictly between 0 and 1",
            ));
        }
        if let Err(reason) = check_selector(&self.project_namespace_selector) {
            return Err(invalid(
                "project_namespace_selector",
                &self.project_namespace_selector,
                reason,
            ));
        }
        Ok(())
    }

    /// The DNS names the serving certificate must carry, shortest first:
    /// `svc`, `svc.ns`, `svc.ns.svc`.
    pub fn service_dns_names(&self) -> Vec<String> {
        vec![
            self.service_name.clone(),
            format!("{}.{}", self.service_name, self.namespace),
            self.service_host(),
        ]
    }

    /// The name the API server dials for a `service` webhook reference.
    pub fn service_host(&self) -> String {
        format!("{}.{}.svc", self.service_name, self.namespace)
    }
}

/// The pod's hostname (its name, in Kubernetes), read from the kernel rather
/// than `HOSTNAME` so that settings come from the command line alone.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
}

/// A bad value of the `InitArgs` field `field`.
fn invalid(field: &str, value: &str, reason: &'static str) -> SettingsError {
    SettingsError {
        setting: SettingName::in_args::<InitArgs>(field),
        value: value.to_owned(),
        reason,
    }
}

fn check_label(field: &str, value: &str) -> Result<(), SettingsError> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "must be a DNS label: lower-case letters, digits and '-', at most 63 characters",
        ))
    }
}

fn check_subdomain(field: &str, value: &str) -> Result<(), SettingsError> {
    let ok = !value.is_empty() && value.len() <= DNS_SUBDOMAIN_MAX_LEN && value.split('.').all(is_dns_label);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "must be a DNS subdomain: dot-separated lower-case labels, at most 253 characters",
        ))
    }
}

/// An equality-based label selector as the API server's `labelSelector`
/// parameter takes it: terms `key=value`, `key==value`, `key!=value`, `key`,
/// `!key`, comma-separated; keys `[prefix/]name`, values at most 63
/// characters of `[A-Za-z0-9._-]`. Caught here, at start, rather than as a
/// `400` from every watch.
pub fn check_selector(selector: &str) -> Result<(), &'static str> {
    const REASON: &str =
        "must be a label selector: comma-separated `key=value`, `key!=value`, `key` or `!key`";
    if selector.trim().is_empty() {
        return Err("must select something (an empty selector would copy the secret into every namespace)");
    }
    let is_value = |v: &str| {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let is_key = |k: &str| {
        let name = match k.rsplit_once('/') {
            Some((prefix, name)) => {
                if prefix.is_empty() || !prefix.split('.').all(is_dns_label) {
                    return false;
                }
                name
            }
            None => k,
        };
        !name.is_empty() && is_value(name)
    };
    for term in selector.split(',').map(str::trim) {
        let ok = if let Some((key, value)) = term.split_once("!=") {
            is_key(key.trim()) && is_value(value.trim())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            is_key(key.trim()) && is_value(value.trim())
        } else if let Some(key) = term.strip_prefix('!') {
            is_key(key.trim())
        } else {
            is_key(term)
        };
        if !ok {
            return Err(REASON);
        }
    }
    Ok(())
}

fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= DNS_LABEL_MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_the_originals() {
        let settings = InitSettings::default();
        assert_eq!(
            settings.service_dns_names(),
            [
                "imageswap",
                "imageswap.imageswap-system",
                "imageswap.imageswap-system.svc"
            ]
        );
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn namespace_must_be_a_dns_label() {
        let settings = InitSettings {
            namespace: "Bad_NS".into(),
            ..InitSettings::default()
        };
        let err = settings.validate().unwrap_err();
        assert_eq!(err.setting.variable.as_deref(), Some("IMAGESWAP_NAMESPACE_NAME"));
        assert!(
            err.to_string()
                .starts_with("IMAGESWAP_NAMESPACE_NAME (--namespace) \"Bad_NS\"")
        );
    }

    #[test]
    fn subdomains_accept_dots_and_reject_empty_labels() {
        assert!(check_subdomain("mwc_name", "imageswap.webhook.k8s.twr.io").is_ok());
        assert!(check_subdomain("mwc_name", "a..b").is_err());
        assert!(check_subdomain("mwc_name", "").is_err());
    }

    #[test]
    fn booleans_accept_any_case_and_nothing_else() {
        use crate::settings::SettingValue;
        assert_eq!(bool::parse_setting("TRUE"), Ok(true));
        assert_eq!(bool::parse_setting("False"), Ok(false));
        assert!(bool::parse_setting("yes").is_err());
    }

    #[test]
    fn durations_use_humantime() {
        use crate::settings::SettingValue;
        assert_eq!(
            Duration::parse_setting("180days"),
            Ok(Duration::from_secs(180 * 86_400))
        );
        // The spelling of the default and of the deploy ConfigMap.
        assert_eq!(
            Duration::parse_setting(DEFAULT_RENEW_BEFORE),
            Ok(Duration::from_secs(180 * 86_400))
        );
        assert_eq!(Duration::parse_setting("60s"), Ok(Duration::from_secs(60)));
        assert!(Duration::parse_setting("soon").is_err());
    }

    #[test]
    fn bad_values_name_the_variable_and_the_flag_on_one_line() {
        #[derive(Debug, clap::Parser)]
        struct Init {
            #[command(flatten)]
            args: InitArgs,
        }
        use clap::Parser as _;
        for (flag, variable) in [
            ("--csr-timeout", "IMAGESWAP_CSR_TIMEOUT"),
            ("--disable-auto-mwc", "IMAGESWAP_DISABLE_AUTO_MWC"),
        ] {
            let message = Init::try_parse_from(["init", flag, "soon"])
                .expect_err("refused")
                .to_string();
            assert!(
                message.starts_with(&format!("error: {variable} ({flag})")),
                "{message}"
            );
            assert_eq!(message.trim_end().lines().count(), 1, "{message}");
        }
        let err = invalid("csr_timeout", "0s", "must be longer than zero");
        assert_eq!(err.setting.variable.as_deref(), Some("IMAGESWAP_CSR_TIMEOUT"));
    }

    #[test]
    fn fractions_are_shares_written_either_way() {
        use crate::settings::SettingValue;
        let third = Fraction::parse_setting(DEFAULT_RENEW_FRACTION).unwrap().0;
        assert!((third - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(Fraction::parse_setting("0.5"), Ok(Fraction(0.5)));
        for bad in ["0", "1", "3/2", "-0.1", "1/0", "a third", "NaN"] {
            assert!(Fraction::parse_setting(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn watch_defaults_parse_from_the_command_line() {
        #[derive(Debug, clap::Parser)]
        struct Init {
            #[command(flatten)]
            args: InitArgs,
        }
        use clap::Parser as _;
        let parsed = Init::try_parse_from(["init", "--watch", "--watch-interval", "100ms"]).unwrap();
        assert!(parsed.args.watch);
        let settings = InitSettings::from_args(&parsed.args).unwrap();
        assert_eq!(settings.watch_interval, Duration::from_millis(100));
        assert!((settings.renew_fraction - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(settings.watch_listen, None);
        assert_eq!(
            settings.cert_source,
            CertSource::SelfSigned,
            "self-signed unless set"
        );
        let parsed = Init::try_parse_from(["init", "--disable-auto-mwc", "TRUE"]).unwrap();
        assert_eq!(
            InitSettings::from_args(&parsed.args).unwrap().cert_source,
            CertSource::Csr,
            "the operator's caBundle trusts the cluster CA: csr stays"
        );
        let parsed =
            Init::try_parse_from(["init", "--disable-auto-mwc", "--cert-source", "self-signed"]).unwrap();
        assert_eq!(
            InitSettings::from_args(&parsed.args).unwrap().cert_source,
            CertSource::SelfSigned,
            "a source set is kept"
        );
        let parsed = Init::try_parse_from(["init", "--cert-source", "Self-Signed"]).unwrap();
        assert_eq!(parsed.args.cert_source, Some(CertSource::SelfSigned));
        assert!(Init::try_parse_from(["init", "--cert-source", "acme"]).is_err());
        let message = Init::try_parse_from(["init", "--renew-fraction", "2"])
            .expect_err("refused")
            .to_string();
        assert!(
            message.starts_with("error: IMAGESWAP_CERT_RENEW_FRACTION (--renew-fraction)"),
            "{message}"
        );
    }

    #[test]
    fn namespace_selectors_take_equality_terms_only() {
        for good in [
            DEFAULT_PROJECT_NAMESPACE_SELECTOR,
            "team",
            "!legacy",
            "a=b,c!=d",
            "example.com/tier==gold",
        ] {
            assert_eq!(check_selector(good), Ok(()), "{good}");
        }
        for bad in ["", " ", "a in (b)", "a=b,", "=b", "a=b c", "/x=y"] {
            assert!(check_selector(bad).is_err(), "{bad:?}");
        }
        let settings = InitSettings {
            project_namespace_selector: "env in (prod)".into(),
            ..InitSettings::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("IMAGESWAP_PROJECT_NAMESPACE_SELECTOR (--project-namespace-selector)"),
            "{err}"
        );
    }

    #[test]
    fn zero_csr_timeout_is_rejected() {
        let settings = InitSettings {
            csr_timeout: Duration::ZERO,
            ..InitSettings::default()
        };
        assert_eq!(
            settings.validate().unwrap_err().setting.variable.as_deref(),
            Some("IMAGESWAP_CSR_TIMEOUT")
        );
    }
}
