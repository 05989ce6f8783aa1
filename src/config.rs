//! The typed configuration of `imageswap serve`, built from the parsed
//! command line (flags and `IMAGESWAP_*` variables; nothing else reads the
//! environment) with the checks that span several settings. A bad value
//! stops the program at start with one line naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{DEFAULT_MAPS_FILE, ServeArgs, serve_defaults};
use crate::rules::RulesSource;
use crate::telemetry::trace_config::{TraceConfig, TraceConfigError};

/// How often the reloader re-reads the watched files even without a file
/// event: the safety net for events that never come (some volume types,
/// a directory created after start).
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} must be at least {min}, got {value}")]
    TooSmall {
        variable: &'static str,
        min: u64,
        value: u64,
    },
    #[error("{variable} must be a positive duration, got {value:?}")]
    ZeroDuration { variable: &'static str, value: Duration },
    #[error("{variable} must not be empty")]
    Empty { variable: &'static str },
    #[error(
        "IMAGESWAP_METRICS_LISTEN (--metrics-listen) must differ from IMAGESWAP_LISTEN (--listen), both are {0}"
    )]
    SameAddress(SocketAddr),
    #[error("{variable} is {value}, larger than this platform can address")]
    TooLarge { variable: &'static str, value: u64 },
    #[error("--dev cannot write the example maps file: {0}")]
    DevMaps(std::io::Error),
    #[error(transparent)]
    Traces(#[from] TraceConfigError),
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, watched and reloaded.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate for these names, generated in memory (`--dev`).
    SelfSigned { names: Vec<String> },
}

/// TLS, or plain HTTP for local tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tls(TlsSource),
    InsecureHttp,
}

/// Limits of the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrency: usize,
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub transport: Transport,
    pub rules: RulesSource,
    pub disable_label: String,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub limits: Limits,
    pub cache_capacity: u64,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub shadow: bool,
    pub dev: bool,
    pub reload_poll: Duration,
    /// OpenTelemetry export; `None` (off) while no OTLP endpoint is set.
    pub traces: Option<TraceConfig>,
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        if args.max_concurrency == 0 {
            return Err(ConfigError::TooSmall {
                variable: "IMAGESWAP_MAX_CONCURRENCY (--max-concurrency)",
                min: 1,
                value: 0,
            });
        }
        // A review is a few KB; below 1 KiB nothing real fits.
        if args.max_body_bytes < 1024 {
            return Err(ConfigError::TooSmall {
                variable: "IMAGESWAP_MAX_BODY_BYTES (--max-body-bytes)",
                min: 1024,
                value: args.max_body_bytes,
            });
        }
        let max_body_bytes = usize::try_from(args.max_body_bytes).map_err(|_| ConfigError::TooLarge {
            variable: "IMAGESWAP_MAX_BODY_BYTES (--max-body-bytes)",
            value: args.max_body_bytes,
        })?;
        if args.request_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                variable: "IMAGESWAP_REQUEST_TIMEOUT (--request-timeout)",
                value: args.request_timeout,
            });
        }
        if args.disable_label.trim().is_empty() {
            return Err(ConfigError::Empty {
                variable: "IMAGESWAP_DISABLE_LABEL (--disable-label)",
            });
        }
        let default_listen = if args.dev {
            serve_defaults::DEV_LISTEN
        } else {
            serve_defaults::LISTEN
        };
        let listen = match args.listen {
            Some(listen) => listen,
            None => default_listen
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5000))),
        };
        if args.metrics_listen == Some(listen) && listen.port() != 0 {
            return Err(ConfigError::SameAddress(listen));
        }
        let transport = if args.insecure_http {
            Transport::InsecureHttp
        } else if args.dev {
            Transport::Tls(TlsSource::SelfSigned {
                names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            })
        } else {
            Transport::Tls(TlsSource::Files {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
            })
        };
        let traces = TraceConfig::from_args(&args.traces)?;
        let mut rules = RulesSource::from(&args.engine);
        if args.dev
            && let RulesSource::Maps(path) = &rules
            && path.as_os_str() == DEFAULT_MAPS_FILE
            && !path.exists()
        {
            rules = RulesSource::Maps(crate::server::dev::example_maps_file().map_err(ConfigError::DevMaps)?);
        }
        Ok(ServeConfig {
            listen,
            transport,
            rules,
            disable_label: args.disable_label.clone(),
            pod_name: args.pod_name.clone(),
            namespace: args.namespace.clone(),
            limits: Limits {
                max_body_bytes,
                request_timeout: args.request_timeout,
                max_concurrency: args.max_concurrency,
            },
            cache_capacity: args.cache_capacity,
            shutdown_grace: args.shutdown_grace,
            shutdown_delay: args.shutdown_delay,
            metrics_listen: args.metrics_listen,
            shadow: args.shadow,
            dev: args.dev,
            reload_poll: RELOAD_POLL_INTERVAL,
            traces,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut argv = vec!["imageswap", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            Command::Serve(args) => ServeConfig::from_args(&args),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&[]).expect("valid");
        assert_eq!(c.listen, "0.0.0.0:5000".parse().expect("addr"));
        assert_eq!(
            c.transport,
            Transport::Tls(TlsSource::Files {
                cert: "/tls/cert.pem".into(),
                key: "/tls/key.pem".into()
            })
        );
        assert_eq!(c.limits.max_body_bytes, 3 * 1024 * 1024);
        assert_eq!(c.limits.request_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.max_concurrency, 1024);
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.disable_label, "k8s.twr.io/imageswap");
        assert!(!c.shadow && !c.dev);
        assert!(c.traces.is_none(), "traces are off without an endpoint");
    }

    #[test]
    fn dev_listens_on_loopback_with_a_generated_certificate() {
        let c = config(&["--dev"]).expect("valid");
        assert_eq!(c.listen, "127.0.0.1:5000".parse().expect("addr"));
        assert!(matches!(
            c.transport,
            Transport::Tls(TlsSource::SelfSigned { .. })
        ));
        let c = config(&["--dev", "--listen", "127.0.0.1:6000"]).expect("valid");
        assert_eq!(c.listen.port(), 6000);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (args, variable) in [
            (&["--max-concurrency", "0"][..], "IMAGESWAP_MAX_CONCURRENCY"),
            (&["--max-body-bytes", "10"][..], "IMAGESWAP_MAX_BODY_BYTES"),
            (&["--request-timeout", "0s"][..], "IMAGESWAP_REQUEST_TIMEOUT"),
            (&["--disable-label", " "][..], "IMAGESWAP_DISABLE_LABEL"),
            (&["--traces-sampler", "sometimes"][..], "OTEL_TRACES_SAMPLER"),
            (
                &["--otlp-endpoint", "collector:4318"][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &["--listen", "127.0.0.1:7000", "--metrics-listen", "127.0.0.1:7000"][..],
                "IMAGESWAP_METRICS_LISTEN",
            ),
        ] {
            let message = config(args).expect_err("refused").to_string();
            assert!(message.contains(variable), "{message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }
}
