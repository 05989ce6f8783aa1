//! The `imageswap` binary: install the TLS crypto provider, parse the command
//! line and hand over to the library, which does everything else.

/// mimalloc instead of the system allocator: see its entry in Cargo.toml
/// for what it saves per admission.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // One process-wide rustls provider (ring), chosen before anything builds a
    // TLS config; a second install attempt is harmless and ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match imageswap::cli::Cli::from_env() {
        Ok(cli) => cli.run(),
        Err(code) => code,
    }
}
