//! `imageswap init` against the fake API server (`support::fake_apiserver`),
//! spec section by section, and the binary as the init container runs it.

mod byoc;
mod cli;
mod match_conditions;
mod mwc;
mod projection;
mod self_signed;
mod tls;
mod watch;
