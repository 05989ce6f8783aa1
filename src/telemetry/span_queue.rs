//! The bounded queue between finished spans and the OTLP exporter, and the
//! tokio task that empties it in batches.
//!
//! Why not the SDK's `BatchSpanProcessor`: it runs the export on a thread of
//! its own with a blocking executor (so the HTTP client would have to be the
//! blocking reqwest one, another HTTP stack and another thread), and it
//! counts the spans it drops only for a log line at shutdown. Admissions must
//! never wait for a collector and operators must see what was lost, so this
//! processor does the one thing that matters on the request path: a
//! non-blocking `try_send` into a bounded channel, and a Prometheus counter
//! when the channel is full. Everything slow (encoding, HTTP, retries, the
//! export timeout) happens in [`SpanQueue`]'s task on the server's own
//! runtime, one batch at a time.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::telemetry::metrics::{Metrics, SpanDrop};

/// Finished spans waiting for export. At about 1 KiB each this bounds the
/// memory a dead collector can cost to a few MiB; at 1000 admissions a
/// second it holds two seconds of traffic, more than one export timeout.
pub const QUEUE_CAPACITY_SPANS: usize = 2048;
/// Spans per OTLP request (the SDK's default).
pub const MAX_BATCH_SPANS: usize = 512;
/// Longest a span waits in a partial batch: short enough that a trace shows
/// up in Jaeger about as soon as someone goes looking for it.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

/// The SDK side: hands each finished, sampled span to the queue, or counts
/// it dropped. Never blocks, never allocates beyond the span itself.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Recorded but not sampled (a `RecordOnly` decision): not for export.
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.metrics.trace_spans_dropped(SpanDrop::queue_full, 1);
        }
    }

    /// Flushing is asynchronous ([`SpanQueue::shutdown`]); the SDK's
    /// synchronous hooks must not block a runtime thread.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: built with the processor, started on a runtime with
/// [`SpanQueue::start`] (so the subscriber can be built before the runtime).
pub struct SpanQueue {
    stop: watch::Sender<bool>,
    state: QueueState,
}

enum QueueState {
    NotStarted(Box<dyn FnOnce() -> JoinHandle<()> + Send>),
    Running(JoinHandle<()>),
    Stopped,
}

impl std::fmt::Debug for SpanQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            QueueState::NotStarted(_) => "not started",
            QueueState::Running(_) => "running",
            QueueState::Stopped => "stopped",
        };
        f.debug_struct("SpanQueue").field("state", &state).finish()
    }
}

impl SpanQueue {
    /// The processor to register with the tracer provider, and its queue.
    /// Until [`SpanQueue::start`], finished spans wait in the queue (and
    /// past its capacity are counted as dropped).
    pub fn new<E>(
        exporter: E,
        export_timeout: Duration,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> (QueueProcessor, SpanQueue)
    where
        E: SpanExporter + 'static,
    {
        let (queue, spans) = mpsc::channel(capacity.max(1));
        let (stop, stopped) = watch::channel(false);
        let export = Export {
            exporter,
            timeout: export_timeout,
            metrics: metrics.clone(),
            failing: false,
        };
        let spawn = Box::new(move || tokio::spawn(export.run(spans, stopped)));
        (
            QueueProcessor { queue, metrics },
            SpanQueue {
                stop,
                state: QueueState::NotStarted(spawn),
            },
        )
    }

    /// Starts the export task on the current tokio runtime (panics outside
    /// one, as `tokio::spawn` does). A second call does nothing.
    pub fn start(&mut self) {
        self.state = match std::mem::replace(&mut self.state, QueueState::Stopped) {
            QueueState::NotStarted(spawn) => QueueState::Running(spawn()),
            started => started,
        };
    }

    /// Exports what is queued and stops, within `timeout`: a collector that
    /// is down or hanging cannot hold the process's exit. Returns whether
    /// everything queued was handed to the collector in time.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let QueueState::Running(mut task) = self.state else {
            return true;
        };
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

struct Export<E> {
    exporter: E,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// The last export failed: the next success is logged, further failures are not.
    failing: bool,
}

impl<E: SpanExporter> Export<E> {
    async fn run(mut self, mut spans: mpsc::Receiver<SpanData>, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(MAX_BATCH_SPANS);
        'running: loop {
            // Idle until the first span of a batch (or the stop).
            tokio::select! {
                biased;
                _ = stop.changed() => break 'running,
                span = spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break 'running,
                },
            }
            // Then fill the batch for at most BATCH_DELAY.
            let until = Instant::now() + BATCH_DELAY;
            while batch.len() < MAX_BATCH_SPANS {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break 'running,
                    span = spans.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break 'running,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            self.export(&mut batch).await;
        }
        // Shutting down: no new spans are waited for; what is queued goes out
        // in full batches, each under the export timeout, and the caller's
        // own timeout bounds the whole.
        spans.close();
        loop {
            while batch.len() < MAX_BATCH_SPANS {
                match spans.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.export(&mut batch).await;
        }
        let _ = self.exporter.shutdown_with_timeout(self.timeout);
    }

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        let count = batch.len() as u64;
        let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH_SPANS));
        let error = match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
        };
        match error {
            None => {
                self.metrics.trace_spans_exported(count);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("Trace export works again.");
                }
            }
            Some(error) => {
                self.metrics.trace_spans_dropped(SpanDrop::export_failed, count);
                // One line per outage, not one per batch.
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        %error,
                        spans = count,
                        "Trace export failed; spans are dropped (and counted) until the collector answers."
                    );
                }
            }
        }
    }
}
