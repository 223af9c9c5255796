//! What a decision leaves behind: the JSON log lines and the metric names. Reads the core's
//! compiled policy and decisions; knows nothing of the proxy.

pub use egress_policy_core::telemetry::{log_entry, time};
pub mod metrics;
