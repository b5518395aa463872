//! The integration tests, one binary (as ripgrep keeps them): each module drives the real
//! servers over TLS through the shared harness in `common`. `cargo test` runs them with Rust
//! alone; the few that need kubectl are `#[ignore]`d and run by `conformance/run`.

mod common;

mod api;
mod cache_watch;
mod cli;
mod deploy;
mod kopia;
mod kube_rs;
mod security;
mod spec_drift;
