//! The command line: `serve`, `init`, `swap` and `maps check`, with clap
//! derive. Every flag has an environment variable (the original's names where
//! it had one, `IMAGESWAP_*` otherwise), so the manifests configure the same
//! program a person runs by hand. Nothing else in the crate reads the
//! environment for settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::logging::LogFormat;

/// The maps file path the original ImageSwap reads (a ConfigMap mount).
pub const DEFAULT_MAPS_FILE: &str = "/app/maps/imageswap-maps.conf";

#[derive(Debug, Parser)]
#[command(
    name = "imageswap",
    version,
    about = "Rewrite container images to other registries, as a Kubernetes mutating webhook"
)]
pub struct Cli {
    /// Log level: INFO or DEBUG (the original's), or any tracing level.
    #[arg(long, global = true, env = "IMAGESWAP_LOG_LEVEL", default_value = "INFO", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log line format.
    #[arg(long, global = true, env = "IMAGESWAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, ignore_case = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain what each image becomes under a maps file (arguments or stdin).
    Swap(SwapArgs),
    /// Work with maps files.
    #[command(subcommand)]
    Maps(MapsCommand),
}

/// Which rules decide: the maps file, or the deprecated single prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum Mode {
    /// The maps file (`IMAGESWAP_MAPS_FILE`).
    Maps,
    /// Only `IMAGE_PREFIX` (deprecated).
    Legacy,
}

/// Where the swap rules come from; shared by `swap` and `serve`.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// The maps file.
    #[arg(long = "maps", env = "IMAGESWAP_MAPS_FILE", default_value = DEFAULT_MAPS_FILE)]
    pub maps_file: PathBuf,

    /// MAPS or LEGACY (deprecated).
    #[arg(long, env = "IMAGESWAP_MODE", value_enum, default_value_t = Mode::Maps, ignore_case = true)]
    pub mode: Mode,

    /// The LEGACY mode prefix (deprecated).
    #[arg(long, env = "IMAGE_PREFIX")]
    pub prefix: Option<String>,
}

/// How `imageswap swap` prints its decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum OutputFormat {
    /// One aligned line per image: image, result, rule, key.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, ignore_case = true)]
    pub output: OutputFormat,

    /// Images to decide; when none are given, one per line from standard input.
    pub images: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum MapsCommand {
    /// Lint a maps file: one line per finding; exit 1 on an invalid line or no `default`.
    Check {
        /// The maps file to check.
        file: PathBuf,
    },
}

fn parse_log_level(value: &str) -> Result<String, String> {
    crate::telemetry::logging::level_filter(value)
        .map(|_| value.to_owned())
        .ok_or_else(|| "expected one of TRACE, DEBUG, INFO, WARN, ERROR, OFF".to_owned())
}
