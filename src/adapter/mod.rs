//! The per-request flow of the filter, written against small host traits ([`HttpHost`],
//! [`ListHost`]) so that it runs natively in tests with a fake host; `wasm` implements them
//! with proxy-wasm host calls.
//!
//! Per request the filter reads the headers with one host call and only the properties the
//! policy needs, hands the facts to [`Policy::decide`] (the pipeline `egress-policy explain`
//! runs too), answers what is not forwarded, and renders log entries after the response.

// The unit tests compiled to wasm run under plain WASI, without a proxy to import from.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod wasm;

pub mod connection;
pub mod header_map;
pub mod lists;

use std::rc::Rc;

use crate::core::attributes::{self, Attr, MapAttr, Source, Type};
use crate::core::decision::Decision;
use crate::core::expr::Needs;
use crate::core::headers::Headers;
use crate::core::policy::{LocalReply, Policy, TunnelStep, tunnel_step};
use crate::core::request::{
    Fact, Opening, Protocol, Request, RequestFacts, Response, headers_to_strip,
};
use crate::telemetry::log_entry;
use crate::telemetry::metrics::{self, CounterEvent};

pub use connection::{ConnectionFilter, ConnectionHost};
pub use lists::{Active, ListRefresher, NoSharedData};

/// What every part of the filter needs from the proxy: the core's host (a clock, the proxy's
/// log, metrics). A host error is an absent value or `false`, and the caller fails closed.
/// `wasm.rs` implements every method with raw ABI calls that cannot panic, except
/// [`ListHost::dispatch_http_call`] (see there).
pub use crate::core::host::Host;
pub use crate::core::refresh::ListHost;

/// What both filters need from the proxy for the request or connection at hand.
pub trait StreamHost: Host {
    /// A host property (`["source", "address"]`) as raw bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Hands the rendered entries (JSON lines joined by `\n`) to the proxy's access log.
    fn write_log_entries(&self, entries: &str) -> bool;
}

/// What the per-request flow needs from the proxy.
pub trait HttpHost: StreamHost {
    /// Every request header, pseudo-headers included, with one host call.
    fn request_headers(&self) -> Option<Headers>;
    /// Removes every value of a request header before the request is forwarded.
    fn remove_request_header(&self, name: &[u8]) -> bool;
    /// A response header (or `:status`) as raw bytes.
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Answers the request locally; its details become Envoy's response code details.
    fn send_local_reply(&self, reply: &LocalReply<'_>) -> bool;
    /// The request body the proxy holds, its first `size` bytes (a tunnel's first bytes).
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Resets the stream, both sides: a tunnel whose bytes may not be relayed.
    fn reset_stream(&self) -> bool;
}

/// Whether the proxy may go on with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The filter answered (or refused) the request; stop iteration.
    Stop,
}

/// Response code details of requests refused because no valid configuration is loaded.
pub const UNCONFIGURED_DETAILS: &str = "egress_policy_unconfigured";

/// Response code details of requests refused because the filter could not read or clean their
/// headers: it cannot vouch for what it could not see.
pub const HOST_ERROR_DETAILS: &str = "egress_policy_host_error";

/// Filter state, set by Envoy's set_filter_state filter from `%DOWNSTREAM_PEER_URI_SAN%`: every
/// URI SAN of the verified peer certificate, comma-joined. Clients cannot set filter state.
/// Without it the filter falls back to `connection.uri_san_peer_certificate`, which is only the
/// first SAN.
pub const PEER_URI_SANS: &str = "egress_policy.peer_uri_sans";

/// One request's state between its headers and its access-log phase.
pub struct RequestFilter {
    active: Option<Rc<Active>>,
    /// `:status` of the response headers, when the filter saw them.
    status: Option<i64>,
    /// Response body bytes that passed the filter, once the response headers did.
    body_bytes: Option<i64>,
    request: Request,
    decision: Option<Decision>,
    /// An allowed `CONNECT` whose tunnel has not shown its ClientHello yet: its bytes are held.
    tunnel_unread: bool,
}

impl RequestFilter {
    /// `active` is `None` when no valid configuration is loaded: every request is then refused
    /// with 503 (fail closed), never passed through unchecked.
    pub fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            status: None,
            body_bytes: None,
            request: Request::default(),
            decision: None,
            tunnel_unread: false,
        }
    }

    /// Decides the request from its headers; `end_of_stream` is false when a body follows.
    pub fn on_request_headers(&mut self, host: &impl HttpHost, end_of_stream: bool) -> Flow {
        let Some(active) = self.active.clone() else {
            host.send_local_reply(&LocalReply::bare(503, UNCONFIGURED_DETAILS));
            return Flow::Stop;
        };
        let Some(headers) = host.request_headers() else {
            host.log_warning("egress-policy: cannot read the request headers; refused");
            host.send_local_reply(&LocalReply::bare(500, HOST_ERROR_DETAILS));
            return Flow::Stop;
        };
        if !strip_forwarding_controls(host, &headers) {
            host.log_warning("egress-policy: cannot remove a stripped request header; refused");
            host.send_local_reply(&LocalReply::bare(500, HOST_ERROR_DETAILS));
            return Flow::Stop;
        }
        let policy = &active.policy;
        let facts = read_facts(&active.reads, host, Protocol::Http, headers, !end_of_stream);
        let (request, decision) = policy.decide(&facts, &active.remote.load());
        self.request = request;
        let flow = match policy.reply(&decision, &self.request) {
            Some(reply) => {
                if !host.send_local_reply(&reply) {
                    host.log_warning("egress-policy: could not send the local reply");
                }
                Flow::Stop
            }
            None => Flow::Continue,
        };
        self.tunnel_unread = flow == Flow::Continue && self.request.is_connect();
        self.decision = Some(decision);
        flow
    }

    /// A tunnel's bytes are held until they show one ClientHello naming the host its `CONNECT`
    /// named, and the tunnel is reset before a byte is relayed if they do not (README: HTTPS
    /// egress). Other bodies pass.
    pub fn on_request_body(
        &mut self,
        host: &impl HttpHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if !self.tunnel_unread {
            return Flow::Continue;
        }
        let first_bytes = host.request_body(body_size).unwrap_or_default();
        match tunnel_step(
            &self.request,
            self.decision.as_mut(),
            &first_bytes,
            end_of_stream,
        ) {
            TunnelStep::Hold => Flow::Stop,
            TunnelStep::Relay => {
                self.tunnel_unread = false;
                Flow::Continue
            }
            TunnelStep::Reset(_) => {
                self.tunnel_unread = false;
                if !host.reset_stream() {
                    host.log_warning("egress-policy: could not reset a refused tunnel");
                }
                Flow::Stop
            }
        }
    }

    /// Notes the status from the response headers: a header read is cheaper than the
    /// `response.code` property in the log phase.
    pub fn on_response_headers(&mut self, host: &impl HttpHost) {
        self.status = host
            .response_header(":status")
            .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse().ok());
        self.body_bytes = Some(0);
    }

    /// Counts the response body as it passes, so its size needs no property in the log phase.
    pub fn on_response_body(&mut self, chunk_bytes: usize) {
        if let Some(total) = &mut self.body_bytes {
            *total = total.saturating_add(i64::try_from(chunk_bytes).unwrap_or(i64::MAX));
        }
    }

    pub fn on_log(&mut self, host: &impl HttpHost) {
        let (Some(active), Some(decision)) = (&self.active, &mut self.decision) else {
            return;
        };
        let policy = &active.policy;
        let mut response = read_response(
            policy,
            host,
            self.status.is_none(),
            self.body_bytes.is_none(),
        );
        response.code = response.code.or(self.status);
        response.size = response.size.or(self.body_bytes);
        // Only Envoy's own 503 can be the address guard's refusal at connect time.
        if response.code == Some(503)
            && decision.outcome().forwarded()
            && let Some(details) = host.property(&["response", "code_details"])
        {
            decision.note_upstream(&details);
        }
        let decision = &*decision;
        active
            .metrics
            .count_request(decision, &self.request, response.code, |event| {
                host.increment(&event)
            });
        if !log_entry::has_entries(policy, decision, &self.request) {
            return;
        }
        let entries = active.log.render_sealed(
            policy,
            decision,
            &self.request,
            &response,
            &active.remote.load(),
        );
        if !host.write_log_entries(&entries) {
            host.log_warning("egress-policy: could not hand log entries to the access log");
        }
    }
}

/// Removes the headers no destination may act on (see [`crate::core::request::STRIPPED_HEADERS`]);
/// `false` when the proxy refused a removal.
fn strip_forwarding_controls(host: &impl HttpHost, headers: &Headers) -> bool {
    headers_to_strip(headers)
        .into_iter()
        .all(|name| host.remove_request_header(name))
}

/// An integer property as proxy-wasm serializes it: 8 little-endian bytes.
pub fn int_property(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_le_bytes)
}

/// The properties a configuration reads, besides the headers, with where the attribute table
/// says each one is: resolved when the configuration loads, so a request only makes the calls.
#[derive(Debug, Default)]
pub struct PropertyReads {
    /// Attribute, property path, whether it is an integer (eight little-endian bytes in
    /// proxy-wasm), and whether it is Istio peer metadata (read only for verified mTLS callers).
    properties: Vec<(Attr, &'static [&'static str], bool, bool)>,
    /// Where Istio's peer labels are, and the keys read.
    labels: Option<(&'static [&'static str], Vec<String>)>,
}

impl PropertyReads {
    pub fn new(needs: &Needs) -> Self {
        let properties = needs
            .attrs
            .iter()
            // Read for every request (identity and metrics).
            .filter(|&&attr| attr != Attr::ConnectionMtls)
            .filter_map(|&attr| {
                let row = attributes::of(attr)?;
                let int = row.ty == Type::Int;
                match row.source {
                    Source::Property(path) => Some((attr, path, int, false)),
                    Source::PeerMetadata(path) => Some((attr, path, int, true)),
                    _ => None,
                }
            })
            .collect();
        let labels = match attributes::of_map(MapAttr::SourceLabels).map(|a| a.source) {
            Some(Source::PeerMetadata(path)) if !needs.labels.is_empty() => {
                Some((path, needs.labels.iter().cloned().collect()))
            }
            _ => None,
        };
        PropertyReads { properties, labels }
    }
}

/// The facts the policy needs, with as few host calls as it allows: the headers came in one
/// call; the connection's identity is read for every request (metrics label by namespace), and
/// of the other attributes only those the policy reads.
fn read_facts(
    reads: &PropertyReads,
    host: &impl StreamHost,
    protocol: Protocol,
    headers: Headers,
    has_body: bool,
) -> RequestFacts {
    let mtls = host
        .property(&["connection", "mtls"])
        .map(|b| b.first() == Some(&1));
    let verified = mtls == Some(true);
    // The filter state with every SAN is set per request by the HTTP chain; a connection has
    // only Envoy's first URI SAN, so it is not asked for what is never there.
    let peer_uri_sans = if verified {
        let every_san = match protocol {
            Protocol::Http => host.property(&["filter_state", PEER_URI_SANS]),
            Protocol::Tcp => None,
        };
        every_san.or_else(|| host.property(&["connection", "uri_san_peer_certificate"]))
    } else {
        None
    };
    // Istio's peer metadata (the `downstream_peer` filter state its metadata exchange sets) is
    // only for in-mesh mTLS callers; absent without Istio.
    let peer_labels = match &reads.labels {
        Some((path, keys)) if verified => keys
            .iter()
            .filter_map(|key| {
                // The label's path on the stack: the table's path, then the key.
                let mut key_path = [""; 8];
                let parts = key_path.get_mut(..=path.len())?;
                let (last, first) = parts.split_last_mut()?;
                first.copy_from_slice(path);
                *last = key;
                Some((key.clone(), host.property(parts)?))
            })
            .collect(),
        _ => Vec::new(),
    };
    let properties = reads
        .properties
        .iter()
        .filter(|(_, _, _, peer_metadata)| verified || !peer_metadata)
        .filter_map(|&(attr, path, int, _)| {
            let bytes = host.property(path)?;
            // proxy-wasm's wire format stops here: the core gets typed facts.
            Some((
                attr,
                if int {
                    Fact::Int(int_property(&bytes)?)
                } else {
                    Fact::Text(bytes)
                },
            ))
        })
        .collect();
    RequestFacts {
        protocol,
        headers,
        has_body,
        mtls,
        peer_uri_sans,
        peer_labels,
        properties,
        // For remote lists' age and the log entries' time: a direct host call, cheaper than
        // Envoy's `request.time` property later.
        time_micros: host.now_micros(),
        opening: Opening::Unseen,
    }
}

/// Counts gathered in the VM between two flushes to the proxy (one host call per counter and
/// flush instead of one per request and counter). Keyed by the event, compactly (the counter,
/// then each label value and a NUL, which no value holds): the metric's name in Istio's tag
/// encoding is three times longer, and is only written at a flush. Hashed with the standard
/// library's SipHash: the label values are caller-chosen (a workload's `app` label), so a
/// cheaper hash could be made to collide.
#[derive(Debug, Default)]
pub struct PendingCounters {
    counts: std::collections::HashMap<String, u64>,
    /// Where each event's key is written, kept across requests.
    key: String,
    names: metrics::CounterNames,
}

impl PendingCounters {
    pub fn count(&mut self, event: &CounterEvent<'_>) {
        let key = &mut self.key;
        key.clear();
        key.push(char::from(b'a' + event.counter as u8));
        for value in event.values() {
            key.push_str(value);
            key.push('\0');
        }
        match self.counts.get_mut(key.as_str()) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(key.clone(), 1);
            }
        }
    }

    /// Hands every count gathered since the last flush to `add`, by metric name, and starts
    /// again from zero (keys stay, so the next count allocates nothing).
    pub fn flush(&mut self, mut add: impl FnMut(&str, u64)) {
        let mut name = String::new();
        for (key, count) in self.counts.iter_mut().filter(|(_, count)| **count > 0) {
            let Some(counter) = key
                .bytes()
                .next()
                .and_then(|first| metrics::Counter::ALL.get(usize::from(first.wrapping_sub(b'a'))))
            else {
                continue;
            };
            let mut values = [""; metrics::MAX_LABELS];
            for (slot, value) in values
                .iter_mut()
                .zip(key.get(1..).unwrap_or_default().split_terminator('\0'))
            {
                *slot = value;
            }
            self.names
                .encode(&CounterEvent::new(*counter, &values), &mut name);
            add(&name, *count);
            *count = 0;
        }
    }
}

/// A property path as the proxy-wasm ABI takes it, its parts joined by NUL, written into `buffer`;
/// `None` when it does not fit.
pub fn encode_property_path<'b>(path: &[&str], buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut length = 0;
    for (index, part) in path.iter().enumerate() {
        let separator = usize::from(index > 0);
        let slot = buffer.get_mut(length..length + separator + part.len())?;
        let (nul, bytes) = slot.split_at_mut(separator);
        nul.fill(0);
        bytes.copy_from_slice(part.as_bytes());
        length += separator + part.len();
    }
    buffer.get(..length)
}

fn read_response(
    policy: &Policy,
    host: &impl HttpHost,
    code_unknown: bool,
    size_unknown: bool,
) -> Response {
    let needs = &policy.log_needs;
    let int = |attr: Attr| match attributes::of(attr)?.source {
        Source::Response(path) => host.property(path).and_then(|bytes| int_property(&bytes)),
        _ => None,
    };
    // Every request is counted by its code: from the response headers, else its property.
    Response {
        code: code_unknown.then(|| int(Attr::ResponseCode)).flatten(),
        size: (size_unknown && needs.attr(Attr::ResponseSize))
            .then(|| int(Attr::ResponseSize))
            .flatten(),
        duration_ms: needs
            .attr(Attr::ResponseDuration)
            .then(|| int(Attr::ResponseDuration))
            .flatten()
            .map(|nanos| nanos / 1_000_000),
        ..Response::default()
    }
}
