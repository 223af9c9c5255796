//! egress-policy: a proxy-wasm filter for Envoy egress gateways that decides which outbound HTTP
//! requests may leave a service mesh, answers forbidden ones with a local reply, and writes a
//! JSON log line per matching rule: Istio Mixer's egress rules, listchecker and VirtualService
//! URI routes, inside the proxy.
//!
//! Dependencies point one way (README: Architecture): [`adapter`] → [`telemetry`] → [`core`].
//! The core and telemetry are plain Rust, tested natively; only `adapter::wasm` touches the
//! proxy, and the CLI (`src/bin/egress-policy/`) uses the core and telemetry.

pub mod adapter;
pub mod telemetry;

/// The core crate, under the name this crate's modules have always used for it.
pub use egress_policy_core as core;
