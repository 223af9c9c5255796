//! The cheapest proxy-wasm HTTP filters the Rust SDK can make, for `scripts/bench`: with an
//! empty configuration it reads nothing and decides nothing (variant (e): what any proxy-wasm
//! filter costs in Envoy before it does any work); with the configuration `"host-calls"` it makes
//! the four host calls egress-policy needs for every request and nothing else (variant (f): what
//! those calls cost). Together they tell egress-policy's own work apart from the platform's.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { calls: false }) });
    }}

    struct Root {
        calls: bool,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten();
            self.calls = config.is_some_and(|c| c.windows(10).any(|w| w == b"host-calls"));
            true
        }

        fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Filter { calls: self.calls }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Filter {
        calls: bool,
    }

    impl Context for Filter {}

    impl HttpContext for Filter {
        fn on_http_request_headers(&mut self, _n: usize, _end: bool) -> Action {
            if self.calls {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path");
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":authority");
                let _ = hostcalls::get_property(vec!["connection", "mtls"]);
            }
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _n: usize, _end: bool) -> Action {
            if self.calls {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
            }
            Action::Continue
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
