//! The command line: `serve`, `init`, `swap` and `maps check`, with clap
//! derive. Every flag has an environment variable (the original's names where
//! it had one, `IMAGESWAP_*` otherwise), so the manifests configure the same
//! program a person runs by hand. Nothing else in the crate reads the
//! environment for settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::init::settings as init_defaults;
use crate::telemetry::logging::LogFormat;

/// The maps file path the original ImageSwap reads (a ConfigMap mount).
pub const DEFAULT_MAPS_FILE: &str = "/app/maps/imageswap-maps.conf";

#[derive(Debug, Parser)]
#[command(
    name = "imageswap",
    version,
    about = "Rewrite container images to other registries, as a Kubernetes mutating webhook"
)]
pub struct Cli {
    /// Log level: INFO or DEBUG (the original's), or any tracing level.
    #[arg(long, global = true, env = "IMAGESWAP_LOG_LEVEL", default_value = "INFO", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log line format.
    #[arg(long, global = true, env = "IMAGESWAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, ignore_case = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain what each image becomes under a maps file (arguments or stdin).
    Swap(SwapArgs),
    /// Work with maps files.
    #[command(subcommand)]
    Maps(MapsCommand),
    /// Init container: make sure the serving certificate and the webhook configuration exist.
    Init(InitArgs),
}

/// Which rules decide: the maps file, or the deprecated single prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum Mode {
    /// The maps file (`IMAGESWAP_MAPS_FILE`).
    Maps,
    /// Only `IMAGE_PREFIX` (deprecated).
    Legacy,
}

/// Where the swap rules come from; shared by `swap` and `serve`.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// The maps file.
    #[arg(long = "maps", env = "IMAGESWAP_MAPS_FILE", default_value = DEFAULT_MAPS_FILE)]
    pub maps_file: PathBuf,

    /// MAPS or LEGACY (deprecated).
    #[arg(long, env = "IMAGESWAP_MODE", value_enum, default_value_t = Mode::Maps, ignore_case = true)]
    pub mode: Mode,

    /// The LEGACY mode prefix (deprecated).
    #[arg(long, env = "IMAGE_PREFIX")]
    pub prefix: Option<String>,
}

/// How `imageswap swap` prints its decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum OutputFormat {
    /// One aligned line per image: image, result, rule, key.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, ignore_case = true)]
    pub output: OutputFormat,

    /// Images to decide; when none are given, one per line from standard input.
    pub images: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum MapsCommand {
    /// Lint a maps file: one line per finding; exit 1 on an invalid line or no `default`.
    Check {
        /// The maps file to check.
        file: PathBuf,
    },
}

/// `imageswap init`: the names are the original ImageSwap's, so existing
/// installations keep working.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Namespace of the service, the secrets and the cluster CA ConfigMap.
    #[arg(long, env = "IMAGESWAP_NAMESPACE_NAME", default_value = init_defaults::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// This pod's name, to make the CSR name traceable (default: the hostname).
    #[arg(long, env = "IMAGESWAP_POD_NAME")]
    pub pod_name: Option<String>,

    /// The webhook's Service; the certificate covers its DNS names.
    #[arg(long, env = "IMAGESWAP_SERVICE_NAME", default_value = init_defaults::DEFAULT_SERVICE_NAME)]
    pub service_name: String,

    /// Secret holding the serving pair (`cert.pem`, `key.pem`).
    #[arg(long, env = "IMAGESWAP_TLS_SECRET_NAME", default_value = init_defaults::DEFAULT_TLS_SECRET)]
    pub tls_secret: String,

    /// Secret holding the bring-your-own CA (`rootca.pem`).
    #[arg(long, env = "IMAGESWAP_TLS_CA_SECRET_NAME", default_value = init_defaults::DEFAULT_CA_SECRET)]
    pub ca_secret: String,

    /// The MutatingWebhookConfiguration to create or update.
    #[arg(long, env = "IMAGESWAP_MWC_NAME", default_value = init_defaults::DEFAULT_MWC_NAME)]
    pub mwc_name: String,

    /// The webhook, in the template, whose caBundle is set.
    #[arg(long, env = "IMAGESWAP_WEBHOOK_NAME", default_value = init_defaults::DEFAULT_WEBHOOK_NAME)]
    pub webhook_name: String,

    /// The MutatingWebhookConfiguration template (YAML).
    #[arg(long, env = "IMAGESWAP_MWC_TEMPLATE", default_value = init_defaults::DEFAULT_MWC_TEMPLATE)]
    pub mwc_template: PathBuf,

    /// Directory where `cert.pem` and `key.pem` are written for the server.
    #[arg(long, env = "IMAGESWAP_TLS_DIR", default_value = init_defaults::DEFAULT_TLS_DIR)]
    pub tls_dir: PathBuf,

    /// The signer asked to sign the CSR.
    #[arg(long, env = "IMAGESWAP_CSR_SIGNER_NAME", default_value = init_defaults::DEFAULT_CSR_SIGNER)]
    pub csr_signer: String,

    /// Leave the MutatingWebhookConfiguration alone (true/false, any case).
    #[arg(
        long,
        env = "IMAGESWAP_DISABLE_AUTO_MWC",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = |value: &str| init_defaults::parse_bool("IMAGESWAP_DISABLE_AUTO_MWC", value),
    )]
    pub disable_auto_mwc: bool,

    /// How long to wait for the CSR to be signed.
    #[arg(
        long,
        env = "IMAGESWAP_CSR_TIMEOUT",
        default_value = init_defaults::DEFAULT_CSR_TIMEOUT,
        value_parser = |value: &str| init_defaults::parse_duration("IMAGESWAP_CSR_TIMEOUT", value),
    )]
    pub csr_timeout: Duration,

    /// Reissue the certificate when it expires within this long.
    #[arg(
        long,
        env = "IMAGESWAP_CERT_RENEW_BEFORE",
        default_value = init_defaults::DEFAULT_RENEW_BEFORE,
        value_parser = |value: &str| init_defaults::parse_duration("IMAGESWAP_CERT_RENEW_BEFORE", value),
    )]
    pub renew_before: Duration,
}

fn parse_log_level(value: &str) -> Result<String, String> {
    crate::telemetry::logging::level_filter(value)
        .map(|_| value.to_owned())
        .ok_or_else(|| "expected one of TRACE, DEBUG, INFO, WARN, ERROR, OFF".to_owned())
}
