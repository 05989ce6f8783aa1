//! The subcommands: each turns its parsed settings into work and an exit
//! code. Usage errors exit 2 (as clap does), so scripts can tell them from
//! results. `cli.rs` composes the settings and dispatches here; nothing here
//! knows the command line as a whole.

pub mod init;
pub mod maps_check;
pub mod serve;
pub mod swap;

use std::process::ExitCode;

/// Exit code for usage errors and unreadable inputs.
pub const EXIT_USAGE: u8 = 2;

/// Prints one clear line on stderr and returns the usage exit code.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("imageswap: {message}");
    ExitCode::from(EXIT_USAGE)
}
