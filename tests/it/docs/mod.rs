//! The documentation agrees with the program.

mod examples;
mod settings;
