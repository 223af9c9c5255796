//! egress-policy's core: configuration, attributes, expressions, lists, routes, the one decision
//! pipeline, log entries. No host types: every adapter (the proxy-wasm filter, the CLI, a native
//! Envoy module) turns its host's wire formats into [`request::RequestFacts`] and calls
//! [`policy::Policy::decide`]. Tested natively (`cargo test -p egress-policy-core`) and compiled
//! to wasm32-wasip1.

/// A table of the 256 byte values, `true` where `$holds` (an expression over the byte `$c`)
/// does: built when the crate compiles, so a hot loop classifies a byte with one load.
macro_rules! byte_table {
    (|$c:ident| $holds:expr) => {{
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let $c = b as u8;
            // Indexes below 256 in a constant: out of range would fail the build.
            #[allow(clippy::indexing_slicing)]
            {
                table[b] = $holds;
            }
            b += 1;
        }
        table
    }};
}

pub mod addresses;
pub mod attributes;
pub mod config;
pub mod connection;
pub mod decision;
pub mod described;
pub mod dns;
pub mod duration;
pub mod error;
pub mod evidence;
pub mod expr;
pub mod hash;
pub mod headers;
pub mod host;
pub mod identity;
pub mod lookalikes;
pub mod path;
pub mod policy;
pub mod refresh;
pub mod rejection;
pub mod request;
pub mod stripped;
pub mod telemetry;
pub mod tls;

/// Requests and connections described as JSON, as the test tables (`tests/data/*.json`) write
/// them: the one builder of facts for the core's tests, the fake host and the fuzz seeds.
#[cfg(any(test, feature = "cases"))]
pub mod cases;

// What every worker thread of a native host reads at once: a loaded configuration (compiled
// policy, metrics' labels, log template, remote lists). Checked when the crate compiles.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<refresh::Loaded>();
    shared_across_threads::<policy::Policy>();
    shared_across_threads::<policy::provider::RemoteLists>();
    shared_across_threads::<telemetry::log_entry::LogTemplate>();
    shared_across_threads::<decision::Decision>();
    shared_across_threads::<request::Request>();
};
