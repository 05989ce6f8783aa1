//! Loading the swap rules: read the maps file (or take the LEGACY prefix),
//! compile an engine and report what the file's author should know. The only
//! I/O around the pure `swap` core; `swap` and `serve` both load through here.

use std::path::{Path, PathBuf};

use crate::cli::{EngineArgs, Mode};
use crate::swap::{Engine, Finding, FindingKind};

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

impl From<&EngineArgs> for RulesSource {
    fn from(args: &EngineArgs) -> Self {
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
            RulesSource::Maps(path) => {
                let text = read_maps_text(path)?;
                let (engine, findings) = Engine::from_maps_text(&text);
                Ok(Loaded { engine, findings })
            }
            RulesSource::Legacy(prefix) => Ok(Loaded {
                engine: Engine::legacy(prefix.as_deref()),
                findings: Vec::new(),
            }),
        }
    }
}

/// Reads a maps file as UTF-8 text.
pub fn read_maps_text(path: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
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
            FindingKind::InvalidLine | FindingKind::NoDefault => {
                tracing::warn!(%path, line = finding.line, "{}", finding.message)
            }
            _ => tracing::debug!(%path, line = finding.line, "{}", finding.message),
        }
    }
}
