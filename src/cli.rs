//! The command line: `serve`, `init`, `swap` and `maps check`. Each module
//! owns its settings (`#[derive(clap::Args)]` beside the code that reads
//! them, every flag with its environment variable: the original's names
//! where it had one, `IMAGESWAP_*` otherwise); this file only composes them
//! and dispatches to `commands`. Nothing else in the crate reads the
//! environment for settings.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{self, maps_check::MapsCheckArgs, swap::SwapArgs};
use crate::config::ServeArgs;
use crate::init::InitArgs;
use crate::telemetry::logging::{LogArgs, Logs};

#[derive(Debug, Parser)]
#[command(
    name = "imageswap",
    version,
    about = "Rewrite container images to other registries, as a Kubernetes mutating webhook"
)]
pub struct Cli {
    #[command(flatten)]
    pub logs: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook server.
    Serve(Box<ServeArgs>),
    /// Explain what each image becomes under a maps file (arguments or stdin).
    Swap(SwapArgs),
    /// Work with maps files.
    #[command(subcommand)]
    Maps(MapsCommand),
    /// Init container: make sure the serving certificate and the webhook configuration exist
    /// (with --watch: the sidecar that keeps them right while the pod runs).
    Init(Box<InitArgs>),
}

#[derive(Debug, Subcommand)]
pub enum MapsCommand {
    /// Lint a maps file: one line per finding; exit 1 on an invalid line or no `default`.
    Check(MapsCheckArgs),
}

impl Cli {
    /// Runs the subcommand.
    pub fn run(self) -> ExitCode {
        let logs = Logs::new(&self.logs);
        match self.command {
            // `serve` installs the logs itself, with the trace exporter when one is configured.
            Command::Serve(args) => commands::serve::run(&args, logs),
            Command::Swap(args) => {
                logs.init(None);
                commands::swap::run(&args)
            }
            Command::Maps(MapsCommand::Check(args)) => {
                logs.init(None);
                commands::maps_check::run(&args)
            }
            Command::Init(args) => {
                logs.init(None);
                commands::init::run(&args)
            }
        }
    }
}
