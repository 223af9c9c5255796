//! The per-connection flow of the network filter (TLS egress, README: HTTPS egress), for every
//! host: the proxy-wasm filter and the native module run this state machine over their own
//! [`ConnectionHost`].
//!
//! The proxy runs the filter before `tcp_proxy`. The filter holds the connection from its start
//! (`tcp_proxy` does not open the upstream connection while a filter before it has not let
//! the connection go on) until it has decided: on the caller's first bytes, when the mTLS
//! handshake is over and its ClientHello has arrived whole. Allowed, the held bytes and the rest
//! are relayed; refused, the connection is closed and the destination never hears of it. One log
//! entry per connection: when refused, or when it ends.

use crate::decision::Decision;
use crate::host::Host;
use crate::refresh::Loaded;
use crate::request::{Opening, Request, RequestFacts, Response};
use crate::telemetry::log_entry;
use crate::tls::{self, MAX_FIRST_BYTES, Scan};

/// What the per-connection flow needs from the proxy.
pub trait ConnectionHost: Host {
    /// The connection's facts the policy reads (identity, addresses, the attributes the
    /// configuration names); the flow adds how the connection began.
    fn connection_facts(&self) -> RequestFacts;
    /// The caller's bytes waiting in the proxy (not yet passed on), up to `max`.
    fn downstream_data(&self, max: usize) -> Option<Vec<u8>>;
    /// The caller's TLS handshake with the gateway failed.
    fn handshake_failed(&self) -> bool;
    /// Closes the connection to the caller; nothing more is relayed either way.
    fn close_downstream(&self) -> bool;
    /// Names the destination the proxy relays an allowed connection to: the canonical server
    /// name the policy decided on, never the raw SNI (`api.ibm.com.` goes to `api.ibm.com`).
    fn route_to(&self, destination: &str) -> bool;
    /// What the proxy relayed, read when the connection ends.
    fn relayed(&self) -> Relayed;
    /// Hands the rendered entries (JSON lines joined by `\n`) to the proxy's access log.
    fn write_log_entries(&self, entries: &str) -> bool;
}

/// Bytes each way as the proxy relayed them, and whether it connected to the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    pub received_bytes: Option<i64>,
    pub sent_bytes: Option<i64>,
    pub upstream_connected: bool,
}

/// `connection.event` of a connection refused when it opened.
pub const EVENT_REFUSED: &str = "open";
/// `connection.event` of a connection logged when it ended.
pub const EVENT_CLOSED: &str = "close";

/// Whether the proxy may go on with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Held (undecided) or refused.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the caller's ClientHello; nothing is relayed.
    Opening,
    /// Allowed: bytes pass both ways.
    Relaying,
    /// Refused (or never decidable): closed, logged.
    Refused,
}

/// One connection's state from its start to its close. The configuration (`None` when no
/// valid one is loaded: every connection is then closed, never relayed unchecked) is the
/// caller's, passed to each step, so that each host keeps it as it shares it.
#[derive(Debug)]
pub struct ConnectionFlow {
    state: State,
    started_micros: Option<i64>,
    /// The caller's first bytes read so far, while its ClientHello is incomplete.
    first_bytes: Vec<u8>,
    request: Request,
    decision: Option<Decision>,
    logged: bool,
}

impl Default for ConnectionFlow {
    fn default() -> Self {
        ConnectionFlow {
            state: State::Opening,
            started_micros: None,
            first_bytes: Vec::new(),
            request: Request::default(),
            decision: None,
            logged: false,
        }
    }
}

impl ConnectionFlow {
    /// Holds every new connection until it is decided.
    pub fn on_new_connection(
        &mut self,
        loaded: Option<&Loaded>,
        host: &impl ConnectionHost,
    ) -> Flow {
        self.started_micros = host.now_micros();
        if loaded.is_none() {
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
        loaded: Option<&Loaded>,
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
                    return self.decide(loaded, host, Opening::FirstBytes(Vec::new()));
                };
                let incomplete = tls::scan(&bytes) == Scan::Incomplete;
                if incomplete && !end_of_stream && bytes.len() < MAX_FIRST_BYTES {
                    // Left in the proxy's buffer: handed over again, with what follows.
                    self.first_bytes = bytes;
                    return Flow::Stop;
                }
                self.decide(loaded, host, Opening::FirstBytes(bytes))
            }
        }
    }

    /// Bytes from the destination pass only on an allowed connection.
    pub fn on_upstream_data(&self) -> Flow {
        match self.state {
            State::Relaying => Flow::Continue,
            State::Opening | State::Refused => Flow::Stop,
        }
    }

    /// The connection ended: its log entry, unless it was refused (and logged) already. One that
    /// ended before it could be decided is refused now, for what it was.
    pub fn on_downstream_close(&mut self, loaded: Option<&Loaded>, host: &impl ConnectionHost) {
        match self.state {
            State::Opening => {
                let opening = if host.handshake_failed() {
                    Opening::HandshakeFailed
                } else if self.first_bytes.is_empty() {
                    Opening::ClosedEarly
                } else {
                    Opening::FirstBytes(std::mem::take(&mut self.first_bytes))
                };
                let _ = self.decide(loaded, host, opening);
            }
            State::Relaying => self.log(loaded, host, EVENT_CLOSED),
            State::Refused => {}
        }
    }

    /// Decides the connection; allowed, it goes on with the bytes held so far.
    fn decide(
        &mut self,
        loaded: Option<&Loaded>,
        host: &impl ConnectionHost,
        opening: Opening,
    ) -> Flow {
        let Some(loaded) = loaded else {
            self.state = State::Refused;
            host.close_downstream();
            return Flow::Stop;
        };
        let mut facts = host.connection_facts();
        facts.opening = opening;
        let (request, decision) = loaded.policy.decide(&facts, &loaded.remote.load());
        loaded
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
        self.log(Some(loaded), host, EVENT_REFUSED);
        if !host.close_downstream() {
            host.log_warning("egress-policy: could not close a refused connection");
        }
        Flow::Stop
    }

    fn log(&mut self, loaded: Option<&Loaded>, host: &impl ConnectionHost, event: &'static str) {
        let (Some(loaded), Some(decision)) = (loaded, &self.decision) else {
            return;
        };
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let policy = &loaded.policy;
        if !log_entry::has_entries(policy, decision, &self.request) {
            return;
        }
        let duration_ms = match (self.started_micros, host.now_micros()) {
            (Some(start), Some(now)) => Some(now.saturating_sub(start).max(0) / 1_000),
            _ => None,
        };
        // A refused connection relayed nothing (what the caller sent was read, never passed on).
        let relayed = if event == EVENT_CLOSED {
            host.relayed()
        } else {
            Relayed {
                received_bytes: Some(0),
                sent_bytes: Some(0),
                upstream_connected: false,
            }
        };
        let response = Response {
            duration_ms,
            received_bytes: relayed.received_bytes,
            sent_bytes: relayed.sent_bytes,
            event: Some(event),
            relayed: Some(relayed.upstream_connected),
            ..Response::default()
        };
        let entries = loaded.log.render_sealed(
            policy,
            decision,
            &self.request,
            &response,
            &loaded.remote.load(),
        );
        if !host.write_log_entries(&entries) {
            host.log_warning("egress-policy: could not hand log entries to the access log");
        }
    }
}
