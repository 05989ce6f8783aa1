//! The command line: `serve`, `init`, `swap` and `maps check`, with clap
//! derive. Every flag has an environment variable (the original's names where
//! it had one, `IMAGESWAP_*` otherwise), so the manifests configure the same
//! program a person runs by hand. Nothing else in the crate reads the
//! environment for settings.

use std::net::SocketAddr;
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
    /// Run the admission webhook server.
    Serve(Box<ServeArgs>),
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

/// Defaults of `imageswap serve`, named so the config checks can mention them.
pub mod serve_defaults {
    pub const LISTEN: &str = "0.0.0.0:5000";
    pub const DEV_LISTEN: &str = "127.0.0.1:5000";
    pub const TLS_CERT: &str = "/tls/cert.pem";
    pub const TLS_KEY: &str = "/tls/key.pem";
    pub const DISABLE_LABEL: &str = "k8s.twr.io/imageswap";
    /// 3 MiB: the API server's own limit on a request body.
    pub const MAX_BODY_BYTES: &str = "3145728";
    pub const REQUEST_TIMEOUT: &str = "2s";
    /// Reviews in progress at once. A cached review is tens of microseconds
    /// of CPU, so 1024 in flight is far more than two cores can be busy
    /// with: the limit only bites when something stalls (slow clients,
    /// a stuck reload), and then it sheds instead of queueing without bound.
    /// At up to 3 MiB of body each, it also bounds memory.
    pub const MAX_CONCURRENCY: &str = "1024";
    /// Distinct images remembered; a large cluster runs a few thousand.
    pub const CACHE_CAPACITY: &str = "10000";
    pub const SHUTDOWN_GRACE: &str = "20s";
    pub const SHUTDOWN_DELAY: &str = "0s";
}

/// `imageswap serve`: the admission webhook.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Address of the HTTPS listener [default: 0.0.0.0:5000; 127.0.0.1:5000 with --dev].
    #[arg(long, env = "IMAGESWAP_LISTEN", value_parser = parsed::<SocketAddr>("IMAGESWAP_LISTEN", "an address such as 0.0.0.0:5000"))]
    pub listen: Option<SocketAddr>,

    /// Serving certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "IMAGESWAP_TLS_CERT", default_value = serve_defaults::TLS_CERT)]
    pub tls_cert: PathBuf,

    /// Private key of the serving certificate (PEM); reloaded when it changes.
    #[arg(long, env = "IMAGESWAP_TLS_KEY", default_value = serve_defaults::TLS_KEY)]
    pub tls_key: PathBuf,

    /// Label whose value `disabled`, on an object or its pod template, opts it out.
    #[arg(long, env = "IMAGESWAP_DISABLE_LABEL", default_value = serve_defaults::DISABLE_LABEL)]
    pub disable_label: String,

    /// This pod's name (downward API), reported by /healthz.
    #[arg(long, env = "IMAGESWAP_POD_NAME")]
    pub pod_name: Option<String>,

    /// This pod's namespace (downward API).
    #[arg(long = "namespace", env = "IMAGESWAP_NAMESPACE_NAME")]
    pub namespace: Option<String>,

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "IMAGESWAP_MAX_BODY_BYTES", default_value = serve_defaults::MAX_BODY_BYTES,
        value_parser = parsed::<u64>("IMAGESWAP_MAX_BODY_BYTES", "a number of bytes"))]
    pub max_body_bytes: u64,

    /// Longest time to answer a request (503 after), e.g. `2s`, `500ms`.
    #[arg(long, env = "IMAGESWAP_REQUEST_TIMEOUT", default_value = serve_defaults::REQUEST_TIMEOUT,
        value_parser = duration("IMAGESWAP_REQUEST_TIMEOUT"))]
    pub request_timeout: Duration,

    /// Admission requests answered at once; more get a fast 503.
    #[arg(long, env = "IMAGESWAP_MAX_CONCURRENCY", default_value = serve_defaults::MAX_CONCURRENCY,
        value_parser = parsed::<usize>("IMAGESWAP_MAX_CONCURRENCY", "a number of requests"))]
    pub max_concurrency: usize,

    /// Image decisions remembered (entries; 0 disables the cache).
    #[arg(long, env = "IMAGESWAP_CACHE_CAPACITY", default_value = serve_defaults::CACHE_CAPACITY,
        value_parser = parsed::<u64>("IMAGESWAP_CACHE_CAPACITY", "a number of entries"))]
    pub cache_capacity: u64,

    /// After SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "IMAGESWAP_SHUTDOWN_GRACE", default_value = serve_defaults::SHUTDOWN_GRACE,
        value_parser = duration("IMAGESWAP_SHUTDOWN_GRACE"))]
    pub shutdown_grace: Duration,

    /// After SIGTERM, how long to keep accepting connections while /readyz
    /// already answers 503, so endpoints stop sending traffic first.
    #[arg(long, env = "IMAGESWAP_SHUTDOWN_DELAY", default_value = serve_defaults::SHUTDOWN_DELAY,
        value_parser = duration("IMAGESWAP_SHUTDOWN_DELAY"))]
    pub shutdown_delay: Duration,

    /// Also serve /metrics over plain HTTP on this address.
    #[arg(long, env = "IMAGESWAP_METRICS_LISTEN",
        value_parser = parsed::<SocketAddr>("IMAGESWAP_METRICS_LISTEN", "an address such as 0.0.0.0:9090"))]
    pub metrics_listen: Option<SocketAddr>,

    /// Plain HTTP instead of TLS: for local tests and load tests only.
    #[arg(long, env = "IMAGESWAP_INSECURE_HTTP")]
    pub insecure_http: bool,

    /// Decide, log and count every swap, but never return a patch.
    #[arg(long, env = "IMAGESWAP_SHADOW")]
    pub shadow: bool,

    /// Local development: a self-signed certificate for localhost, 127.0.0.1:5000,
    /// the example maps file, and a curl command to try it.
    #[arg(long, env = "IMAGESWAP_DEV")]
    pub dev: bool,

    #[command(flatten)]
    pub traces: TraceArgs,
}

/// OpenTelemetry traces: the standard `OTEL_*` variables (the flags exist for
/// a person at a shell). Read as text; `telemetry::trace_config` checks them,
/// so one error type names the variable whatever was wrong. An empty value
/// counts as unset, as the OpenTelemetry specification says.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "OpenTelemetry traces (off while no endpoint is set)")]
pub struct TraceArgs {
    /// OTLP/HTTP collector base URL; spans go to URL/v1/traces (Jaeger: http://HOST:4318).
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,

    /// Full URL for spans, used as it is; wins over OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(
        long = "otlp-traces-endpoint",
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        value_name = "URL"
    )]
    pub traces_endpoint: Option<String>,

    /// OTLP transport: http/protobuf (the only one built in) [default: http/protobuf].
    #[arg(
        long = "otlp-protocol",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_name = "PROTOCOL"
    )]
    pub protocol: Option<String>,

    /// Longest wait for the collector per batch, in milliseconds [default: 2000].
    #[arg(
        long = "otlp-timeout",
        env = "OTEL_EXPORTER_OTLP_TIMEOUT",
        value_name = "MILLISECONDS"
    )]
    pub timeout: Option<String>,

    /// The service name of the spans [default: imageswap].
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME", value_name = "NAME")]
    pub service_name: Option<String>,

    /// Which requests are traced: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio [default: parentbased_always_on].
    #[arg(long = "traces-sampler", env = "OTEL_TRACES_SAMPLER", value_name = "SAMPLER")]
    pub sampler: Option<String>,

    /// The ratio (0 to 1) of the traceidratio samplers [default: 1].
    #[arg(
        long = "traces-sampler-arg",
        env = "OTEL_TRACES_SAMPLER_ARG",
        value_name = "RATIO"
    )]
    pub sampler_arg: Option<String>,

    /// More resource attributes: key=value,key=value (values percent-encoded).
    #[arg(
        long = "otel-resource-attributes",
        env = "OTEL_RESOURCE_ATTRIBUTES",
        value_name = "LIST"
    )]
    pub resource_attributes: Option<String>,
}

/// A value parser whose error names the environment variable too (clap
/// names only the flag, and the value may well have come from the variable).
fn parsed<T>(variable: &'static str, expected: &'static str) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    move |value: &str| {
        value
            .trim()
            .parse()
            .map_err(|e| format!("{variable}: expected {expected} ({e})"))
    }
}

/// A humantime duration (`2s`, `500ms`, `1m 30s`), naming the variable on error.
fn duration(variable: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |value: &str| {
        humantime::parse_duration(value.trim())
            .map_err(|e| format!("{variable}: expected a duration such as `2s` or `500ms` ({e})"))
    }
}

fn parse_log_level(value: &str) -> Result<String, String> {
    crate::telemetry::logging::level_filter(value)
        .map(|_| value.to_owned())
        .ok_or_else(|| "expected one of TRACE, DEBUG, INFO, WARN, ERROR, OFF".to_owned())
}
