//! What a decision leaves behind, without a host: the JSON log lines, the time they carry, and
//! the metric events.

pub mod log_entry;
pub mod metrics;
pub mod time;
