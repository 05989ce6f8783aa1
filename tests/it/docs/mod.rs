//! The documentation agrees with the program.

mod examples;
mod module_graph;
mod rendered;
mod settings;
