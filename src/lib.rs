//! ImageSwap: a Kubernetes mutating admission webhook that rewrites the
//! `image` of every container to another registry, following a maps file.
//!
//! The request path, in a few lines: bytes arrive on the TLS listener
//! (`server`), pass one tower stack (trace → catch panic → timeout → body
//! read under the memory budget → shed → concurrency limit), are decoded into a review
//! (`admission`), every container image is decided by the swap engine
//! (`swap`) through a cache (`cache`) that is replaced together with the
//! engine on every maps reload (`reload`), and the JSON patch goes back as
//! bytes.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod conditions;
pub mod config;
pub mod init;
pub mod reload;
pub mod rules;
pub mod server;
pub mod settings;
pub mod swap;
pub mod telemetry;
pub mod tls;
pub mod verify;
