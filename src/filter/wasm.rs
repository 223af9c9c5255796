//! proxy-wasm glue: the root context compiles the configuration, HTTP contexts run
//! [`RequestFilter`] against [`WasmHost`]. Only byte-level host calls are used; the SDK's string
//! helpers unwrap, and a non-UTF-8 header would take the VM down with them.

use std::ptr::null;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};

use super::{Flow, Host, RequestFilter};
use crate::policy::Policy;

/// Filter-state key (Envoy prefixes `wasm.`) holding the rendered entries for the access log:
/// `%FILTER_STATE(wasm.egress_policy_log:PLAIN)%`.
const LOG_PROPERTY: &str = "egress_policy_log";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { policy: None }) });
}}

struct Root {
    policy: Option<Rc<Policy>>,
}

impl Context for Root {}

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
        match Policy::from_json(&bytes) {
            Ok(policy) => {
                self.policy = Some(Rc::new(policy));
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            filter: RequestFilter::new(self.policy.clone()),
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

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn now_micros(&self) -> Option<i64> {
        let now = hostcalls::get_current_time().ok()?;
        let micros = now.duration_since(UNIX_EPOCH).ok()?.as_micros();
        i64::try_from(micros).ok()
    }

    fn send_local_reply(&self, status: u16, details: &str) -> bool {
        // An empty header map serializes as a zero count (4 bytes).
        let no_headers = 0u32.to_le_bytes();
        // SAFETY: every pointer/length pair describes a live buffer for the whole call.
        let status = unsafe {
            proxy_send_local_response(
                u32::from(status),
                details.as_ptr(),
                details.len(),
                null(),
                0,
                no_headers.as_ptr(),
                no_headers.len(),
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
}
