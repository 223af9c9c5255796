//! egress-policy: a proxy-wasm filter for Envoy egress gateways that decides which outbound HTTP
//! requests may leave a service mesh, answers forbidden ones with a local reply, and writes a
//! JSON log line per matching rule: Istio Mixer's egress rules, listchecker and VirtualService
//! URI routes, inside the proxy.
//!
//! The crate is a pure policy core (everything but [`filter`]'s wasm glue) that compiles and tests
//! natively, plus a thin proxy-wasm adapter compiled only for `wasm32`.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod audit;
pub mod config;
pub mod decision;
pub mod duration;
pub mod error;
pub mod expr;
pub mod filter;
pub mod headers;
pub mod identity;
pub mod log_entry;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod time;

// A fake proxy for native tests (the crate's and tests/parity.rs); never in the module Envoy loads.
#[cfg(any(test, not(target_arch = "wasm32")))]
pub mod testing;
