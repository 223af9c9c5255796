//! What a decision leaves behind, without a host: the JSON log lines, and the time they carry.

pub mod log_entry;
pub mod time;
