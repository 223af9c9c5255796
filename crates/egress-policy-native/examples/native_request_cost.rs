//! The native filter's own work for one request of the exemption policy, through the flow the
//! module runs (`Stream` on a host that answers from memory), for `scripts/bench`: under
//! callgrind, the instructions of N requests minus those of M, divided by N − M, are the
//! instructions of one request. The native counterpart of the root package's
//! `examples/request_cost.rs`.
//!
//!   native_request_cost --request REQUEST --iterations N
//!
//! REQUEST: `sport` (allowed) or `politics` (denied), both from `ns/default/sa/sleep` over mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use egress_policy_core::cases::reference_request_headers;
use egress_policy_core::headers::Headers;
use egress_policy_core::policy::LocalReply;
use egress_policy_core::telemetry::metrics::{Counter, CounterEvent};
use egress_policy_native::filter::{Attribute, Config, EnvoyHost, PEER_URI_SANS, Stream};

/// Envoy answering from memory: what is left is the module's own work, and the copies a real
/// callback's answer costs it (the headers are copied into the core's `Headers`, as from Envoy).
struct MemoryEnvoy {
    headers: Vec<(&'static str, &'static str)>,
}

impl EnvoyHost for MemoryEnvoy {
    fn request_headers(&self) -> Option<Headers> {
        Some(Headers::from_pairs(&self.headers))
    }
    fn remove_request_header(&self, _name: &[u8]) -> bool {
        true
    }
    fn response_status(&self) -> Option<i64> {
        Some(200)
    }
    fn attribute_text(&self, attribute: Attribute) -> Option<Vec<u8>> {
        black_box(attribute);
        None
    }
    fn attribute_int(&self, attribute: Attribute) -> Option<i64> {
        (attribute == Attribute::ResponseSize).then_some(150)
    }
    fn attribute_bool(&self, attribute: Attribute) -> Option<bool> {
        (attribute == Attribute::ConnectionMtls).then_some(true)
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        (key == PEER_URI_SANS).then(|| b"spiffe://cluster.local/ns/default/sa/sleep".to_vec())
    }
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        black_box((key, value));
        true
    }
    fn send_local_reply(&self, reply: &LocalReply<'_>) {
        black_box(reply);
    }
    fn received_request_body(&self) -> Option<Vec<u8>> {
        None
    }
    fn reset_stream(&self, details: &str) {
        black_box(details);
    }
    fn increment(&self, counter_id: usize, event: &CounterEvent<'_>) {
        black_box((counter_id, event));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut which, mut iterations) = ("sport".to_owned(), 1000_usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--request" => which = args.next().unwrap(),
            "--iterations" => iterations = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let json = include_bytes!("../../../envoy/examples/s4-exemption.json");
    let config = Arc::new(Config::new(json, (0..Counter::ALL.len()).map(Some).collect()).unwrap());
    let path = if which == "politics" {
        "/politics"
    } else {
        "/sport"
    };
    let host = MemoryEnvoy {
        headers: reference_request_headers(path).to_vec(),
    };
    for _ in 0..iterations {
        let mut stream = Stream::new(config.clone());
        black_box(stream.on_request_headers(&host, true));
        stream.on_response_headers(&host);
        stream.on_complete(&host);
    }
}
