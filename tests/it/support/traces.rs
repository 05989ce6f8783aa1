//! A trace pipeline under test: the real OTLP/HTTP exporter and the
//! program's own subscriber (logs into a [`LogCapture`]), on a runtime whose
//! threads all use that subscriber, so nothing depends on a process-wide
//! one. The server tests and the `traces` bench start their servers on it.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use imageswap::telemetry::logging::{self, LogFormat};
use imageswap::telemetry::metrics::Metrics;
use imageswap::telemetry::trace_config::{SamplerConfig, TraceConfig};
use imageswap::telemetry::traces::{Emitter, Traces};
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;

use super::logs::LogCapture;

thread_local! {
    static THREAD_DISPATCH: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// A multi-thread runtime whose threads all log and trace through `dispatch`.
pub fn runtime_with(dispatch: &Dispatch) -> tokio::runtime::Runtime {
    let dispatch = dispatch.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&dispatch);
            THREAD_DISPATCH.with(|slot| *slot.borrow_mut() = Some(guard));
        })
        .build()
        .expect("runtime")
}

/// The collector's own runtime (a collector is another process).
pub fn collector_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Export to the collector at `endpoint` (a base URL), 2 s per export.
pub fn trace_config(endpoint: &str) -> TraceConfig {
    TraceConfig {
        endpoint: format!("{endpoint}/v1/traces").parse().expect("endpoint"),
        export_timeout: Duration::from_secs(2),
        service_name: "imageswap-test".to_owned(),
        sampler: SamplerConfig::default(),
        resource_attributes: vec![("deployment.environment.name".to_owned(), "test".to_owned())],
    }
}

/// Everything a traced test needs: the pipeline, its subscriber, the runtime
/// the server runs on, and what the subscriber writes.
pub struct Traced {
    traces: Option<Traces>,
    pub metrics: Arc<Metrics>,
    pub logs: LogCapture,
    pub dispatch: Dispatch,
    pub runtime: tokio::runtime::Runtime,
}

impl Traced {
    pub fn new(config: &TraceConfig, level: &str, format: LogFormat, queue: usize) -> Traced {
        let metrics = Arc::new(Metrics::new());
        let emitter = Emitter {
            pod_name: Some("imageswap-test-0"),
            namespace: Some("imageswap-system"),
        };
        let traces = Traces::with_queue(config, emitter, metrics.clone(), queue).expect("traces");
        Traced::with(Some(traces), metrics, level, format)
    }

    /// The same subscriber and runtime with traces off.
    #[allow(dead_code, reason = "the traces bench's baseline; no test needs it")]
    pub fn off(level: &str, format: LogFormat) -> Traced {
        Traced::with(None, Arc::new(Metrics::new()), level, format)
    }

    fn with(traces: Option<Traces>, metrics: Arc<Metrics>, level: &str, format: LogFormat) -> Traced {
        let logs = LogCapture::default();
        let dispatch = logging::dispatch(
            logging::level_filter(level).expect("level"),
            format,
            traces.as_ref(),
            logs.clone(),
            false,
        );
        let runtime = runtime_with(&dispatch);
        Traced {
            traces,
            metrics,
            logs,
            dispatch,
            runtime,
        }
    }

    /// Starts the export on the runtime and hands the pipeline out (once;
    /// `None` with traces off).
    pub fn start(&mut self) -> Option<Traces> {
        let mut traces = self.traces.take()?;
        let _entered = self.runtime.enter();
        traces.start_export();
        Some(traces)
    }

    /// Runs `test` on the traced runtime with the export started; the
    /// calling thread uses the subscriber too (it polls the test's future).
    pub fn run<T>(&mut self, test: impl AsyncFnOnce(Traces, Arc<Metrics>) -> T) -> T {
        let _guard = tracing::dispatcher::set_default(&self.dispatch);
        let metrics = self.metrics.clone();
        let traces = self.start().expect("run once, with traces on");
        self.runtime.block_on(test(traces, metrics))
    }
}
