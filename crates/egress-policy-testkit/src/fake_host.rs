//! A fake proxy for native tests of the filter flow and the list fetches: it serves headers,
//! properties and list-server answers from plain fields and records every reply, log entry,
//! counter, gauge, warning and header removal. Also used by `tests/integration/parity.rs`, which runs the
//! filter flow and the CLI on the same cases; not part of the wasm module.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde_json::Value;

use egress_policy::adapter::{ConnectionHost, Host, HttpHost, ListHost, NoSharedData, StreamHost};
use egress_policy::core::attributes::{self, Source};
use egress_policy::core::headers::Headers;
use egress_policy::core::policy::LocalReply;
use egress_policy::core::policy::provider::Provider;
use egress_policy::core::request::{Fact, Opening};
use egress_policy::telemetry::metrics::{self, CounterEvent, GaugeEvent};

pub use egress_policy::core::cases::{
    FAKE_NOW_MICROS, facts_from_case, json_strings, request_from_json, request_with_path,
};

/// A local reply as the fake proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// The fake proxy.
pub struct FakeHost {
    /// Request headers in order, pseudo-headers included.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Properties by dotted path (`connection.mtls`, `filter_state.egress_policy.peer_uri_sans`).
    pub properties: HashMap<String, Vec<u8>>,
    pub now: Cell<i64>,
    /// `false`: header reads fail as a broken host would.
    pub headers_readable: bool,
    /// `false`: header removals fail.
    pub removals_succeed: bool,
    pub replies: RefCell<Vec<Reply>>,
    /// The entries written, each line without what every line ends with (`policyVersion`,
    /// `listVersions`, and the chain's `stream`, `seq`, `chain`), so expected lines stay
    /// readable; [`Self::sealed`] keeps them as written.
    pub entries: RefCell<Vec<String>>,
    /// The entries as the filter wrote them.
    pub sealed: RefCell<Vec<String>>,
    pub counters: RefCell<Vec<String>>,
    pub gauges: RefCell<BTreeMap<String, u64>>,
    pub warnings: RefCell<Vec<String>>,
    /// Names of the request headers removed before forwarding.
    pub removed: RefCell<Vec<String>>,
    /// Dotted paths of the properties read.
    pub property_reads: RefCell<Vec<String>>,
    /// Calls dispatched to list servers: (cluster, `:path`, timeout in ms).
    pub calls: RefCell<Vec<(String, String, u32)>>,
    /// Why dispatching fails, if it does.
    pub dispatch_error: Option<String>,
    next_token: Cell<u32>,
    /// The list server's answer being delivered: `:status` (none after a failure) and body.
    pub call_status: Option<Vec<u8>>,
    pub call_body: Vec<u8>,
    /// Body sizes the filter asked to read.
    pub body_reads: RefCell<Vec<usize>>,
    /// A connection's bytes from the caller, waiting in the proxy's buffer.
    pub downstream: RefCell<Vec<u8>>,
    /// The filter closed the connection.
    pub closed: Cell<bool>,
    /// Destinations the network filter routed allowed connections to.
    pub routed_to: RefCell<Vec<String>>,
    /// The proxy's shared data: give two hosts the same store to have two VMs of one gateway.
    pub shared: Rc<RefCell<SharedStore>>,
}

/// Envoy's shared data: values with a version that changes on every write, and an unconditional
/// write to a key that is absent.
#[derive(Debug, Default)]
pub struct SharedStore {
    pub values: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// `true`: every call fails, as on a proxy without shared data.
    pub unavailable: bool,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            properties: HashMap::new(),
            now: Cell::new(FAKE_NOW_MICROS),
            headers_readable: true,
            removals_succeed: true,
            replies: RefCell::default(),
            entries: RefCell::default(),
            sealed: RefCell::default(),
            counters: RefCell::default(),
            gauges: RefCell::default(),
            warnings: RefCell::default(),
            removed: RefCell::default(),
            property_reads: RefCell::default(),
            calls: RefCell::default(),
            dispatch_error: None,
            next_token: Cell::new(1),
            call_status: None,
            call_body: Vec::new(),
            body_reads: RefCell::default(),
            downstream: RefCell::default(),
            closed: Cell::new(false),
            routed_to: RefCell::new(Vec::new()),
            shared: Rc::default(),
        }
    }
}

impl FakeHost {
    /// A GET of `path` on `host` (raw bytes, as a client may send them).
    pub fn request(host: &[u8], path: &[u8]) -> Self {
        let mut fake = FakeHost::default();
        fake.add_header(":authority", host);
        fake.add_header(":path", path);
        fake.add_header(":method", b"GET");
        fake.add_header(":scheme", b"http");
        fake
    }

    pub fn add_header(&mut self, name: &str, value: &[u8]) {
        self.headers.push((name.to_owned(), value.to_vec()));
    }

    /// Replaces every value of a header.
    pub fn set_header(&mut self, name: &str, value: &[u8]) {
        self.headers.retain(|(n, _)| n != name);
        self.add_header(name, value);
    }

    /// The response the log phase sees.
    pub fn respond(&mut self, code: i64, size: i64) {
        self.properties
            .insert("response.code".into(), code.to_le_bytes().to_vec());
        self.properties
            .insert("response.size".into(), size.to_le_bytes().to_vec());
    }

    /// A verified mTLS peer whose certificate has these URI SANs (comma-joined), as Envoy shows
    /// it: every SAN in the HTTP chain's filter state, the first in `connection.uri_san_peer_certificate`.
    pub fn with_peer(mut self, uri_sans: &str) -> Self {
        self.properties.insert("connection.mtls".into(), vec![1]);
        self.properties.insert(
            format!("filter_state.{}", egress_policy::adapter::PEER_URI_SANS),
            uri_sans.as_bytes().to_vec(),
        );
        // Envoy's own property has only the first URI SAN.
        let first = uri_sans.split(',').next().unwrap_or_default();
        self.properties.insert(
            "connection.uri_san_peer_certificate".into(),
            first.as_bytes().to_vec(),
        );
        self
    }

    /// The request (or connection) of [`facts_from_case`], served as a proxy would: headers,
    /// the peer certificate, Istio peer metadata and a connection's properties, and a
    /// connection's first bytes.
    pub fn from_case(case: &Value) -> Self {
        let facts = facts_from_case(case);
        let mut fake = FakeHost::default();
        for (name, value) in facts.headers.iter() {
            fake.add_header(&String::from_utf8_lossy(name), value);
        }
        if let Some(sans) = &facts.peer_uri_sans {
            fake = fake.with_peer(&String::from_utf8_lossy(sans));
        }
        for (key, value) in facts.peer_labels {
            fake.properties
                .insert(format!("downstream_peer.labels.{key}"), value);
        }
        // A connection's SNI and port, where the attribute table says the proxy has them.
        for (attr, value) in facts.properties {
            if let Some(Source::Property(path)) = attributes::of(attr).map(|a| a.source) {
                // Served as Envoy serializes it.
                let bytes = match value {
                    Fact::Text(bytes) => bytes,
                    Fact::Int(int) => int.to_le_bytes().to_vec(),
                };
                fake.properties.insert(path.join("."), bytes);
            }
        }
        match facts.opening {
            // Not given: the caller's ClientHello names the SNI.
            Opening::Unseen => {
                let sni = case.get("sni").and_then(Value::as_str);
                *fake.downstream.borrow_mut() =
                    egress_policy::core::tls::client_hello_records(sni, &[], 16 * 1024);
            }
            Opening::FirstBytes(bytes) => *fake.downstream.borrow_mut() = bytes,
            Opening::HandshakeFailed => {
                fake.properties.insert(
                    "connection.transport_failure_reason".into(),
                    b"CERTIFICATE_VERIFY_FAILED".to_vec(),
                );
            }
            Opening::ClosedEarly => {}
        }
        fake
    }
}

impl Host for FakeHost {
    fn now_micros(&self) -> Option<i64> {
        Some(self.now.get())
    }
    fn log_warning(&self, message: &str) {
        self.warnings.borrow_mut().push(message.to_owned());
    }
    fn increment(&self, event: &CounterEvent<'_>) {
        self.counters
            .borrow_mut()
            .push(metrics::counter_name(event));
    }
    fn set_gauge(&self, event: &GaugeEvent<'_>) {
        self.gauges
            .borrow_mut()
            .insert(metrics::gauge_name(event), event.value);
    }
}

impl HttpHost for FakeHost {
    fn request_headers(&self) -> Option<Headers> {
        self.headers_readable.then(|| {
            let pairs: Vec<(&[u8], &[u8])> = self
                .headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice()))
                .collect();
            Headers::from_pairs(&pairs)
        })
    }
    fn remove_request_header(&self, name: &[u8]) -> bool {
        self.removed
            .borrow_mut()
            .push(String::from_utf8_lossy(name).into_owned());
        self.removals_succeed
    }
    fn response_header(&self, _name: &str) -> Option<Vec<u8>> {
        None
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.body_reads.borrow_mut().push(size);
        let body = self.downstream.borrow();
        Some(body.get(..size.min(body.len()))?.to_vec())
    }
    fn reset_stream(&self) -> bool {
        self.closed.set(true);
        true
    }
    fn send_local_reply(&self, reply: &LocalReply<'_>) -> bool {
        self.replies.borrow_mut().push(Reply {
            status: reply.status,
            details: reply.details.clone(),
            body: reply.body.as_bytes().to_vec(),
            headers: reply.headers.to_vec(),
        });
        true
    }
}

impl StreamHost for FakeHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join(".");
        self.property_reads.borrow_mut().push(key.clone());
        self.properties.get(&key).cloned()
    }
    fn write_log_entries(&self, entries: &str) -> bool {
        self.sealed.borrow_mut().push(entries.to_owned());
        let unsealed: Vec<&str> = entries
            .lines()
            .map(|line| {
                let end = line.rfind(",\"policyVersion\":").unwrap_or_else(|| {
                    panic!("a line without its policy version was written: {line}")
                });
                &line[..end]
            })
            .collect();
        self.entries.borrow_mut().push(
            unsealed
                .iter()
                .map(|l| format!("{l}}}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        true
    }
}

impl ConnectionHost for FakeHost {
    fn downstream_data(&self, max: usize) -> Option<Vec<u8>> {
        let data = self.downstream.borrow();
        Some(data.iter().copied().take(max).collect())
    }
    fn close_downstream(&self) -> bool {
        self.closed.set(true);
        true
    }
    fn route_to(&self, destination: &str) -> bool {
        self.routed_to.borrow_mut().push(destination.to_owned());
        true
    }
}

impl ListHost for FakeHost {
    fn dispatch_http_call(&self, provider: &Provider) -> Result<u32, String> {
        if let Some(error) = &self.dispatch_error {
            return Err(error.clone());
        }
        let path = provider
            .request_headers()
            .iter()
            .find(|(n, _)| *n == ":path")
            .map_or(String::new(), |(_, v)| (*v).to_owned());
        self.calls
            .borrow_mut()
            .push((provider.cluster.clone(), path, provider.timeout_millis()));
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        Ok(token)
    }
    fn http_call_response_status(&self) -> Option<Vec<u8>> {
        self.call_status.clone()
    }
    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.body_reads.borrow_mut().push(size);
        Some(self.call_body.iter().copied().take(size).collect())
    }
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, NoSharedData> {
        let store = self.shared.borrow();
        if store.unavailable {
            return Err(NoSharedData);
        }
        Ok(store.values.get(key).cloned())
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, NoSharedData> {
        let mut store = self.shared.borrow_mut();
        if store.unavailable {
            return Err(NoSharedData);
        }
        if let Some((_, current)) = store.values.get(key)
            && cas != 0
            && cas != *current
        {
            return Ok(false);
        }
        store.next_cas += 1;
        let version = store.next_cas;
        store
            .values
            .insert(key.to_owned(), (value.to_vec(), version));
        Ok(true)
    }
}
