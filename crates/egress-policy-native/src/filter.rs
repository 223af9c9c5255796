//! The HTTP filter's flow as a native Envoy module, without `unsafe`: the same core calls as the
//! proxy-wasm filter (README: Adding a host), over [`EnvoyHost`], which `ffi.rs` implements with
//! the dynamic-modules callbacks.
//!
//! One configuration ([`Config`]) is shared by every worker thread: the core's `Loaded`, which
//! is `Send + Sync`, and the ids of its counters, defined with their label names when the
//! configuration is created (the ABI allows it only then). Each request has its own [`Stream`].

use std::sync::Arc;

use egress_policy_core::attributes::{self, Attr, Source};
use egress_policy_core::decision::Decision;
use egress_policy_core::headers::Headers;
use egress_policy_core::policy::{LocalReply, TunnelStep, tunnel_step};
use egress_policy_core::refresh::Loaded;

use crate::shared::Compiled;
use egress_policy_core::request::{
    Fact, Opening, Protocol, Request, RequestFacts, Response, headers_to_strip,
};
use egress_policy_core::telemetry::log_entry;
use egress_policy_core::telemetry::metrics::{Counter, CounterEvent};

/// Response code details of a request refused because the module panicked deciding it.
pub const PANIC_DETAILS: &str = "egress_policy_internal_error";

/// Response code details of a request refused because its headers could not be read or cleaned.
pub const HOST_ERROR_DETAILS: &str = "egress_policy_host_error";

/// Filter state the gateway's access log writes as the policy log (`envoy/gateway.yaml`). The
/// proxy-wasm filter's properties live under `wasm.`; the native module writes the same key, so
/// that one gateway configuration serves both builds.
pub const LOG_FILTER_STATE: &str = "wasm.egress_policy_log";

/// Filter state with every URI SAN of the verified peer certificate, comma-joined, set by the
/// gateway's `set_filter_state` filter: the caller's identity considers every SAN, as the wasm
/// build does. Clients cannot set filter state.
pub const PEER_URI_SANS: &str = "egress_policy.peer_uri_sans";

/// Envoy's attributes this module reads (`envoy_dynamic_module_type_attribute_id`, Envoy
/// 1.40.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    ResponseCode = 15,
    ResponseCodeDetails = 16,
    ResponseSize = 21,
    SourceAddress = 24,
    DestinationPort = 27,
    ConnectionMtls = 29,
    ConnectionRequestedServerName = 30,
    ConnectionUriSanPeerCertificate = 37,
}

/// What the flow needs from Envoy for the stream at hand. A host error is an absent value or
/// `false`, and the flow fails closed.
pub trait EnvoyHost {
    fn request_headers(&self) -> Option<Headers>;
    fn remove_request_header(&self, name: &[u8]) -> bool;
    fn response_status(&self) -> Option<i64>;
    fn attribute_text(&self, attribute: Attribute) -> Option<Vec<u8>>;
    fn attribute_int(&self, attribute: Attribute) -> Option<i64>;
    fn attribute_bool(&self, attribute: Attribute) -> Option<bool>;
    fn filter_state(&self, key: &str) -> Option<Vec<u8>>;
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool;
    fn send_local_reply(&self, reply: &LocalReply<'_>);
    /// The request body bytes of this hook (not those held before).
    fn received_request_body(&self) -> Option<Vec<u8>>;
    /// Resets the stream, both sides: a tunnel whose bytes may not be relayed.
    fn reset_stream(&self, details: &str);
    fn increment(&self, counter_id: usize, event: &CounterEvent<'_>);
}

/// Whether Envoy may go on with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// One filter configuration, shared by every worker.
#[derive(Debug)]
pub struct Config {
    compiled: Arc<Compiled>,
    fingerprint: u32,
    /// Envoy's id of each counter, in [`Counter::ALL`] order.
    counters: Vec<Option<usize>>,
    /// The property-sourced attributes the policy and the metrics' labels read, each with the
    /// Envoy attribute it comes from and whether it is an integer: resolved once, here.
    reads: Vec<(Attr, Attribute, bool)>,
}

impl Config {
    /// Compiles the plugin configuration (the JSON of the wasm filter's), with the Envoy id of
    /// each counter (in [`Counter::ALL`] order). Errors name what is wrong.
    pub fn new(json: &[u8], counters: Vec<Option<usize>>) -> Result<Config, Vec<String>> {
        let compiled = crate::shared::compiled(json)?;
        let loaded = &compiled.loaded;
        let mut needs = loaded.policy.reads.clone();
        needs.merge(&loaded.metrics.reads);
        let reads = needs
            .attrs
            .iter()
            .filter_map(|&attr| Some((attr, envoy_attribute(attr)?, is_int(attr))))
            .collect();
        Ok(Config {
            compiled: compiled.clone(),
            fingerprint: egress_policy_core::config::fingerprint(json),
            counters,
            reads,
        })
    }

    /// The compiled configuration, shared with the gateway's other filters.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    pub fn loaded(&self) -> &Loaded {
        &self.compiled.loaded
    }

    /// The configuration's fingerprint (`egress_policy_config_fingerprint`).
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    fn counter_id(&self, counter: Counter) -> Option<usize> {
        self.counters.get(counter as usize).copied().flatten()
    }
}

/// What a configuration decides on that this build cannot give it: the attributes Envoy
/// 1.40.0's dynamic-module ABI does not expose (Istio's peer metadata, the node id), each named.
/// A configuration whose rules or routes read one is refused, never run with the value absent:
/// a rule whose condition cannot be read would otherwise never hold, and let through what it
/// refuses. (A log field may read them: its fallback, `source.labels["app"] |
/// source.serviceAccount`, shows in the log what was there.)
pub fn unavailable(policy: &egress_policy_core::policy::Policy) -> Vec<String> {
    let mut names: Vec<&str> = policy
        .decision_needs
        .attrs
        .iter()
        .filter(|&&attr| {
            attributes::of(attr).is_some_and(|row| match row.source {
                Source::Property(_) => {
                    attr != Attr::ConnectionMtls && envoy_attribute(attr).is_none()
                }
                Source::PeerMetadata(_) => true,
                _ => false,
            })
        })
        .filter_map(|&attr| Some(attributes::of(attr)?.name))
        .collect();
    if !policy.decision_needs.labels.is_empty() {
        names.push("source.labels");
    }
    names
        .into_iter()
        .map(|name| {
            format!(
                "{name}: not available in the native build (Envoy's dynamic-module ABI does not \
                 expose it); run this configuration on the wasm build (README: Which build?)"
            )
        })
        .collect()
}

/// Where Envoy's dynamic-module ABI has the attribute the table reads from a property.
fn envoy_attribute(attr: Attr) -> Option<Attribute> {
    match attributes::of(attr)?.source {
        Source::Property(_) => match attr {
            Attr::SourceIp => Some(Attribute::SourceAddress),
            Attr::DestinationPort => Some(Attribute::DestinationPort),
            Attr::ConnectionRequestedServerName => Some(Attribute::ConnectionRequestedServerName),
            _ => None,
        },
        _ => None,
    }
}

fn is_int(attr: Attr) -> bool {
    attributes::of(attr).is_some_and(|row| row.ty == attributes::Type::Int)
}

/// One request, between its headers and the end of its stream.
pub struct Stream {
    config: Arc<Config>,
    request: Request,
    decision: Option<Decision>,
    /// When the request headers arrived: `response.duration` is measured from there (the ABI
    /// gives no request duration).
    started_micros: Option<i64>,
    /// An allowed `CONNECT`'s first bytes, held until they show its ClientHello.
    tunnel: Option<Vec<u8>>,
}

impl Stream {
    pub fn new(config: Arc<Config>) -> Self {
        Stream {
            config,
            request: Request::default(),
            decision: None,
            started_micros: None,
            tunnel: None,
        }
    }

    /// Decides the request from its headers.
    pub fn on_request_headers(&mut self, host: &impl EnvoyHost, end_of_stream: bool) -> Flow {
        let Some(headers) = host.request_headers() else {
            host.send_local_reply(&LocalReply::bare(500, HOST_ERROR_DETAILS));
            return Flow::Stop;
        };
        #[cfg(feature = "test-panic")]
        #[allow(clippy::panic, reason = "the test build's panic on demand")]
        if headers.get("x-egress-policy-test-panic").is_some() {
            panic!("x-egress-policy-test-panic");
        }
        if !strip_forwarding_controls(host, &headers) {
            host.send_local_reply(&LocalReply::bare(500, HOST_ERROR_DETAILS));
            return Flow::Stop;
        }
        let facts = self.facts(host, headers, !end_of_stream);
        self.started_micros = facts.time_micros;
        let loaded = &self.config.compiled.loaded;
        let (request, decision) = loaded.policy.decide(&facts, &loaded.remote.load());
        self.request = request;
        let flow = match loaded.policy.reply(&decision, &self.request) {
            Some(reply) => {
                host.send_local_reply(&reply);
                Flow::Stop
            }
            None => Flow::Continue,
        };
        if flow == Flow::Continue && self.request.is_connect() {
            self.tunnel = Some(Vec::new());
        }
        self.decision = Some(decision);
        flow
    }

    /// A tunnel's bytes are held until they show one ClientHello naming the host its `CONNECT`
    /// named, and the tunnel is reset before a byte is relayed if they do not; other bodies pass.
    pub fn on_request_body(&mut self, host: &impl EnvoyHost, end_of_stream: bool) -> Flow {
        let Some(first_bytes) = &mut self.tunnel else {
            return Flow::Continue;
        };
        first_bytes.extend(host.received_request_body().unwrap_or_default());
        match tunnel_step(
            &self.request,
            self.decision.as_mut(),
            first_bytes,
            end_of_stream,
        ) {
            TunnelStep::Hold => Flow::Stop,
            TunnelStep::Relay => {
                self.tunnel = None;
                Flow::Continue
            }
            TunnelStep::Reset(details) => {
                self.tunnel = None;
                host.reset_stream(&details);
                Flow::Stop
            }
        }
    }

    /// Notes nothing yet: the response's code and size are read when the stream completes.
    pub fn on_response_headers(&mut self, _host: &impl EnvoyHost) {}

    /// Counts the request and hands its log entries to the access log, which Envoy writes after
    /// this hook.
    pub fn on_complete(&mut self, host: &impl EnvoyHost) {
        let Some(decision) = &mut self.decision else {
            return;
        };
        let loaded = &self.config.compiled.loaded;
        let response = Response {
            code: host
                .response_status()
                .or_else(|| host.attribute_int(Attribute::ResponseCode)),
            size: host.attribute_int(Attribute::ResponseSize),
            duration_ms: loaded
                .policy
                .log_needs
                .attr(Attr::ResponseDuration)
                .then(|| Some(now_micros()?.saturating_sub(self.started_micros?).max(0) / 1_000))
                .flatten(),
            ..Response::default()
        };
        // Only Envoy's own 503 can be the address guard's refusal at connect time.
        if response.code == Some(503)
            && decision.outcome().forwarded()
            && let Some(details) = host.attribute_text(Attribute::ResponseCodeDetails)
        {
            decision.note_upstream(&details);
        }
        let decision = &*decision;
        loaded
            .metrics
            .count_request(decision, &self.request, response.code, |event| {
                if let Some(id) = self.config.counter_id(event.counter) {
                    host.increment(id, &event);
                }
            });
        if log_entry::has_entries(&loaded.policy, decision, &self.request) {
            let entries = loaded.log.render_sealed(
                &loaded.policy,
                decision,
                &self.request,
                &response,
                &loaded.remote.load(),
            );
            host.set_filter_state(LOG_FILTER_STATE, entries.as_bytes());
        }
    }

    /// The facts the policy needs: the headers, the connection's identity, and the attributes
    /// the configuration reads.
    fn facts(&self, host: &impl EnvoyHost, headers: Headers, has_body: bool) -> RequestFacts {
        let mtls = host.attribute_bool(Attribute::ConnectionMtls);
        let peer_uri_sans = if mtls == Some(true) {
            host.filter_state(PEER_URI_SANS)
                .or_else(|| host.attribute_text(Attribute::ConnectionUriSanPeerCertificate))
        } else {
            None
        };
        let properties = self
            .config
            .reads
            .iter()
            .filter_map(|&(attr, attribute, int)| {
                let fact = if int {
                    Fact::Int(host.attribute_int(attribute)?)
                } else {
                    Fact::Text(host.attribute_text(attribute)?)
                };
                Some((attr, fact))
            })
            .collect();
        RequestFacts {
            protocol: Protocol::Http,
            headers,
            has_body,
            mtls,
            peer_uri_sans,
            peer_labels: Vec::new(),
            properties,
            time_micros: now_micros(),
            opening: Opening::Unseen,
        }
    }
}

/// Removes the headers no destination may act on; `false` when Envoy refused a removal.
fn strip_forwarding_controls(host: &impl EnvoyHost, headers: &Headers) -> bool {
    headers_to_strip(headers)
        .into_iter()
        .all(|name| host.remove_request_header(name))
}

pub fn now_micros() -> Option<i64> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    i64::try_from(since_epoch.as_micros()).ok()
}
