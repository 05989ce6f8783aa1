//! `imageswap swap`: what each image becomes and which rule decided, for
//! people checking a maps file and for tests. Streams standard input, so a
//! cluster's worth of images (`kubectl get pods -A -o jsonpath=…`) goes
//! through in one pipe.
//!
//! With `--verify on` each swapped image is checked in its registry with the
//! server's client, settings and credentials (verify.md), and each line
//! says what the check found and what the pod would finally run: the
//! pre-flight check of a cluster's images before verification or a new
//! mirror is switched on. The images of a block are checked together, so
//! a block costs one round of registry requests, not one per line.
//!
//! With `--fail-on missing|error|any` (and `--verify`) the exit code gates
//! a CI pipeline: 1 when an image of that kind was found, once every line
//! is written; without it, 0 whatever the checks found (as before).
//!
//! With `--image-pull-secrets` each line also names the pull secret the
//! pod would be given for the image it finally runs (`-` for none).

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use std::sync::Arc;

use crate::admission::{PullSecrets, PullSecretsArgs};
use crate::rules::{RulesArgs, RulesSource, log_findings};
use crate::settings::choice;
use crate::swap::reference::{invalid_reason, invalid_result_reason};
use crate::swap::{Decision, Engine, EngineMode, Rule};
use crate::verify::{CheckImages, CheckOutcome, MirrorHosts, OnError, Verifier, VerifyArgs, VerifyMetrics};

/// How `imageswap swap` prints its decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum OutputFormat {
    /// One aligned line per image: image, result, rule, key.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which check answers make `imageswap swap --verify` exit 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// An image the mirror does not have (it would be kept).
    Missing,
    /// An image whose check could not answer.
    Error,
    /// Either.
    Any,
}

impl FailOn {
    fn matches(self, outcome: &CheckOutcome) -> bool {
        match (self, outcome) {
            (_, CheckOutcome::Present) => false,
            (FailOn::Any, _) => true,
            (FailOn::Missing, CheckOutcome::Missing | CheckOutcome::NoPlatform(_)) => true,
            (FailOn::Error, CheckOutcome::Error(_)) => true,
            _ => false,
        }
    }
}

/// The exit code when `--fail-on` found its kind of image.
const EXIT_FOUND: u8 = 1;

/// `imageswap swap`: the rules, the output format and the images.
#[derive(Clone, Debug, Args)]
pub struct SwapArgs {
    #[command(flatten)]
    pub rules: RulesArgs,

    /// Output format.
    #[arg(long, default_value = "text",
        value_parser = choice::<OutputFormat>())]
    pub output: OutputFormat,

    #[command(flatten)]
    pub verify: VerifyArgs,

    /// With --verify: exit 1 when an image is missing from its mirror, its check could not answer, or either.
    #[arg(long, value_parser = choice::<FailOn>())]
    pub fail_on: Option<FailOn>,

    #[command(flatten)]
    pub pull_secrets: PullSecretsArgs,

    /// Images to decide; when none are given, one per line from standard input.
    pub images: Vec<String>,
}

/// The registry checks of `--verify on`: the server's verifier on a
/// runtime of its own (the rest of `swap` is synchronous).
struct Checker {
    verifier: Verifier,
    runtime: tokio::runtime::Runtime,
    budget: std::time::Duration,
    on_error: OnError,
    fail_on: Option<FailOn>,
    /// Whether a check answered what `fail_on` names.
    failed: std::cell::Cell<bool>,
}

impl Checker {
    fn new(args: &VerifyArgs, fail_on: Option<FailOn>) -> Result<Checker, String> {
        let (verifier, credentials) = crate::reload::registry_verification_with(
            args,
            VerifyMetrics::new(),
            crate::verify::Tuning::default(),
        )
        .map_err(|e| e.to_string())?;
        credentials
            .load_once()
            .map_err(|e| format!("IMAGESWAP_REGISTRY_CONFIG: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime for registry checks: {e}"))?;
        Ok(Checker {
            verifier,
            runtime,
            budget: args.verify_timeout,
            on_error: args.verify_on_error,
            fail_on,
            failed: std::cell::Cell::new(false),
        })
    }

    /// One outcome per decision: `None` for images that are not swapped
    /// (never checked).
    fn check(&self, decisions: &[Decision<'_>], mirrors: &MirrorHosts) -> Vec<Option<CheckOutcome>> {
        let targets: Vec<Arc<str>> = decisions
            .iter()
            .filter(|d| d.changed())
            .filter_map(|d| d.result.as_deref().map(Arc::from))
            .collect();
        let outcomes = if targets.is_empty() {
            Vec::new()
        } else {
            self.runtime
                .block_on(async { self.verifier.check(targets, mirrors, self.budget).await })
        };
        if let Some(fail_on) = self.fail_on
            && outcomes.iter().any(|o| fail_on.matches(o))
        {
            self.failed.set(true);
        }
        let mut outcomes = outcomes.into_iter();
        decisions
            .iter()
            .map(|d| {
                if d.changed() && d.result.is_some() {
                    outcomes.next()
                } else {
                    None
                }
            })
            .collect()
    }

    /// What the pod would run: the swap, unless the check says keep.
    fn final_image<'a>(&self, image: &'a str, result: &'a str, outcome: Option<&CheckOutcome>) -> &'a str {
        match outcome {
            Some(CheckOutcome::Missing | CheckOutcome::NoPlatform(_)) => image,
            Some(CheckOutcome::Error(_)) if self.on_error == OnError::Keep => image,
            _ => result,
        }
    }
}

/// The `verified` field: `present`, `missing` or `error: <reason>`.
fn verified_text(outcome: &CheckOutcome) -> String {
    match outcome {
        CheckOutcome::Error(e) => format!("error: {e}"),
        CheckOutcome::NoPlatform(platform) => format!("missing: no {platform}"),
        other => other.as_str().to_owned(),
    }
}

/// Lines per aligned block of text output when reading a pipe: columns line
/// up within a block, and memory stays bounded however long the input is.
const TEXT_BLOCK_LINES: usize = 4096;
/// Standard input is read in chunks of this size: a block never waits for
/// more input than one read returned.
const STDIN_BUFFER_BYTES: usize = 64 * 1024;

pub fn run(args: &SwapArgs) -> ExitCode {
    let source = RulesSource::from(&args.rules);
    let mut loaded = match source.load() {
        Ok(loaded) => loaded,
        Err(e) => return super::usage_error(e),
    };
    loaded.engine = loaded.engine.keeping(&args.rules.keep_images());
    if let RulesSource::Maps(path) = &source {
        log_findings(path, &loaded.findings);
    }
    if loaded.engine.mode() == EngineMode::Legacy {
        tracing::warn!("LEGACY mode is deprecated; move to a maps file (IMAGESWAP_MODE=MAPS).");
    }
    if args.fail_on.is_some() && !args.verify.enabled() {
        return super::usage_error(
            "--fail-on needs --verify: without checks no image is missing or in error",
        );
    }
    let checker = if args.verify.enabled() {
        match Checker::new(&args.verify, args.fail_on) {
            Ok(checker) => Some(checker),
            Err(e) => return super::usage_error(e),
        }
    } else {
        None
    };
    let checker = checker.as_ref();
    let pull_secrets = args.pull_secrets.pull_secrets();
    let output = Output {
        format: args.output,
        pull_secrets: &pull_secrets,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let result = if args.images.is_empty() {
        let stdin = std::io::stdin();
        let block = if stdin.is_terminal() { 1 } else { TEXT_BLOCK_LINES };
        let input = std::io::BufReader::with_capacity(STDIN_BUFFER_BYTES, stdin.lock());
        swap_stream(&loaded.engine, checker, output, input, &mut out, block)
    } else {
        write_block(&loaded.engine, checker, output, &args.images, &mut out)
    };
    let failed = checker.is_some_and(|c| c.failed.get());
    match result.and_then(|()| out.flush()) {
        Ok(()) if failed => ExitCode::from(EXIT_FOUND),
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
    checker: Option<&Checker>,
    format: Output<'_>,
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
            write_block(engine, checker, format, &block, out)?;
            block.clear();
            out.flush()?;
        }
    }
    write_block(engine, checker, format, &block, out)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    image: &'a str,
    result: &'a str,
    changed: bool,
    rule: &'static str,
    key: Option<&'a str>,
    /// Why the image is not a valid reference (rule `invalid`), or why the
    /// rule's result is not (`invalid-result`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// `--verify on` only: what the check found (`null`: not swapped, not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<Option<String>>,
    /// `--verify on` only: the image the pod would run.
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    final_image: Option<String>,
    /// `--image-pull-secrets` only: the secret the pod would get for the
    /// image it runs (`null`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_secret: Option<Option<&'a str>>,
}

/// How the lines are written: the format, and the pull secrets to name.
#[derive(Clone, Copy)]
struct Output<'a> {
    format: OutputFormat,
    pull_secrets: &'a PullSecrets,
}

/// The reason of an `invalid` or `invalid-result` decision, for the output.
fn reason(image: &str, decision: &Decision<'_>) -> Option<String> {
    match (decision.rule, &decision.rejected) {
        (Rule::Invalid, _) => invalid_reason(image),
        (Rule::InvalidResult, Some(result)) => Some(format!(
            "rule {} gives an invalid image \"{result}\": {}",
            decision.key.unwrap_or("-"),
            invalid_result_reason(result).unwrap_or_default()
        )),
        _ => None,
    }
}

fn write_block(
    engine: &Engine,
    checker: Option<&Checker>,
    output: Output<'_>,
    images: &[String],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let decisions: Vec<Decision<'_>> = images.iter().map(|i| engine.decide(i)).collect();
    let checks = checker.map(|c| c.check(&decisions, engine.mirror_hosts()));
    let check_of = |i: usize| checks.as_ref().and_then(|c| c[i].as_ref());
    // What the pod would run (with `--verify on` only).
    let final_of = |i: usize, image: &str, d: &Decision<'_>| {
        checker.map(|c| {
            c.final_image(image, d.result.as_deref().unwrap_or(image), check_of(i))
                .to_owned()
        })
    };
    // The secret for the image the pod runs (with `--image-pull-secrets` only).
    let secret_of = |i: usize, image: &str, d: &Decision<'_>| {
        (!output.pull_secrets.is_empty()).then(|| {
            let runs =
                final_of(i, image, d).unwrap_or_else(|| d.result.clone().unwrap_or_else(|| image.to_owned()));
            output.pull_secrets.secret_for(&runs).map(str::to_owned)
        })
    };
    match output.format {
        OutputFormat::Json => {
            for (i, (image, d)) in images.iter().zip(&decisions).enumerate() {
                let secret = secret_of(i, image, d);
                let line = JsonLine {
                    image,
                    result: d.result.as_deref().unwrap_or(image),
                    changed: d.changed(),
                    rule: d.rule.as_str(),
                    key: d.key,
                    reason: reason(image, d),
                    verified: checker.map(|_| check_of(i).map(verified_text)),
                    final_image: final_of(i, image, d),
                    pull_secret: secret.as_ref().map(Option::as_deref),
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        OutputFormat::Text => {
            let result_text = |d: &Decision<'_>| d.result.clone().unwrap_or_else(|| "(unchanged)".to_owned());
            let results: Vec<String> = decisions.iter().map(result_text).collect();
            // The key column: the key, or why an invalid image is invalid.
            let keys: Vec<String> = images
                .iter()
                .zip(&decisions)
                .map(|(image, d)| reason(image, d).unwrap_or_else(|| d.key.unwrap_or("-").to_owned()))
                .collect();
            let image_width = images.iter().map(|i| i.chars().count()).max().unwrap_or(0);
            let result_width = results.iter().map(|r| r.chars().count()).max().unwrap_or(0);
            let key_width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
            for (i, ((image, d), result)) in images.iter().zip(&decisions).zip(&results).enumerate() {
                let rule = d.rule.as_str();
                let key = &keys[i];
                let secret =
                    secret_of(i, image, d).map(|s| format!("  pull secret: {}", s.as_deref().unwrap_or("-")));
                let secret = secret.as_deref().unwrap_or("");
                match final_of(i, image, d) {
                    None if secret.is_empty() => writeln!(
                        out,
                        "{image:<image_width$}  {result:<result_width$}  {rule:<8}  {key}"
                    )?,
                    None => writeln!(
                        out,
                        "{image:<image_width$}  {result:<result_width$}  {rule:<8}  {key:<key_width$}{secret}"
                    )?,
                    Some(final_image) => {
                        let verified = check_of(i).map_or_else(|| "-".to_owned(), verified_text);
                        writeln!(
                            out,
                            "{image:<image_width$}  {result:<result_width$}  {rule:<8}  {key:<key_width$}  verified: {verified}  final: {final_image}{secret}"
                        )?
                    }
                }
            }
        }
    }
    Ok(())
}
