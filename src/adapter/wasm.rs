//! proxy-wasm glue: the root context runs [`ListRefresher`], HTTP contexts run
//! [`RequestFilter`], network (stream) contexts run [`ConnectionFilter`], all against
//! [`WasmHost`]. The SDK is used for its dispatcher (contexts and
//! callbacks) only: its host-call helpers panic on a host status they do not expect, and a panic
//! traps the VM for every request, so every host call here goes through [`abi`], whose calls
//! return `None` or `false` instead.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};

use super::{
    ConnectionFilter, ConnectionHost, Flow, Host, HttpHost, ListHost, ListRefresher, NoSharedData,
    PendingCounters, RequestFilter, StreamHost,
};
use crate::core::headers::Headers;
use crate::core::policy::provider::Provider;
use crate::core::policy::{LocalReply, Policy};
use crate::telemetry::metrics::{self, CounterEvent, Gauge, GaugeEvent};

/// Filter-state key (Envoy prefixes `wasm.`) holding the rendered entries for the access log:
/// `%FILTER_STATE(wasm.egress_policy_log:PLAIN)%`.
const LOG_PROPERTY: &str = "egress_policy_log";
/// The allowed connection's destination, filter state `wasm.egress_policy_destination`: the
/// bundled gateway's `set_filter_state` makes it `tcp_proxy`'s cluster
/// (`envoy.tcp_proxy.cluster`), so Envoy routes on the name the policy decided on.
const DESTINATION_PROPERTY: &str = "egress_policy_destination";

/// The root id (Istio: the WasmPlugin's `pluginName`) under which the module runs as a network
/// filter, deciding connections; under any other it is the HTTP filter. The SDK asks the root
/// context which kind of context to create, and only the root id tells them apart.
pub const NETWORK_ROOT_ID: &str = "egress-policy-tcp";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { lists: ListRefresher::default(), network: false })
    });
}}

/// One per plugin and VM (each Envoy worker has its own): compiles the configuration and keeps
/// its remote lists fresh.
struct Root {
    lists: ListRefresher,
    /// This plugin is the network filter ([`NETWORK_ROOT_ID`]).
    network: bool,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.lists
            .on_http_call_response(&WasmHost, token_id, num_headers, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.network =
            abi::property(&["plugin_root_id"]).as_deref() == Some(NETWORK_ROOT_ID.as_bytes());
        let Some(bytes) = abi::buffer(abi::BUFFER_PLUGIN_CONFIGURATION, usize::MAX) else {
            abi::log(
                abi::LOG_ERROR,
                "egress-policy: cannot read the plugin configuration",
            );
            return false;
        };
        // A signing key that is set but unusable refuses the configuration: lines nobody can
        // vouch for must not be written while the operator believes they are signed.
        let key = crate::core::evidence::process_signing_key();
        if let Err(why) = key {
            increment_now(&metrics::counter_name(&metrics::config_load(false)));
            abi::log(
                abi::LOG_ERROR,
                &format!("egress-policy: configuration refused: {why}"),
            );
            return false;
        }
        let compiled = Policy::from_json(&bytes);
        increment_now(&metrics::counter_name(&metrics::config_load(
            compiled.is_ok(),
        )));
        match compiled {
            Ok(policy) => {
                if matches!(key, Ok(None)) && !self.network {
                    abi::log(abi::LOG_WARN, UNSIGNED_WARNING);
                }
                WasmHost.set_gauge(&GaugeEvent::new(
                    Gauge::ConfigFingerprint,
                    &[],
                    u64::from(crate::core::config::fingerprint(&bytes)),
                ));
                publish_version(self.owner(), Some(&policy.version));
                let tick = self.lists.configure(&WasmHost, policy);
                let millis = u32::try_from(tick / 1_000).unwrap_or(200);
                if !abi::set_tick_period_millis(millis) {
                    abi::log(
                        abi::LOG_ERROR,
                        "egress-policy: cannot start the timer for lists and metrics",
                    );
                    return false;
                }
                true
            }
            Err(errors) => {
                // Returning false makes Envoy refuse this configuration; on a reload the
                // previous one keeps serving.
                for error in &errors.0 {
                    abi::log(
                        abi::LOG_ERROR,
                        &format!("egress-policy: invalid configuration: {error}"),
                    );
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.lists.on_tick(&WasmHost);
        flush_counters();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            filter: RequestFilter::new(self.lists.active()),
        }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Tcp {
            filter: ConnectionFilter::new(self.lists.active()),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if self.network {
            ContextType::StreamContext
        } else {
            ContextType::HttpContext
        })
    }
}

/// Said once per configuration when no signing key is set.
const UNSIGNED_WARNING: &str = "egress-policy: no EGRESS_LOG_SIGNING_KEY: log lines are chained but no checkpoint is signed, so `audit --verify` can vouch for none (README: Security)";

impl Root {
    /// What tells this root's configuration from the VM's others in the info gauge.
    fn owner(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        publish_version(self.owner(), None);
    }
}

/// `egress_policy_config_info{version}`: 1 while a configuration of this VM serves the version.
fn publish_version(owner: usize, version: Option<&str>) {
    for (version, value) in crate::core::telemetry::metrics::versions_in_force(owner, version) {
        WasmHost.set_gauge(&GaugeEvent::new(Gauge::ConfigInfo, &[&version], value));
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Stop => Action::Pause,
    }
}

struct Tcp {
    filter: ConnectionFilter,
}

impl Context for Tcp {}

impl StreamContext for Tcp {
    fn on_new_connection(&mut self) -> Action {
        action(self.filter.on_new_connection(&WasmHost))
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        action(
            self.filter
                .on_downstream_data(&WasmHost, data_size, end_of_stream),
        )
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.filter.on_downstream_close(&WasmHost);
    }

    fn on_upstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        action(self.filter.on_upstream_data())
    }
}

struct Http {
    filter: RequestFilter,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // A test-only build traps here on demand, to prove that Envoy reloads a crashed VM and
        // refuses requests meanwhile (tests/integration/e2e.rs); the module Envoy loads has no such code.
        #[cfg(feature = "test-trap")]
        if abi::map_value(abi::MAP_REQUEST_HEADERS, "x-egress-policy-test-trap").is_some() {
            core::arch::wasm32::unreachable();
        }
        action(self.filter.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.filter
                .on_request_body(&WasmHost, body_size, end_of_stream),
        )
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.filter.on_response_headers(&WasmHost);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        self.filter.on_response_body(body_size);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.filter.on_log(&WasmHost);
    }
}

/// The host traits over proxy-wasm host calls.
struct WasmHost;

impl Host for WasmHost {
    fn now_micros(&self) -> Option<i64> {
        abi::now_nanos().and_then(|nanos| i64::try_from(nanos / 1_000).ok())
    }

    fn log_warning(&self, message: &str) {
        abi::log(abi::LOG_WARN, message);
    }

    /// Counted in the VM and flushed to Envoy on the root context's tick ([`flush_counters`]):
    /// one host call per counter and tick instead of several per request.
    fn increment(&self, event: &CounterEvent<'_>) {
        PENDING.with(|pending| {
            if let Ok(mut pending) = pending.try_borrow_mut() {
                pending.count(event);
            }
        });
    }

    fn set_gauge(&self, event: &GaugeEvent<'_>) {
        if let Some(id) = metric(abi::METRIC_GAUGE, &metrics::gauge_name(event)) {
            abi::record_metric(id, event.value);
        }
    }
}

impl HttpHost for WasmHost {
    fn request_headers(&self) -> Option<Headers> {
        abi::map_pairs(abi::MAP_REQUEST_HEADERS).map(super::header_map::decode)
    }

    fn remove_request_header(&self, name: &[u8]) -> bool {
        abi::remove_map_value(abi::MAP_REQUEST_HEADERS, name)
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        abi::map_value(abi::MAP_RESPONSE_HEADERS, name)
    }

    fn send_local_reply(&self, reply: &LocalReply<'_>) -> bool {
        abi::send_local_response(
            reply.status,
            &reply.details,
            reply.body.as_bytes(),
            &super::header_map::serialize(reply.headers),
        )
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::buffer(abi::BUFFER_HTTP_REQUEST_BODY, size)
    }

    fn reset_stream(&self) -> bool {
        abi::close_stream(abi::STREAM_HTTP_REQUEST)
    }
}

impl StreamHost for WasmHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path)
    }

    fn write_log_entries(&self, entries: &str) -> bool {
        abi::set_property(&[LOG_PROPERTY], entries.as_bytes())
    }
}

impl ConnectionHost for WasmHost {
    fn downstream_data(&self, max: usize) -> Option<Vec<u8>> {
        abi::buffer(abi::BUFFER_DOWNSTREAM_DATA, max)
    }

    fn close_downstream(&self) -> bool {
        abi::close_stream(abi::STREAM_DOWNSTREAM)
    }

    fn route_to(&self, destination: &str) -> bool {
        abi::set_property(&[DESTINATION_PROPERTY], destination.as_bytes())
    }
}

impl ListHost for WasmHost {
    fn dispatch_http_call(&self, provider: &Provider) -> Result<u32, String> {
        // The one host call through the SDK: its dispatcher must learn the token to route the
        // answer back to the root context, and it offers no other way to tell it. It returns an
        // error for the statuses Envoy gives a call it cannot make; it would panic (trapping the
        // VM, which `FAIL_RELOAD` reloads) only on statuses Envoy's `httpCall` does not return.
        proxy_wasm::hostcalls::dispatch_http_call(
            &provider.cluster,
            provider.request_headers().to_vec(),
            None,
            vec![],
            Duration::from_millis(u64::from(provider.timeout_millis())),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn http_call_response_status(&self) -> Option<Vec<u8>> {
        abi::map_value(abi::MAP_HTTP_CALL_RESPONSE_HEADERS, ":status")
    }

    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::buffer(abi::BUFFER_HTTP_CALL_RESPONSE_BODY, size)
    }

    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, NoSharedData> {
        abi::shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, NoSharedData> {
        abi::set_shared_data(key, value, cas)
    }
}

thread_local! {
    /// Metric ids by name: defining a metric is a host call, so each is defined once per VM.
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Counts not yet handed to Envoy.
    static PENDING: RefCell<PendingCounters> = RefCell::new(PendingCounters::default());
}

fn metric(kind: u32, name: &str) -> Option<u32> {
    METRICS.with(|metrics| {
        let mut metrics = metrics.try_borrow_mut().ok()?;
        if let Some(id) = metrics.get(name) {
            return Some(*id);
        }
        let id = abi::define_metric(kind, name)?;
        metrics.insert(name.to_owned(), id);
        Some(id)
    })
}

/// Hands the counts gathered since the last tick to Envoy.
fn flush_counters() {
    PENDING.with(|pending| {
        let Ok(mut pending) = pending.try_borrow_mut() else {
            return;
        };
        pending.flush(|name, count| {
            if let Some(id) = metric(abi::METRIC_COUNTER, name) {
                abi::increment_metric(id, i64::try_from(count).unwrap_or(i64::MAX));
            }
        });
    });
}

/// Counters that cannot wait for a tick (a refused configuration never gets one).
fn increment_now(counter: &str) {
    if let Some(id) = metric(abi::METRIC_COUNTER, counter) {
        abi::increment_metric(id, 1);
    }
}

/// The proxy-wasm ABI calls the filter makes, declared here so that no host status can panic:
/// statuses are plain numbers, and anything but `Ok` is an absent value or `false`.
mod abi;
