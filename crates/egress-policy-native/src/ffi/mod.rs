//! The C ABI of Envoy's dynamic modules, as Envoy 1.40.0 implements it (`abi/envoy-1.40.0.tsv`
//! pins every signature here): the hooks Envoy calls, and the callbacks this module calls, for
//! the HTTP filter (`http.rs`) and the network filter (`network.rs`). The only `unsafe` of the
//! crate is in this module. Every hook runs the safe flow (`crate::filter`,
//! `crate::connection`) inside `guard`, so that a panic never unwinds into Envoy: it fails
//! closed for its request or connection, and is logged.

#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the hooks are called by Envoy, never from Rust, with the pointers the ABI promises"
)]

mod http;
mod network;

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::RwLock;

use egress_policy_core::telemetry::metrics::{CounterEvent, MAX_LABELS};

/// The ABI version string of Envoy 1.40.0 (`ENVOY_DYNAMIC_MODULES_ABI_VERSION`). Envoy only
/// warns on a mismatch, so the module pins it and checks the callbacks it needs exist.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes owned by Envoy, valid until the hook returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub(crate) ptr: *const u8,
    pub(crate) length: usize,
}

/// Bytes owned by the module, valid for the call that takes them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub(crate) ptr: *const u8,
    pub(crate) length: usize,
}

impl ModuleBuffer {
    pub(crate) fn of(bytes: &[u8]) -> Self {
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
    pub(crate) key_ptr: *const u8,
    pub(crate) key_length: usize,
    pub(crate) value_ptr: *const u8,
    pub(crate) value_length: usize,
}

/// A header of a local reply, owned by the module.
#[repr(C)]
pub struct ModuleHttpHeader {
    pub(crate) key_ptr: *const u8,
    pub(crate) key_length: usize,
    pub(crate) value_ptr: *const u8,
    pub(crate) value_length: usize,
}

/// Envoy's array as a slice for the rest of the hook.
///
/// # Safety
/// `ptr` must be what Envoy passed or returned in this hook: valid for `length` elements, or null.
pub(crate) unsafe fn envoy_array<'a, T>(ptr: *const T, length: usize) -> &'a [T] {
    if ptr.is_null() || length == 0 {
        return &[];
    }
    // SAFETY: Envoy guarantees the array until the hook returns (abi: OWNERSHIP), and the
    // slice does not outlive the hook (its lifetime is bound by the caller's use).
    unsafe { std::slice::from_raw_parts(ptr, length) }
}

/// Envoy's bytes as a slice for the rest of the hook.
///
/// # Safety
/// As [`envoy_array`].
pub(crate) unsafe fn envoy_bytes<'a>(ptr: *const u8, length: usize) -> &'a [u8] {
    // SAFETY: as the caller guarantees.
    unsafe { envoy_array(ptr, length) }
}

/// Frees what a `*_new` hook boxed, when Envoy destroys it; a panic in a destructor is caught.
///
/// # Safety
/// `pointer` must be null or the `Box<T>` a `*_new` hook returned, destroyed once by Envoy.
pub(crate) unsafe fn destroy_box<T>(hook: &str, pointer: *const c_void) {
    if pointer.is_null() {
        return;
    }
    // SAFETY: as the caller guarantees.
    let boxed = unsafe { Box::from_raw(pointer.cast::<T>().cast_mut()) };
    guard(hook, || (), move || drop(boxed));
}

/// The bytes a callback points `value` at, copied before the hook returns; `None` when it found
/// nothing.
pub(crate) fn copied_from_envoy(call: impl FnOnce(&mut EnvoyBuffer) -> bool) -> Option<Vec<u8>> {
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
pub(crate) fn guard<T>(hook: &str, on_panic: impl FnOnce() -> T, work: impl FnOnce() -> T) -> T {
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

/// `envoy_dynamic_module_type_metrics_result_Success`.
const METRICS_SUCCESS: i32 = 0;
/// `envoy_dynamic_module_type_log_level`.
const LOG_WARN: i32 = 3;
const LOG_ERROR: i32 = 4;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: i32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config_envoy: *mut c_void,
        counter_id: usize,
        label_values: *const ModuleBuffer,
        label_values_size: usize,
        value: u64,
    ) -> i32;
}

/// Envoy loads the module: its ABI version, or null (Envoy then unloads it and refuses the
/// configuration that named it) when this Envoy's ABI is not the pinned one (`host_abi`).
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let mismatch = guard(
        "program_init",
        || Some("the ABI check panicked".to_owned()),
        || {
            if std::env::var_os(SKIP_ABI_CHECK).is_some() {
                return None;
            }
            crate::host_abi::mismatch()
        },
    );
    match mismatch {
        None => ABI_VERSION.as_ptr().cast(),
        Some(why) => {
            log(true, &format!("egress-policy: {why}"));
            ptr::null()
        }
    }
}

/// Set, the module loads on any Envoy without checking its ABI: for an Envoy whose ABI is known
/// to match though its surface differs (a build of the same release with other extensions).
/// At your own risk: a changed signature is undefined behaviour (README: Which build?).
const SKIP_ABI_CHECK: &str = "EGRESS_POLICY_SKIP_ABI_CHECK";

/// The buffers of metric or label names.
fn buffers<'a>(names: impl Iterator<Item = &'a str>) -> Vec<ModuleBuffer> {
    names
        .map(|name| ModuleBuffer::of(name.as_bytes()))
        .collect()
}

/// The labelled counters every filter of the gateway counts in: those of the HTTP filter
/// configurations alive (Envoy's pointer to each and each counter's id, in `Counter::ALL`
/// order), the newest last. Envoy 1.40.0's network-filter ABI defines counters without labels,
/// so the network filter counts its connections here, in the same series as the wasm build's.
/// A configuration is removed (under the write lock) before Envoy frees it, so a reader never
/// sees a freed one.
static LABELLED_COUNTERS: RwLock<Vec<(usize, Vec<Option<usize>>)>> = RwLock::new(Vec::new());

fn register_labelled_counters(config_envoy: *mut c_void, ids: Vec<Option<usize>>) {
    if let Ok(mut counters) = LABELLED_COUNTERS.write() {
        counters.push((config_envoy as usize, ids));
    }
}

fn unregister_labelled_counters(config_envoy: *mut c_void) {
    if let Ok(mut counters) = LABELLED_COUNTERS.write() {
        counters.retain(|(registered, _)| *registered != config_envoy as usize);
    }
}

/// Adds one to a labelled counter through the HTTP filter configuration that defined it;
/// nothing when none is loaded (a gateway with no native HTTP filter, README: Which build?).
pub(crate) fn increment_labelled(event: &CounterEvent<'_>) {
    let Ok(counters) = LABELLED_COUNTERS.read() else {
        return;
    };
    let Some((config_envoy, ids)) = counters.last() else {
        return;
    };
    // SAFETY: the configuration is alive while it is registered: it is unregistered, under the
    // write lock this read lock excludes, before Envoy frees it.
    unsafe { increment_in_config(*config_envoy as *mut c_void, ids, event) };
}

/// A counter event's label values as the ABI takes them, on the stack (several counters per
/// request or connection, none worth an allocation), and how many there are.
fn label_values<'a>(event: &CounterEvent<'a>) -> ([ModuleBuffer; MAX_LABELS], usize) {
    let mut values = [ModuleBuffer::of(&[]); MAX_LABELS];
    for (slot, value) in values.iter_mut().zip(event.values()) {
        *slot = ModuleBuffer::of(value.as_bytes());
    }
    (values, event.values().len().min(MAX_LABELS))
}

/// Adds one to a counter of an HTTP filter configuration, with its label values.
///
/// # Safety
/// `config_envoy` must be Envoy's pointer to a live HTTP filter configuration, and `ids` the ids
/// of the counters it defined, in `Counter::ALL` order.
unsafe fn increment_in_config(
    config_envoy: *mut c_void,
    ids: &[Option<usize>],
    event: &CounterEvent<'_>,
) {
    let Some(id) = ids.get(event.counter as usize).copied().flatten() else {
        return;
    };
    let (values, count) = label_values(event);
    // SAFETY: as the caller guarantees; the configuration's counters are fixed once it is
    // created, and Envoy's stats are thread-safe. The label values live until the call
    // returns; Envoy copies them.
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_increment_counter(
            config_envoy,
            id,
            values.as_ptr(),
            count,
            1,
        );
    }
}
