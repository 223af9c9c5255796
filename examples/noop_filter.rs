//! The cheapest proxy-wasm HTTP filter the Rust SDK can make: it reads nothing and decides
//! nothing. `scripts/bench` loads it as variant (e) to measure what any proxy-wasm filter costs
//! in Envoy before it does any work, so that egress-policy's own cost can be told apart.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext};
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
    }}

    struct Noop;

    impl Context for Noop {}

    impl HttpContext for Noop {}
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
