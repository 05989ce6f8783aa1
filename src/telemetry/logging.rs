//! The `tracing` subscriber every command installs: one format for the server,
//! `init` and the tools, on standard error so standard output stays data.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Turns `IMAGESWAP_LOG_LEVEL` (the original's `INFO`/`DEBUG`, or any tracing
/// level in any case) into a filter; `None` for a value that is not a level.
pub fn level_filter(level: &str) -> Option<EnvFilter> {
    let level = level.trim().to_ascii_lowercase();
    let level = match level.as_str() {
        "warning" => "warn",
        "critical" | "fatal" => "error",
        other => other,
    };
    match level {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => Some(EnvFilter::new(format!(
            "{level},hyper=warn,h2=warn,rustls=warn,kube=warn,tower=warn,notify=warn"
        ))),
        _ => None,
    }
}

/// Installs the global subscriber. Safe to call more than once (tests): later
/// calls are ignored.
pub fn init(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: escape codes in a log
        // pipeline (kubectl logs, Loki) are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
