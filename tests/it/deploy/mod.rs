//! The deployment files (manifests, observability) agree with the program.

mod manifests;
pub mod observability;
