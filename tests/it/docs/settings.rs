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
