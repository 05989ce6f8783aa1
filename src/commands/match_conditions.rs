//! `imageswap maps match-conditions`: prints the `matchConditions` generated
//! from the maps, the keep list, the pull-secret mapping and the disable
//! label (`crate::conditions`), for a GitOps pipeline that owns the webhook
//! configuration (`IMAGESWAP_DISABLE_AUTO_MWC=TRUE`) to paste in. `init`
//! writes the same list into the configuration it manages.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::conditions::{ConditionsArgs, MatchCondition};
use crate::settings::choice;

/// How the list is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum Output {
    /// A JSON list of `{name, expression}` objects.
    Json,
    /// The `matchConditions:` block of a webhook, YAML.
    Yaml,
}

/// `imageswap maps match-conditions`.
#[derive(Clone, Debug, Args)]
pub struct MatchConditionsArgs {
    #[command(flatten)]
    pub conditions: ConditionsArgs,

    /// json or yaml.
    #[arg(long, default_value = "yaml", value_parser = choice::<Output>())]
    pub output: Output,
}

pub fn run(args: &MatchConditionsArgs) -> ExitCode {
    let generated = match args.conditions.generate() {
        Ok(generated) => generated,
        Err(e) => return super::usage_error(e),
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&generated).unwrap_or_default() + "\n",
        Output::Yaml => to_yaml(&generated),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// The list as a YAML `matchConditions:` block. Each expression is written
/// as a JSON string, which YAML reads as a double-quoted scalar: no CEL
/// character (`'`, `:`, `#`, `!`) can change its meaning.
pub fn to_yaml(conditions: &[MatchCondition]) -> String {
    let mut out = String::from("matchConditions:\n");
    for condition in conditions {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        out.push_str(&format!(
            "  - name: {}\n    expression: {}\n",
            quote(&condition.name),
            quote(&condition.expression)
        ));
    }
    out
}
