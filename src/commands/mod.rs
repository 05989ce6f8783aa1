//! The subcommands: each turns parsed arguments into work and an exit code.
//! Usage errors exit 2 (as clap does), so scripts can tell them from results.

mod maps_check;
mod serve;
mod swap;

use std::process::ExitCode;

use crate::cli::{Cli, Command, MapsCommand};
use crate::telemetry::logging;

/// Exit code for usage errors and unreadable inputs.
pub const EXIT_USAGE: u8 = 2;

/// Runs the command line's subcommand.
pub fn run(cli: Cli) -> ExitCode {
    let logs = logging::Logs::new(&cli.log_level, cli.log_format);
    match cli.command {
        // `serve` installs the logs itself, with the trace exporter when one is configured.
        Command::Serve(args) => serve::run(&args, logs),
        Command::Swap(args) => {
            logs.init(None);
            swap::run(&args)
        }
        Command::Maps(MapsCommand::Check { file }) => {
            logs.init(None);
            maps_check::run(&file)
        }
        Command::Init(args) => {
            logs.init(None);
            crate::init::run(&args)
        }
    }
}

/// Prints one clear line on stderr and returns the usage exit code.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("imageswap: {message}");
    ExitCode::from(EXIT_USAGE)
}
