//! `imageswap maps check FILE`: the lint a person runs before shipping a maps
//! file. Findings come from the same parser and compiler the server uses.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::rules::read_maps_text;
use crate::swap::{Engine, MapsFile, Severity, lint};

/// `imageswap maps check FILE`.
#[derive(Clone, Debug, Args)]
pub struct MapsCheckArgs {
    /// The maps file to check.
    pub file: PathBuf,
}

pub fn run(args: &MapsCheckArgs) -> ExitCode {
    let file = &args.file;
    let text = match read_maps_text(file) {
        Ok(text) => text,
        Err(e) => return super::usage_error(e),
    };
    let maps = MapsFile::parse(&text);
    let (engine, mut findings) = Engine::from_maps_file(&maps);
    findings.extend(lint::lint(&maps, &engine));
    findings.sort_by_key(|f| (f.line.is_none(), f.line));
    let mut out = std::io::stdout().lock();
    let shown = file.display();
    for finding in &findings {
        let level = match finding.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        let _ = match finding.line {
            Some(line) => writeln!(out, "{shown}:{line}: {level}: {}", finding.message),
            None => writeln!(out, "{shown}: {level}: {}", finding.message),
        };
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        ExitCode::from(1)
    } else {
        if findings.is_empty() {
            let _ = writeln!(out, "{shown}: ok");
        }
        ExitCode::SUCCESS
    }
}
