//! The command line: `serve`, `init`, `swap` and `maps check`. Each module
//! owns its settings (`#[derive(clap::Args)]` beside the code that reads
//! them, every flag with its environment variable: the original's names
//! where it had one, `IMAGESWAP_*` otherwise); this file only composes them
//! and dispatches to `commands`. Nothing else in the crate reads the
//! environment for settings.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use crate::commands::{
    self, maps_check::MapsCheckArgs, match_conditions::MatchConditionsArgs, swap::SwapArgs,
};
use crate::config::ServeArgs;
use crate::init::InitArgs;
use crate::telemetry::logging::{LogArgs, Logs};

#[derive(Debug, Parser)]
#[command(
    name = "imageswap",
    version,
    about = "Rewrite container images to other registries, as a Kubernetes mutating webhook"
)]
pub struct Cli {
    #[command(flatten)]
    pub logs: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook server.
    Serve(Box<ServeArgs>),
    /// Explain what each image becomes under a maps file (arguments or stdin).
    Swap(Box<SwapArgs>),
    /// Work with maps files.
    #[command(subcommand)]
    Maps(MapsCommand),
    /// Init container: make sure the serving certificate and the webhook configuration exist
    /// (with --watch: the sidecar that keeps them right while the pod runs).
    Init(Box<InitArgs>),
}

#[derive(Debug, Subcommand)]
pub enum MapsCommand {
    /// Lint a maps file: one line per finding; exit 1 on an invalid line or no `default`.
    Check(MapsCheckArgs),
    /// Print the webhook's matchConditions generated from the maps (CEL that lets the API
    /// server skip pods that certainly need no change), for an MWC you manage yourself.
    MatchConditions(Box<MatchConditionsArgs>),
}

impl Cli {
    /// The process's command line. A refused one is reported as every
    /// start-up error is (`commands::usage_error`: one line, one prefix)
    /// and gives the exit code to return; help and version print as clap
    /// prints them.
    pub fn from_env() -> Result<Cli, ExitCode> {
        Cli::try_parse().map_err(|error| match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
            _ => commands::usage_error(parse_error_line(&error)),
        })
    }

    /// Runs the subcommand.
    pub fn run(self) -> ExitCode {
        let logs = Logs::new(&self.logs);
        match self.command {
            // `serve` installs the logs itself, with the trace exporter when one is configured.
            Command::Serve(args) => commands::serve::run(&args, logs),
            Command::Swap(args) => {
                logs.init(None);
                commands::swap::run(&args)
            }
            Command::Maps(MapsCommand::Check(args)) => {
                logs.init(None);
                commands::maps_check::run(&args)
            }
            Command::Maps(MapsCommand::MatchConditions(args)) => {
                logs.init(None);
                commands::match_conditions::run(&args)
            }
            Command::Init(args) => {
                logs.init(None);
                commands::init::run(&args)
            }
        }
    }
}

/// clap's error on one line: its message and tips (`error: ` dropped, the
/// prefix is ours), then the usage of the (sub)command and where its
/// settings are listed. clap's own format spreads them over paragraphs
/// and ends with a generic "try '--help'" that does not say whose help.
pub fn parse_error_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let mut parts: Vec<String> = Vec::new();
    let mut usage = None;
    for paragraph in rendered.split("\n\n") {
        let text = paragraph
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(found) = text.strip_prefix("Usage: ") {
            usage = Some(found.to_owned());
        } else if !text.is_empty() && !text.starts_with("For more information") {
            parts.push(text.strip_prefix("error: ").unwrap_or(&text).to_owned());
        }
    }
    let mut line = parts.join("; ");
    if let Some(usage) = usage {
        let command: Vec<&str> = usage
            .split_whitespace()
            .take_while(|word| !word.starts_with(['[', '<']))
            .collect();
        line.push_str(&format!(
            "; usage: {usage} (`{} --help` lists the settings)",
            command.join(" ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::config::ServeConfig;
    use crate::init::InitSettings;
    use crate::settings::SettingName;

    /// A value no setting of ours accepts, except those that take any text.
    const BAD: &str = "!bad value!";

    /// Every subcommand's path on the command line, with its settings.
    fn subcommands() -> Vec<(Vec<&'static str>, clap::Command)> {
        let cli = Cli::command();
        let mut found = Vec::new();
        for sub in cli.get_subcommands() {
            let name: &'static str = Box::leak(sub.get_name().to_owned().into_boxed_str());
            if sub.has_subcommands() {
                for leaf in sub.get_subcommands() {
                    let leaf_name: &'static str = Box::leak(leaf.get_name().to_owned().into_boxed_str());
                    found.push((vec![name, leaf_name], leaf.clone()));
                }
            } else {
                found.push((vec![name], sub.clone()));
            }
        }
        found
    }

    /// The whole start-up check of a command line: clap's parse, then the
    /// typed configuration of the subcommand.
    fn start(argv: &[String]) -> Result<(), String> {
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match &cli.command {
            Command::Serve(args) => ServeConfig::from_args(args).map(drop).map_err(|e| e.to_string()),
            Command::Init(args) => InitSettings::from_args(args).map(drop).map_err(|e| e.to_string()),
            Command::Swap(_) | Command::Maps(_) => Ok(()),
        }
    }

    #[test]
    fn every_bad_setting_is_one_line_naming_variable_flag_value_and_what_is_accepted() {
        let globals: Vec<clap::Arg> = Cli::command().get_arguments().cloned().collect();
        let mut refused = 0;
        for (path, sub) in subcommands() {
            for arg in sub.get_arguments().chain(globals.iter()) {
                let Some(long) = arg.get_long() else { continue };
                if ["help", "version"].contains(&long) || !arg.get_action().takes_values() {
                    continue;
                }
                let mut argv: Vec<String> = std::iter::once("imageswap")
                    .chain(path.iter().copied())
                    .map(str::to_owned)
                    .collect();
                if path == ["maps", "check"] {
                    argv.push("maps.conf".to_owned());
                }
                argv.push(format!("--{long}={BAD}"));
                let Err(message) = start(&argv) else {
                    // Takes any text: a path, a name, a prefix.
                    continue;
                };
                refused += 1;
                let name = SettingName::of(arg).to_string();
                let line = message.trim_end();
                assert_eq!(line.lines().count(), 1, "{argv:?}: {message}");
                assert!(line.contains(&name), "{argv:?} names {name}: {message}");
                assert!(line.contains(BAD), "{argv:?} shows the value: {message}");
                assert!(
                    line.contains("expected") || line.contains("must"),
                    "{argv:?} says what is accepted: {message}"
                );
            }
        }
        // The typed settings of serve, init, swap and the globals.
        assert!(refused >= 25, "only {refused} settings refused a bad value");
    }

    #[test]
    fn every_boolean_reads_true_false_in_any_case_and_1_0() {
        for (path, sub) in subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let defaults = arg.get_default_values();
                if !matches!(defaults.first().and_then(|d| d.to_str()), Some("false")) {
                    continue;
                }
                for (value, expected) in [("TRUE", true), ("False", false), ("1", true), ("0", false)] {
                    let mut argv = vec!["imageswap".to_owned()];
                    argv.extend(path.iter().map(|p| (*p).to_owned()));
                    argv.push(format!("--{long}={value}"));
                    let matches = Cli::command()
                        .try_get_matches_from(&argv)
                        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                    let sub_matches = matches.subcommand().map(|(_, m)| m).expect("subcommand");
                    assert_eq!(
                        sub_matches.get_one::<bool>(arg.get_id().as_str()),
                        Some(&expected),
                        "{argv:?}"
                    );
                }
            }
        }
    }
}
