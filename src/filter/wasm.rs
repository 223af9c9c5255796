//! proxy-wasm glue: the root context compiles the configuration, HTTP contexts run
//! [`RequestFilter`] against [`WasmHost`]. Only byte-level host calls are used; the SDK's string
//! helpers unwrap, and a non-UTF-8 header would take the VM down with them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr::null;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use super::lists::{FetchOutcome, Fetcher};
use super::{Active, Flow, Host, RequestFilter};
use crate::metrics;
use crate::policy::Policy;

/// Filter-state key (Envoy prefixes `wasm.`) holding the rendered entries for the access log:
/// `%FILTER_STATE(wasm.egress_policy_log:PLAIN)%`.
const LOG_PROPERTY: &str = "egress_policy_log";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { active: None, fetcher: Fetcher::default() })
    });
}}

/// One per VM (each Envoy worker has its own): compiles the configuration and keeps its remote
/// lists fresh. Each worker fetches for itself, so a list is fetched `--concurrency` times per
/// interval.
struct Root {
    active: Option<Rc<Active>>,
    fetcher: Fetcher,
}

impl Root {
    /// Age of each list's last good fetch; absent until the first one.
    fn record_list_ages(&self) {
        let (Some(active), Some(now)) = (&self.active, WasmHost.now_micros()) else {
            return;
        };
        let Ok(remote) = active.remote.try_borrow() else {
            return;
        };
        for (index, list, _) in active.policy.providers() {
            if let Some(entries) = remote.get(index) {
                let age = now.saturating_sub(entries.fetched_at_micros) / 1_000_000;
                WasmHost.set_gauge(
                    &metrics::list_age_gauge(&list.name),
                    usize::try_from(age).unwrap_or(0),
                );
            }
        }
    }

    fn fetch_due_lists(&mut self) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let Some(now) = WasmHost.now_micros() else {
            return;
        };
        for list in self.fetcher.due(&active.policy, now) {
            let Some((config, provider)) = active
                .policy
                .lists
                .get(list)
                .and_then(|l| l.provider.as_ref().map(|p| (l, p)))
            else {
                continue;
            };
            let headers = vec![
                (":method", "GET"),
                (":path", provider.path.as_str()),
                (":authority", provider.authority.as_str()),
                ("accept", "text/plain, application/json"),
            ];
            let timeout =
                Duration::from_micros(u64::try_from(provider.timeout_micros).unwrap_or(5_000_000));
            match hostcalls::dispatch_http_call(&provider.cluster, headers, None, vec![], timeout) {
                Ok(token) => self.fetcher.sent(token, list),
                Err(status) => report(
                    &active.policy,
                    &Fetcher::not_sent(
                        list,
                        format!("cannot call cluster {}: {status:?}", provider.cluster),
                    ),
                    config.name.as_str(),
                ),
            }
        }
    }
}

/// Logs and counts the outcome of a fetch.
fn report(policy: &Policy, outcome: &FetchOutcome, list_name: &str) {
    match outcome {
        FetchOutcome::Updated { entries, .. } => {
            WasmHost.increment(&metrics::list_fetch_counter(list_name, true));
            WasmHost.set_gauge(&metrics::list_entries_gauge(list_name), *entries);
            WasmHost.set_gauge(&metrics::list_age_gauge(list_name), 0);
        }
        FetchOutcome::Failed { list, reason } => {
            WasmHost.increment(&metrics::list_fetch_counter(list_name, false));
            let ttl = policy
                .lists
                .get(*list)
                .and_then(|l| l.provider.as_ref())
                .map_or(0, |p| p.ttl_micros / 1_000);
            WasmHost.log_warning(&format!(
                "egress-policy: list {list_name}: fetch failed ({reason}); the last good list stays in force for up to {ttl}ms after it was fetched, then onError applies"
            ));
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let now = WasmHost.now_micros().unwrap_or(0);
        let Ok(mut remote) = active.remote.try_borrow_mut() else {
            return;
        };
        let outcome = self.fetcher.received(
            &active.policy,
            &mut remote,
            token_id,
            status.as_deref(),
            &body,
            now,
        );
        drop(remote);
        if let Some(outcome) = outcome {
            let list = match &outcome {
                FetchOutcome::Updated { list, .. } | FetchOutcome::Failed { list, .. } => *list,
            };
            let name = active
                .policy
                .lists
                .get(list)
                .map_or("?", |l| l.name.as_str());
            report(&active.policy, &outcome, name);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log_error(&format!(
                    "egress-policy: cannot read the plugin configuration: {status:?}"
                ));
                return false;
            }
        };
        let compiled = Policy::from_json(&bytes);
        increment_now(metrics::config_load_counter(compiled.is_ok()));
        match compiled {
            Ok(policy) => {
                self.fetcher = Fetcher::new(&policy);
                let tick =
                    Fetcher::tick_micros(&policy).map_or(FLUSH_MICROS, |t| t.min(FLUSH_MICROS));
                self.active = Some(Rc::new(Active::new(policy)));
                let period = Duration::from_micros(u64::try_from(tick).unwrap_or(200_000));
                if hostcalls::set_tick_period(period).is_err() {
                    log_error("egress-policy: cannot start the timer for lists and metrics");
                    return false;
                }
                self.fetch_due_lists();
                true
            }
            Err(errors) => {
                // Returning false makes Envoy refuse this configuration; on a reload the
                // previous one keeps serving.
                for error in &errors.0 {
                    log_error(&format!("egress-policy: invalid configuration: {error}"));
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.fetch_due_lists();
        self.record_list_ages();
        flush_counters();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            filter: RequestFilter::new(self.active.clone()),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    filter: RequestFilter,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.filter.on_request_headers(&WasmHost) {
            Flow::Continue => Action::Continue,
            Flow::Stop => Action::Pause,
        }
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

fn log_error(message: &str) {
    let _ = hostcalls::log(LogLevel::Error, message);
}

/// [`Host`] over proxy-wasm host calls.
struct WasmHost;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Declared here because the SDK's wrapper drops the details argument, which carries the
    /// deciding rule into Envoy's `%RESPONSE_CODE_DETAILS%`.
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn now_micros(&self) -> Option<i64> {
        let now = hostcalls::get_current_time().ok()?;
        let micros = now.duration_since(UNIX_EPOCH).ok()?.as_micros();
        i64::try_from(micros).ok()
    }

    fn send_local_reply(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> bool {
        let headers = serialize_headers(headers);
        // SAFETY: every pointer/length pair describes a live buffer for the whole call.
        let status = unsafe {
            proxy_send_local_response(
                u32::from(status),
                details.as_ptr(),
                details.len(),
                if body.is_empty() {
                    null()
                } else {
                    body.as_ptr()
                },
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        };
        status == Status::Ok
    }

    fn write_log_entries(&self, entries: &str) -> bool {
        hostcalls::set_property(vec![LOG_PROPERTY], Some(entries.as_bytes())).is_ok()
    }

    fn log_warning(&self, message: &str) {
        let _ = hostcalls::log(LogLevel::Warn, message);
    }

    /// Counted in the VM and flushed to Envoy on the root context's tick ([`flush_counters`]):
    /// one host call per counter and tick instead of several per request.
    fn increment(&self, counter: &str) {
        PENDING.with(|pending| {
            let Ok(mut pending) = pending.try_borrow_mut() else {
                return;
            };
            match pending.get_mut(counter) {
                Some(count) => *count += 1,
                None => {
                    pending.insert(counter.to_owned(), 1);
                }
            }
        });
    }
}

/// Hands the counts gathered since the last tick to Envoy.
fn flush_counters() {
    PENDING.with(|pending| {
        let Ok(mut pending) = pending.try_borrow_mut() else {
            return;
        };
        for (name, count) in pending.iter_mut().filter(|(_, count)| **count > 0) {
            if let Some(id) = metric(MetricType::Counter, name) {
                let _ = hostcalls::increment_metric(id, i64::try_from(*count).unwrap_or(i64::MAX));
            }
            *count = 0;
        }
    });
}

/// Counters that cannot wait for a tick (a refused configuration never gets one).
fn increment_now(counter: &str) {
    if let Some(id) = metric(MetricType::Counter, counter) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// How often counters reach Envoy: far below any scrape interval.
const FLUSH_MICROS: i64 = 200_000;

impl WasmHost {
    fn set_gauge(&self, gauge: &str, value: usize) {
        if let Some(id) = metric(MetricType::Gauge, gauge) {
            let _ = hostcalls::record_metric(id, u64::try_from(value).unwrap_or(u64::MAX));
        }
    }
}

thread_local! {
    /// Metric ids by name: defining a metric is a host call, so each is defined once per VM.
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Counts not yet handed to Envoy.
    static PENDING: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

fn metric(kind: MetricType, name: &str) -> Option<u32> {
    METRICS.with(|metrics| {
        let mut metrics = metrics.try_borrow_mut().ok()?;
        if let Some(id) = metrics.get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, name).ok()?;
        metrics.insert(name.to_owned(), id);
        Some(id)
    })
}

/// The proxy-wasm header map encoding: count, then each name and value length, then the bytes,
/// each string followed by a NUL.
fn serialize_headers(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(headers.len()).unwrap_or(0).to_le_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_le_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}
