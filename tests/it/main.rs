//! The integration tests: one crate (one binary to link, one harness in
//! [`support`]), a module per area. Fixtures live in `tests/fixtures/`.
//!
//! - `swap`: the swap rules of the spec, and properties over generated input;
//! - `admission`: the review fixtures, through the pure core and the server;
//! - `server`: the in-process server: HTTP, shutdown and overload, hot
//!   reload, `/metrics`, traces;
//! - `binary`: the `imageswap` binary: `serve`, `swap`, `maps check`;
//! - `init`: `imageswap init` against the fake API server;
//! - `verify`: mirror verification against the real registry;
//! - `docs`, `deploy`: the documentation and the deployment files agree
//!   with the program.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admission;
mod binary;
mod deploy;
mod docs;
mod init;
mod server;
mod swap;
mod verify;
