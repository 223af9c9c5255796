use std::ptr::{null, null_mut};

use super::NoSharedData;

pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
pub const BUFFER_HTTP_REQUEST_BODY: u32 = 0;
pub const BUFFER_DOWNSTREAM_DATA: u32 = 2;
pub const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
pub const STREAM_HTTP_REQUEST: u32 = 0;
pub const STREAM_DOWNSTREAM: u32 = 2;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const METRIC_COUNTER: u32 = 0;
pub const METRIC_GAUGE: u32 = 1;
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    /// The ABI's `proxy_get_property`, named apart from the SDK's panicking helper.
    #[link_name = "proxy_get_property"]
    fn proxy_read_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    /// Declared here because the SDK's wrapper drops the details argument, which carries the
    /// deciding rule into Envoy's `%RESPONSE_CODE_DETAILS%`.
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Takes ownership of a buffer the host allocated through the SDK's
/// `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes).
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the host wrote `size` bytes into memory it obtained from
    // proxy_on_memory_allocate(size), which leaks a Box<[u8]> of that length.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: the pointer and length describe `message` for the whole call.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

pub fn now_nanos() -> Option<u64> {
    let mut nanos = 0u64;
    // SAFETY: `nanos` outlives the call.
    (unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } == OK).then_some(nanos)
}

pub fn set_tick_period_millis(millis: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(millis) == OK }
}

pub fn buffer(buffer_type: u32, max_size: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the out-pointers outlive the call.
    let status = unsafe { proxy_get_buffer_bytes(buffer_type, 0, max_size, &mut data, &mut size) };
    (status == OK).then(|| owned(data, size))
}

pub fn map_pairs(map_type: u32) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the out-pointers outlive the call.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    (status == OK).then(|| owned(data, size))
}

pub fn map_value(map_type: u32, name: &str) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: `name` and the out-pointers outlive the call.
    let status = unsafe {
        proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    (status == OK).then(|| owned(data, size))
}

pub fn remove_map_value(map_type: u32, name: &[u8]) -> bool {
    // SAFETY: `name` outlives the call.
    unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) == OK }
}

/// Property paths are their parts joined by NUL; written on the stack (every path the filter
/// reads fits), so a property read allocates only its answer.
fn with_path_bytes<R>(path: &[&str], call: impl FnOnce(&[u8]) -> R) -> R {
    let mut stack = [0u8; 256];
    match crate::adapter::encode_property_path(path, &mut stack) {
        Some(encoded) => call(encoded),
        None => call(path.join("\0").as_bytes()),
    }
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    with_path_bytes(path, read_property)
}

fn read_property(path: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: `path` and the out-pointers outlive the call.
    let status = unsafe { proxy_read_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    (status == OK && !data.is_null()).then(|| owned(data, size))
}

pub fn set_property(path: &[&str], value: &[u8]) -> bool {
    with_path_bytes(path, |path| {
        // SAFETY: `path` and `value` outlive the call.
        unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) == OK }
    })
}

pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: `name` and `id` outlive the call.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, NoSharedData> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: `key` and the out-pointers outlive the call.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => Ok(Some((owned(data, size), cas))),
        NOT_FOUND => Ok(None),
        _ => Err(NoSharedData),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<bool, NoSharedData> {
    // SAFETY: `key` and `value` outlive the call.
    let status =
        unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    match status {
        OK => Ok(true),
        CAS_MISMATCH => Ok(false),
        _ => Err(NoSharedData),
    }
}

pub fn close_stream(stream_type: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_close_stream(stream_type) == OK }
}

pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: no pointers.
    let _ = unsafe { proxy_increment_metric(id, offset) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    let _ = unsafe { proxy_record_metric(id, value) };
}

pub fn send_local_response(status: u16, details: &str, body: &[u8], headers: &[u8]) -> bool {
    // SAFETY: every pointer/length pair describes a live buffer for the whole call.
    unsafe {
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
        ) == OK
    }
}
