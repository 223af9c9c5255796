//! The per-request flow of the filter, written against a small [`Host`] trait so that it runs
//! natively in tests with a fake host; [`wasm`] implements the trait with proxy-wasm host calls.
//!
//! Per request the filter reads only what the policy needs (one host call per header or
//! property), decides in the request-headers phase, and renders log entries after the response.

// The unit tests compiled to wasm run under plain WASI, without a proxy to import from.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod wasm;

pub mod lists;

use std::cell::RefCell;
use std::rc::Rc;

use crate::decision::Decision;
use crate::expr::Attr;
use crate::identity::{self, IdentityError};
use crate::log_entry;
use crate::metrics;
use crate::policy::Policy;
use crate::policy::provider::RemoteLists;
use crate::request::{Rejection, Request, Response, ambiguous_path, lossy};

/// What the filter needs from the proxy. Every method returns an absent value or `false` on
/// failure instead of panicking: a host error must never take the VM down.
pub trait Host {
    /// A request header (or pseudo-header like `:authority`) as raw bytes.
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// A response header (or `:status`) as raw bytes.
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// A host property (`["source", "address"]`) as raw bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Current time in microseconds since the Unix epoch.
    fn now_micros(&self) -> Option<i64>;
    /// Answers the request locally; `details` becomes Envoy's response code details.
    fn send_local_reply(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> bool;
    /// Hands the rendered entries (JSON lines joined by `\n`) to the proxy's access log.
    fn write_log_entries(&self, entries: &str) -> bool;
    /// Reports a problem of the filter itself in the proxy's log.
    fn log_warning(&self, message: &str);
    /// Adds one to a counter (created on first use).
    fn increment(&self, counter: &str);
}

/// A loaded configuration and the remote list entries fetched for it, shared by the root context
/// (which fetches) and the HTTP contexts (which decide) of one VM.
#[derive(Debug)]
pub struct Active {
    pub policy: Policy,
    pub remote: RefCell<RemoteLists>,
}

impl Active {
    pub fn new(policy: Policy) -> Self {
        Active {
            policy,
            remote: RefCell::new(RemoteLists::default()),
        }
    }
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

/// Status of the reply to a request whose path is ambiguous: the request is malformed, so it
/// is a client error whatever `denyStatus` says about forbidden ones.
pub const REJECT_STATUS: u16 = 400;

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
}

impl RequestFilter {
    /// `policy` is `None` when no valid configuration is loaded: every request is then refused
    /// with 503 (fail closed), never passed through unchecked.
    pub fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            status: None,
            body_bytes: None,
            request: Request::default(),
            decision: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &impl Host) -> Flow {
        let Some(active) = self.active.clone() else {
            host.send_local_reply(503, UNCONFIGURED_DETAILS, b"", &[]);
            return Flow::Stop;
        };
        let policy = &active.policy;
        // Path and host are always read: an ambiguous one is refused whatever the policy reads.
        let raw_path = host.request_header(":path").unwrap_or_default();
        self.request = read_request(policy, host, &raw_path);
        let rejection = ambiguous_path(&raw_path).or(if self.request.host.is_none() {
            Some(Rejection::UnusableHost)
        } else {
            None
        });
        if let Some(problem) = rejection {
            host.send_local_reply(REJECT_STATUS, &Policy::rejection_details(problem), b"", &[]);
            self.decision = Some(Decision {
                rejected: Some(problem),
                ..Decision::default()
            });
            return Flow::Stop;
        }
        // A list being replaced right now (never, in one thread) reads as unavailable: onError.
        let decision = match active.remote.try_borrow() {
            Ok(remote) => policy.evaluate_with(&self.request, &remote),
            Err(_) => policy.evaluate_with(&self.request, &RemoteLists::default()),
        };
        let flow = match &decision.denied {
            Some(reason) => {
                let reply = policy.reply(reason);
                if !host.send_local_reply(
                    reply.status,
                    &policy.details(reason),
                    reply.body.as_bytes(),
                    &reply.headers,
                ) {
                    host.log_warning("could not send the local reply for a denied request");
                }
                Flow::Stop
            }
            None => Flow::Continue,
        };
        self.decision = Some(decision);
        flow
    }

    /// Notes the status from the response headers: a header read is cheaper than the
    /// `response.code` property in the log phase.
    pub fn on_response_headers(&mut self, host: &impl Host) {
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

    pub fn on_log(&mut self, host: &impl Host) {
        let (Some(active), Some(decision)) = (&self.active, &self.decision) else {
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
        for counter in metrics::request_counters(policy, decision, &self.request, response.code) {
            host.increment(&counter);
        }
        if !log_entry::has_entries(policy, decision, &self.request) {
            return;
        }
        let entries = log_entry::render(policy, decision, &self.request, &response);
        if !host.write_log_entries(&entries) {
            host.log_warning("could not hand log entries to the access log");
        }
    }
}

fn text(host: &impl Host, header: &str) -> Option<String> {
    host.request_header(header).map(|bytes| lossy(&bytes))
}

fn read_request(policy: &Policy, host: &impl Host, raw_path: &[u8]) -> Request {
    let needs = &policy.reads;
    let mut request = Request {
        // For remote lists' age and the log entries' time: a direct host call, cheaper than
        // Envoy's `request.time` property later.
        time_micros: host.now_micros(),
        path: Some(lossy(raw_path)).filter(|p| !p.is_empty()),
        ..Request::default()
    };
    // Bytes that are not UTF-8 leave U+FFFD behind, which canonical_host refuses: such a host
    // is absent (and the request refused), never a near-miss of a listed one.
    if let Some(authority) = text(host, ":authority") {
        request.set_host(&authority);
    }
    if needs.attr(Attr::RequestMethod) {
        request.method = text(host, ":method");
    }
    if needs.attr(Attr::RequestScheme) {
        request.scheme = text(host, ":scheme");
    }
    if needs.attr(Attr::RequestUseragent) {
        request.useragent = text(host, "user-agent");
    }
    for name in &needs.headers {
        if let Some(value) = text(host, name) {
            request.headers.push((name.clone(), value));
        }
    }
    if needs.attr(Attr::SourceIp) {
        request.source.ip = host
            .property(&["source", "address"])
            .map(|bytes| strip_port(&lossy(&bytes)).to_owned());
    }
    if needs.attr(Attr::ConnectionMtls) || policy.reads_identity() {
        request.mtls = host
            .property(&["connection", "mtls"])
            .map(|b| b.first() == Some(&1));
    }
    if policy.reads_identity() {
        read_identity(policy, host, &mut request);
    }
    // Workload labels and name from Istio's peer metadata (the `downstream_peer` filter state
    // its metadata exchange sets, only for in-mesh mTLS callers); absent without Istio. Never
    // from request headers.
    if request.mtls == Some(true) {
        for key in &needs.labels {
            if let Some(value) = host.property(&["downstream_peer", "labels", key]) {
                request.source.labels.push((key.clone(), lossy(&value)));
            }
        }
        if needs.attr(Attr::SourceWorkload) {
            request.source.workload = host
                .property(&["downstream_peer", "workload"])
                .map(|bytes| lossy(&bytes));
        }
    }
    if needs.attr(Attr::ConnectionRequestedServerName) {
        request.requested_server_name = host
            .property(&["connection", "requested_server_name"])
            .map(|bytes| lossy(&bytes))
            .filter(|sni| !sni.is_empty());
    }
    request
}

/// Identity from the verified peer certificate; without one, from the trusted header if the
/// configuration names one. Never from any other header.
fn read_identity(policy: &Policy, host: &impl Host, request: &mut Request) {
    let parsed = if request.mtls == Some(true) {
        let sans = host
            .property(&["filter_state", PEER_URI_SANS])
            .or_else(|| host.property(&["connection", "uri_san_peer_certificate"]))
            .map(|bytes| lossy(&bytes))
            .filter(|sans| !sans.is_empty() && sans != "-");
        match sans {
            Some(sans) => identity::from_uri_sans(&sans, &policy.trust_domain),
            None => Err(IdentityError::Malformed("the certificate has no URI SAN")),
        }
    } else if let Some(header) = &policy.trusted_header {
        match text(host, header) {
            Some(id) => identity::parse_spiffe_id(&id, &policy.trust_domain),
            None => return,
        }
    } else {
        return;
    };
    match parsed {
        Ok(identity) => request.source.set_identity(&identity),
        Err(error) => request.identity_error = Some(error),
    }
}

fn read_response(
    policy: &Policy,
    host: &impl Host,
    code_unknown: bool,
    size_unknown: bool,
) -> Response {
    let needs = &policy.log_needs;
    let int = |path: &[&str]| host.property(path).and_then(|bytes| le_i64(&bytes));
    // Every request is counted by its code: from the response headers, else this property.
    Response {
        code: code_unknown.then(|| int(&["response", "code"])).flatten(),
        size: (size_unknown && needs.attr(Attr::ResponseSize))
            .then(|| int(&["response", "size"]))
            .flatten(),
        duration_ms: needs
            .attr(Attr::ResponseDuration)
            .then(|| int(&["request", "duration"]))
            .flatten()
            .map(|nanos| nanos / 1_000_000),
    }
}

/// Envoy serializes integer properties as 8 little-endian bytes.
fn le_i64(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_le_bytes(array))
}

/// `10.1.2.3:5555` -> `10.1.2.3`, `[::1]:5555` -> `::1`.
fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip,
        _ => address,
    }
}

#[cfg(test)]
mod tests;
