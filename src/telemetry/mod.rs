//! Telemetry: one place owns every signal the program emits: structured
//! logs, Prometheus metrics, and OpenTelemetry traces (the spans, their
//! settings, and the bounded queue that exports them off the request path).

pub mod json_lines;
pub mod logging;
pub mod metrics;
pub mod span_queue;
pub mod spans;
pub mod trace_config;
pub mod traces;
