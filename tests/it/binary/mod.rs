//! The `imageswap` binary as people and Kubernetes run it
//! (`support::binary`).

mod serve;
mod swap;
