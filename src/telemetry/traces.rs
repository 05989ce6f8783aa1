//! OpenTelemetry traces: the tracer provider, the OTLP/HTTP exporter and the
//! `tracing` layer that turns the spans of [`super::spans`] into trace spans.
//!
//! Built only when an endpoint is set ([`TraceConfig`]); with traces off none
//! of this exists and the spans are disabled at their callsites. The export
//! runs on the server's tokio runtime through [`SpanQueue`], so the request
//! path only ever does a non-blocking enqueue.
//!
//! The SDK's builders also read some `OTEL_*` variables themselves; every
//! setting ImageSwap supports is passed explicitly, which takes precedence,
//! so what `TraceConfig` checked is what runs. The exporter still adds the
//! headers of `OTEL_EXPORTER_OTLP_HEADERS` (not checked here).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HttpClient;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::{Layer, Registry};

use crate::telemetry::metrics::Metrics;
use crate::telemetry::span_queue::{QUEUE_CAPACITY_SPANS, SpanQueue};
use crate::telemetry::spans::SPAN_TARGET;
use crate::telemetry::trace_config::{RootSampler, SamplerConfig, TraceConfig};

/// Longest the export of what is queued may take at shutdown, after the
/// requests in flight have finished. Small: the pod's
/// `terminationGracePeriodSeconds` must cover the preStop sleep, the
/// shutdown grace and this, and a dead collector must not hold the exit.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The instrumentation scope of ImageSwap's spans.
const SCOPE: &str = "imageswap";

/// Why traces cannot be exported with these settings.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT is https, but the system has no CA certificates to verify it: {0}")]
    NoCaCertificates(std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Where the spans come from, beyond the settings: the pod (downward API).
#[derive(Clone, Copy, Debug, Default)]
pub struct Emitter<'a> {
    pub pod_name: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

/// The running trace pipeline.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    queue: SpanQueue,
}

impl Traces {
    /// Builds the exporter, the provider and the export queue; the export
    /// starts with [`Traces::start_export`], on the runtime that serves.
    pub fn new(
        config: &TraceConfig,
        emitter: Emitter<'_>,
        metrics: Arc<Metrics>,
    ) -> Result<Traces, TracesError> {
        Traces::with_queue(config, emitter, metrics, QUEUE_CAPACITY_SPANS)
    }

    /// [`Traces::new`] with another queue size (tests overflow a small one).
    pub fn with_queue(
        config: &TraceConfig,
        emitter: Emitter<'_>,
        metrics: Arc<Metrics>,
        queue_capacity: usize,
    ) -> Result<Traces, TracesError> {
        let resource = resource(config, emitter);
        let mut exporter = exporter(config)?;
        exporter.set_resource(&resource);
        let (processor, queue) = SpanQueue::new(exporter, config.export_timeout, metrics, queue_capacity);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(config.sampler))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Traces {
            provider,
            tracer,
            queue,
        })
    }

    /// Starts exporting, on the current tokio runtime.
    pub fn start_export(&mut self) {
        self.queue.start();
    }

    /// The `tracing` layer that exports ImageSwap's spans. `log_level` is the
    /// log filter's most verbose level: decision spans are exported only when
    /// it is DEBUG or TRACE. Of the log events, warnings and errors inside a
    /// span become span events (a malformed object shows up in the trace).
    pub fn layer(&self, log_level: LevelFilter) -> Box<dyn Layer<Registry> + Send + Sync> {
        let spans = std::cmp::max(log_level, LevelFilter::INFO);
        let filter = Targets::new()
            .with_target("imageswap", LevelFilter::WARN)
            .with_target(SPAN_TARGET, spans);
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            // The attributes say what happened; the source location, thread
            // and busy/idle times would only make every span larger.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter)
            .boxed()
    }

    /// Exports what is queued, within `timeout`, and stops.
    pub async fn shutdown(self, timeout: Duration) {
        let Traces {
            provider,
            tracer,
            queue,
        } = self;
        drop(tracer);
        if !queue.shutdown(timeout).await {
            tracing::warn!(
                timeout = %humantime::format_duration(timeout),
                "The trace collector did not take the last spans in time; they are lost."
            );
        }
        let _ = provider.shutdown();
    }
}

fn sampler(config: SamplerConfig) -> Sampler {
    let root = match config.root {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    if config.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

/// `service.*`, the pod, the SDK, then `OTEL_RESOURCE_ATTRIBUTES` (which may
/// override any of them but `service.name`, already resolved in the config).
fn resource(config: &TraceConfig, emitter: Emitter<'_>) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(pod) = emitter.pod_name {
        builder = builder.with_attribute(KeyValue::new("k8s.pod.name", pod.to_owned()));
    }
    if let Some(namespace) = emitter.namespace {
        builder = builder.with_attribute(KeyValue::new("k8s.namespace.name", namespace.to_owned()));
    }
    for (key, value) in &config.resource_attributes {
        builder = builder.with_attribute(KeyValue::new(key.clone(), value.clone()));
    }
    builder.with_service_name(config.service_name.clone()).build()
}

fn exporter(config: &TraceConfig) -> Result<opentelemetry_otlp::SpanExporter, TracesError> {
    let timeout = config.export_timeout;
    if config.endpoint.scheme_str() == Some("https") {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(crate::tls::provider())
            .map_err(TracesError::NoCaCertificates)?
            .https_only()
            .enable_http1()
            .build();
        build_exporter(config, HyperClient::new(connector, timeout, None))
    } else {
        build_exporter(config, HyperClient::with_default_connector(timeout, None))
    }
}

fn build_exporter(
    config: &TraceConfig,
    client: impl HttpClient + 'static,
) -> Result<opentelemetry_otlp::SpanExporter, TracesError> {
    Ok(opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.to_string())
        .with_timeout(config.export_timeout)
        .build()?)
}
