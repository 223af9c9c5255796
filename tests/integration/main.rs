//! The integration suite, one test binary: the CLI, the README's commands, the schema, and real
//! Envoy gateways driven by curl and raw sockets. One binary links once and carries the one lint
//! configuration of test code below; `cargo test --test integration MODULE::` runs one part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

mod cli;
mod compose;
mod convert;
mod e2e;
mod evidence;
mod filter_flow;
mod forward_proxy;
mod hardening;
mod list_refresher;
mod lists;
mod manifests;
mod manual;
mod native;
mod package;
mod parity;
mod prometheus;
mod readme;
mod schema;
mod security;
mod ssrf;
mod tls;
mod versions;
