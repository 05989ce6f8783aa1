//! The deployment files (manifests, observability) agree with the program.

mod manifests;
mod observability;
