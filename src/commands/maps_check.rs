//! `imageswap maps check FILE`: the lint a person runs before shipping a maps
//! file. Findings come from the same parser and compiler the server uses.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::swap::OutputFormat;
use crate::rules::read_maps_text;
use crate::settings::choice;
use crate::swap::{Engine, MapsFile, Severity, lint};

/// `imageswap maps check FILE`.
#[derive(Clone, Debug, Args)]
pub struct MapsCheckArgs {
    /// The maps file to check.
    pub file: PathBuf,

    /// `text` (one line per finding) or `json` (one document, for CI).
    #[arg(long, default_value = "text", value_parser = choice::<OutputFormat>())]
    pub output: OutputFormat,
}

/// One finding in `--output json`.
#[derive(serde::Serialize)]
struct JsonFinding<'a> {
    line: Option<usize>,
    severity: &'static str,
    kind: &'static str,
    message: &'a str,
}

/// `--output json`: the whole report, one document.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    file: String,
    errors: usize,
    warnings: usize,
    findings: Vec<JsonFinding<'a>>,
}

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
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
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    match args.output {
        OutputFormat::Json => {
            let report = JsonReport {
                file: shown.to_string(),
                errors,
                warnings: findings.len() - errors,
                findings: findings
                    .iter()
                    .map(|f| JsonFinding {
                        line: f.line,
                        severity: severity_word(f.severity),
                        kind: f.kind.as_str(),
                        message: &f.message,
                    })
                    .collect(),
            };
            let _ = serde_json::to_writer(&mut out, &report);
            let _ = writeln!(out);
        }
        OutputFormat::Text => {
            for finding in &findings {
                let level = severity_word(finding.severity);
                let _ = match finding.line {
                    Some(line) => writeln!(out, "{shown}:{line}: {level}: {}", finding.message),
                    None => writeln!(out, "{shown}: {level}: {}", finding.message),
                };
            }
            if findings.is_empty() {
                let _ = writeln!(out, "{shown}: ok");
            }
        }
    }
    // Errors can break pods or leave rules unapplied: a CI gate fails on
    // them; warnings alone pass.
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
