//! The `tracing` subscriber every command installs: one format for the server,
//! `init` and the tools, on standard error so standard output stays data;
//! and, for `serve` with traces on, the OpenTelemetry layer beside it.
//!
//! The trace spans ([`spans::SPAN_TARGET`]) are hidden from the log lines:
//! every line already carries the fields it needs, and printing the span's
//! fields in front of each one said everything twice. In JSON, a line
//! written inside a trace span gets that span's `trace_id` and `span_id`
//! instead, so a log line leads to its trace and back.

use std::io::{BufWriter, IsTerminal};
use std::sync::{Arc, OnceLock};

use clap::ValueEnum;
use tracing::Dispatch;
use tracing::dispatcher::WeakDispatch;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::json_lines::JsonLines;
use super::spans;
use super::traces::Traces;
use crate::settings::{SettingValue, choice, setting};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The log settings every subcommand shares (global flags).
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log level: INFO or DEBUG (the original's), or any tracing level.
    #[arg(long, global = true, env = "IMAGESWAP_LOG_LEVEL", default_value = "INFO",
        value_parser = setting::<LogLevel>())]
    pub log_level: LogLevel,

    /// Log line format.
    #[arg(long, global = true, env = "IMAGESWAP_LOG_FORMAT", default_value = "text",
        value_parser = choice::<LogFormat>())]
    pub log_format: LogFormat,
}

/// `IMAGESWAP_LOG_LEVEL`: the original's `INFO`/`DEBUG`, or any tracing
/// level, in any case (`WARNING`, `CRITICAL` and `FATAL` as Python spells them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

impl SettingValue for LogLevel {
    const EXPECTED: &'static str = "one of TRACE, DEBUG, INFO, WARN, ERROR, OFF";

    fn parse_setting(text: &str) -> Result<LogLevel, String> {
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" | "critical" | "fatal" => Ok(LogLevel::Error),
            "off" => Ok(LogLevel::Off),
            _ => Err("not a log level".to_owned()),
        }
    }
}

/// The filter of a level written as text; `None` for a value that is not a level.
pub fn level_filter(level: &str) -> Option<EnvFilter> {
    LogLevel::parse_setting(level.trim()).ok().map(LogLevel::filter)
}

impl LogLevel {
    /// The filter of this level; the libraries' own chatter stays at WARN.
    pub fn filter(self) -> EnvFilter {
        let level = match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Off => "off",
        };
        EnvFilter::new(format!(
            "{level},hyper=warn,h2=warn,rustls=warn,kube=warn,tower=warn,notify=warn"
        ))
    }
}

/// The log settings of the command line, installed once the command knows
/// whether traces are exported too (`serve` starts them first).
#[derive(Debug)]
pub struct Logs {
    filter: EnvFilter,
    format: LogFormat,
}

impl Logs {
    pub fn new(args: &LogArgs) -> Logs {
        Logs {
            filter: args.log_level.filter(),
            format: args.log_format,
        }
    }

    /// Installs the global subscriber, writing each line straight to
    /// standard error (the tools: a line is seen the moment it is logged).
    /// Safe to call more than once (tests): later calls are ignored.
    pub fn init(self, traces: Option<&Traces>) {
        let ansi = std::io::stderr().is_terminal();
        let _ = dispatch(self.filter, self.format, traces, std::io::stderr, ansi).try_init();
        log_panics();
    }

    /// Installs the global subscriber for the server: lines go through a
    /// bounded queue to a writer thread that writes them in batches.
    ///
    /// Why: `serve` logs one line per admission, and a `write` system call
    /// per line to an unbuffered stderr cost more CPU than the admission
    /// itself (`loadtest/run.sh compare`: 59 µs per request at INFO against
    /// 27 µs at WARN). The request path now only formats the line and
    /// enqueues it; when the writer falls behind, lines are dropped (never
    /// a blocked request) and counted. Keep the guard until exit: dropping
    /// it flushes what is queued.
    pub fn init_buffered(self, traces: Option<&Traces>) -> (WorkerGuard, ErrorCounter) {
        let filter = self.filter;
        let ansi = std::io::stderr().is_terminal();
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .thread_name("imageswap-log")
            .finish(BufWriter::with_capacity(
                LOG_WRITE_BUFFER_BYTES,
                std::io::stderr(),
            ));
        let dropped = writer.error_counter();
        let _ = dispatch(filter, self.format, traces, writer, ansi).try_init();
        log_panics();
        (guard, dropped)
    }
}

/// Makes a panic one log line in the log's format (JSON under
/// `--log-format json`) instead of the standard hook's plain-text lines on
/// stderr, which broke the JSON log when a registry check panicked. The
/// code that catches a panic (the admission stack, the registry checks)
/// still answers for it; this only says where it happened.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
            (Some(text), _) => *text,
            (None, Some(text)) => text.as_str(),
            (None, None) => "(no message)",
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = message,
            location = location.as_str(),
            thread = thread.name().unwrap_or("unnamed"),
            "A thread panicked."
        );
    }));
}

/// Lines the server's log queue holds before it drops (about 10 s of
/// admissions at a high rate; a few MiB at most).
const LOG_QUEUE_LINES: usize = 64 * 1024;
/// The writer thread's buffer: it flushes when full and whenever the queue
/// runs empty, so a quiet server's lines appear at once.
const LOG_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The subscriber: log lines to `writer`, and with `traces` the
/// OpenTelemetry layer. Tests install it for their own threads.
pub fn dispatch<W>(
    filter: EnvFilter,
    format: LogFormat,
    traces: Option<&Traces>,
    writer: W,
    ansi: bool,
) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log_level = filter.max_level_hint().unwrap_or(LevelFilter::INFO);
    let log_filter = filter.and(filter_fn(|meta| !meta.target().starts_with(spans::SPAN_TARGET)));
    let dispatch_slot: Arc<OnceLock<WeakDispatch>> = Arc::default();
    let logs = match format {
        // Colour only for a person at a terminal: escape codes in a log
        // pipeline (kubectl logs, Loki) are noise.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_target(false)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .event_format(JsonLines {
                dispatch: dispatch_slot.clone(),
            })
            .with_filter(log_filter)
            .boxed(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![logs];
    if let Some(traces) = traces {
        layers.push(traces.layer(log_level));
    }
    let dispatch = Dispatch::new(Registry::default().with(layers));
    // The formatter finds a span's trace context through the subscriber
    // it is part of; a weak reference, or the two would keep each other
    // alive. Without traces it is never set, and lines are written as they are.
    if traces.is_some() {
        let _ = dispatch_slot.set(dispatch.downgrade());
    }
    dispatch
}
