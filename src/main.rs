//! The `imageswap` binary: install the TLS crypto provider, parse the command
//! line and hand over to the library, which does everything else.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // One process-wide rustls provider (ring), chosen before anything builds a
    // TLS config; a second install attempt is harmless and ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();
    imageswap::cli::Cli::parse().run()
}
