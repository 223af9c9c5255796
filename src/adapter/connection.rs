//! The per-connection flow of the network filter (TLS egress, README: HTTPS egress).
//!
//! Envoy runs the filter before `tcp_proxy`. The filter holds the connection from its start
//! (`tcp_proxy` does not open the upstream connection while a filter before it has not let
//! the connection go on) until it has decided: on the caller's first bytes, when the mTLS
//! handshake is over and its ClientHello has arrived whole. Allowed, the held bytes and the rest
//! are relayed; refused, the connection is closed and the destination never hears of it. One log
//! entry per connection: when refused, or when it ends.

use std::rc::Rc;

use super::{Active, Flow, StreamHost, int_property, read_facts};
use crate::core::attributes::{self, Attr, Source, UPSTREAM_LOCAL_ADDRESS};
use crate::core::decision::Decision;
use crate::core::headers::Headers;
use crate::core::request::{Opening, Protocol, Request, Response};
use crate::core::tls::{self, MAX_FIRST_BYTES, Scan};
use crate::telemetry::log_entry;

/// What the per-connection flow needs from the proxy.
pub trait ConnectionHost: StreamHost {
    /// The caller's bytes waiting in the proxy (not yet passed on), up to `max`.
    fn downstream_data(&self, max: usize) -> Option<Vec<u8>>;
    /// Closes the connection to the caller; nothing more is relayed either way.
    fn close_downstream(&self) -> bool;
    /// Names the destination the proxy relays an allowed connection to: the canonical server
    /// name the policy decided on, never the raw SNI (`api.ibm.com.` goes to `api.ibm.com`).
    fn route_to(&self, destination: &str) -> bool;
}

/// `connection.event` of a connection refused when it opened.
pub const EVENT_REFUSED: &str = "open";
/// `connection.event` of a connection logged when it ended.
pub const EVENT_CLOSED: &str = "close";

/// Property Envoy sets when the caller's TLS handshake with the gateway failed.
const TRANSPORT_FAILURE: &[&str] = &["connection", "transport_failure_reason"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the caller's ClientHello; nothing is relayed.
    Opening,
    /// Allowed: bytes pass both ways.
    Relaying,
    /// Refused (or never decidable): closed, logged.
    Refused,
}

/// One connection's state from its start to its close.
pub struct ConnectionFilter {
    active: Option<Rc<Active>>,
    state: State,
    started_micros: Option<i64>,
    /// The caller's first bytes read so far, while its ClientHello is incomplete.
    first_bytes: Vec<u8>,
    request: Request,
    decision: Option<Decision>,
    logged: bool,
}

impl ConnectionFilter {
    /// `active` is `None` when no valid configuration is loaded: every connection is then
    /// closed, never relayed unchecked.
    pub fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            state: State::Opening,
            started_micros: None,
            first_bytes: Vec::new(),
            request: Request::default(),
            decision: None,
            logged: false,
        }
    }

    /// Holds every new connection until it is decided.
    pub fn on_new_connection(&mut self, host: &impl ConnectionHost) -> Flow {
        self.started_micros = host.now_micros();
        if self.active.is_none() {
            host.log_warning("egress-policy: no valid configuration is loaded; connection closed");
            self.state = State::Refused;
            host.close_downstream();
        }
        Flow::Stop
    }

    /// `size` is every byte from the caller not yet passed on, old and new: until the filter
    /// lets the connection go on, what it read stays in the proxy's buffer.
    pub fn on_downstream_data(
        &mut self,
        host: &impl ConnectionHost,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        match self.state {
            State::Refused => Flow::Stop,
            State::Relaying => Flow::Continue,
            State::Opening => {
                let Some(bytes) = host.downstream_data(size.min(MAX_FIRST_BYTES)) else {
                    host.log_warning("egress-policy: cannot read the caller's first bytes; closed");
                    return self.decide(host, Opening::FirstBytes(Vec::new()));
                };
                let incomplete = tls::scan(&bytes) == Scan::Incomplete;
                if incomplete && !end_of_stream && bytes.len() < MAX_FIRST_BYTES {
                    // Left in the proxy's buffer: handed over again, with what follows.
                    self.first_bytes = bytes;
                    return Flow::Stop;
                }
                self.decide(host, Opening::FirstBytes(bytes))
            }
        }
    }

    /// Bytes from the destination pass only on an allowed connection.
    pub fn on_upstream_data(&mut self) -> Flow {
        match self.state {
            State::Relaying => Flow::Continue,
            State::Opening | State::Refused => Flow::Stop,
        }
    }

    /// The connection ended: its log entry, unless it was refused (and logged) already. One that
    /// ended before it could be decided is refused now, for what it was.
    pub fn on_downstream_close(&mut self, host: &impl ConnectionHost) {
        match self.state {
            State::Opening => {
                let opening = if host
                    .property(TRANSPORT_FAILURE)
                    .is_some_and(|r| !r.is_empty())
                {
                    Opening::HandshakeFailed
                } else if self.first_bytes.is_empty() {
                    Opening::ClosedEarly
                } else {
                    Opening::FirstBytes(std::mem::take(&mut self.first_bytes))
                };
                let _ = self.decide(host, opening);
            }
            State::Relaying => self.log(host, EVENT_CLOSED),
            State::Refused => {}
        }
    }

    /// Decides the connection; allowed, it goes on with the bytes held so far.
    fn decide(&mut self, host: &impl ConnectionHost, opening: Opening) -> Flow {
        let Some(active) = self.active.clone() else {
            self.state = State::Refused;
            host.close_downstream();
            return Flow::Stop;
        };
        let mut facts = read_facts(
            &active.connection_reads,
            host,
            Protocol::Tcp,
            Headers::default(),
            false,
        );
        facts.opening = opening;
        let policy = &active.policy;
        let (request, decision) = policy.decide(&facts, &active.remote.load());
        active
            .metrics
            .count_request(&decision, &request, None, |event| host.increment(&event));
        let forwarded = decision.outcome().forwarded();
        // Relayed where it was decided, or not at all: a proxy that cannot be told the
        // destination would route on bytes the policy did not decide on.
        let routed = forwarded
            && request
                .requested_server_name
                .as_deref()
                .is_some_and(|destination| host.route_to(destination));
        if forwarded && !routed {
            host.log_warning(
                "egress-policy: cannot name the allowed connection's destination to the proxy; closed",
            );
        }
        self.request = request;
        self.decision = Some(decision);
        self.first_bytes = Vec::new();
        if routed {
            self.state = State::Relaying;
            return Flow::Continue;
        }
        self.state = State::Refused;
        self.log(host, EVENT_REFUSED);
        if !host.close_downstream() {
            host.log_warning("egress-policy: could not close a refused connection");
        }
        Flow::Stop
    }

    fn log(&mut self, host: &impl ConnectionHost, event: &'static str) {
        let (Some(active), Some(decision)) = (&self.active, &self.decision) else {
            return;
        };
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let policy = &active.policy;
        if !log_entry::has_entries(policy, decision, &self.request) {
            return;
        }
        let duration_ms = match (self.started_micros, host.now_micros()) {
            (Some(start), Some(now)) => Some(now.saturating_sub(start).max(0) / 1_000),
            _ => None,
        };
        // Bytes each way as Envoy relayed them; a refused connection relayed none (what the
        // caller sent was read, never passed on).
        let relayed = |attr: Attr| match attributes::of(attr).map(|a| a.source) {
            Some(Source::AtClose(path)) if event == EVENT_CLOSED => {
                host.property(path).and_then(|bytes| int_property(&bytes))
            }
            _ => Some(0),
        };
        let upstream_connected = event == EVENT_CLOSED
            && host
                .property(UPSTREAM_LOCAL_ADDRESS)
                .is_some_and(|address| !address.is_empty());
        let response = Response {
            duration_ms,
            received_bytes: relayed(Attr::ConnectionReceivedBytes),
            sent_bytes: relayed(Attr::ConnectionSentBytes),
            event: Some(event),
            relayed: Some(upstream_connected),
            ..Response::default()
        };
        let entries = active
            .log
            .render(policy, decision, &self.request, &response);
        if !host.write_log_entries(&entries) {
            host.log_warning("egress-policy: could not hand log entries to the access log");
        }
    }
}
