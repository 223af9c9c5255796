//! The HTTP filter's hooks and callbacks (`envoy.filters.http.dynamic_modules`).
//!
//! Every hook runs its work inside `super::guard` (`catch_unwind`), directly or through
//! `data_hook` and `destroy_box`, so that no panic crosses into Envoy; a test in `lib.rs`
//! checks every exported function for it.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use egress_policy_core::host::Host;
use egress_policy_core::policy::provider::Provider;
use egress_policy_core::refresh::{Fetcher, ListHost, Loaded, NoSharedData, Refresher};

use egress_policy_core::policy::LocalReply;
use egress_policy_core::telemetry::metrics::{
    self, CounterEvent, Gauge, GaugeEvent, Label, METRIC_PREFIX,
};

use super::{
    EnvoyBuffer, EnvoyHttpHeader, METRICS_SUCCESS, ModuleBuffer, ModuleHttpHeader, buffers,
    copied_from_envoy, destroy_box, envoy_array, envoy_bytes, guard, log,
};
use crate::filter::{Attribute, Config, EnvoyHost, Flow, Stream};

/// `envoy_dynamic_module_type_http_header_type`.
const REQUEST_HEADER: i32 = 0;
const RESPONSE_HEADER: i32 = 2;
/// `envoy_dynamic_module_type_on_http_filter_*_status`: Continue, StopIteration.
const CONTINUE: i32 = 0;
const STOP_ITERATION: i32 = 1;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config_envoy: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_size: usize,
        counter_id: *mut usize,
    ) -> i32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config_envoy: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_size: usize,
        gauge_id: *mut usize,
    ) -> i32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config_envoy: *mut c_void,
        gauge_id: usize,
        label_values: *const ModuleBuffer,
        label_values_size: usize,
        value: u64,
    ) -> i32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config_envoy: *mut c_void,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config_envoy: *mut c_void,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> i32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy: *mut c_void,
        counter_id: usize,
        label_values: *const ModuleBuffer,
        label_values_size: usize,
        value: u64,
    ) -> i32;
    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy: *mut c_void,
        header_type: i32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy: *mut c_void,
        header_type: i32,
        result: *mut EnvoyHttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy: *mut c_void,
        header_type: i32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy: *mut c_void,
        header_type: i32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy: *mut c_void,
        status: u32,
        headers: *const ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy: *mut c_void,
        attribute: i32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter_envoy: *mut c_void,
        attribute: i32,
        result: *mut u64,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_bool(
        filter_envoy: *mut c_void,
        attribute: i32,
        result: *mut bool,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter_envoy: *mut c_void,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter_envoy: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter_envoy: *mut c_void,
        body_type: i32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter_envoy: *mut c_void,
        body_type: i32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter_envoy: *mut c_void,
        reason: i32,
        details: ModuleBuffer,
    );
}

/// `envoy_dynamic_module_type_http_body_type_ReceivedRequestBody`: the body bytes of the hook.
const RECEIVED_REQUEST_BODY: i32 = 0;
/// `envoy_dynamic_module_type_http_filter_stream_reset_reason_LocalReset`.
const LOCAL_RESET: i32 = 0;
/// `envoy_dynamic_module_type_on_http_filter_request_body_status_StopIterationAndBuffer`.
const STOP_ITERATION_AND_BUFFER: i32 = 1;

/// One stream's host calls, through the filter pointer Envoy passes to every hook.
struct Envoy(*mut c_void);

impl EnvoyHost for Envoy {
    fn request_headers(&self) -> Option<egress_policy_core::headers::Headers> {
        // SAFETY: the filter pointer is the one of this hook; the array has the size Envoy
        // reported, and Envoy fills every entry before returning true.
        unsafe {
            let size = envoy_dynamic_module_callback_http_get_headers_size(self.0, REQUEST_HEADER);
            let mut raw = vec![
                EnvoyHttpHeader {
                    key_ptr: ptr::null(),
                    key_length: 0,
                    value_ptr: ptr::null(),
                    value_length: 0,
                };
                size
            ];
            if size > 0
                && !envoy_dynamic_module_callback_http_get_headers(
                    self.0,
                    REQUEST_HEADER,
                    raw.as_mut_ptr(),
                )
            {
                return None;
            }
            let bytes = raw.iter().map(|h| h.key_length + h.value_length).sum();
            let mut headers = egress_policy_core::headers::Headers::with_capacity(bytes, size);
            for header in &raw {
                headers.push(
                    envoy_bytes(header.key_ptr, header.key_length),
                    envoy_bytes(header.value_ptr, header.value_length),
                );
            }
            Some(headers)
        }
    }

    fn remove_request_header(&self, name: &[u8]) -> bool {
        // SAFETY: both buffers are valid for the call; a null value removes the header.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                REQUEST_HEADER,
                ModuleBuffer::of(name),
                ModuleBuffer {
                    ptr: ptr::null(),
                    length: 0,
                },
            )
        }
    }

    fn response_status(&self) -> Option<i64> {
        let mut value = EnvoyBuffer {
            ptr: ptr::null(),
            length: 0,
        };
        // SAFETY: the key is valid for the call; the result is read within this hook.
        let bytes = unsafe {
            if !envoy_dynamic_module_callback_http_get_header(
                self.0,
                RESPONSE_HEADER,
                ModuleBuffer::of(b":status"),
                &mut value,
                0,
                ptr::null_mut(),
            ) {
                return None;
            }
            envoy_bytes(value.ptr, value.length)
        };
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }

    fn attribute_text(&self, attribute: Attribute) -> Option<Vec<u8>> {
        copied_from_envoy(|value| {
            // SAFETY: `value` is a buffer on the caller's stack for Envoy to fill.
            unsafe {
                envoy_dynamic_module_callback_http_filter_get_attribute_string(
                    self.0,
                    attribute as i32,
                    value,
                )
            }
        })
    }

    fn attribute_int(&self, attribute: Attribute) -> Option<i64> {
        let mut value = 0_u64;
        // SAFETY: the result is a plain integer Envoy writes.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(
                self.0,
                attribute as i32,
                &mut value,
            )
        };
        found.then(|| i64::try_from(value).unwrap_or(i64::MAX))
    }

    fn attribute_bool(&self, attribute: Attribute) -> Option<bool> {
        let mut value = false;
        // SAFETY: the result is a plain boolean Envoy writes.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_bool(
                self.0,
                attribute as i32,
                &mut value,
            )
        };
        found.then_some(value)
    }

    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        copied_from_envoy(|value| {
            // SAFETY: the key is valid for the call; `value` is for Envoy to fill.
            unsafe {
                envoy_dynamic_module_callback_http_get_filter_state_bytes(
                    self.0,
                    ModuleBuffer::of(key.as_bytes()),
                    value,
                )
            }
        })
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: both buffers are valid for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    fn received_request_body(&self) -> Option<Vec<u8>> {
        // SAFETY: the filter pointer is this hook's; the array has the size Envoy reported and
        // Envoy fills every entry before returning true; the chunks are valid until the hook
        // returns, and are copied before.
        unsafe {
            let count = envoy_dynamic_module_callback_http_get_body_chunks_size(
                self.0,
                RECEIVED_REQUEST_BODY,
            );
            let mut chunks = vec![
                EnvoyBuffer {
                    ptr: std::ptr::null(),
                    length: 0
                };
                count
            ];
            if count > 0
                && !envoy_dynamic_module_callback_http_get_body_chunks(
                    self.0,
                    RECEIVED_REQUEST_BODY,
                    chunks.as_mut_ptr(),
                )
            {
                return None;
            }
            let mut body = Vec::new();
            for chunk in &chunks {
                body.extend_from_slice(envoy_bytes(chunk.ptr, chunk.length));
            }
            Some(body)
        }
    }

    fn reset_stream(&self, details: &str) {
        // SAFETY: the details are valid for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_filter_reset_stream(
                self.0,
                LOCAL_RESET,
                ModuleBuffer::of(details.as_bytes()),
            );
        }
    }

    fn send_local_reply(&self, reply: &LocalReply<'_>) {
        let headers: Vec<ModuleHttpHeader> = reply
            .headers
            .iter()
            .map(|(name, value)| ModuleHttpHeader {
                key_ptr: name.as_ptr(),
                key_length: name.len(),
                value_ptr: value.as_ptr(),
                value_length: value.len(),
            })
            .collect();
        // SAFETY: every buffer (headers, body, details) lives until the call returns; Envoy
        // copies them into its reply.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(reply.status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(reply.body.as_bytes()),
                ModuleBuffer::of(reply.details.as_bytes()),
            );
        }
    }

    fn increment(&self, counter_id: usize, event: &CounterEvent<'_>) {
        let (values, count) = super::label_values(event);
        // SAFETY: the label values live until the call returns; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                counter_id,
                values.as_ptr(),
                count,
                1,
            );
        }
    }
}

/// The signature of the configuration's `define_counter` and `define_gauge` callbacks.
type DefineMetric =
    unsafe extern "C" fn(*mut c_void, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> i32;

/// Defines a metric of the configuration being created with `define` (a counter's or a gauge's
/// callback), with its label names, under the filter's metrics namespace (Envoy's default for
/// dynamic modules, `dynamicmodulescustom`, as wherever the module is deployed: Prometheus reads
/// `envoy_dynamicmodulescustom_egress_policy_requests{...}`).
fn define_metric(
    define: DefineMetric,
    config_envoy: *mut c_void,
    name: &str,
    labels: &[Label],
) -> Option<usize> {
    let name = format!("{METRIC_PREFIX}.{name}");
    let labels = buffers(labels.iter().map(|label| label.as_str()));
    let mut id = 0_usize;
    // SAFETY: metrics are defined while the configuration is created, as the ABI requires;
    // every buffer lives until the call returns.
    let result = unsafe {
        define(
            config_envoy,
            ModuleBuffer::of(name.as_bytes()),
            labels.as_ptr(),
            labels.len(),
            &mut id,
        )
    };
    (result == METRICS_SUCCESS).then_some(id)
}

/// The module's side of one HTTP filter configuration: Envoy's pointer to it (its counters are
/// the gateway's labelled counters while it is the newest), its metrics' ids, and the refresher
/// of its remote lists, which runs on Envoy's main thread.
struct HttpConfig {
    config: Arc<Config>,
    envoy: *mut c_void,
    counters: Vec<Option<usize>>,
    gauges: Vec<Option<usize>>,
    /// The timer of its remote lists, when it has lists with a provider: the core's
    /// [`Refresher`] (one per compiled configuration, `crate::shared`) is driven by a scheduler
    /// whose events a thread commits (the filter ABI has no timer) and by the configuration's
    /// HTTP call-outs. One process: one fetch per interval per gateway, and one index every
    /// worker reads.
    ticker: Option<Ticker>,
}

impl HttpConfig {
    /// `egress_policy_config_info{version}`: 1 while a configuration of this process serves
    /// the version.
    fn publish_version(&self, version: Option<&str>) {
        let owner = self.envoy as usize;
        for (version, value) in metrics::versions_in_force(owner, version) {
            self.set_gauge(&GaugeEvent::new(Gauge::ConfigInfo, &[&version], value));
        }
    }

    fn set_gauge(&self, event: &GaugeEvent<'_>) -> bool {
        let Some(id) = self.gauges.get(event.gauge as usize).copied().flatten() else {
            return false;
        };
        let values = buffers(event.values().iter().copied());
        // SAFETY: the configuration is Envoy's and alive (this is one of its hooks, or its
        // creation); the label values live until the call returns.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.envoy,
                id,
                values.as_ptr(),
                values.len(),
                event.value,
            ) == METRICS_SUCCESS
        }
    }

    /// Runs `work` on this configuration's remote lists, with `host` for their calls, when it
    /// has lists and drives them (on Envoy's main thread, in one of its hooks).
    fn drive_lists(
        &self,
        host: ConfigHost<'_>,
        work: impl FnOnce(&mut Refresher, &Loaded, &ConfigHost<'_>),
    ) {
        if self.ticker.is_none() {
            return;
        }
        self.config
            .compiled()
            .drive(self.envoy as usize, |refresher, loaded| {
                work(refresher, loaded, &host)
            });
    }
}

/// A thread that commits a scheduler event every period, until it is dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    scheduler: usize,
}

impl Ticker {
    /// Starts committing at once (the first fetch), then every `period`.
    fn start(config_envoy: *mut c_void, period: Duration) -> Option<Ticker> {
        // SAFETY: the configuration is being created; the scheduler it returns is deleted when
        // the ticker drops, after its thread has stopped.
        let scheduler =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy) };
        if scheduler.is_null() {
            return None;
        }
        let scheduler = scheduler as usize;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("egress-lists".into())
            .spawn(move || {
                loop {
                    // SAFETY: the scheduler lives until this thread has been joined; Envoy
                    // takes commits from any thread and runs the event on its main thread.
                    unsafe {
                        envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            scheduler as *mut c_void,
                            0,
                        );
                    }
                    if stopped.recv_timeout(period) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Ticker {
                stop: Some(stop),
                thread: Some(thread),
                scheduler,
            }),
            Err(_) => {
                // SAFETY: no thread uses it.
                unsafe {
                    envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                        scheduler as *mut c_void,
                    );
                }
                None
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // SAFETY: the only thread that committed to it has ended.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                self.scheduler as *mut c_void,
            );
        }
    }
}

/// The core's list host over one configuration's callbacks, with the call-out answer being
/// delivered, if any.
struct ConfigHost<'a> {
    config: &'a HttpConfig,
    status: Option<Vec<u8>>,
    body: Vec<u8>,
}

impl<'a> ConfigHost<'a> {
    /// A host with no call-out answer being delivered.
    fn new(config: &'a HttpConfig) -> Self {
        ConfigHost {
            config,
            status: None,
            body: Vec::new(),
        }
    }
}

impl Host for ConfigHost<'_> {
    fn now_micros(&self) -> Option<i64> {
        crate::filter::now_micros()
    }

    fn log_warning(&self, message: &str) {
        log(false, message);
    }

    fn increment(&self, event: &CounterEvent<'_>) {
        // SAFETY: this configuration is alive (one of its hooks is running) and these are its
        // counters.
        unsafe { super::increment_in_config(self.config.envoy, &self.config.counters, event) };
    }

    fn set_gauge(&self, event: &GaugeEvent<'_>) {
        self.config.set_gauge(event);
    }
}

impl ListHost for ConfigHost<'_> {
    fn dispatch_http_call(&self, provider: &Provider) -> Result<u32, String> {
        let headers: Vec<ModuleHttpHeader> = provider
            .request_headers()
            .iter()
            .map(|(name, value)| ModuleHttpHeader {
                key_ptr: name.as_ptr(),
                key_length: name.len(),
                value_ptr: value.as_ptr(),
                value_length: value.len(),
            })
            .collect();
        let mut id = 0_u64;
        // SAFETY: on Envoy's main thread, in one of the configuration's hooks; every buffer lives
        // until the call returns (Envoy copies them).
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.config.envoy,
                &mut id,
                ModuleBuffer::of(provider.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(&[]),
                u64::from(provider.timeout_millis()),
            )
        };
        match result {
            CALLOUT_SUCCESS => u32::try_from(id).map_err(|_| format!("call-out id {id}")),
            other => Err(format!(
                "call-out refused by Envoy ({})",
                callout_error(other)
            )),
        }
    }

    fn http_call_response_status(&self) -> Option<Vec<u8>> {
        self.status.clone()
    }

    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.body.get(..size.min(self.body.len()))?.to_vec())
    }

    fn shared_data(&self, _key: &str) -> Result<Option<(Vec<u8>, u32)>, NoSharedData> {
        // One process: the configuration's one refresher is the gateway's.
        Err(NoSharedData)
    }

    fn set_shared_data(&self, _: &str, _: &[u8], _: u32) -> Result<bool, NoSharedData> {
        Err(NoSharedData)
    }
}

/// `envoy_dynamic_module_type_http_callout_init_result`.
const CALLOUT_SUCCESS: i32 = 0;

fn callout_error(result: i32) -> &'static str {
    match result {
        1 => "missing required headers",
        2 => "cluster not found",
        3 => "duplicate call-out id",
        4 => "cannot create the request",
        _ => "unknown result",
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard("config", ptr::null, || {
        // SAFETY: Envoy's configuration bytes, valid during this hook.
        let bytes = unsafe { envoy_bytes(config.ptr, config.length) };
        // Every metric is defined first (the ABI allows it only now).
        let counters: Vec<Option<usize>> = metrics::Counter::ALL
            .iter()
            .map(|&counter| {
                define_metric(
                    envoy_dynamic_module_callback_http_filter_config_define_counter,
                    config_envoy,
                    counter.name(),
                    counter.labels(),
                )
            })
            .collect();
        let gauges: Vec<Option<usize>> = Gauge::ALL
            .iter()
            .map(|&gauge| {
                define_metric(
                    envoy_dynamic_module_callback_http_filter_config_define_gauge,
                    config_envoy,
                    gauge.name(),
                    gauge.labels(),
                )
            })
            .collect();
        // A signing key that is set but unusable refuses the configuration: lines nobody can
        // vouch for must not be written while the operator believes they are signed.
        let key = egress_policy_core::evidence::process_signing_key();
        if let Err(why) = key {
            super::increment_labelled(&metrics::config_load(false));
            log(
                true,
                &format!("egress-policy: configuration refused: {why}"),
            );
            return ptr::null();
        }
        let compiled = Config::new(bytes, counters.clone());
        if compiled.is_ok() {
            super::register_labelled_counters(config_envoy, counters.clone());
        }
        // A refused configuration is counted in the configuration still serving: Envoy drops
        // the counters of one it refuses.
        super::increment_labelled(&metrics::config_load(compiled.is_ok()));
        let config = match compiled {
            Ok(config) => config,
            Err(errors) => {
                for error in errors {
                    log(
                        true,
                        &format!("egress-policy: invalid configuration: {error}"),
                    );
                }
                // Envoy refuses the configuration; on a reload the previous one keeps serving.
                return ptr::null();
            }
        };
        let fingerprint = config.fingerprint();
        let policy = &config.loaded().policy;
        let tick = Fetcher::tick_micros(policy);
        let version = policy.version.clone();
        let mut http_config = HttpConfig {
            config: Arc::new(config),
            envoy: config_envoy,
            counters,
            gauges,
            ticker: None,
        };
        if !http_config.set_gauge(&GaugeEvent::new(
            Gauge::ConfigFingerprint,
            &[],
            u64::from(fingerprint),
        )) {
            log(
                false,
                "egress-policy: cannot publish the configuration's fingerprint",
            );
        }
        if matches!(key, Ok(None)) {
            log(false, UNSIGNED_WARNING);
        }
        http_config.publish_version(Some(&version));
        if let Some(tick) = tick {
            let period = Duration::from_micros(u64::try_from(tick).unwrap_or(1_000_000).max(1_000));
            let Some(ticker) = Ticker::start(config_envoy, period) else {
                log(
                    true,
                    "egress-policy: cannot start the remote lists' timer; configuration refused",
                );
                super::unregister_labelled_counters(config_envoy);
                return ptr::null();
            };
            http_config.ticker = Some(ticker);
        }
        Box::into_raw(Box::new(http_config)).cast_const().cast()
    })
}

/// Said once per configuration when no signing key is set.
const UNSIGNED_WARNING: &str = "egress-policy: no EGRESS_LOG_SIGNING_KEY: log lines are chained but no checkpoint is signed, so `audit --verify` can vouch for none (README: Security)";

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config_module: *const c_void) {
    if config_module.is_null() {
        return;
    }
    // SAFETY: the pointer is the box `config_new` returned, destroyed once by Envoy.
    let mut config = unsafe { Box::from_raw(config_module.cast::<HttpConfig>().cast_mut()) };
    // Its counters are no longer the gateway's before Envoy frees them, whatever happens next.
    super::unregister_labelled_counters(config.envoy);
    guard(
        "config_destroy",
        || (),
        move || {
            // Its timer stops before Envoy frees what it commits to; another configuration of the
            // same policy takes the lists over.
            drop(config.ticker.take());
            config.publish_version(None);
            config.config.compiled().release(config.envoy as usize);
        },
    );
}

/// The configuration of a configuration-level hook.
///
/// # Safety
/// `config_module` must be null or the box `config_new` returned, not yet destroyed.
unsafe fn http_config<'a>(config_module: *const c_void) -> Option<&'a HttpConfig> {
    // SAFETY: as the caller guarantees.
    unsafe { config_module.cast::<HttpConfig>().as_ref() }
}

/// The timer's event, on Envoy's main thread: lists due are fetched, ages recorded.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: *mut c_void,
    config_module: *const c_void,
    _event_id: u64,
) {
    // SAFETY: Envoy passes the configuration this module created.
    let Some(config) = (unsafe { http_config(config_module) }) else {
        return;
    };
    guard(
        "lists_tick",
        || (),
        || {
            config.drive_lists(ConfigHost::new(config), |refresher, loaded, host| {
                refresher.on_tick(host, loaded)
            })
        },
    );
}

/// A list server's answer, or its absence (`result` other than success: a reset or timeout).
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: *mut c_void,
    config_module: *const c_void,
    callout_id: u64,
    result: i32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: Envoy passes the configuration this module created.
    let Some(config) = (unsafe { http_config(config_module) }) else {
        return;
    };
    guard(
        "lists_response",
        || (),
        || {
            let Ok(token) = u32::try_from(callout_id) else {
                return;
            };
            let mut host = ConfigHost::new(config);
            let mut num_headers = 0;
            if result == CALLOUT_RESULT_SUCCESS {
                // SAFETY: Envoy's arrays of `headers_size` headers and `body_size` chunks, valid
                // during this hook; what is kept is copied.
                unsafe {
                    let headers = envoy_array(headers, headers_size);
                    num_headers = headers.len();
                    host.status = headers
                        .iter()
                        .find(|h| envoy_bytes(h.key_ptr, h.key_length) == b":status")
                        .map(|h| envoy_bytes(h.value_ptr, h.value_length).to_vec());
                    for chunk in envoy_array(body, body_size) {
                        host.body
                            .extend_from_slice(envoy_bytes(chunk.ptr, chunk.length));
                    }
                }
            }
            let body_size = host.body.len();
            config.drive_lists(host, |refresher, loaded, host| {
                refresher.on_response(host, loaded, token, num_headers, body_size)
            });
        },
    );
}

/// `envoy_dynamic_module_type_http_callout_result_Success`.
const CALLOUT_RESULT_SUCCESS: i32 = 0;

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_module: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    if config_module.is_null() {
        return ptr::null();
    }
    // SAFETY: the configuration outlives its filters (Envoy destroys it after them).
    let config = unsafe { &*config_module.cast::<HttpConfig>() };
    guard("filter_new", ptr::null, || {
        Box::into_raw(Box::new(Stream::new(config.config.clone())))
            .cast_const()
            .cast()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module: *const c_void) {
    // SAFETY: the pointer is the box `filter_new` returned, destroyed once by Envoy.
    unsafe { destroy_box::<Stream>("destroy", filter_module) }
}

/// The stream of a hook, or `None` for a null pointer.
///
/// # Safety
/// `filter_module` must be null or the box `filter_new` returned, not yet destroyed; Envoy calls
/// one stream's hooks on one thread, one at a time.
unsafe fn stream<'a>(filter_module: *const c_void) -> Option<&'a mut Stream> {
    // SAFETY: as the caller guarantees.
    unsafe { filter_module.cast::<Stream>().cast_mut().as_mut() }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> i32 {
    let host = Envoy(filter_envoy);
    // SAFETY: Envoy passes the stream this module created for this filter.
    let Some(stream) = (unsafe { stream(filter_module) }) else {
        return STOP_ITERATION;
    };
    let fail_closed = || {
        host.send_local_reply(&LocalReply::bare(500, crate::filter::PANIC_DETAILS));
        Flow::Stop
    };
    match guard("request_headers", fail_closed, || {
        stream.on_request_headers(&host, end_of_stream)
    }) {
        Flow::Continue => CONTINUE,
        Flow::Stop => STOP_ITERATION,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> i32 {
    let host = Envoy(filter_envoy);
    // SAFETY: as in request_headers.
    if let Some(stream) = unsafe { stream(filter_module) } {
        guard(
            "response_headers",
            || (),
            || stream.on_response_headers(&host),
        );
    }
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
) {
    let host = Envoy(filter_envoy);
    // SAFETY: as in request_headers.
    if let Some(stream) = unsafe { stream(filter_module) } {
        guard("stream_complete", || (), || stream.on_complete(&host));
    }
}

// The hooks Envoy requires but this filter has nothing to do in: the body passes (a request
// body's headers were decided), and the module makes no call-outs or streams of its own yet.

/// Hooks that let the stream go on: (filter_envoy, filter_module, then these arguments).
macro_rules! continuing_hooks {
    ($($name:ident($($arg:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_: *mut c_void, _: *const c_void $(, _: $arg)*) -> i32 {
            CONTINUE
        }
    )*};
}

/// Hooks with nothing to do: (filter_envoy, filter_module, then these arguments).
macro_rules! idle_hooks {
    ($($name:ident($($arg:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_: *mut c_void, _: *const c_void $(, _: $arg)*) {}
    )*};
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> i32 {
    let host = Envoy(filter_envoy);
    // SAFETY: as in request_headers.
    let Some(stream) = (unsafe { stream(filter_module) }) else {
        return STOP_ITERATION_AND_BUFFER;
    };
    let fail_closed = || {
        host.reset_stream(crate::filter::PANIC_DETAILS);
        Flow::Stop
    };
    match guard("request_body", fail_closed, || {
        stream.on_request_body(&host, end_of_stream)
    }) {
        Flow::Continue => CONTINUE,
        Flow::Stop => STOP_ITERATION_AND_BUFFER,
    }
}

continuing_hooks! {
    envoy_dynamic_module_on_http_filter_request_trailers();
    envoy_dynamic_module_on_http_filter_response_body(bool);
    envoy_dynamic_module_on_http_filter_response_trailers();
}

idle_hooks! {
    envoy_dynamic_module_on_http_filter_scheduled(u64);
    envoy_dynamic_module_on_http_filter_http_callout_done(
        u64, i32, *const EnvoyHttpHeader, usize, *const EnvoyBuffer, usize
    );
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        u64, *const EnvoyHttpHeader, usize, bool
    );
    envoy_dynamic_module_on_http_filter_http_stream_data(u64, *const EnvoyBuffer, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(u64, *const EnvoyHttpHeader, usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(u64, i32);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark();
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark();
}
