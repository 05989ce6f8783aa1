//! The subcommands: each turns its parsed settings into work and an exit
//! code. Usage errors exit 2 (as clap does), so scripts can tell them from
//! results. `cli.rs` composes the settings and dispatches here; nothing here
//! knows the command line as a whole.

pub mod init;
pub mod maps_check;
pub mod match_conditions;
pub mod serve;
pub mod swap;

use std::process::ExitCode;

/// Exit code for usage errors and unreadable inputs.
pub const EXIT_USAGE: u8 = 2;

/// The one prefix of every start-up error.
pub const ERROR_PREFIX: &str = "imageswap: ";

/// Prints one clear line on stderr, the shape of every start-up error (a
/// refused setting, an unreadable file a setting names, a bad command
/// line), and returns the usage exit code.
pub(crate) fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{ERROR_PREFIX}{message}");
    ExitCode::from(EXIT_USAGE)
}
