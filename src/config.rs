//! The typed configuration of `imageswap serve`: the server's own settings
//! ([`ServerArgs`]: listener, TLS files, limits, shutdown, modes), composed
//! in [`ServeArgs`] with those the rules, the cache and traces own, and
//! [`ServeConfig::from_args`], which turns them into one checked value with
//! the checks that span several settings (the server reads only that). Building it does no I/O. A bad value
//! stops the program at start with one line naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::admission::{PullSecrets, PullSecretsArgs};
use crate::cache::CacheArgs;
use crate::rules::{RulesArgs, RulesSource};
use crate::settings::{SettingName, setting};
use crate::telemetry::trace_config::{TraceArgs, TraceConfig, TraceConfigError};
use crate::verify::VerifyArgs;

/// How often the reloader re-reads the watched files even without a file
/// event: the safety net for events that never come (some volume types,
/// a directory created after start).
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(10);

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
    /// The `timeoutSeconds` of the webhook in deploy/manifests and the chart.
    pub const WEBHOOK_TIMEOUT: &str = "5s";
    /// Reviews being decided at once; a request counts once its body is in,
    /// so slow clients hold no place. A cached review is tens of
    /// microseconds of CPU, so 1024 is far more than two cores can be busy
    /// with: the limit only bites when decisions stall, and then it sheds
    /// instead of queueing without bound. (Memory is bounded by the budget
    /// below, not by this.)
    pub const MAX_CONCURRENCY: &str = "1024";
    /// 48 MiB of request bodies in flight at once (the stack's memory
    /// budget; a third of it for bodies over 64 KiB, the rest for smaller
    /// ones): with the parse state of one big review at a time on top, the
    /// worst case stays under the 256 MiB memory limit the manifests give
    /// the container (docs/operations.md has the figure).
    pub const MEMORY_BUDGET_BYTES: &str = "50331648";
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

    /// The webhook's `timeoutSeconds` (how long the API server waits for an
    /// answer, 1s to 30s): IMAGESWAP_REQUEST_TIMEOUT must be below it, so the
    /// server's own answer comes first. Set it with `timeoutSeconds`.
    #[arg(long, env = "IMAGESWAP_WEBHOOK_TIMEOUT", default_value = defaults::WEBHOOK_TIMEOUT,
        value_parser = setting::<Duration>())]
    pub webhook_timeout: Duration,

    /// Admission requests answered at once; more get a fast 503.
    #[arg(long, env = "IMAGESWAP_MAX_CONCURRENCY", default_value = defaults::MAX_CONCURRENCY,
        value_parser = setting::<usize>())]
    pub max_concurrency: usize,

    /// Bytes of request bodies held in memory at once, across all requests
    /// (a third for bodies over 64 KiB, the rest for smaller ones); a body
    /// that would exceed its share gets a fast 503.
    #[arg(long, env = "IMAGESWAP_MEMORY_BUDGET_BYTES", default_value = defaults::MEMORY_BUDGET_BYTES,
        value_parser = setting::<u64>())]
    pub memory_budget_bytes: u64,

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

    /// The swaps (container, from, to, rule) on the review's INFO line (the
    /// original logged a line per swap); false leaves them out, for very
    /// busy clusters.
    #[arg(long, env = "IMAGESWAP_LOG_SWAPS", default_value = "true", num_args = 0..=1,
        default_missing_value = "true", action = clap::ArgAction::Set, value_parser = setting::<bool>())]
    pub log_swaps: bool,

    /// A WARN line and imageswap_recreate_loops_total when the same fixed-name pod is created and
    /// swapped this many times within 10 minutes (a controller undoing the swap); 0 turns it off.
    #[arg(long, env = "IMAGESWAP_LOOP_THRESHOLD", default_value = "5",
        value_parser = setting::<u64>())]
    pub loop_threshold: u64,

    /// Plain HTTP instead of TLS: for local tests and load tests only.
    #[arg(long, env = "IMAGESWAP_INSECURE_HTTP", default_value = "false", num_args = 0..=1,
        default_missing_value = "true", action = clap::ArgAction::Set, value_parser = setting::<bool>())]
    pub insecure_http: bool,

    /// Decide, log and count every swap, but never return a patch.
    #[arg(long, env = "IMAGESWAP_SHADOW", default_value = "false", num_args = 0..=1,
        default_missing_value = "true", action = clap::ArgAction::Set, value_parser = setting::<bool>())]
    pub shadow: bool,

    /// Local development: a self-signed certificate for localhost, 127.0.0.1:5000,
    /// the example maps file, and a curl command to try it.
    #[arg(long, env = "IMAGESWAP_DEV", default_value = "false", num_args = 0..=1,
        default_missing_value = "true", action = clap::ArgAction::Set, value_parser = setting::<bool>())]
    pub dev: bool,
}

/// `imageswap serve`: every module's settings, flattened.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub rules: RulesArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    #[command(flatten)]
    pub traces: TraceArgs,

    #[command(flatten)]
    pub verify: VerifyArgs,

    #[command(flatten)]
    pub pull_secrets: PullSecretsArgs,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting} must be at least {min}, got {value}")]
    TooSmall {
        setting: SettingName,
        min: u64,
        value: u64,
    },
    #[error("{setting} must be a positive duration, got {value:?}")]
    ZeroDuration { setting: SettingName, value: Duration },
    #[error("{setting} must not be empty")]
    Empty { setting: SettingName },
    #[error("{metrics} must differ from {}, both are {addr}", server_setting("listen"))]
    SameAddress { metrics: SettingName, addr: SocketAddr },
    #[error("{setting} is {value}, larger than this platform can address")]
    TooLarge { setting: SettingName, value: u64 },
    /// One setting bounded by another (boxed: the error stays small).
    #[error("{0}")]
    AboveLimit(Box<AboveLimit>),
    #[error("{setting} must be between {min} and {max} (the API server's bounds), got {value}")]
    OutOfRange {
        setting: SettingName,
        min: &'static str,
        max: &'static str,
        value: String,
    },
    #[error(transparent)]
    Traces(#[from] TraceConfigError),
}

/// A setting bounded by another; `relation` is "must be below" or "must
/// not exceed".
#[derive(Debug, thiserror::Error)]
#[error("{setting} = {value} {relation} {limit_setting} = {limit}: {why}")]
pub struct AboveLimit {
    pub setting: SettingName,
    pub value: String,
    pub relation: &'static str,
    pub limit_setting: SettingName,
    pub limit: String,
    pub why: &'static str,
}

/// The name of a server setting, from its field.
fn server_setting(field: &str) -> SettingName {
    SettingName::in_args::<ServerArgs>(field)
}

/// The bounds the API server puts on a webhook's `timeoutSeconds`.
const WEBHOOK_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const WEBHOOK_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// The three timeouts nest: a mirror check within the request, the request
/// within the API server's wait. Past the API server's wait nobody reads
/// the answer (and `failurePolicy` decides instead of ImageSwap); a check
/// that may take the whole request leaves no time to answer.
fn check_timeouts(args: &ServeArgs) -> Result<(), ConfigError> {
    let server = &args.server;
    let text = |d: Duration| humantime::format_duration(d).to_string();
    if !(WEBHOOK_TIMEOUT_MIN..=WEBHOOK_TIMEOUT_MAX).contains(&server.webhook_timeout) {
        return Err(ConfigError::OutOfRange {
            setting: server_setting("webhook_timeout"),
            min: "1s",
            max: "30s",
            value: text(server.webhook_timeout),
        });
    }
    if server.request_timeout >= server.webhook_timeout {
        return Err(ConfigError::AboveLimit(Box::new(AboveLimit {
            setting: server_setting("request_timeout"),
            value: text(server.request_timeout),
            relation: "must be below",
            limit_setting: server_setting("webhook_timeout"),
            limit: text(server.webhook_timeout),
            why: "the server's own answer must arrive before the API server stops waiting (the webhook's \
                  timeoutSeconds)",
        })));
    }
    if args.verify.enabled() {
        let verify_timeout = SettingName::in_args::<VerifyArgs>("verify_timeout");
        // A zero timeout would answer every check "timeout" at once: the
        // setting is surely a mistake.
        if args.verify.verify_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: verify_timeout,
                value: args.verify.verify_timeout,
            });
        }
        if args.verify.verify_timeout >= server.request_timeout {
            return Err(ConfigError::AboveLimit(Box::new(AboveLimit {
                setting: verify_timeout,
                value: text(args.verify.verify_timeout),
                relation: "must be below",
                limit_setting: server_setting("request_timeout"),
                limit: text(server.request_timeout),
                why: "an admission waits for its mirror checks within its own deadline",
            })));
        }
    }
    Ok(())
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

/// Longest a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay open before its first request arrives
/// (after the handshake): a socket that never sends one is closed, so
/// idle connections cannot exhaust the server's sockets. The API server
/// sends a request on a connection as soon as it opens it.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of the request path and of connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrency: usize,
    /// Bytes of request bodies held at once, across all requests.
    pub memory_budget_bytes: usize,
    /// [`TLS_HANDSHAKE_TIMEOUT`]; a field so tests can shorten it.
    pub tls_handshake_timeout: Duration,
    /// [`FIRST_REQUEST_TIMEOUT`]; a field so tests can shorten it.
    pub first_request_timeout: Duration,
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub transport: Transport,
    pub rules: RulesSource,
    /// Images never rewritten (`IMAGESWAP_KEEP_IMAGES`).
    pub keep_images: Vec<String>,
    pub disable_label: String,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub limits: Limits,
    pub cache_capacity: u64,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub shadow: bool,
    pub log_swaps: bool,
    /// `IMAGESWAP_LOOP_THRESHOLD` (0: off).
    pub loop_threshold: u64,
    pub dev: bool,
    pub reload_poll: Duration,
    /// OpenTelemetry export; `None` (off) while no OTLP endpoint is set.
    pub traces: Option<TraceConfig>,
    /// Mirror verification (verify.md); off by default.
    pub verify: VerifyArgs,
    /// `imagePullSecrets` added for images that end up in these registries.
    pub pull_secrets: PullSecrets,
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let server = &args.server;
        if server.max_concurrency == 0 {
            return Err(ConfigError::TooSmall {
                setting: server_setting("max_concurrency"),
                min: 1,
                value: 0,
            });
        }
        // A review is a few KB; below 1 KiB nothing real fits.
        if server.max_body_bytes < 1024 {
            return Err(ConfigError::TooSmall {
                setting: server_setting("max_body_bytes"),
                min: 1024,
                value: server.max_body_bytes,
            });
        }
        let max_body_bytes = usize::try_from(server.max_body_bytes).map_err(|_| ConfigError::TooLarge {
            setting: server_setting("max_body_bytes"),
            value: server.max_body_bytes,
        })?;
        // The budget must hold at least one body of the largest size. The
        // line names the setting that was moved: the body limit when the
        // budget is its default (`--max-body-bytes 100000000` alone), else
        // the budget.
        if server.memory_budget_bytes < server.max_body_bytes {
            let budget_is_default = defaults::MEMORY_BUDGET_BYTES.parse() == Ok(server.memory_budget_bytes);
            return Err(if budget_is_default {
                ConfigError::AboveLimit(Box::new(AboveLimit {
                    setting: server_setting("max_body_bytes"),
                    value: server.max_body_bytes.to_string(),
                    relation: "must not exceed",
                    limit_setting: server_setting("memory_budget_bytes"),
                    limit: server.memory_budget_bytes.to_string(),
                    why: "the memory budget for request bodies holds at least one body of the largest size",
                }))
            } else {
                ConfigError::TooSmall {
                    setting: server_setting("memory_budget_bytes"),
                    min: server.max_body_bytes,
                    value: server.memory_budget_bytes,
                }
            });
        }
        let memory_budget_bytes =
            usize::try_from(server.memory_budget_bytes).map_err(|_| ConfigError::TooLarge {
                setting: server_setting("memory_budget_bytes"),
                value: server.memory_budget_bytes,
            })?;
        if server.request_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: server_setting("request_timeout"),
                value: server.request_timeout,
            });
        }
        check_timeouts(args)?;
        if server.disable_label.trim().is_empty() {
            return Err(ConfigError::Empty {
                setting: server_setting("disable_label"),
            });
        }
        let default_listen = if server.dev {
            defaults::DEV_LISTEN
        } else {
            defaults::LISTEN
        };
        let listen = match server.listen {
            Some(listen) => listen,
            None => default_listen
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5000))),
        };
        if server.metrics_listen == Some(listen) && listen.port() != 0 {
            return Err(ConfigError::SameAddress {
                metrics: server_setting("metrics_listen"),
                addr: listen,
            });
        }
        let transport = if server.insecure_http {
            Transport::InsecureHttp
        } else if server.dev {
            Transport::Tls(TlsSource::SelfSigned {
                names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            })
        } else {
            Transport::Tls(TlsSource::Files {
                cert: server.tls_cert.clone(),
                key: server.tls_key.clone(),
            })
        };
        let traces = TraceConfig::from_args(&args.traces)?;
        Ok(ServeConfig {
            listen,
            transport,
            rules: RulesSource::from(&args.rules),
            keep_images: args.rules.keep_images(),
            disable_label: server.disable_label.clone(),
            pod_name: server.pod_name.clone(),
            namespace: server.namespace.clone(),
            limits: Limits {
                max_body_bytes,
                request_timeout: server.request_timeout,
                max_concurrency: server.max_concurrency,
                memory_budget_bytes,
                tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
                first_request_timeout: FIRST_REQUEST_TIMEOUT,
            },
            cache_capacity: args.cache.cache_capacity,
            shutdown_grace: server.shutdown_grace,
            shutdown_delay: server.shutdown_delay,
            metrics_listen: server.metrics_listen,
            shadow: server.shadow,
            log_swaps: server.log_swaps,
            loop_threshold: server.loop_threshold,
            dev: server.dev,
            reload_poll: RELOAD_POLL_INTERVAL,
            traces,
            verify: args.verify.clone(),
            pull_secrets: args.pull_secrets.pull_secrets(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `imageswap serve ARGS`, as far as the configuration goes.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn config(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        ServeConfig::from_args(&Serve::try_parse_from(argv).expect("parses").args)
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
        assert_eq!(c.limits.memory_budget_bytes, 48 * 1024 * 1024);
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.disable_label, "k8s.twr.io/imageswap");
        assert!(!c.shadow && !c.dev);
        assert!(c.traces.is_none(), "traces are off without an endpoint");
        assert!(!c.verify.enabled(), "verification is off until turned on");
        assert!(c.pull_secrets.is_empty());
    }

    #[test]
    fn verification_and_pull_secrets_are_carried_into_the_config() {
        let c = config(&[
            "--verify",
            "ON",
            "--verify-on-error",
            "keep",
            "--verify-timeout",
            "250ms",
            "--image-pull-secrets",
            "harbor.example.com=harbor-pull",
        ])
        .expect("valid");
        assert!(c.verify.enabled());
        assert_eq!(c.verify.verify_on_error, crate::verify::OnError::Keep);
        assert_eq!(c.verify.verify_timeout, Duration::from_millis(250));
        assert_eq!(
            c.pull_secrets.secret_for("harbor.example.com/x/nginx"),
            Some("harbor-pull")
        );
        // A bad pair is refused by the parser, in one line naming the variable.
        let message = Serve::try_parse_from(["serve", "--image-pull-secrets", "harbor.example.com"])
            .expect_err("refused")
            .to_string();
        assert!(
            message.contains("IMAGESWAP_IMAGE_PULL_SECRETS (--image-pull-secrets)"),
            "{message}"
        );
        assert_eq!(message.trim_end().lines().count(), 1, "{message}");
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
    fn the_loop_threshold_defaults_to_5_and_0_turns_it_off() {
        assert_eq!(config(&[]).expect("valid").loop_threshold, 5);
        assert_eq!(
            config(&["--loop-threshold", "0"]).expect("valid").loop_threshold,
            0
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (args, variable) in [
            (&["--max-concurrency", "0"][..], "IMAGESWAP_MAX_CONCURRENCY"),
            (&["--max-body-bytes", "10"][..], "IMAGESWAP_MAX_BODY_BYTES"),
            (
                &["--memory-budget-bytes", "1024"][..],
                "IMAGESWAP_MEMORY_BUDGET_BYTES",
            ),
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
            (
                &["--verify", "on", "--verify-timeout", "0s"][..],
                "IMAGESWAP_VERIFY_TIMEOUT",
            ),
            // The timeouts nest: verify < request < webhook, within 1s..30s.
            (
                &["--verify", "on", "--verify-timeout", "2s"][..],
                "IMAGESWAP_VERIFY_TIMEOUT",
            ),
            (&["--request-timeout", "5s"][..], "IMAGESWAP_REQUEST_TIMEOUT"),
            (&["--webhook-timeout", "500ms"][..], "IMAGESWAP_WEBHOOK_TIMEOUT"),
            (&["--webhook-timeout", "31s"][..], "IMAGESWAP_WEBHOOK_TIMEOUT"),
            // The budget is the default: the body limit is the one moved.
            (&["--max-body-bytes", "100000000"][..], "IMAGESWAP_MAX_BODY_BYTES"),
        ] {
            let message = config(args).expect_err("refused").to_string();
            assert!(message.contains(variable), "{message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }
}
