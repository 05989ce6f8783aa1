//! The `imageswap` binary as people and Kubernetes run it
//! (`support::binary`).

mod memory;
mod serve;
mod startup;
mod swap;
