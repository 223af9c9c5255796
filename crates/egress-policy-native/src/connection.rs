//! The network filter's flow as a native Envoy module (`envoy.filters.network.dynamic_modules`),
//! without `unsafe`: the core's per-connection flow ([`ConnectionFlow`], the one the proxy-wasm
//! network filter runs) over [`EnvoyConnection`], which `ffi/network.rs` implements with the
//! dynamic-modules callbacks.

use std::sync::Arc;

use egress_policy_core::attributes::{self, Attr, Source};
use egress_policy_core::connection::{self, ConnectionFlow, Relayed};
use egress_policy_core::host::Host;
use egress_policy_core::request::{Fact, Protocol, RequestFacts};
use egress_policy_core::telemetry::metrics::{CounterEvent, GaugeEvent};

pub use egress_policy_core::connection::Flow;

use crate::filter::LOG_FILTER_STATE;
use crate::shared::Compiled;

/// Filter state naming the destination of an allowed connection: the canonical server name the
/// policy decided on, which the gateway's `set_filter_state` filter makes `tcp_proxy`'s cluster
/// (`envoy/gateway.yaml`). The wasm build's key, so one gateway configuration serves both.
pub const DESTINATION_FILTER_STATE: &str = "wasm.egress_policy_destination";

/// What the flow needs from Envoy for the connection at hand. A host error is an absent value or
/// `false`, and the flow fails closed.
pub trait EnvoyConnection {
    /// The caller's bytes in the read buffer (not yet passed on), up to `max`.
    fn read_buffer(&self, max: usize) -> Option<Vec<u8>>;
    fn close(&self) -> bool;
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool;
    fn requested_server_name(&self) -> Option<Vec<u8>>;
    /// The caller's address as `ip:port` (`[ip]:port` for IPv6).
    fn remote_address(&self) -> Option<Vec<u8>>;
    fn local_port(&self) -> Option<i64>;
    /// The connection is TLS terminated here, and the caller presented a verified certificate.
    fn mtls(&self) -> bool;
    /// Every URI SAN of the caller's certificate.
    fn peer_uri_sans(&self) -> Vec<Vec<u8>>;
    /// Why the caller's TLS handshake failed, if it did.
    fn transport_failure(&self) -> Option<Vec<u8>>;
    /// `tcp_proxy` connected to the destination.
    fn has_upstream_host(&self) -> bool;
    fn increment(&self, event: &CounterEvent<'_>);
    fn log_warning(&self, message: &str);
}

/// One network filter configuration, shared by every worker.
#[derive(Debug)]
pub struct NetworkConfig {
    compiled: Arc<Compiled>,
    /// The property-sourced attributes the policy and the metrics' labels read.
    reads: Vec<Attr>,
}

impl NetworkConfig {
    pub fn new(json: &[u8]) -> Result<NetworkConfig, Vec<String>> {
        let compiled = crate::shared::compiled(json)?;
        let loaded = &compiled.loaded;
        let mut needs = loaded.policy.reads.clone();
        needs.merge(&loaded.metrics.reads);
        // A connection is always decided on its SNI and port.
        needs.add(Attr::ConnectionRequestedServerName);
        needs.add(Attr::DestinationPort);
        let reads = needs
            .attrs
            .iter()
            .copied()
            .filter(|&attr| {
                attributes::of(attr).is_some_and(|row| matches!(row.source, Source::Property(_)))
            })
            .collect();
        Ok(NetworkConfig {
            compiled: compiled.clone(),
            reads,
        })
    }
}

/// One connection, from its start to its close.
pub struct Connection {
    config: Arc<NetworkConfig>,
    flow: ConnectionFlow,
    /// Bytes passed on each way once allowed (what Envoy relayed through this filter).
    received: i64,
    sent: i64,
}

impl Connection {
    pub fn new(config: Arc<NetworkConfig>) -> Self {
        Connection {
            config,
            flow: ConnectionFlow::default(),
            received: 0,
            sent: 0,
        }
    }

    pub fn on_new_connection(&mut self, envoy: &impl EnvoyConnection) -> Flow {
        let host = native_host(&self.config, envoy, self.received, self.sent);
        let loaded = Some(&self.config.compiled.loaded);
        self.flow.on_new_connection(loaded, &host)
    }

    /// `size` is every byte in the read buffer: what was held and what just arrived.
    pub fn on_read(&mut self, envoy: &impl EnvoyConnection, size: usize, end: bool) -> Flow {
        #[cfg(feature = "test-panic")]
        #[allow(clippy::panic, reason = "the test build's panic on demand")]
        if envoy
            .read_buffer(usize::MAX)
            .is_some_and(|bytes| bytes.windows(17).any(|w| w == b"egress-test-panic"))
        {
            panic!("a ClientHello naming egress-test-panic");
        }
        let host = native_host(&self.config, envoy, self.received, self.sent);
        let loaded = Some(&self.config.compiled.loaded);
        let flow = self.flow.on_downstream_data(loaded, &host, size, end);
        if flow == Flow::Continue {
            self.received = self
                .received
                .saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
        }
        flow
    }

    pub fn on_write(&mut self, size: usize) -> Flow {
        let flow = self.flow.on_upstream_data();
        if flow == Flow::Continue {
            self.sent = self
                .sent
                .saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
        }
        flow
    }

    pub fn on_close(&mut self, envoy: &impl EnvoyConnection) {
        let host = native_host(&self.config, envoy, self.received, self.sent);
        let loaded = Some(&self.config.compiled.loaded);
        self.flow.on_downstream_close(loaded, &host);
    }
}

fn native_host<'a, E>(
    config: &'a NetworkConfig,
    envoy: &'a E,
    received: i64,
    sent: i64,
) -> NativeHost<'a, E> {
    NativeHost {
        envoy,
        reads: &config.reads,
        received,
        sent,
    }
}

/// The core's connection host over Envoy's callbacks.
struct NativeHost<'a, E> {
    envoy: &'a E,
    reads: &'a [Attr],
    received: i64,
    sent: i64,
}

impl<E: EnvoyConnection> Host for NativeHost<'_, E> {
    fn now_micros(&self) -> Option<i64> {
        crate::filter::now_micros()
    }
    fn log_warning(&self, message: &str) {
        self.envoy.log_warning(message);
    }
    fn increment(&self, event: &CounterEvent<'_>) {
        self.envoy.increment(event);
    }
    /// The network filter sets no gauge (the HTTP filter's configuration publishes them).
    fn set_gauge(&self, _event: &GaugeEvent<'_>) {}
}

impl<E: EnvoyConnection> connection::ConnectionHost for NativeHost<'_, E> {
    fn connection_facts(&self) -> RequestFacts {
        let mtls = self.envoy.mtls();
        // Every URI SAN, comma-joined like Envoy's %DOWNSTREAM_PEER_URI_SAN%: the identity
        // considers each one, as the HTTP filter's does.
        let peer_uri_sans = mtls.then(|| self.envoy.peer_uri_sans().join(&b","[..]));
        let properties = self
            .reads
            .iter()
            .filter_map(|&attr| {
                let fact = match attr {
                    Attr::SourceIp => Fact::Text(self.envoy.remote_address()?),
                    Attr::DestinationPort => Fact::Int(self.envoy.local_port()?),
                    Attr::ConnectionRequestedServerName => {
                        Fact::Text(self.envoy.requested_server_name()?)
                    }
                    // Istio's peer metadata and the node id: not offered by the network ABI.
                    _ => return None,
                };
                Some((attr, fact))
            })
            .collect();
        RequestFacts {
            protocol: Protocol::Tcp,
            mtls: Some(mtls),
            peer_uri_sans,
            properties,
            time_micros: crate::filter::now_micros(),
            ..RequestFacts::default()
        }
    }

    fn downstream_data(&self, max: usize) -> Option<Vec<u8>> {
        self.envoy.read_buffer(max)
    }

    fn handshake_failed(&self) -> bool {
        self.envoy
            .transport_failure()
            .is_some_and(|reason| !reason.is_empty())
    }

    fn close_downstream(&self) -> bool {
        self.envoy.close()
    }

    fn route_to(&self, destination: &str) -> bool {
        self.envoy
            .set_filter_state(DESTINATION_FILTER_STATE, destination.as_bytes())
    }

    fn relayed(&self) -> Relayed {
        Relayed {
            received_bytes: Some(self.received),
            sent_bytes: Some(self.sent),
            upstream_connected: self.envoy.has_upstream_host(),
        }
    }

    fn write_log_entries(&self, entries: &str) -> bool {
        self.envoy
            .set_filter_state(LOG_FILTER_STATE, entries.as_bytes())
    }
}
