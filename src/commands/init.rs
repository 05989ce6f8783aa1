//! `imageswap init`: the init container's command. Checks the settings
//! (exit 2 with one line naming the variable), starts a small runtime and a
//! Kubernetes client from the environment, and hands over to
//! [`init::run_with`], which does the work (`src/init/`).

use std::process::ExitCode;

use tracing::{error, info};

use crate::init::{self, InitArgs, InitError, InitSettings};

/// The subcommand: settings, a runtime, a client from the environment
/// (in-cluster, else the local kubeconfig), then [`init::run_with`].
pub fn run(args: &InitArgs) -> ExitCode {
    let settings = match InitSettings::from_args(args) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("imageswap init: {err}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
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
