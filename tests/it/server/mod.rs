//! The server in this process (`support::server`), over real TLS.

mod abuse;
mod http;
mod lifecycle;
mod loops;
mod metrics_format;
mod reload;
mod traces;
mod verify;
