//! `imageswap swap`: what each image becomes and which rule decided, for
//! people checking a maps file and for tests. Streams standard input, so a
//! cluster's worth of images (`kubectl get pods -A -o jsonpath=…`) goes
//! through in one pipe.

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::rules::{RulesArgs, RulesSource, log_findings};
use crate::settings::choice;
use crate::swap::reference::invalid_reason;
use crate::swap::{Decision, Engine, EngineMode, Rule};

/// How `imageswap swap` prints its decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum OutputFormat {
    /// One aligned line per image: image, result, rule, key.
    Text,
    /// One JSON object per line.
    Json,
}

/// `imageswap swap`: the rules, the output format and the images.
#[derive(Clone, Debug, Args)]
pub struct SwapArgs {
    #[command(flatten)]
    pub rules: RulesArgs,

    /// Output format.
    #[arg(long, default_value = "text",
        value_parser = choice::<OutputFormat>())]
    pub output: OutputFormat,

    /// Images to decide; when none are given, one per line from standard input.
    pub images: Vec<String>,
}

/// Lines per aligned block of text output when reading a pipe: columns line
/// up within a block, and memory stays bounded however long the input is.
const TEXT_BLOCK_LINES: usize = 4096;
/// Standard input is read in chunks of this size: a block never waits for
/// more input than one read returned.
const STDIN_BUFFER_BYTES: usize = 64 * 1024;

pub fn run(args: &SwapArgs) -> ExitCode {
    let source = RulesSource::from(&args.rules);
    let loaded = match source.load() {
        Ok(loaded) => loaded,
        Err(e) => return super::usage_error(e),
    };
    if let RulesSource::Maps(path) = &source {
        log_findings(path, &loaded.findings);
    }
    if loaded.engine.mode() == EngineMode::Legacy {
        tracing::warn!("LEGACY mode is deprecated; move to a maps file (IMAGESWAP_MODE=MAPS).");
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let result = if args.images.is_empty() {
        let stdin = std::io::stdin();
        let block = if stdin.is_terminal() { 1 } else { TEXT_BLOCK_LINES };
        let input = std::io::BufReader::with_capacity(STDIN_BUFFER_BYTES, stdin.lock());
        swap_stream(&loaded.engine, args.output, input, &mut out, block)
    } else {
        write_block(&loaded.engine, args.output, &args.images, &mut out)
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => super::usage_error(format!("cannot write output: {e}")),
    }
}

/// Reads one image per line (exactly as written, only the line break
/// removed; empty lines skipped) and writes decisions in blocks: a block
/// ends at `block_lines`, or as soon as no more input is waiting, so a slow
/// producer (`kubectl get … -w | imageswap swap`) sees each line's answer at
/// once while a fast one still gets aligned blocks.
fn swap_stream<R: std::io::Read>(
    engine: &Engine,
    format: OutputFormat,
    mut input: std::io::BufReader<R>,
    out: &mut impl Write,
    block_lines: usize,
) -> std::io::Result<()> {
    let mut block: Vec<String> = Vec::with_capacity(block_lines);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let read = input.read_until(b'\n', &mut raw)?;
        if read == 0 {
            break;
        }
        if raw.last() == Some(&b'\n') {
            raw.pop();
        }
        if raw.is_empty() {
            continue;
        }
        block.push(String::from_utf8_lossy(&raw).into_owned());
        if block.len() >= block_lines || input.buffer().is_empty() {
            write_block(engine, format, &block, out)?;
            block.clear();
            out.flush()?;
        }
    }
    write_block(engine, format, &block, out)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    image: &'a str,
    result: &'a str,
    changed: bool,
    rule: &'static str,
    key: Option<&'a str>,
    /// Why the image is not a valid reference (rule `invalid` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The reason of an `invalid` decision, for the output.
fn reason(image: &str, decision: &Decision<'_>) -> Option<String> {
    (decision.rule == Rule::Invalid)
        .then(|| invalid_reason(image))
        .flatten()
}

fn write_block(
    engine: &Engine,
    format: OutputFormat,
    images: &[String],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let decisions: Vec<Decision<'_>> = images.iter().map(|i| engine.decide(i)).collect();
    match format {
        OutputFormat::Json => {
            for (image, d) in images.iter().zip(&decisions) {
                let line = JsonLine {
                    image,
                    result: d.result.as_deref().unwrap_or(image),
                    changed: d.changed(),
                    rule: d.rule.as_str(),
                    key: d.key,
                    reason: reason(image, d),
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        OutputFormat::Text => {
            let result_text = |d: &Decision<'_>| d.result.clone().unwrap_or_else(|| "(unchanged)".to_owned());
            let results: Vec<String> = decisions.iter().map(result_text).collect();
            let image_width = images.iter().map(|i| i.chars().count()).max().unwrap_or(0);
            let result_width = results.iter().map(|r| r.chars().count()).max().unwrap_or(0);
            for ((image, d), result) in images.iter().zip(&decisions).zip(&results) {
                let rule = d.rule.as_str();
                match reason(image, d) {
                    // The key column of an invalid image says why instead.
                    Some(why) => writeln!(
                        out,
                        "{image:<image_width$}  {result:<result_width$}  {rule:<8}  {why}"
                    )?,
                    None => writeln!(
                        out,
                        "{image:<image_width$}  {result:<result_width$}  {rule:<8}  {key}",
                        key = d.key.unwrap_or("-"),
                    )?,
                }
            }
        }
    }
    Ok(())
}
