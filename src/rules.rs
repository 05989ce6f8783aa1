//! Loading the swap rules: where they come from (the settings `swap` and
//! `serve` share), reading the maps file (or taking the LEGACY prefix),
//! compiling an engine and reporting what the file's author should know. The
//! only I/O around the pure `swap` core; every load — `swap`, the server's
//! start and its reloads — goes through [`compile_maps`].

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::settings::choice;
use crate::swap::{Engine, EngineMode, Finding, FindingKind, MapsFile, lint};

/// The maps file path the original ImageSwap reads (a ConfigMap mount).
pub const DEFAULT_MAPS_FILE: &str = "/app/maps/imageswap-maps.conf";

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
pub struct RulesArgs {
    /// The maps file.
    #[arg(long = "maps", env = "IMAGESWAP_MAPS_FILE", default_value = DEFAULT_MAPS_FILE)]
    pub maps_file: PathBuf,

    /// MAPS or LEGACY (deprecated).
    #[arg(long, env = "IMAGESWAP_MODE", default_value = "maps",
        value_parser = choice::<Mode>())]
    pub mode: Mode,

    /// The LEGACY mode prefix (deprecated).
    #[arg(long, env = "IMAGE_PREFIX")]
    pub prefix: Option<String>,

    /// Images never rewritten, compared exactly before any rule:
    /// placeholders another admission webhook replaces (Istio's `auto`).
    /// Comma-separated; empty keeps none.
    #[arg(long = "keep-images", env = "IMAGESWAP_KEEP_IMAGES", default_value = "auto")]
    pub keep_images: String,
}

impl RulesArgs {
    /// The keep list: `IMAGESWAP_KEEP_IMAGES` split on `,`, blanks dropped.
    pub fn keep_images(&self) -> Vec<String> {
        self.keep_images
            .split(',')
            .map(str::trim)
            .filter(|image| !image.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Why a maps file could not be loaded (a running server keeps its last good maps).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read maps file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("maps file {path} is not UTF-8 (byte {valid_up_to} is not part of a UTF-8 character)")]
    NotUtf8 { path: PathBuf, valid_up_to: usize },
}

/// A compiled engine with the findings of its file.
#[derive(Debug)]
pub struct Loaded {
    pub engine: Engine,
    pub findings: Vec<Finding>,
}

/// Where the rules come from.
#[derive(Clone, Debug)]
pub enum RulesSource {
    Maps(PathBuf),
    Legacy(Option<String>),
}

impl From<&RulesArgs> for RulesSource {
    fn from(args: &RulesArgs) -> Self {
        match args.mode {
            Mode::Maps => RulesSource::Maps(args.maps_file.clone()),
            Mode::Legacy => RulesSource::Legacy(args.prefix.clone()),
        }
    }
}

impl RulesSource {
    /// Builds the engine; only a maps file that cannot be read or is not
    /// UTF-8 fails.
    pub fn load(&self) -> Result<Loaded, LoadError> {
        match self {
            RulesSource::Maps(path) => Ok(compile_maps(&read_maps_text(path)?)),
            RulesSource::Legacy(prefix) => Ok(load_legacy(prefix.as_deref())),
        }
    }
}

/// Compiles maps file text: the one place an engine is built from a file.
pub fn compile_maps(text: &str) -> Loaded {
    let file = MapsFile::parse(text);
    let (engine, mut findings) = Engine::from_maps_file(&file);
    findings.extend(lint::invalid_results(&file, &engine));
    findings.sort_by_key(|f| (f.line.is_none(), f.line));
    Loaded { engine, findings }
}

/// The LEGACY rules: one prefix for every image, no file.
pub fn load_legacy(prefix: Option<&str>) -> Loaded {
    Loaded {
        engine: Engine::legacy(prefix),
        findings: Vec::new(),
    }
}

/// The server's warnings for LEGACY mode, logged once at start.
pub fn warn_legacy(engine: &Engine, prefix: Option<&str>) {
    if engine.mode() == EngineMode::Legacy {
        tracing::warn!("LEGACY mode is deprecated; move to a maps file (IMAGESWAP_MODE=MAPS).");
    }
    if prefix.unwrap_or_default().is_empty() {
        tracing::warn!("LEGACY mode without IMAGE_PREFIX: no image will be swapped.");
    }
}

/// Reads a maps file as UTF-8 text.
pub fn read_maps_text(path: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    maps_text(path, bytes)
}

/// The text of a maps file's bytes, which must be UTF-8 (`path` names it in
/// the error).
pub fn maps_text(path: &Path, bytes: Vec<u8>) -> Result<String, LoadError> {
    String::from_utf8(bytes).map_err(|e| LoadError::NotUtf8 {
        path: path.to_owned(),
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

/// Logs a load's findings as maps.md asks: each invalid line with its number
/// and reason, the deprecated separator and a missing `default` once per
/// load; the rest (duplicates, whitespace) at debug, for `maps check` to show.
pub fn log_findings(path: &Path, findings: &[Finding]) {
    let path = path.display();
    let deprecated: Vec<String> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::DeprecatedSeparator)
        .filter_map(|f| f.line.map(|l| l.to_string()))
        .collect();
    if !deprecated.is_empty() {
        tracing::warn!(%path, lines = %deprecated.join(","), "The single `:` separator is deprecated; use `::`.");
    }
    for finding in findings {
        match finding.kind {
            FindingKind::DeprecatedSeparator => {}
            FindingKind::InvalidLine | FindingKind::NoDefault | FindingKind::InvalidResult => {
                tracing::warn!(%path, line = finding.line, "{}", finding.message)
            }
            _ => tracing::debug!(%path, line = finding.line, "{}", finding.message),
        }
    }
}
