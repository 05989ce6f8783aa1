//! docs/configuration.md names every environment variable the program
//! reads: each `env` of every subcommand's arguments, taken from the
//! command line definition itself, so a new setting cannot go undocumented.

use clap::CommandFactory;
use imageswap::cli::Cli;

use crate::support::read;

fn variables(command: &clap::Command, found: &mut Vec<String>) {
    for arg in command.get_arguments() {
        if let Some(name) = arg.get_env() {
            found.push(name.to_string_lossy().into_owned());
        }
    }
    for sub in command.get_subcommands() {
        variables(sub, found);
    }
}

#[test]
fn configuration_md_names_every_variable() {
    let docs = read("docs/configuration.md");
    let mut found = Vec::new();
    variables(&Cli::command(), &mut found);
    found.sort();
    found.dedup();
    assert!(
        found.iter().any(|v| v == "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{found:?}"
    );
    assert!(found.len() > 20, "{found:?}");
    let missing: Vec<&String> = found
        .iter()
        .filter(|v| !docs.contains(&format!("| `{v}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in a table of docs/configuration.md: {missing:?}"
    );
}

/// Every `(variable, flag, default)` of the program, from clap's metadata.
/// A default computed at start (not clap's) is written in the help text as
/// `[default: …]`.
fn defaults(command: &clap::Command, found: &mut Vec<(String, String, Option<String>)>) {
    for arg in command.get_arguments() {
        if let (Some(name), Some(long)) = (arg.get_env(), arg.get_long()) {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let default = arg
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned())
                .or_else(|| {
                    let start = help.find("[default: ")? + "[default: ".len();
                    let rest = &help[start..];
                    Some(rest[..rest.find([']', ';'])?].to_owned())
                });
            found.push((name.to_string_lossy().into_owned(), format!("--{long}"), default));
        }
    }
    for sub in command.get_subcommands() {
        defaults(sub, found);
    }
}

#[test]
fn configuration_md_gives_the_programs_flag_and_default() {
    let docs = read("docs/configuration.md");
    let mut found = Vec::new();
    defaults(&Cli::command(), &mut found);
    let mut checked = 0;
    for row in docs.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(variable) = cells[1].strip_prefix('`').and_then(|v| v.strip_suffix('`')) else {
            continue;
        };
        // A variable two subcommands read (IMAGESWAP_POD_NAME, …) has a
        // row in each table: the row matches one of them.
        let program: Vec<&(String, String, Option<String>)> =
            found.iter().filter(|(name, _, _)| name == variable).collect();
        if program.is_empty() {
            continue;
        }
        // The documented default is the cell's first `code`; "–" for none.
        let documented = cells[3].split('`').nth(1);
        let matches = program.iter().any(|(_, flag, default)| {
            cells[2] == format!("`{flag}`")
                && match (default, documented) {
                    (Some(default), Some(documented)) => default.eq_ignore_ascii_case(documented),
                    (None, None) => true,
                    _ => false,
                }
        });
        assert!(matches, "{row}\n  the program: {program:?}");
        checked += 1;
    }
    assert!(checked > 35, "only {checked} rows compared");
}
