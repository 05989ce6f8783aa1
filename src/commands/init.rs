//! `imageswap init`: the init container's command. Checks the settings
//! (exit 2 with one line naming the variable), starts a small runtime and a
//! Kubernetes client from the environment, and hands over to
//! [`init::run_with`], which does the work (`src/init/`); with `--watch`, to
//! [`init::watch_with`], which then keeps it true until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info};

use crate::init::probes::{Probes, Started};
use crate::init::{self, InitArgs, InitError, InitSettings};
use crate::telemetry::metrics::InitMetrics;

/// The subcommand: settings, a runtime, a client from the environment
/// (in-cluster, else the local kubeconfig), then [`init::run_with`].
pub fn run(args: &InitArgs) -> ExitCode {
    let settings = match InitSettings::from_args(args) {
        Ok(settings) => settings,
        Err(err) => return super::usage_error(err),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    if args.watch {
        return runtime.block_on(watch(settings));
    }
    let result = runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(InitError::Client)?;
        init::run_with(client, &settings).await
    });
    match result {
        Ok(outcome) => {
            info!(
                pair = ?outcome.pair,
                not_after = %init::tls_pair::format_time(outcome.not_after),
                mwc = ?outcome.mwc,
                "Init finished; the pod may start serving."
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            error!("Init failed: {err}.");
            ExitCode::FAILURE
        }
    }
}

/// `init --watch`: the probe listener (when set), the first pass, then the
/// watch until SIGTERM or SIGINT. Exits 0 on a signal, 1 when the first pass
/// fails (the kubelet restarts the sidecar; the server waits unready).
async fn watch(settings: InitSettings) -> ExitCode {
    let metrics = Arc::new(InitMetrics::new());
    let started = Started::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(addr) = settings.watch_listen {
        match Probes::bind(addr, metrics.clone(), started.clone()).await {
            Ok(probes) => {
                let mut stopped = stopped.clone();
                tokio::spawn(probes.serve(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                }));
            }
            Err(err) => {
                error!(%addr, error = %err, "Cannot listen on IMAGESWAP_WATCH_LISTEN.");
                return ExitCode::FAILURE;
            }
        }
    }
    let result = async {
        let client = kube::Client::try_default().await.map_err(InitError::Client)?;
        init::watch_with(
            client,
            &settings,
            metrics,
            |outcome| {
                info!(
                    pair = ?outcome.pair,
                    not_after = %init::tls_pair::format_time(outcome.not_after),
                    mwc = ?outcome.mwc,
                    "Init finished; the pod may start serving."
                );
                started.set();
            },
            termination(),
        )
        .await
    }
    .await;
    let _ = stop.send(true);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("Init failed: {err}.");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (the kubelet) or SIGINT (by hand).
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
