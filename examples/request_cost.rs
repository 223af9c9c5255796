//! The filter's own work for one request of the exemption policy, natively, through the flow
//! the adapter runs (`RequestFilter` on a host that answers from memory), for `scripts/bench`:
//! under callgrind, the instructions of N requests minus those of M, divided by N − M, are the
//! instructions of one request, whatever the setup costs.
//!
//!   request_cost --phase PHASE --request REQUEST --iterations N
//!
//! PHASE: `flow` (headers, decision, reply, response, counters, log entry: everything the
//! filter does for a request), or one part of it: `decide` (`Policy::decide`, from the facts),
//! `count` (the counters' names), `log` (the log entry), `seal` (the entry sealed into the
//! log's hash chain), `checkpoint` (one line and a signed checkpoint after it: the signature a
//! stream makes every `checkpointLines` lines). REQUEST: `sport` (allowed, logged
//! info) or `politics` (denied, logged error and info), both from `ns/default/sa/sleep` over
//! mTLS; `sport-plain` is the plain-HTTP listener's request, without identity.
//! `--calls` prints, instead, the host calls one request makes, by kind, as JSON.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::rc::Rc;

use egress_policy::adapter::header_map;
use egress_policy::adapter::{
    Active, Host, HttpHost, PEER_URI_SANS, PendingCounters, RequestFilter, StreamHost,
};
use egress_policy::core::cases::reference_request_headers;
use egress_policy::core::headers::Headers;
use egress_policy::core::policy::{LocalReply, Policy};
use egress_policy::telemetry::metrics::{CounterEvent, GaugeEvent};

/// A proxy that answers from memory and keeps nothing: what is left is the filter's own work
/// (and the copies a real host call makes into the module's memory). Its own lookups are as
/// cheap as a comparison, since a real host's happen outside the module.
struct MemoryHost {
    headers: Vec<u8>,
    properties: Vec<(Vec<&'static str>, Vec<u8>)>,
    calls: RefCell<BTreeMap<&'static str, u32>>,
    counting: Cell<bool>,
    /// The module's own bookkeeping behind `increment` (the wasm host gathers counts until the
    /// next flush): part of the filter's work.
    pending: RefCell<PendingCounters>,
}

impl MemoryHost {
    fn call(&self, kind: &'static str) {
        if self.counting.get() {
            *self.calls.borrow_mut().entry(kind).or_default() += 1;
        }
    }
}

impl Host for MemoryHost {
    fn now_micros(&self) -> Option<i64> {
        self.call("now");
        Some(1_529_328_178_317_448)
    }
    fn log_warning(&self, message: &str) {
        panic!("unexpected warning: {message}");
    }
    fn increment(&self, event: &CounterEvent<'_>) {
        self.call("increment");
        self.pending.borrow_mut().count(event);
    }
    fn set_gauge(&self, event: &GaugeEvent<'_>) {
        self.call("set_gauge");
        black_box(event);
    }
}

impl StreamHost for MemoryHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.call("property");
        self.properties
            .iter()
            .find(|(known, _)| known.as_slice() == path)
            .map(|(_, value)| value.clone())
    }
    fn write_log_entries(&self, entries: &str) -> bool {
        self.call("write_log_entries");
        black_box(entries);
        true
    }
}

impl HttpHost for MemoryHost {
    fn request_headers(&self) -> Option<Headers> {
        self.call("request_headers");
        Some(header_map::decode(self.headers.clone()))
    }
    fn remove_request_header(&self, _: &[u8]) -> bool {
        self.call("remove_request_header");
        true
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.call("response_header");
        (name == ":status").then(|| b"200".to_vec())
    }
    fn send_local_reply(&self, reply: &LocalReply<'_>) -> bool {
        self.call("send_local_reply");
        black_box(reply);
        true
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        black_box(size);
        None
    }
    fn reset_stream(&self) -> bool {
        true
    }
}

fn host(request: &str) -> MemoryHost {
    let path = if request == "politics" {
        "/politics"
    } else {
        "/sport"
    };
    let headers = header_map::serialize(&reference_request_headers(path));
    let mut properties: Vec<(Vec<&'static str>, Vec<u8>)> = Vec::new();
    if request != "sport-plain" {
        let principal = b"spiffe://cluster.local/ns/default/sa/sleep";
        properties.push((vec!["connection", "mtls"], vec![1]));
        properties.push((vec!["filter_state", PEER_URI_SANS], principal.to_vec()));
        properties.push((
            vec!["connection", "uri_san_peer_certificate"],
            principal.to_vec(),
        ));
    } else {
        properties.push((vec!["connection", "mtls"], vec![0]));
    }
    MemoryHost {
        headers,
        properties,
        calls: RefCell::default(),
        counting: Cell::new(false),
        pending: RefCell::default(),
    }
}

/// One request through the filter, as Envoy drives it.
fn request(active: &Rc<Active>, host: &MemoryHost) -> RequestFilter {
    let mut filter = RequestFilter::new(Some(active.clone()));
    filter.on_request_headers(host, true);
    filter.on_response_headers(host);
    filter.on_response_body(150);
    filter.on_log(host);
    filter
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut phase, mut which, mut iterations, mut calls) =
        ("flow".to_owned(), "sport".to_owned(), 1000_usize, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--phase" => phase = args.next().unwrap(),
            "--request" => which = args.next().unwrap(),
            "--iterations" => iterations = args.next().unwrap().parse().unwrap(),
            "--calls" => calls = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let config = include_bytes!("../envoy/examples/s4-exemption.json");
    let active = Rc::new(Active::new(Policy::from_json(config).unwrap()));
    let host = host(&which);
    if calls {
        host.counting.set(true);
        request(&active, &host);
        println!("{}", serde_json::to_string(&*host.calls.borrow()).unwrap());
        return;
    }
    // The state each part starts from, made once.
    let filter = request(&active, &host);
    let facts = egress_policy_testkit::fake_host::facts_from_case(&serde_json::json!({
        "host": "edition.cnn.com",
        "path": if which == "politics" { "/politics" } else { "/sport" },
        "namespace": "default",
        "serviceAccount": "sleep",
    }));
    let remote = active.remote.load();
    let (canonical, decision) = active.policy.decide(&facts, &remote);
    let response = egress_policy::core::request::Response {
        code: Some(200),
        size: Some(150),
        ..Default::default()
    };
    drop(filter);
    let rendered = active
        .log
        .render(&active.policy, &decision, &canonical, &response);
    // A key made for this measurement only (`openssl genpkey -algorithm ed25519`).
    let key = egress_policy::core::evidence::SigningKey::from_pem(
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHeR2tq8pWlfvWj3bOTAN7xzOaSrIGPY4G7jEbmWbS3V\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut signing_chain =
        egress_policy::core::evidence::LogChain::new("0123456789abcdef".into(), Some(key));
    let every_line = egress_policy::core::evidence::Sealing {
        every: egress_policy::core::evidence::CheckpointEvery {
            lines: 1,
            micros: i64::MAX,
        },
        ..active.log.sealing.clone()
    };
    for _ in 0..iterations {
        match phase.as_str() {
            "flow" => {
                black_box(request(&active, &host));
            }
            "decide" => {
                black_box(active.policy.decide(black_box(&facts), &remote));
            }
            "count" => active
                .metrics
                .count_request(&decision, &canonical, Some(200), |event| {
                    black_box(event);
                }),
            "log" => {
                black_box(
                    active
                        .log
                        .render(&active.policy, &decision, &canonical, &response),
                );
            }
            "seal" => {
                black_box(egress_policy::core::evidence::seal_on_this_thread(
                    black_box(&rendered),
                    Some(0),
                    &active.log.sealing,
                ));
            }
            "checkpoint" => {
                black_box(signing_chain.seal(black_box(&rendered), Some(0), &every_line));
            }
            other => panic!("unknown phase {other}"),
        }
    }
}
