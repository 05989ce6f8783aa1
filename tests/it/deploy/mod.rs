//! The deployment files (manifests, observability) agree with the program.

mod exclude_selectors;
mod manifests;
pub mod observability;
