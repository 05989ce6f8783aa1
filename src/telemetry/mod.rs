//! Telemetry: structured logs now; Prometheus metrics and OpenTelemetry traces
//! join here so that one place owns every signal the program emits.

pub mod logging;
pub mod metrics;
