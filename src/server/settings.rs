//! The settings of `imageswap serve`'s server: where it listens, the TLS
//! files, the limits of the request path, shutdown and the modes. The
//! defaults are named so the configuration's checks and the docs agree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::settings::setting;

/// Defaults of `imageswap serve`, named so the config checks can mention them.
pub mod defaults {
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
    pub const SHUTDOWN_GRACE: &str = "20s";
    pub const SHUTDOWN_DELAY: &str = "0s";
}

/// The server's settings: listener, TLS files, the request path's limits,
/// shutdown and the modes.
#[derive(Clone, Debug, Args)]
pub struct ServerArgs {
    /// Address of the HTTPS listener [default: 0.0.0.0:5000; 127.0.0.1:5000 with --dev].
    #[arg(long, env = "IMAGESWAP_LISTEN", value_parser = setting::<SocketAddr>())]
    pub listen: Option<SocketAddr>,

    /// Serving certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "IMAGESWAP_TLS_CERT", default_value = defaults::TLS_CERT)]
    pub tls_cert: PathBuf,

    /// Private key of the serving certificate (PEM); reloaded when it changes.
    #[arg(long, env = "IMAGESWAP_TLS_KEY", default_value = defaults::TLS_KEY)]
    pub tls_key: PathBuf,

    /// Label whose value `disabled`, on an object or its pod template, opts it out.
    #[arg(long, env = "IMAGESWAP_DISABLE_LABEL", default_value = defaults::DISABLE_LABEL)]
    pub disable_label: String,

    /// This pod's name (downward API), reported by /healthz.
    #[arg(long, env = "IMAGESWAP_POD_NAME")]
    pub pod_name: Option<String>,

    /// This pod's namespace (downward API).
    #[arg(long = "namespace", env = "IMAGESWAP_NAMESPACE_NAME")]
    pub namespace: Option<String>,

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "IMAGESWAP_MAX_BODY_BYTES", default_value = defaults::MAX_BODY_BYTES,
        value_parser = setting::<u64>())]
    pub max_body_bytes: u64,

    /// Longest time to answer a request (503 after), e.g. `2s`, `500ms`.
    #[arg(long, env = "IMAGESWAP_REQUEST_TIMEOUT", default_value = defaults::REQUEST_TIMEOUT,
        value_parser = setting::<Duration>())]
    pub request_timeout: Duration,

    /// Admission requests answered at once; more get a fast 503.
    #[arg(long, env = "IMAGESWAP_MAX_CONCURRENCY", default_value = defaults::MAX_CONCURRENCY,
        value_parser = setting::<usize>())]
    pub max_concurrency: usize,

    /// After SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "IMAGESWAP_SHUTDOWN_GRACE", default_value = defaults::SHUTDOWN_GRACE,
        value_parser = setting::<Duration>())]
    pub shutdown_grace: Duration,

    /// After SIGTERM, how long to keep accepting connections while /readyz
    /// already answers 503, so endpoints stop sending traffic first.
    #[arg(long, env = "IMAGESWAP_SHUTDOWN_DELAY", default_value = defaults::SHUTDOWN_DELAY,
        value_parser = setting::<Duration>())]
    pub shutdown_delay: Duration,

    /// Also serve /metrics over plain HTTP on this address.
    #[arg(long, env = "IMAGESWAP_METRICS_LISTEN",
        value_parser = setting::<SocketAddr>())]
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
}
