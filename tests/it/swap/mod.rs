//! The swap engine, pure: the spec's rules section by section, and
//! properties over generated images and maps files.

mod cel_cost;
mod distribution;
mod match_conditions;
mod properties;
mod spec;
