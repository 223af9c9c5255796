//! The HTTP filter's hooks and callbacks (`envoy.filters.http.dynamic_modules`).

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use egress_policy_core::policy::LocalReply;
use egress_policy_core::telemetry::metrics::{self, CounterEvent, Gauge, MAX_LABELS};

use super::{
    EnvoyBuffer, EnvoyHttpHeader, METRICS_SUCCESS, ModuleBuffer, ModuleHttpHeader, buffers,
    copied_from_envoy, counter_label_names, envoy_bytes, guard, log,
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
}

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
            let mut headers = egress_policy_core::headers::Headers::default();
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
        // On the stack: several counters per request, none worth an allocation.
        let mut values = [ModuleBuffer::of(&[]); MAX_LABELS];
        for (slot, value) in values.iter_mut().zip(event.values()) {
            *slot = ModuleBuffer::of(value.as_bytes());
        }
        let count = event.values().len().min(MAX_LABELS);
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

/// Defines a counter of the configuration being created, under the filter's metrics namespace
/// (`egress_policy`, envoy/egress-policy-native-filter.yaml: Prometheus reads
/// `envoy_egress_policy_requests{decision="deny",...}`).
fn define_counter(config_envoy: *mut c_void, name: &str, labels: &[&str]) -> Option<usize> {
    let labels = buffers(labels.iter().copied());
    let mut id = 0_usize;
    // SAFETY: metrics are defined while the configuration is created, as the ABI requires;
    // every buffer lives until the call returns.
    let result = unsafe {
        envoy_dynamic_module_callback_http_filter_config_define_counter(
            config_envoy,
            ModuleBuffer::of(name.as_bytes()),
            labels.as_ptr(),
            labels.len(),
            &mut id,
        )
    };
    (result == METRICS_SUCCESS).then_some(id)
}

/// Defines the configuration's fingerprint gauge (what `scripts/reload` waits for) and sets it.
fn publish_fingerprint(config_envoy: *mut c_void, fingerprint: u32) -> bool {
    let name = Gauge::ConfigFingerprint.name();
    let mut id = 0_usize;
    // SAFETY: gauges are defined while the configuration is created; the name lives until the
    // call returns, and no labels are passed.
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_define_gauge(
            config_envoy,
            ModuleBuffer::of(name.as_bytes()),
            ptr::null(),
            0,
            &mut id,
        ) == METRICS_SUCCESS
            && envoy_dynamic_module_callback_http_filter_config_set_gauge(
                config_envoy,
                id,
                ptr::null(),
                0,
                u64::from(fingerprint),
            ) == METRICS_SUCCESS
    }
}

/// The module's side of one HTTP filter configuration, with Envoy's pointer to it (its counters
/// are the gateway's labelled counters while it is the newest).
struct HttpConfig {
    config: Arc<Config>,
    envoy: *mut c_void,
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
        // Every counter is defined first (the ABI allows it only now), so that a configuration
        // refused is counted too.
        let ids: Vec<Option<usize>> = metrics::Counter::ALL
            .iter()
            .map(|&counter| {
                define_counter(config_envoy, counter.name(), &counter_label_names(counter))
            })
            .collect();
        let compiled = Config::new(bytes, ids.clone());
        if compiled.is_ok() {
            super::register_labelled_counters(config_envoy, ids);
        }
        // A refused configuration is counted in the configuration still serving: Envoy drops
        // the counters of one it refuses.
        super::increment_labelled(&metrics::config_load(compiled.is_ok()));
        match compiled {
            Ok(config) => {
                if !publish_fingerprint(config_envoy, config.fingerprint()) {
                    log(
                        false,
                        "egress-policy: cannot publish the configuration's fingerprint",
                    );
                }
                Box::into_raw(Box::new(HttpConfig {
                    config: Arc::new(config),
                    envoy: config_envoy,
                }))
                .cast_const()
                .cast()
            }
            Err(errors) => {
                for error in errors {
                    log(true, &format!("egress-policy: invalid configuration: {error}"));
                }
                // Envoy refuses the configuration; on a reload the previous one keeps serving.
                ptr::null()
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config_module: *const c_void) {
    if config_module.is_null() {
        return;
    }
    // SAFETY: the pointer is the box `config_new` returned, destroyed once by Envoy.
    let config = unsafe { Box::from_raw(config_module.cast::<HttpConfig>().cast_mut()) };
    super::unregister_labelled_counters(config.envoy);
}

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
    if filter_module.is_null() {
        return;
    }
    // SAFETY: the pointer is the box `filter_new` returned, destroyed once by Envoy.
    drop(unsafe { Box::from_raw(filter_module.cast::<Stream>().cast_mut()) });
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

continuing_hooks! {
    envoy_dynamic_module_on_http_filter_request_body(bool);
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
