//! `imageswap serve`: build the configuration (and, for `--dev`, find or
//! write the example maps file: the one piece of I/O settings need), start a
//! tokio runtime and
//! the trace exporter (when configured) with the logs, wire SIGTERM/SIGINT
//! to the server's shutdown (a second signal exits at once), run until it
//! has drained, then flush the spans still queued.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_appender::non_blocking::WorkerGuard;

use crate::config::{ServeArgs, ServeConfig, Transport};
use crate::rules::{DEFAULT_MAPS_FILE, RulesSource};
use crate::server::{self, Server, dev};
use crate::telemetry::logging::Logs;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::{self, Emitter, Traces};

/// How long the runtime waits for stray blocking work after the server returns.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
/// The server's log writer, while it runs.
type LogWriter = Arc<Mutex<Option<WorkerGuard>>>;

/// Exit code of an exit forced by a second signal (128 + SIGINT).
const EXIT_FORCED: i32 = 130;

pub fn run(args: &ServeArgs, logs: Logs) -> ExitCode {
    let mut config = match ServeConfig::from_args(args) {
        Ok(config) => config,
        Err(e) => return super::usage_error(e),
    };
    if config.dev {
        match dev_rules(config.rules) {
            Ok(rules) => config.rules = rules,
            Err(e) => {
                return super::usage_error(format_args!("--dev cannot write the example maps file: {e}"));
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("imageswap: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config, logs));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    code
}

/// `--dev` without a maps file of one's own: the example maps (the source
/// tree's when run from it, else a temporary copy).
fn dev_rules(rules: RulesSource) -> std::io::Result<RulesSource> {
    match rules {
        RulesSource::Maps(path) if path.as_os_str() == DEFAULT_MAPS_FILE && !path.exists() => {
            Ok(RulesSource::Maps(dev::example_maps_file()?))
        }
        other => Ok(other),
    }
}

async fn serve(config: ServeConfig, logs: Logs) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    // Before the logs: an unreadable `--registry-ca` is a bad setting,
    // reported as every other one.
    let verification = match server::build_verifier(&config, &metrics) {
        Ok(verification) => verification,
        Err(e) => return super::usage_error(e),
    };
    let traces = match &config.traces {
        None => None,
        Some(settings) => {
            let emitter = Emitter {
                pod_name: config.pod_name.as_deref(),
                namespace: config.namespace.as_deref(),
            };
            match Traces::new(settings, emitter, metrics.clone()) {
                Ok(mut traces) => {
                    traces.start_export();
                    Some(traces)
                }
                Err(e) => {
                    logs.init(None);
                    tracing::error!(error = %e, "Cannot start the trace exporter.");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    // Held to the end of `serve` (dropping it flushes the queued log
    // lines), or taken by a forced exit, which flushes it first.
    let (guard, dropped) = logs.init_buffered(traces.as_ref());
    metrics.watch_log_drops(dropped);
    let log_writer: LogWriter = Arc::new(Mutex::new(Some(guard)));
    if let Some(settings) = &config.traces {
        tracing::info!(
            endpoint = %settings.endpoint,
            service = settings.service_name,
            sampler = %settings.sampler,
            "Exporting traces over OTLP/HTTP."
        );
    }
    let code = run_server(config, metrics, verification, log_writer.clone()).await;
    if let Some(traces) = traces {
        traces.shutdown(traces::FLUSH_TIMEOUT).await;
    }
    code
}

async fn run_server(
    config: ServeConfig,
    metrics: Arc<Metrics>,
    verification: Option<server::Verification>,
    log_writer: LogWriter,
) -> ExitCode {
    if config.transport == Transport::InsecureHttp {
        tracing::warn!(
            "PLAIN HTTP (--insecure-http): admission reviews travel unencrypted. For local and load \
             tests only; the Kubernetes API server only calls webhooks over HTTPS."
        );
    }
    let dev = config.dev;
    let tls = config.transport != Transport::InsecureHttp;
    let server = match Server::bind_verified(config, metrics, verification).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the server.");
            return ExitCode::FAILURE;
        }
    };
    if dev {
        println!("{}", dev::try_it(server.local_addr(), tls));
    }
    match server.run(shutdown_signal(log_writer)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "The server stopped with an error.");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, and arms the second one to exit
/// at once.
async fn shutdown_signal(log_writer: LogWriter) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only SIGINT stops the server.");
            None
        }
    };
    let name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = recv(&mut terminate) => "SIGTERM",
    };
    tracing::info!(
        signal = name,
        "Shutdown requested; a second signal exits at once."
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = recv(&mut terminate) => {}
        }
        tracing::warn!("Second signal: exiting without finishing requests in flight.");
        // `exit` runs no destructors: flush the log lines still queued.
        drop(log_writer.lock().ok().and_then(|mut writer| writer.take()));
        std::process::exit(EXIT_FORCED);
    });
}

async fn recv(stream: &mut Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}
