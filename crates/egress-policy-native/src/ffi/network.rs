//! The network filter's hooks and callbacks (`envoy.filters.network.dynamic_modules`), for the
//! TLS listeners.
//!
//! Every hook runs its work inside `super::guard` (`catch_unwind`), directly or through
//! `data_hook` and `destroy_box`, so that no panic crosses into Envoy; a test in `lib.rs`
//! checks every exported function for it.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use egress_policy_core::telemetry::metrics::CounterEvent;

use super::{EnvoyBuffer, ModuleBuffer, copied_from_envoy, destroy_box, envoy_bytes, guard, log};
use crate::connection::{Connection, EnvoyConnection, Flow, NetworkConfig};

/// `envoy_dynamic_module_type_on_network_filter_data_status`: Continue, StopIteration.
const CONTINUE: i32 = 0;
const STOP_ITERATION: i32 = 1;
/// `envoy_dynamic_module_type_network_connection_close_type_NoFlush`: nothing is written to a
/// refused caller.
const CLOSE_NO_FLUSH: i32 = 1;
/// `envoy_dynamic_module_type_network_connection_event`: RemoteClose, LocalClose.
const EVENT_REMOTE_CLOSE: i32 = 0;
const EVENT_LOCAL_CLOSE: i32 = 1;
/// `envoy_dynamic_module_type_attribute_id_ConnectionTransportFailureReason` (Envoy 1.40.0).
const ATTRIBUTE_TRANSPORT_FAILURE_REASON: i32 = 39;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(
        filter_envoy: *mut c_void,
    ) -> usize;
    fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
        filter_envoy: *mut c_void,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_close(
        filter_envoy: *mut c_void,
        close_type: i32,
    );
    fn envoy_dynamic_module_callback_network_set_filter_state_bytes(
        filter_envoy: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_requested_server_name(
        filter_envoy: *mut c_void,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_remote_address(
        filter_envoy: *mut c_void,
        address: *mut EnvoyBuffer,
        port: *mut u32,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_local_address(
        filter_envoy: *mut c_void,
        address: *mut EnvoyBuffer,
        port: *mut u32,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_is_ssl(filter_envoy: *mut c_void) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_ssl_subject(
        filter_envoy: *mut c_void,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(
        filter_envoy: *mut c_void,
    ) -> usize;
    fn envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(
        filter_envoy: *mut c_void,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_attribute_string(
        filter_envoy: *mut c_void,
        attribute: i32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_has_upstream_host(
        filter_envoy: *mut c_void,
    ) -> bool;
}

fn empty_buffers(count: usize) -> Vec<EnvoyBuffer> {
    vec![
        EnvoyBuffer {
            ptr: ptr::null(),
            length: 0,
        };
        count
    ]
}

/// One connection's host calls, through the filter pointer Envoy passes to every hook.
struct Envoy(*mut c_void);

impl Envoy {
    fn address(
        &self,
        call: unsafe extern "C" fn(*mut c_void, *mut EnvoyBuffer, *mut u32) -> bool,
    ) -> Option<(Vec<u8>, u32)> {
        let mut port = 0_u32;
        let address = copied_from_envoy(|value| {
            // SAFETY: both results are on the caller's stack for Envoy to fill.
            unsafe { call(self.0, value, &mut port) }
        })?;
        Some((address, port))
    }
}

impl EnvoyConnection for Envoy {
    fn read_buffer(&self, max: usize) -> Option<Vec<u8>> {
        // SAFETY: the array has the number of chunks Envoy reported in this hook, and Envoy
        // fills every entry before returning true; the chunks are copied before it returns.
        unsafe {
            let count =
                envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(self.0);
            let mut chunks = empty_buffers(count);
            if count > 0
                && !envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
                    self.0,
                    chunks.as_mut_ptr(),
                )
            {
                return None;
            }
            let mut bytes = Vec::new();
            for chunk in &chunks {
                let room = max.saturating_sub(bytes.len());
                let chunk = envoy_bytes(chunk.ptr, chunk.length);
                bytes.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if bytes.len() >= max {
                    break;
                }
            }
            Some(bytes)
        }
    }

    fn close(&self) -> bool {
        // SAFETY: the filter pointer is the one of this hook.
        unsafe { envoy_dynamic_module_callback_network_filter_close(self.0, CLOSE_NO_FLUSH) };
        true
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: both buffers are valid for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_network_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    fn requested_server_name(&self) -> Option<Vec<u8>> {
        copied_from_envoy(|value| {
            // SAFETY: `value` is on the caller's stack for Envoy to fill.
            unsafe {
                envoy_dynamic_module_callback_network_filter_get_requested_server_name(
                    self.0, value,
                )
            }
        })
    }

    fn remote_address(&self) -> Option<Vec<u8>> {
        let (ip, port) =
            self.address(envoy_dynamic_module_callback_network_filter_get_remote_address)?;
        let mut address = Vec::with_capacity(ip.len() + 8);
        let v6 = ip.contains(&b':');
        if v6 {
            address.push(b'[');
        }
        address.extend_from_slice(&ip);
        if v6 {
            address.push(b']');
        }
        address.extend_from_slice(format!(":{port}").as_bytes());
        Some(address)
    }

    fn local_port(&self) -> Option<i64> {
        let mut address = EnvoyBuffer {
            ptr: ptr::null(),
            length: 0,
        };
        let mut port = 0_u32;
        // SAFETY: both results are on this stack for Envoy to fill; only the port is read, so
        // the address is not copied.
        let found = unsafe {
            envoy_dynamic_module_callback_network_filter_get_local_address(
                self.0,
                &mut address,
                &mut port,
            )
        };
        found.then_some(i64::from(port))
    }

    fn mtls(&self) -> bool {
        let mut subject = EnvoyBuffer {
            ptr: ptr::null(),
            length: 0,
        };
        // SAFETY: the filter pointer is the one of this hook; `subject` is for Envoy to fill, and
        // only its length is read (a peer certificate was presented and verified: the listener
        // requires it), so nothing is copied.
        unsafe {
            envoy_dynamic_module_callback_network_filter_is_ssl(self.0)
                && envoy_dynamic_module_callback_network_filter_get_ssl_subject(
                    self.0,
                    &mut subject,
                )
                && subject.length > 0
        }
    }

    fn peer_uri_sans(&self) -> Vec<Vec<u8>> {
        // SAFETY: the array has the number of SANs Envoy reported in this hook, filled by
        // Envoy before it returns true; each is copied before the hook returns.
        unsafe {
            let count = envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(self.0);
            let mut sans = empty_buffers(count);
            if count == 0
                || !envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(
                    self.0,
                    sans.as_mut_ptr(),
                )
            {
                return Vec::new();
            }
            sans.iter()
                .map(|san| envoy_bytes(san.ptr, san.length).to_vec())
                .collect()
        }
    }

    fn transport_failure(&self) -> Option<Vec<u8>> {
        copied_from_envoy(|value| {
            // SAFETY: `value` is on the caller's stack for Envoy to fill.
            unsafe {
                envoy_dynamic_module_callback_network_filter_get_attribute_string(
                    self.0,
                    ATTRIBUTE_TRANSPORT_FAILURE_REASON,
                    value,
                )
            }
        })
    }

    fn has_upstream_host(&self) -> bool {
        // SAFETY: the filter pointer is the one of this hook.
        unsafe { envoy_dynamic_module_callback_network_filter_has_upstream_host(self.0) }
    }

    fn increment(&self, event: &CounterEvent<'_>) {
        super::increment_labelled(event);
    }

    fn log_warning(&self, message: &str) {
        log(false, message);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    _config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard("network_config", ptr::null, || {
        // SAFETY: Envoy's configuration bytes, valid during this hook.
        let bytes = unsafe { envoy_bytes(config.ptr, config.length) };
        if let Err(why) = egress_policy_core::evidence::process_signing_key() {
            log(
                true,
                &format!("egress-policy: configuration refused: {why}"),
            );
            return ptr::null();
        }
        match NetworkConfig::new(bytes) {
            Ok(config) => Box::into_raw(Box::new(Arc::new(config)))
                .cast_const()
                .cast(),
            Err(errors) => {
                for error in errors {
                    log(
                        true,
                        &format!("egress-policy: invalid configuration: {error}"),
                    );
                }
                // Envoy refuses the configuration; on a reload the previous one keeps serving.
                ptr::null()
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(
    config_module: *const c_void,
) {
    // SAFETY: the pointer is the box the matching `*_new` hook returned, destroyed once by Envoy.
    unsafe { destroy_box::<Arc<NetworkConfig>>("config_destroy", config_module) }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new(
    config_module: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    if config_module.is_null() {
        // Envoy closes a connection whose filter it could not create.
        return ptr::null();
    }
    // SAFETY: the configuration outlives its filters (Envoy destroys it after them).
    let config = unsafe { &*config_module.cast::<Arc<NetworkConfig>>() };
    guard("network_filter_new", ptr::null, || {
        Box::into_raw(Box::new(Connection::new(config.clone())))
            .cast_const()
            .cast()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_destroy(filter_module: *const c_void) {
    // SAFETY: the pointer is the box the matching `*_new` hook returned, destroyed once by Envoy.
    unsafe { destroy_box::<Connection>("destroy", filter_module) }
}

/// The connection of a hook, or `None` for a null pointer.
///
/// # Safety
/// `filter_module` must be null or the box `filter_new` returned, not yet destroyed; Envoy calls
/// one connection's hooks on one thread, one at a time.
unsafe fn connection<'a>(filter_module: *const c_void) -> Option<&'a mut Connection> {
    // SAFETY: as the caller guarantees.
    unsafe { filter_module.cast::<Connection>().cast_mut().as_mut() }
}

/// Runs a data hook's work; a panic closes the connection (fail closed) and stops it.
fn data_hook(
    hook: &str,
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    work: impl FnOnce(&Envoy, &mut Connection) -> Flow,
) -> i32 {
    let envoy = Envoy(filter_envoy);
    // SAFETY: Envoy passes the connection this module created for this filter.
    let Some(connection) = (unsafe { connection(filter_module) }) else {
        envoy.close();
        return STOP_ITERATION;
    };
    let fail_closed = || {
        envoy.close();
        Flow::Stop
    };
    match guard(hook, fail_closed, || work(&envoy, connection)) {
        Flow::Continue => CONTINUE,
        Flow::Stop => STOP_ITERATION,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
) -> i32 {
    data_hook(
        "new_connection",
        filter_envoy,
        filter_module,
        |envoy, connection| connection.on_new_connection(envoy),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_read(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    data_length: usize,
    end_of_stream: bool,
) -> i32 {
    data_hook("read", filter_envoy, filter_module, |envoy, connection| {
        connection.on_read(envoy, data_length, end_of_stream)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_write(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    data_length: usize,
    _end_of_stream: bool,
) -> i32 {
    data_hook("write", filter_envoy, filter_module, |_, connection| {
        connection.on_write(data_length)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_event(
    filter_envoy: *mut c_void,
    filter_module: *const c_void,
    event: i32,
) {
    if event != EVENT_REMOTE_CLOSE && event != EVENT_LOCAL_CLOSE {
        return;
    }
    let envoy = Envoy(filter_envoy);
    // SAFETY: as in the data hooks.
    if let Some(connection) = unsafe { connection(filter_module) } {
        guard("close", || (), || connection.on_close(&envoy));
    }
}

// The hooks Envoy resolves but this filter has nothing to do in: it makes no call-outs and
// schedules nothing per connection, and leaves flow control to tcp_proxy.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_scheduled(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_scheduled(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_http_callout_done(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: i32,
    _: *const c_void,
    _: usize,
    _: *const EnvoyBuffer,
    _: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_above_write_buffer_high_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_network_filter_below_write_buffer_low_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}
