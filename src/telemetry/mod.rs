//! What a decision leaves behind: the JSON log lines and the metric names. Reads the core's
//! compiled policy and decisions; knows nothing of the proxy.

pub mod log_entry;
pub mod metrics;
pub mod time;
