//! The typed trace settings, from the standard `OTEL_*` variables that
//! `cli::TraceArgs` reads. The meanings are the OpenTelemetry
//! specification's (endpoint URLs for OTLP/HTTP, sampler names, the
//! resource attribute list); where the specification says "ignore a bad
//! value", ImageSwap follows its own rule instead and refuses to start with
//! one line naming the variable, as it does for every other setting.
//!
//! No endpoint, no traces: [`TraceConfig::from_args`] returns `None` and
//! nothing of OpenTelemetry is built.

use std::time::Duration;

use clap::Args;

use http::Uri;

use crate::settings::SettingName;

/// OpenTelemetry traces: the standard `OTEL_*` variables (the flags exist for
/// a person at a shell). Read as text; [`TraceConfig::from_args`] checks them,
/// so one error type names the variable whatever was wrong. An empty value
/// counts as unset, as the OpenTelemetry specification says.
#[derive(Clone, Debug, Default, Args)]
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

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "imageswap";
/// Longest wait for the collector per batch. Shorter than the specification's
/// 10 s: a healthy in-cluster collector answers in milliseconds, and the
/// shorter the wait, the sooner a dead one stops holding the export queue.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Path appended to `OTEL_EXPORTER_OTLP_ENDPOINT` for spans.
pub const TRACES_PATH: &str = "v1/traces";

// The settings, by their field in `TraceArgs`: errors name them as the
// operator sets them, from clap's metadata.
const ENDPOINT: &str = "endpoint";
const TRACES_ENDPOINT: &str = "traces_endpoint";
const PROTOCOL: &str = "protocol";
const TIMEOUT: &str = "timeout";
const SERVICE_NAME: &str = "service_name";
const SAMPLER: &str = "sampler";
const SAMPLER_ARG: &str = "sampler_arg";
const RESOURCE_ATTRIBUTES: &str = "resource_attributes";

/// A trace setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct TraceConfigError {
    pub setting: SettingName,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> TraceConfigError {
    TraceConfigError {
        setting: SettingName::in_args::<TraceArgs>(field),
        problem: problem.into(),
    }
}

/// The decision for a trace without a sampled parent, or for every trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    /// Sample this fraction of trace ids (0 to 1).
    Ratio(f64),
}

/// `OTEL_TRACES_SAMPLER` and its argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// `parentbased_*`: follow the caller's sampled flag (the API server's
    /// `traceparent`) when there is one, else decide with `root`.
    pub parent_based: bool,
    pub root: RootSampler,
}

impl Default for SamplerConfig {
    /// The specification's default: `parentbased_always_on`.
    fn default() -> Self {
        SamplerConfig {
            parent_based: true,
            root: RootSampler::AlwaysOn,
        }
    }
}

/// The variable's spelling: `parentbased_traceidratio 0.1`.
impl std::fmt::Display for SamplerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.parent_based {
            f.write_str("parentbased_")?;
        }
        match self.root {
            RootSampler::AlwaysOn => f.write_str("always_on"),
            RootSampler::AlwaysOff => f.write_str("always_off"),
            RootSampler::Ratio(ratio) => write!(f, "traceidratio {ratio}"),
        }
    }
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: Uri,
    pub export_timeout: Duration,
    pub service_name: String,
    pub sampler: SamplerConfig,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded, without `service.name`.
    pub resource_attributes: Vec<(String, String)>,
}

/// A value that is set and not blank (the specification: empty means unset).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl TraceConfig {
    /// `None` when no endpoint is set: traces are off.
    pub fn from_args(args: &TraceArgs) -> Result<Option<TraceConfig>, TraceConfigError> {
        // Every value is checked even with traces off, so a typo shows up on
        // the day it is made rather than the day an endpoint is added.
        let endpoint = match (given(&args.traces_endpoint), given(&args.endpoint)) {
            (Some(url), _) => Some(parse_url(TRACES_ENDPOINT, url)?),
            (None, Some(base)) => {
                parse_url(ENDPOINT, base)?;
                let joined = format!("{}/{TRACES_PATH}", base.trim_end_matches('/'));
                Some(parse_url(ENDPOINT, &joined)?)
            }
            (None, None) => None,
        };
        check_protocol(given(&args.protocol))?;
        let export_timeout = match given(&args.timeout) {
            None => DEFAULT_EXPORT_TIMEOUT,
            Some(text) => parse_timeout(text)?,
        };
        let sampler = parse_sampler(given(&args.sampler), given(&args.sampler_arg))?;
        let mut resource_attributes = match given(&args.resource_attributes) {
            None => Vec::new(),
            Some(text) => parse_resource_attributes(text)?,
        };
        // OTEL_SERVICE_NAME wins over service.name in the attribute list.
        let listed_name = resource_attributes
            .iter()
            .rposition(|(key, _)| key == "service.name")
            .map(|i| resource_attributes[i].1.clone());
        resource_attributes.retain(|(key, _)| key != "service.name");
        let service_name = match (given(&args.service_name), listed_name) {
            (Some(name), _) => name.to_owned(),
            (None, Some(name)) if !name.is_empty() => name,
            _ => DEFAULT_SERVICE_NAME.to_owned(),
        };
        if service_name.len() > MAX_SERVICE_NAME_BYTES {
            return Err(invalid(
                SERVICE_NAME,
                format!("longer than {MAX_SERVICE_NAME_BYTES} bytes"),
            ));
        }
        Ok(endpoint.map(|endpoint| TraceConfig {
            endpoint,
            export_timeout,
            service_name,
            sampler,
            resource_attributes,
        }))
    }
}

/// A service name is a label in every tracing UI, not a document.
const MAX_SERVICE_NAME_BYTES: usize = 255;

fn parse_url(variable: &'static str, text: &str) -> Result<Uri, TraceConfigError> {
    let expected = "expected an http:// or https:// URL such as http://jaeger-collector:4318";
    let uri: Uri = text
        .parse()
        .map_err(|e| invalid(variable, format!("{expected} ({e}), got {text:?}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(variable, format!("{expected}, got {text:?}"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(variable, format!("{expected} (no host), got {text:?}")));
    }
    Ok(uri)
}

fn check_protocol(protocol: Option<&str>) -> Result<(), TraceConfigError> {
    match protocol {
        None | Some("http/protobuf") => Ok(()),
        Some(other @ ("grpc" | "http/json")) => Err(invalid(
            PROTOCOL,
            format!(
                "{other} is not built into ImageSwap; use http/protobuf (Jaeger and the \
                 OpenTelemetry Collector accept it on port 4318)"
            ),
        )),
        Some(other) => Err(invalid(
            PROTOCOL,
            format!("expected http/protobuf, got {other:?}"),
        )),
    }
}

fn parse_timeout(text: &str) -> Result<Duration, TraceConfigError> {
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(invalid(
            TIMEOUT,
            format!("expected a positive number of milliseconds such as 2000, got {text:?}"),
        )),
        Ok(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerConfig, TraceConfigError> {
    let Some(name) = name else {
        return Ok(SamplerConfig::default());
    };
    let name = name.to_ascii_lowercase();
    let (parent_based, root) = match name.strip_prefix("parentbased_") {
        Some(root) => (true, root),
        None => (false, name.as_str()),
    };
    let root = match root {
        "always_on" => RootSampler::AlwaysOn,
        "always_off" => RootSampler::AlwaysOff,
        // The specification's default argument is 1.0.
        "traceidratio" => RootSampler::Ratio(arg.map_or(Ok(1.0), parse_ratio)?),
        _ => {
            return Err(invalid(
                SAMPLER,
                format!(
                    "expected always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio, got {name:?}"
                ),
            ));
        }
    };
    Ok(SamplerConfig { parent_based, root })
}

fn parse_ratio(text: &str) -> Result<f64, TraceConfigError> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(invalid(
            SAMPLER_ARG,
            format!("expected a ratio from 0 to 1 such as 0.1, got {text:?}"),
        )),
    }
}

/// `key=value,key=value`, values percent-encoded (W3C baggage octets).
/// Blank entries (a trailing comma) are skipped.
fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, TraceConfigError> {
    let mut attributes = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let position = index + 1;
        let Some((key, value)) = entry.split_once('=') else {
            return Err(invalid(
                RESOURCE_ATTRIBUTES,
                format!("entry {position} has no `=`: expected key=value,key=value, got {text:?}"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(
                RESOURCE_ATTRIBUTES,
                format!("entry {position} has an empty key: expected key=value,key=value, got {text:?}"),
            ));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| {
            invalid(
                RESOURCE_ATTRIBUTES,
                format!("the value of {key:?} must be valid percent-encoded UTF-8, got {text:?}"),
            )
        })?;
        attributes.push((key.to_owned(), value));
    }
    Ok(attributes)
}

/// `None` for a `%` not followed by two hex digits, which the baggage
/// format does not allow (the decoder would keep it as is), or for bytes
/// that are not UTF-8 once decoded.
fn percent_decode(text: &str) -> Option<String> {
    let well_formed = text.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// Parses `imageswap serve ARGS` (the flags; the variables are tested
    /// on the binary in tests/it/binary/serve.rs).
    fn traces(args: &[&str]) -> Result<Option<TraceConfig>, TraceConfigError> {
        let mut argv = vec!["imageswap", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            Command::Serve(args) => TraceConfig::from_args(&args.traces),
            _ => panic!("not serve"),
        }
    }

    fn with(
        endpoint: Option<&str>,
        set: impl FnOnce(&mut TraceArgs),
    ) -> Result<Option<TraceConfig>, TraceConfigError> {
        let mut args = TraceArgs {
            endpoint: endpoint.map(str::to_owned),
            ..TraceArgs::default()
        };
        set(&mut args);
        TraceConfig::from_args(&args)
    }

    fn on(set: impl FnOnce(&mut TraceArgs)) -> TraceConfig {
        with(Some("http://collector:4318"), set)
            .expect("valid")
            .expect("traces on")
    }

    fn error(set: impl FnOnce(&mut TraceArgs)) -> String {
        let e = with(Some("http://collector:4318"), set).expect_err("refused");
        let message = e.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        message
    }

    #[test]
    fn off_without_an_endpoint_and_defaults_otherwise() {
        assert_eq!(with(None, |_| {}).expect("valid"), None);
        assert_eq!(with(Some("  "), |_| {}).expect("valid"), None, "blank is unset");
        let c = on(|_| {});
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.export_timeout, DEFAULT_EXPORT_TIMEOUT);
        assert_eq!(c.service_name, "imageswap");
        assert_eq!(c.sampler, SamplerConfig::default());
        assert!(c.sampler.parent_based && c.sampler.root == RootSampler::AlwaysOn);
        assert!(c.resource_attributes.is_empty());
    }

    #[test]
    fn endpoints_follow_the_otlp_http_rules() {
        // The base endpoint gets /v1/traces, once, after any path prefix.
        assert_eq!(on(|_| {}).endpoint, "http://collector:4318/v1/traces");
        let c = with(Some("https://otel.example:4318/prefix/"), |_| {})
            .expect("valid")
            .expect("on");
        assert_eq!(c.endpoint, "https://otel.example:4318/prefix/v1/traces");
        // The per-signal endpoint is used as it is, and wins.
        let c = on(|a| a.traces_endpoint = Some("http://jaeger:4318/custom".into()));
        assert_eq!(c.endpoint, "http://jaeger:4318/custom");
        let c = with(None, |a| {
            a.traces_endpoint = Some("http://jaeger:4318/v1/traces".into())
        })
        .expect("valid")
        .expect("on with only the traces endpoint");
        assert_eq!(c.endpoint, "http://jaeger:4318/v1/traces");
    }

    #[test]
    fn bad_endpoints_name_their_variable() {
        for (base, traces, variable) in [
            (Some("collector:4318"), None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (Some("grpc://collector:4317"), None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (Some("http://"), None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (Some("http://a b"), None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (None, Some("/v1/traces"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            (
                Some("http://ok:4318"),
                Some("ftp://x"),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
        ] {
            let e = with(base, |a| a.traces_endpoint = traces.map(str::to_owned)).expect_err("refused");
            assert!(e.to_string().starts_with(variable), "{e}");
            assert!(e.to_string().contains("http:// or https://"), "{e}");
        }
    }

    #[test]
    fn protocol_is_http_protobuf_only() {
        on(|a| a.protocol = Some("http/protobuf".into()));
        let message = error(|a| a.protocol = Some("grpc".into()));
        assert!(message.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL"), "{message}");
        assert!(message.contains("not built into ImageSwap"), "{message}");
        assert!(error(|a| a.protocol = Some("http/json".into())).contains("http/protobuf"));
        assert!(error(|a| a.protocol = Some("udp".into())).contains("\"udp\""));
    }

    #[test]
    fn timeout_is_positive_milliseconds() {
        assert_eq!(
            on(|a| a.timeout = Some("500".into())).export_timeout,
            Duration::from_millis(500)
        );
        for bad in ["0", "2s", "-1", "1.5"] {
            let message = error(|a| a.timeout = Some(bad.into()));
            assert!(message.starts_with("OTEL_EXPORTER_OTLP_TIMEOUT"), "{message}");
        }
    }

    #[test]
    fn every_sampler_of_the_specification() {
        for (name, arg, parent_based, root) in [
            ("always_on", None, false, RootSampler::AlwaysOn),
            ("always_off", None, false, RootSampler::AlwaysOff),
            ("traceidratio", Some("0.25"), false, RootSampler::Ratio(0.25)),
            ("traceidratio", None, false, RootSampler::Ratio(1.0)),
            ("parentbased_always_on", None, true, RootSampler::AlwaysOn),
            ("parentbased_always_off", None, true, RootSampler::AlwaysOff),
            (
                "parentbased_traceidratio",
                Some("0"),
                true,
                RootSampler::Ratio(0.0),
            ),
            (
                "ParentBased_TraceIdRatio",
                Some("1"),
                true,
                RootSampler::Ratio(1.0),
            ),
            // The argument of a sampler that takes none is ignored (the specification).
            ("always_on", Some("0.5"), false, RootSampler::AlwaysOn),
        ] {
            let c = on(|a| {
                a.sampler = Some(name.into());
                a.sampler_arg = arg.map(str::to_owned);
            });
            assert_eq!(c.sampler, SamplerConfig { parent_based, root }, "{name} {arg:?}");
            assert!(name.eq_ignore_ascii_case(c.sampler.to_string().split(' ').next().unwrap_or_default()));
        }
    }

    #[test]
    fn bad_samplers_and_ratios_name_their_variable() {
        for bad in [
            "jaeger_remote",
            "parentbased_jaeger_remote",
            "xray",
            "on",
            "parentbased_",
        ] {
            let message = error(|a| a.sampler = Some(bad.into()));
            assert!(message.starts_with("OTEL_TRACES_SAMPLER "), "{message}");
        }
        for bad in ["1.5", "-0.1", "ten", "NaN"] {
            let message = error(|a| {
                a.sampler = Some("parentbased_traceidratio".into());
                a.sampler_arg = Some(bad.into());
            });
            assert!(message.starts_with("OTEL_TRACES_SAMPLER_ARG"), "{message}");
        }
    }

    #[test]
    fn resource_attributes_are_decoded_and_service_name_has_an_order() {
        let c = on(|a| {
            a.resource_attributes =
                Some("deployment.environment.name=prod, team=a%2Cb%20c ,,k8s.cluster.name=eu-1".into())
        });
        assert_eq!(
            c.resource_attributes,
            vec![
                ("deployment.environment.name".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a,b c".to_owned()),
                ("k8s.cluster.name".to_owned(), "eu-1".to_owned()),
            ]
        );
        // service.name from the list, unless OTEL_SERVICE_NAME is set.
        let c = on(|a| a.resource_attributes = Some("service.name=webhook,x=1".into()));
        assert_eq!(c.service_name, "webhook");
        assert_eq!(c.resource_attributes, vec![("x".to_owned(), "1".to_owned())]);
        let c = on(|a| {
            a.resource_attributes = Some("service.name=webhook".into());
            a.service_name = Some("imageswap-eu".into());
        });
        assert_eq!(c.service_name, "imageswap-eu");
        assert!(c.resource_attributes.is_empty());
    }

    #[test]
    fn bad_resource_attributes_name_the_variable() {
        for bad in ["novalue", "=x", "k=%zz", "k=%E2%28", "k=%4"] {
            let message = error(|a| a.resource_attributes = Some(bad.into()));
            assert!(
                message.starts_with("OTEL_RESOURCE_ATTRIBUTES"),
                "{bad}: {message}"
            );
        }
        let long = "x".repeat(256);
        assert!(error(|a| a.service_name = Some(long)).starts_with("OTEL_SERVICE_NAME"));
    }

    #[test]
    fn values_are_checked_even_with_traces_off() {
        let e = with(None, |a| a.sampler = Some("sometimes".into())).expect_err("refused");
        assert!(e.to_string().starts_with("OTEL_TRACES_SAMPLER"), "{e}");
    }

    #[test]
    fn flags_reach_the_same_settings() {
        let c = traces(&[
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--otel-service-name",
            "is",
            "--traces-sampler",
            "traceidratio",
            "--traces-sampler-arg",
            "0.5",
            "--otlp-timeout",
            "750",
            "--otel-resource-attributes",
            "a=b",
            "--otlp-protocol",
            "http/protobuf",
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.service_name, "is");
        assert_eq!(c.sampler.root, RootSampler::Ratio(0.5));
        assert_eq!(c.export_timeout, Duration::from_millis(750));
        assert_eq!(c.resource_attributes, vec![("a".to_owned(), "b".to_owned())]);
    }
}
