//! The documentation agrees with the program.

mod examples;
mod module_graph;
mod operations;
mod settings;
