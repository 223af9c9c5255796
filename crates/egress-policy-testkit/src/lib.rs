//! egress-policy's test kit, never part of what ships:
//! - [`fake_host`]: a fake proxy for the filter flow and the list refresher, natively;
//! - [`cases`]: requests and connections described as JSON, as the test tables write them (the
//!   core's one builder of facts);
//! - [`envoy`]: the one Envoy harness, for the integration tests and, through the
//!   `envoy-harness` binary, for `scripts/bench`;
//! - [`cli`]: the `egress-policy` command this workspace built.
// Test tooling: a failed expectation is a panic with its reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod cli;
pub mod envoy;
pub mod fake_host;

pub use egress_policy_core::cases;

/// The repository's root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}
