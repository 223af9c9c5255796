//! The network filter's adapter: the core's per-connection flow
//! ([`crate::core::connection::ConnectionFlow`]) over proxy-wasm properties and buffers.

use std::rc::Rc;

use super::{Active, Flow, StreamHost, int_property, read_facts};
use crate::core::attributes::{self, Attr, Source, UPSTREAM_LOCAL_ADDRESS};
use crate::core::connection::{self as flow, ConnectionFlow, Relayed};
use crate::core::headers::Headers;
use crate::core::host::Host;
use crate::core::refresh::Loaded;
use crate::core::request::{Protocol, RequestFacts};
use crate::telemetry::metrics::{CounterEvent, GaugeEvent};

pub use crate::core::connection::{EVENT_CLOSED, EVENT_REFUSED};

/// What the network filter needs from the proxy, besides properties.
pub trait ConnectionHost: StreamHost {
    /// The caller's bytes waiting in the proxy (not yet passed on), up to `max`.
    fn downstream_data(&self, max: usize) -> Option<Vec<u8>>;
    /// Closes the connection to the caller; nothing more is relayed either way.
    fn close_downstream(&self) -> bool;
    /// Names the destination the proxy relays an allowed connection to (the canonical SNI).
    fn route_to(&self, destination: &str) -> bool;
}

/// Property Envoy sets when the caller's TLS handshake with the gateway failed.
const TRANSPORT_FAILURE: &[&str] = &["connection", "transport_failure_reason"];

/// One connection's state from its start to its close.
pub struct ConnectionFilter {
    active: Option<Rc<Active>>,
    flow: ConnectionFlow,
}

impl ConnectionFilter {
    /// `active` is `None` when no valid configuration is loaded: every connection is then
    /// closed, never relayed unchecked.
    pub fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            flow: ConnectionFlow::default(),
        }
    }

    pub fn on_new_connection(&mut self, host: &impl ConnectionHost) -> Flow {
        let (loaded, host) = parts(&self.active, host);
        flow_of(self.flow.on_new_connection(loaded, &host))
    }

    pub fn on_downstream_data(
        &mut self,
        host: &impl ConnectionHost,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let (loaded, host) = parts(&self.active, host);
        flow_of(
            self.flow
                .on_downstream_data(loaded, &host, size, end_of_stream),
        )
    }

    pub fn on_upstream_data(&mut self) -> Flow {
        flow_of(self.flow.on_upstream_data())
    }

    pub fn on_downstream_close(&mut self, host: &impl ConnectionHost) {
        let (loaded, host) = parts(&self.active, host);
        self.flow.on_downstream_close(loaded, &host);
    }
}

/// The configuration and the core's host of one step.
fn parts<'a, H: ConnectionHost>(
    active: &'a Option<Rc<Active>>,
    host: &'a H,
) -> (Option<&'a Loaded>, Properties<'a, H>) {
    let active = active.as_deref();
    (active.map(|active| &**active), Properties { host, active })
}

fn flow_of(flow: flow::Flow) -> Flow {
    match flow {
        flow::Flow::Continue => Flow::Continue,
        flow::Flow::Stop => Flow::Stop,
    }
}

/// The core's connection host over proxy-wasm's properties.
struct Properties<'a, H> {
    host: &'a H,
    active: Option<&'a Active>,
}

impl<H: ConnectionHost> Host for Properties<'_, H> {
    fn now_micros(&self) -> Option<i64> {
        self.host.now_micros()
    }
    fn log_warning(&self, message: &str) {
        self.host.log_warning(message);
    }
    fn increment(&self, event: &CounterEvent<'_>) {
        self.host.increment(event);
    }
    fn set_gauge(&self, event: &GaugeEvent<'_>) {
        self.host.set_gauge(event);
    }
}

impl<H: ConnectionHost> flow::ConnectionHost for Properties<'_, H> {
    fn connection_facts(&self) -> RequestFacts {
        match self.active {
            Some(active) => read_facts(
                &active.connection_reads,
                self.host,
                Protocol::Tcp,
                Headers::default(),
                false,
            ),
            None => RequestFacts::default(),
        }
    }

    fn downstream_data(&self, max: usize) -> Option<Vec<u8>> {
        self.host.downstream_data(max)
    }

    fn handshake_failed(&self) -> bool {
        self.host
            .property(TRANSPORT_FAILURE)
            .is_some_and(|reason| !reason.is_empty())
    }

    fn close_downstream(&self) -> bool {
        self.host.close_downstream()
    }

    fn route_to(&self, destination: &str) -> bool {
        self.host.route_to(destination)
    }

    fn relayed(&self) -> Relayed {
        let bytes = |attr: Attr| match attributes::of(attr).map(|a| a.source) {
            Some(Source::AtClose(path)) => self
                .host
                .property(path)
                .and_then(|bytes| int_property(&bytes)),
            _ => Some(0),
        };
        Relayed {
            received_bytes: bytes(Attr::ConnectionReceivedBytes),
            sent_bytes: bytes(Attr::ConnectionSentBytes),
            upstream_connected: self
                .host
                .property(UPSTREAM_LOCAL_ADDRESS)
                .is_some_and(|address| !address.is_empty()),
        }
    }

    fn write_log_entries(&self, entries: &str) -> bool {
        self.host.write_log_entries(entries)
    }
}
