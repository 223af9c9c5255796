//! The C ABI of Envoy's dynamic modules, as Envoy 1.40.0 implements it (`abi/envoy-1.40.0.tsv`
//! pins every signature here): the hooks Envoy calls, and the callbacks this module calls. The
//! only `unsafe` of the crate is here. Every hook runs the safe flow (`crate::filter`) inside
//! [`guard`], so that a panic never unwinds into Envoy: it fails closed for its request, and is
//! logged.

#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the hooks are called by Envoy, never from Rust, with the pointers the ABI promises"
)]

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Arc;

use egress_policy_core::policy::LocalReply;
use egress_policy_core::telemetry::metrics::{Counter, CounterEvent, MAX_LABELS, METRIC_PREFIX};

use crate::filter::{Attribute, Config, EnvoyHost, Flow, Stream};

/// The ABI version string of Envoy 1.40.0 (`ENVOY_DYNAMIC_MODULES_ABI_VERSION`). Envoy only
/// warns on a mismatch, so the module pins it and checks the callbacks it needs exist.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes owned by Envoy, valid until the hook returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    length: usize,
}

/// Bytes owned by the module, valid for the call that takes them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

/// A header owned by Envoy's header map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

/// A header of a local reply, owned by the module.
#[repr(C)]
pub struct ModuleHttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

/// `envoy_dynamic_module_type_http_header_type`.
const REQUEST_HEADER: i32 = 0;
const RESPONSE_HEADER: i32 = 2;
/// `envoy_dynamic_module_type_on_http_filter_*_status`: Continue, StopIteration.
const CONTINUE: i32 = 0;
const STOP_ITERATION: i32 = 1;
/// `envoy_dynamic_module_type_metrics_result_Success`.
const METRICS_SUCCESS: i32 = 0;
/// `envoy_dynamic_module_type_log_level`.
const LOG_WARN: i32 = 3;
const LOG_ERROR: i32 = 4;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: i32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config_envoy: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_size: usize,
        counter_id: *mut usize,
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

/// Envoy's bytes as a slice for the rest of the hook.
///
/// # Safety
/// `buffer` must be what Envoy returned in this hook: `ptr` valid for `length` bytes, or null.
unsafe fn envoy_bytes<'a>(ptr: *const u8, length: usize) -> &'a [u8] {
    if ptr.is_null() || length == 0 {
        return &[];
    }
    // SAFETY: Envoy guarantees the buffer until the hook returns (abi: OWNERSHIP), and the
    // slice does not outlive the hook (its lifetime is bound by the caller's use).
    unsafe { std::slice::from_raw_parts(ptr, length) }
}

/// The bytes a callback points `value` at, copied before the hook returns; `None` when it found
/// nothing.
fn copied_from_envoy(call: impl FnOnce(&mut EnvoyBuffer) -> bool) -> Option<Vec<u8>> {
    let mut value = EnvoyBuffer {
        ptr: ptr::null(),
        length: 0,
    };
    // SAFETY: Envoy's buffer is valid until the hook returns, and it is copied here.
    call(&mut value).then(|| unsafe { envoy_bytes(value.ptr, value.length) }.to_vec())
}

/// Writes a message to Envoy's log (component `dynamic_modules`).
pub fn log(error: bool, message: &str) {
    let level = if error { LOG_ERROR } else { LOG_WARN };
    // SAFETY: the message buffer is valid for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// Runs one hook's work; a panic is caught here, logged, and answered by `on_panic`, so that it
/// never crosses into Envoy (which would abort the process).
fn guard<T>(hook: &str, on_panic: impl FnOnce() -> T, work: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(value) => value,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(
                true,
                &format!("egress-policy: panic in {hook} ({why}); failing closed"),
            );
            on_panic()
        }
    }
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

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

/// The buffers of metric or label names.
fn buffers<'a>(names: impl Iterator<Item = &'a str>) -> Vec<ModuleBuffer> {
    names
        .map(|name| ModuleBuffer::of(name.as_bytes()))
        .collect()
}

/// Defines a counter of the configuration being created, under the filter's metrics namespace
/// (`wasmcustom`, envoy/egress-policy-native-filter.yaml, which Prometheus output drops:
/// `egress_policy_requests{decision="deny",...}` for both builds).
fn define_counter(config_envoy: *mut c_void, name: &str, labels: &[&str]) -> Option<usize> {
    let name = format!("{METRIC_PREFIX}.{name}");
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

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard("config", ptr::null, || {
        // SAFETY: Envoy's configuration bytes, valid during this hook.
        let bytes = unsafe { envoy_bytes(config.ptr, config.length) };
        let compiled = Config::new(bytes, |counter| {
            define_counter(config_envoy, counter.name(), &label_names(counter))
        });
        match compiled {
            // The configuration's loads and fingerprint (what scripts/reload waits for) are
            // published by the network filter, the wasm module's in this build: the same
            // series from two filters would be one series twice in Prometheus' output.
            Ok(config) => Box::into_raw(Box::new(Arc::new(config)))
                .cast_const()
                .cast(),
            Err(errors) => {
                for error in errors {
                    log(true, &format!("egress-policy: {error}"));
                }
                // Envoy refuses the configuration; on a reload the previous one keeps serving.
                ptr::null()
            }
        }
    })
}

fn label_names(counter: Counter) -> Vec<&'static str> {
    counter
        .labels()
        .iter()
        .map(|label| label.as_str())
        .collect()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config_module: *const c_void) {
    if config_module.is_null() {
        return;
    }
    // SAFETY: the pointer is the box `config_new` returned, destroyed once by Envoy.
    drop(unsafe { Box::from_raw(config_module.cast::<Arc<Config>>().cast_mut()) });
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
    let config = unsafe { &*config_module.cast::<Arc<Config>>() };
    guard("filter_new", ptr::null, || {
        Box::into_raw(Box::new(Stream::new(config.clone())))
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
